"""The results of a dataset job on disk: ``OUT/records.jsonl`` and the maps' array shards.

Layout of ``OUT``:

* ``records.jsonl`` — one JSON object per line, per (image, method, target): at least ``image``,
  ``method``, ``target`` and ``status`` (``"ok"``, or why not: ``"unreadable: ..."`` for a file that
  cannot be decoded, ``"failed: ..."`` for an attribution that raised). ``of`` is the number of
  records of that (image, method); ok records name their map's shard (``map_file``) and key in it
  (``map_key``).
* ``maps/<method>/<shard>.npz`` — the maps of one batch (``numpy.load(...)[map_key]``).
* Under ``jax.distributed`` with more than one process, process ``p`` of ``n`` writes
  ``records-p{p}-of-{n}.jsonl`` and shards prefixed ``p{p}-``; :func:`read_records` reads them all.

Writes are ordered so that a job killed at any moment (SIGKILL included) leaves a state the same
command resumes from: the batch's shard is written to a temporary name and renamed, then its records
are appended in one write and flushed to disk. On opening, a torn last line is cut off and an
(image, method) whose records are not all there is dropped (it is done again); shards no record
names are removed. An (image, method) with all its records — whatever their status — is done.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["RecordStore", "read_records", "records_file", "load_map"]


def records_file(out, process_index: int = 0, process_count: int = 1) -> Path:
    """The records file of one process."""
    name = "records.jsonl" if process_count == 1 else f"records-p{process_index}-of-{process_count}.jsonl"
    return Path(out) / name


def _read_lines(path: Path) -> tuple[list[dict], int]:
    """Complete records and the byte length they span (a torn last line is not counted)."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    recs = []
    for line in data[:end].splitlines():
        if line.strip():
            recs.append(json.loads(line))
    return recs, end


def _complete(recs: list[dict]) -> list[dict]:
    """Only the (image, method) groups whose ``of`` records are all present."""
    count = Counter((r["image"], r["method"]) for r in recs)
    return [r for r in recs if count[(r["image"], r["method"])] == r.get("of", 1)]


def read_records(out) -> list[dict]:
    """Every complete record under ``out`` (all processes' files), in file order."""
    out = Path(out)
    files = sorted(out.glob("records*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no records.jsonl under {out}: run the job with --out {out} first")
    recs: list[dict] = []
    for f in files:
        recs += _complete(_read_lines(f)[0])
    return recs


class RecordStore:
    """Append-only, resumable store of one process's records and maps under ``out``.

    Args:
      out: the output folder (created).
      process_index, process_count: this process and how many write into ``out``.
      map_dtype: dtype the maps are stored in.
    """

    def __init__(self, out, process_index: int = 0, process_count: int = 1, map_dtype="float32"):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the job's records")
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = records_file(self.out, process_index, process_count)
        self.prefix = "" if process_count == 1 else f"p{process_index}-"
        self.map_dtype = np.dtype(map_dtype)
        recs, end = _read_lines(self.path)
        keep = _complete(recs)
        if len(keep) != len(recs) or end != (self.path.stat().st_size if self.path.exists() else 0):
            self._rewrite(keep)  # a torn line or an incomplete (image, method): cut it away
        self.records = keep
        self.done = {(r["image"], r["method"]) for r in keep}
        self._clean_shards()
        self._seq = self._next_seq()
        self._file = open(self.path, "ab")

    def _rewrite(self, recs: list[dict]) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(_line(r) for r in recs))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _clean_shards(self) -> None:
        used = {r["map_file"] for r in self.records if r.get("map_file")}
        for f in (self.out / "maps").glob(f"*/{self.prefix}*.npz*") if (self.out / "maps").exists() else ():
            rel = f.relative_to(self.out).as_posix()
            if rel not in used and (self.prefix or not re.match(r"p\d+-", f.name)):
                f.unlink()

    def _next_seq(self) -> int:
        pat = re.compile(re.escape(self.prefix) + r"(\d+)\.npz$")
        seqs = [int(m.group(1)) for f in self.out.glob("maps/*/*.npz") if (m := pat.match(f.name))]
        return max(seqs, default=-1) + 1

    def is_done(self, image: str, method: str) -> bool:
        return (image, method) in self.done

    def write(self, records: list[dict], maps: Optional[dict[str, dict[str, np.ndarray]]] = None) -> None:
        """Store ``maps`` (``{method: {map_key: map}}``; one shard per method) then the ``records``.

        Each ok record with a ``map_key`` gets the ``map_file`` of its method's shard.
        """
        files = {}
        for method, arrays in (maps or {}).items():
            if not arrays:
                continue
            rel = f"maps/{_safe(method)}/{self.prefix}{self._seq:06d}.npz"
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v, self.map_dtype) for k, v in arrays.items()})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            files[method] = rel
        if files:
            self._seq += 1
        for r in records:
            if r.get("map_key") is not None and r["method"] in files:
                r["map_file"] = files[r["method"]]
        self._file.write(b"".join(_line(r) for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records += records
        self.done |= {(r["image"], r["method"]) for r in records}

    def load_map(self, record: dict) -> np.ndarray:
        """The map of an ok record."""
        return load_map(self.out, record)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_map(out, record: dict) -> np.ndarray:
    """The map a record names (``OUT/map_file[map_key]``)."""
    with np.load(Path(out) / record["map_file"]) as z:
        return z[record["map_key"]]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _line(r: dict) -> bytes:
    return (json.dumps(r, sort_keys=True, allow_nan=True) + "\n").encode()
