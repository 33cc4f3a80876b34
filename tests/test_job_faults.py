"""Dataset jobs under concurrency and damage: run as a user runs them (``python -m xattr_jax.app.cli``).

Each case damages a job's folder or inputs the way a user or a machine would (a second job on the
same ``--out``, deleted or truncated shards, a duplicated line, a replaced image or checkpoint, a
full disk, a non-UTF-8 file name...) and checks that the job either completes with every record's
map intact — compared with the maps of an undamaged run — or refuses with one line and exit 2.
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from xattr_jax.harness.records import JobError, RecordStore, load_map, read_records

N = 6
BAD_NAME = b"odd_\xff_name.png"  # not UTF-8


def _png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults") / "images"
    folder.mkdir()
    for i in range(N):
        _png(folder / f"im{i}.png", i)
    return folder


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An undamaged job over ``images``: ``{(image, method, target): map}``."""
    out = tmp_path_factory.mktemp("ref") / "out"
    done = _explain(images, out)
    assert done.returncode == 0, done.stderr
    return _maps(out)


def _explain(inputs, out, *extra, check_one_line=False):
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    cmd = [sys.executable, "-m", "xattr_jax.app.cli", "explain", *map(str, inputs), "--checkpoint",
           "embedded:small_vgg", "--method", "gradient", "--batch-size", "2", "--no-progress",
           "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _maps(out):
    return {(r["image"], r["method"], r["target"]): load_map(out, r) for r in read_records(out)}


def _same_maps(out, reference):
    got = _maps(out)
    assert set(got) == set(reference)
    for k, m in reference.items():  # per-example maps: batch composition changes only float32 rounding
        err = np.abs(got[k] - m).max()
        assert err <= 1e-5 * max(float(np.abs(m).max()), 1e-30), f"{k}: map off by {err} (tol 1e-5 x max)"


def _one_line_refusal(proc, *needles):
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and err.count("\n") == 1, f"expected one line on stderr, got:\n{err}"
    for n in needles:
        assert n in err, (n, err)


def test_a_held_out_refuses_a_second_job_naming_the_holder(images, tmp_path, reference):
    out = tmp_path / "out"
    with RecordStore(out):  # a job holds the folder
        proc = _explain(images, out)
        _one_line_refusal(proc, "in use by another job", f"pid {os.getpid()} on {socket.gethostname()}",
                          "another --out")  # fmt: skip
    assert not (out / "records.jsonl").read_bytes()  # the refused job wrote nothing
    again = _explain(images, out)  # the lock file stays behind, but nobody holds it
    assert again.returncode == 0, again.stderr
    _same_maps(out, reference)


@pytest.mark.slow
def test_two_jobs_started_at_once_on_halves_lose_nothing(images, tmp_path, reference):
    """The same folder given to two jobs at once, each on half of the images: one runs, the other
    is refused or runs after it; a rerun of the refused half completes, and every map is intact."""
    out = tmp_path / "out"
    halves = [[images / f"im{i}.png" for i in range(N) if i % 2 == h] for h in (0, 1)]
    cmds = [[sys.executable, "-m", "xattr_jax.app.cli", "explain", *map(str, half), "--checkpoint",
             "embedded:small_vgg", "--method", "gradient", "--batch-size", "2", "--no-progress",
             "--out", str(out)] for half in halves]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert all(rc in (0, 2) for rc, _ in results), results
    for (rc, err), cmd in zip(results, cmds):
        if rc == 2:
            assert "in use by another job" in err and err.count("\n") == 1, err
            rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert rerun.returncode == 0, rerun.stderr
    _same_maps(out, reference)
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == N, f"{len(lines)} record lines for {N} images: duplicated or lost"


@pytest.mark.slow
def test_missing_or_damaged_shards_are_redone(images, tmp_path, reference):
    out = tmp_path / "out"
    assert _explain(images, out).returncode == 0
    shards = sorted((out / "maps" / "gradient").iterdir())
    assert [p.name for p in shards] == ["000000.npz", "000001.npz", "000002.npz"]  # 2 images each
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:-100])  # truncated
    again = _explain(images, out)
    assert again.returncode == 0, again.stderr
    assert "4 image(s) attributed on 1 device(s), 2 already done" in again.stdout, again.stdout
    assert "map shard is missing or damaged" in again.stderr
    _same_maps(out, reference)

    shutil.rmtree(out / "maps")  # all maps gone: every image is done again, and figures can be drawn
    third = _explain(images, out, "--figures", "svg")
    assert third.returncode == 0, third.stderr
    assert f"{N} image(s) attributed on 1 device(s), 0 already done" in third.stdout
    assert len(list((out / "figures").iterdir())) == N
    _same_maps(out, reference)


