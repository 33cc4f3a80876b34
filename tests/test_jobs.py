"""Dataset jobs: ``xattr explain`` over a folder, killed with SIGKILL halfway and resumed.

The job is run as a user runs it (``python -m xattr_jax.app.cli explain FOLDER --out OUT``) on 200
synthetic PNG files, one of them corrupt. A second run is killed once about half the records are on
disk, then started again with the same command; its records must equal the uninterrupted run's:
none lost, none duplicated, the corrupt file once per method with its reason.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from xattr_jax.data.synthetic import make_dataset
from xattr_jax.harness.records import RecordStore, load_map, read_records

from _processes import run_on_two_processes

N_IMAGES = 200
CORRUPT = "img_0117"
METHODS = ["gradient", "lrp"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    imgs = root / "images"
    imgs.mkdir()
    ds = make_dataset(N_IMAGES, 64, seed=11)
    for i, im in enumerate(ds.images):
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(imgs / f"img_{i:04d}.png")
    data = (imgs / f"{CORRUPT}.png").read_bytes()
    (imgs / f"{CORRUPT}.png").write_bytes(data[: len(data) // 3])  # a truncated PNG
    return root


def _command(folder, out):
    return [sys.executable, "-m", "xattr_jax.app.cli", "explain", str(folder / "images"), "--checkpoint",
            "embedded:small_vgg", "--method", ",".join(METHODS), "--top-k", "2", "--batch-size", "4",
            "--no-progress", "--out", str(out)]  # fmt: skip


def _lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _by_key(out):
    recs = read_records(out)
    keyed = {}
    for r in recs:
        k = (r["image"], r["method"], r["target"])
        assert k not in keyed, f"duplicated record {k}"
        keyed[k] = r
    return keyed


def test_killed_job_resumes_to_the_same_records(folder):
    full, cut = folder / "full", folder / "cut"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(_command(folder, full), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{CORRUPT} skipped: unreadable" in done.stderr

    expected_lines = (N_IMAGES - 1) * len(METHODS) * 2 + len(METHODS)
    proc = subprocess.Popen(_command(folder, cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.monotonic()
    while _lines(cut / "records.jsonl") < expected_lines // 2:
        assert proc.poll() is None, "the job ended before it could be killed halfway"
        assert time.monotonic() - t0 < 600
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _lines(cut / "records.jsonl")
    assert proc.returncode == -signal.SIGKILL
    assert expected_lines // 2 <= killed_at < expected_lines, killed_at
    assert f"pid {proc.pid} on " in (cut / ".lock").read_text()  # a dead holder's lock blocks nothing

    again = subprocess.run(_command(folder, cut), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stdout

    a, b = _by_key(full), _by_key(cut)
    assert len(a) == expected_lines and set(a) == set(b)
    for k, ra in a.items():
        rb = b[k]
        for field in ("status", "of", "rank", "predicted", "map_shape", "file"):
            assert ra.get(field) == rb.get(field), (k, field, ra.get(field), rb.get(field))
        if ra["status"] == "ok":
            assert rb["logit"] == pytest.approx(ra["logit"], abs=1e-4)
            ma, mb = load_map(full, ra), load_map(cut, rb)
            scale = float(np.abs(ma).max()) or 1.0
            assert np.abs(ma - mb).max() <= 1e-5 * scale, k
    bad = [r for r in b.values() if r["image"] == CORRUPT]
    assert sorted(r["method"] for r in bad) == sorted(METHODS)  # once per method, with its reason
    assert all(r["status"].startswith("unreadable:") and r["target"] is None for r in bad)
    ok = [r for r in b.values() if r["status"] == "ok"]
    assert len(ok) == (N_IMAGES - 1) * len(METHODS) * 2
    from xattr_jax.data import CLASS_NAMES

    for r in ok:  # rank 0 is the predicted class; the shipped model's classes have names
        assert r["rank"] in (0, 1) and (r["rank"] != 0 or r["target"] == r["predicted"])
        assert r["target_name"] == CLASS_NAMES[r["target"]]


def test_store_cuts_a_torn_line_and_an_incomplete_group(tmp_path):
    with RecordStore(tmp_path) as st:
        st.write([{"image": "a", "method": "m", "target": 1, "status": "ok", "of": 2, "map_key": "a#1"},
                  {"image": "a", "method": "m", "target": 2, "status": "ok", "of": 2, "map_key": "a#2"}],
                 {"m": {"a#1": np.ones((2, 2)), "a#2": np.zeros((2, 2))}})  # fmt: skip
        st.write([{"image": "b", "method": "m", "target": 1, "status": "ok", "of": 2, "map_key": "b#1"}],
                 {"m": {"b#1": np.ones((2, 2))}})  # fmt: skip
    with open(tmp_path / "records.jsonl", "ab") as f:
        f.write(b'{"image": "c", "meth')  # a write torn by a kill
    st = RecordStore(tmp_path)
    assert st.is_done("a", "m") and not st.is_done("b", "m") and not st.is_done("c", "m")
    assert [r["image"] for r in read_records(tmp_path)] == ["a", "a"]
    assert (tmp_path / "records.jsonl").read_bytes().endswith(b"}\n")
    assert [p.name for p in (tmp_path / "maps" / "m").iterdir()] == ["000000.npz"]  # b's shard removed
    np.testing.assert_array_equal(st.load_map(read_records(tmp_path)[0]), np.ones((2, 2)))
    st.close()


def test_job_settings_must_match_to_resume(folder, tmp_path, capsys):
    from xattr_jax.app.cli import main

    out = tmp_path / "o"
    args = ["explain", str(folder / "images" / "img_0001.png"), str(folder / "images" / "img_0002.png"),
            "--checkpoint", "embedded:small_vgg", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main([*args, "--figures", "svg"]) == 0
    recs = read_records(out)
    assert [(r["image"], r["method"]) for r in recs] == [("img_0001", "grad_cam"), ("img_0002", "grad_cam")]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["img_0001.svg", "img_0002.svg"]
    assert main([*args, "--top-k", "3"]) == 2
    err = capsys.readouterr().err
    assert "other settings (top_k: 1 there, 3 now)" in err and err.count("\n") == 1
    assert json.loads((out / "job.json").read_text())["top_k"] == 1


def _maps_by_key(out):
    return {(r["image"], r["method"], r["target"]): (r, load_map(out, r)) for r in read_records(out)}


def _same_maps(a, b):
    assert set(a) == set(b)
    for k, (ra, ma) in a.items():
        rb, mb = b[k]
        assert ra["status"] == rb["status"] == "ok" and ra["predicted"] == rb["predicted"]
        assert np.abs(ma - mb).max() <= 1e-5 * max(float(np.abs(ma).max()), 1e-30), k


def test_job_on_8_devices_and_on_2_processes_equals_one_device(folder, tmp_path):
    """The same job on one device, sharded over 8 forced host devices, and split over two processes
    under ``jax.distributed`` (each with its own records file) gives the same maps."""

    names = sorted((folder / "images").glob("img_00[0-2]*.png"))[:24]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p) for p in names) + "\n")
    base = [sys.executable, "-m", "xattr_jax.app.cli", "explain", str(lst), "--checkpoint", "embedded:small_vgg",
            "--method", "gradient,excitation_backprop", "--batch-size", "8", "--no-progress"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    one = subprocess.run([*base, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    assert "on 1 device(s)" in one.stdout
    eight = subprocess.run([*base, "--out", str(tmp_path / "eight")], capture_output=True, text=True,
                           env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})  # fmt: skip
    assert eight.returncode == 0, eight.stderr
    assert "24 image(s) attributed on 8 device(s)" in eight.stdout
    _same_maps(_maps_by_key(tmp_path / "one"), _maps_by_key(tmp_path / "eight"))

    run_on_two_processes(base, tmp_path / "two", env)
    files = sorted(f.name for f in (tmp_path / "two").glob("records*.jsonl"))
    assert files == ["records-p0-of-2.jsonl", "records-p1-of-2.jsonl"]
    for f in files:  # each process took its half
        assert len((tmp_path / "two" / f).read_text().splitlines()) == 24
    _same_maps(_maps_by_key(tmp_path / "one"), _maps_by_key(tmp_path / "two"))
