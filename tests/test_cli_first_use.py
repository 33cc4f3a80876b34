"""The command line as a newcomer meets it: a fast help screen, help for every option, one-line
argument errors, Ctrl-C that says how far it got, and an ETA from measured throughput."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from xattr_jax.app.cli import _COMMANDS, _build_parser, main
from xattr_jax.harness.progress import EtaColumn, progress, progress_bar


def _subparser(command: str) -> argparse.ArgumentParser:
    p = _build_parser(command)
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[command]


def test_help_screen_loads_no_jax():
    code = ("import sys, time; t = time.perf_counter(); from xattr_jax.app.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('jax', 'flax', 'matplotlib') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "explain" in out.stdout and "convert" in out.stdout, "every command is listed"
    assert out.stdout.strip().splitlines()[-1] == "[]", f"`xattr --help` imported {out.stdout.splitlines()[-1]}"


@pytest.mark.parametrize("command", list(_COMMANDS))
def test_every_option_has_help(command):
    missing = [a.option_strings or a.dest for a in _subparser(command)._actions if not a.help]
    assert not missing, f"xattr {command}: options without help text: {missing}"


def test_argument_errors_are_one_line(capsys):
    for argv, word in ((["explain", "img.png", "--checkpoint", "c", "--out", "o.png", "--top-k", "0"], "--top-k"),
                       (["eval", "--out", "o", "--batch-size", "x"], "--batch-size"),
                       (["frobnicate"], "invalid choice")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2, (argv, e.value.code)
        assert len(err.strip().splitlines()) == 1 and word in err and "usage:" not in err, err


def test_eta_comes_from_the_throughput_after_the_first_item():
    now = [0.0]
    p = progress(enabled=False, get_time=lambda: now[0])
    task = p.add_task("images", total=10)
    col = EtaColumn()
    t = lambda: p.tasks[0]  # noqa: E731
    assert col.render(t()).plain == "ETA measuring", "no item done: nothing measured"
    now[0] = 30.0  # the first item, compilation included
    p.advance(task, 1)
    assert col.render(t()).plain == "ETA measuring", "one item (with compilation) is not a throughput"
    now[0] = 34.0  # two more items in 4 s: 2 s each, 7 left
    p.advance(task, 2)
    assert col.render(t()).plain == "ETA 0:00:14", col.render(t()).plain


def test_progress_bar_interrupt_says_how_far_it_got():
    with pytest.raises(KeyboardInterrupt) as e:
        with progress_bar(5, "images", enabled=False, unit="images", resumable=True) as bar:
            bar.advance(2)
            raise KeyboardInterrupt
    assert (e.value.done, e.value.total, e.value.unit) == (2, 5, "images")


def test_ctrl_c_on_a_job_is_one_line_and_exit_130(tmp_path):
    from xattr_jax.data.samples import synthetic_samples
    from xattr_jax.viz.imageio import write_image

    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for i, s in enumerate(synthetic_samples(40)):
        write_image(images / f"{i:03d}.png", s.pixels)
    argv = ["explain", str(images), "--checkpoint", "embedded:small_vgg", "--method", "smoothgrad",
            "--batch-size", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    # Ctrl-C as in a terminal, also where this test runs with SIGINT ignored (a background job)
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"from xattr_jax.app.cli import main; sys.exit(main({argv!r}))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "records.jsonl"
    t0 = time.perf_counter()
    while not (records.is_file() and records.read_text().count("\n") >= 2) and time.perf_counter() - t0 < 300:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"one line, got {len(lines)}: {err[-2000:]}"
    m = re.fullmatch(r"xattr explain: interrupted after (\d+) of 40 images; run the same command to resume",
                     lines[0])  # fmt: skip
    assert m, lines[0]
    done = {json.loads(line)["image"] for line in records.read_text().splitlines() if line.strip()}
    assert len(done) >= int(m.group(1)) >= 2, f"{len(done)} images recorded, {m.group(1)} said done"