def test_a_duplicated_record_is_kept_once_and_reported(images, tmp_path, reference):
    out = tmp_path / "out"
    assert _explain(images, out).returncode == 0
    path = out / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3] + [lines[2]] + lines[3:]))
    said = []
    recs = read_records(out, log=said.append)
    assert sorted(r["image"] for r in recs) == [f"im{i}" for i in range(N)]
    assert len(said) == 1 and "1 duplicated record(s) dropped" in said[0], said
    with pytest.warns(UserWarning, match="1 duplicated record"):
        assert len(read_records(out)) == N
    again = _explain(images, out)
    assert again.returncode == 0 and f"0 image(s) attributed on 1 device(s), {N} already done" in again.stdout
    assert len(path.read_bytes().splitlines()) == N  # the duplicate is gone from the file
    _same_maps(out, reference)


def test_resume_follows_the_images_content_and_retries_unreadable_ones(images, tmp_path, reference):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    good = (folder / "im3.png").read_bytes()
    (folder / "im3.png").write_bytes(good[: len(good) // 3])  # unreadable for now
    out = tmp_path / "out"
    first = _explain(folder, out)
    assert first.returncode == 0 and "im3 skipped: unreadable" in first.stderr
    (folder / "im3.png").write_bytes(good)  # fixed
    shutil.copy(images / "im5.png", folder / "im1.png")  # replaced by another image, same name
    again = _explain(folder, out)
    assert again.returncode == 0, again.stderr
    assert "2 image(s) attributed on 1 device(s), 4 already done" in again.stdout, again.stdout
    recs = {r["image"]: r for r in read_records(out)}
    assert recs["im3"]["status"] == "ok"
    got = _maps(out)
    ref5 = reference[next(k for k in reference if k[0] == "im5")]
    assert np.abs(got[next(k for k in got if k[0] == "im1")] - ref5).max() <= 1e-5 * float(np.abs(ref5).max())
    for k, m in reference.items():
        if k[0] != "im1":
            assert np.abs(got[k] - m).max() <= 1e-5 * float(np.abs(m).max()), k


def test_a_checkpoint_with_new_contents_is_not_resumed(images, tmp_path):
    import jax

    from xattr_jax.checkpoint import save_checkpoint
    from xattr_jax.models import load_embedded

    model, variables = load_embedded("small_vgg")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    save_checkpoint(ckpt, "small_vgg", variables, num_classes=model.num_classes)
    cmd = [sys.executable, "-m", "xattr_jax.app.cli", "explain", str(images / "im0.png"), "--checkpoint",
           str(ckpt), "--method", "gradient", "--no-progress", "--out", str(out)]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    changed = jax.tree_util.tree_map(lambda a: a * 1.001, variables)
    save_checkpoint(ckpt, "small_vgg", changed, overwrite=True, num_classes=model.num_classes)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    _one_line_refusal(again, "other settings (variables:", "delete")
    assert len(read_records(out)) == 1


@pytest.mark.slow
def test_the_output_folder_is_never_read_as_input(images, tmp_path, reference):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    out = folder / "out"  # inside the input folder
    for _ in range(2):
        run = _explain(folder, out, "--figures", "png")
        assert run.returncode == 0, run.stderr
    assert f"0 image(s) attributed on 1 device(s), {N} already done" in run.stdout
    assert sorted(r["image"] for r in read_records(out)) == [f"im{i}" for i in range(N)]
    _same_maps(out, reference)
    _one_line_refusal(_explain(folder, folder), "inside the output folder")
    _one_line_refusal(_explain(out / "figures", out), "inside the output folder")


@pytest.mark.slow
def test_os_and_json_failures_are_one_line_and_leave_nothing_half_written(images, tmp_path, reference):
    # --out under a regular file: no folder can be made there (root included)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_line_refusal(_explain(images, blocker / "out"), "Not a directory", "--out")

    # the first batch's shard cannot be written (a file where the maps folder goes)
    out = tmp_path / "out"
    out.mkdir()
    (out / "maps").write_text("in the way")
    _one_line_refusal(_explain(images, out), "cannot write", "run the same command again")
    assert (out / "records.jsonl").read_bytes() == b""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    (out / "maps").unlink()
    assert _explain(images, out).returncode == 0
    _same_maps(out, reference)

    # a bad line in the middle of records.jsonl: refused, the file left as it was
    path = out / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2] + [b'{"image": "im9", "meth\n'] + lines[2:])
    path.write_bytes(damaged)
    _one_line_refusal(_explain(images, out), "records.jsonl:3 is not a record", "delete that line")
    assert path.read_bytes() == damaged
    path.write_bytes(b"".join(lines))

    # a corrupt job.json
    (out / "job.json").write_text('{"command": "expl')
    _one_line_refusal(_explain(images, out), "job.json is damaged", "another --out")


def test_a_failed_write_is_undone(tmp_path, monkeypatch):
    """A full disk during a batch's write: the shard and the partial records are removed, the
    records file keeps its bytes, and the error is one line."""
    def rec(img):
        return {"image": img, "method": "m", "target": 1, "status": "ok", "of": 1, "map_key": f"{img}#1"}

    with RecordStore(tmp_path) as st:
        st.write([rec("a")], {"m": {"a#1": np.ones((2, 2))}})
        before = (tmp_path / "records.jsonl").read_bytes()
        real = os.fsync
        calls = []

        def fsync(fd):
            calls.append(fd)
            if len(calls) == 2:  # the shard was flushed; the records' flush fails
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(JobError, match="No space left on device; free space") as err:
            st.write([rec("b")], {"m": {"b#1": np.zeros((2, 2))}})
        assert "\n" not in str(err.value)
        monkeypatch.setattr(os, "fsync", real)
        assert (tmp_path / "records.jsonl").read_bytes() == before
        assert sorted(p.name for p in (tmp_path / "maps" / "m").iterdir()) == ["000000.npz"]
        assert not st.is_done("b", "m")
    assert [r["image"] for r in read_records(tmp_path)] == ["a"]


def test_a_non_utf8_file_name_is_explained(images, tmp_path, reference):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    shutil.copy(images / "im2.png", os.path.join(os.fsencode(folder), BAD_NAME))
    out = tmp_path / "out"
    run = _explain(folder, out, "--figures", "png")
    assert run.returncode == 0, run.stderr
    assert f"{N + 1} image(s) attributed" in run.stdout
    recs = {r["image"]: r for r in read_records(out)}
    odd = recs["odd_\\xff_name"]
    assert odd["status"] == "ok" and os.fsencode(odd["file"]).endswith(BAD_NAME)
    m, ref = load_map(out, odd), load_map(out, recs["im2"])  # the same pixels, in another batch
    assert np.abs(m - ref).max() <= 1e-5 * float(np.abs(ref).max()), "tol 1e-5 x max"
    assert (out / "figures" / "odd_\\xff_name.png").is_file()


@pytest.mark.parametrize("command", ["explain", "eval"])
def test_memory_follows_the_data_not_the_batch_size(images, tmp_path, command):
    """``--batch-size 20000`` on 2 images: the batch is padded to 2, not 20000 (padding to 20000
    would need 20000 x 64 x 64 x 3 x 4 B = 0.98 GB for the input alone, ~16 GB with the activations)."""
    args = (["explain", str(images / "im0.png"), str(images / "im1.png"), "--checkpoint", "embedded:small_vgg",
             "--method", "gradient,grad_cam"] if command == "explain" else
            ["eval", "--dataset", "synthetic", "--num-images", "2", "--methods", "gradient,grad_cam",
             "--deletion-steps", "8"])  # fmt: skip
    # VmHWM, the peak of this process's own memory (ru_maxrss would include the forking pytest's)
    code = ("import re, sys; from xattr_jax.app.cli import main; rc = main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1); "
            "print('maxrss_kb', hwm, file=sys.stderr); sys.exit(rc)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code, *args, "--batch-size", "20000", "--no-progress",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rss_gb = int(run.stderr.rsplit("maxrss_kb", 1)[1].split()[0]) / 2**20
    assert rss_gb < 1.5, f"peak memory {rss_gb:.2f} GiB >= 1.5 GiB for 2 images (about 0.7 GiB expected)"
    if command == "explain":
        assert len(read_records(tmp_path / "out")) == 4
    else:
        report = json.loads((tmp_path / "out" / "eval.json").read_text())
        assert report["num_images"] == 2 and "error" not in report["methods"]["gradient"]


def test_a_bad_coco_polygon_is_named(tmp_path):
    data = {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 6, "height": 4}],
            "categories": [{"id": 1, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 42, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0,
                             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
                            {"id": 7, "image_id": 42, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0,
                             "segmentation": [[0, 0, 2, 0, 2]]}]}  # fmt: skip
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    (tmp_path / "val2014").mkdir()
    run = subprocess.run([sys.executable, "-m", "xattr_jax.app.cli", "eval", "--dataset", "coco14", "--annotations",
                          str(ann), "--images", str(tmp_path / "val2014"), "--no-progress",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)  # fmt: skip
    _one_line_refusal(run, "COCO image 42 (COCO_val2014_000000000042.jpg), annotation 7", "polygon 0",
                      "fix or remove that annotation")  # fmt: skip
