"""The results of a dataset job on disk: ``OUT/records.jsonl`` and the maps' array shards.

Layout of ``OUT``:

* ``records.jsonl`` — one JSON object per line, per (image, method, target): at least ``image``,
  ``method``, ``target`` and ``status`` (``"ok"``, or why not: ``"unreadable: ..."`` for a file that
  cannot be decoded, ``"failed: ..."`` for an attribution that raised). ``of`` is the number of
  records of that (image, method); ``content`` is the image's ``"<bytes>:<hash>"``
  (:meth:`xattr_jax.data.samples.Sample.fingerprint`); ok records name their map's shard
  (``map_file``, whose size is ``map_size``) and key in it (``map_key``).
* ``maps/<method>/<shard>.npz`` — the maps of one batch (``numpy.load(...)[map_key]``).
* ``job.json`` — the job's settings; ``.lock`` — held by the running job (its pid and host).
* Under ``jax.distributed`` with more than one process, process ``p`` of ``n`` writes
  ``records-p{p}-of-{n}.jsonl``, shards prefixed ``p{p}-`` and holds ``.lock-p{p}-of-{n}``;
  :func:`read_records` reads them all.

One job at a time: a :class:`RecordStore` holds an exclusive lock (``fcntl.flock``) on its lock file
for its lifetime, so a second job on the same ``OUT`` is refused with the holder's pid and host. The
lock dies with its process (SIGKILL included): a stale lock file never blocks a rerun.

Writes are ordered so that a job killed at any moment (SIGKILL included) leaves a state the same
command resumes from: the batch's shard is written to a temporary name and renamed, then its records
are appended in one write and flushed to disk; a write that fails (full disk, read-only folder) is
undone before the error is raised. On opening, a torn last line is cut off; duplicated records are
dropped; an (image, method) whose records are not all there, or whose map shard is missing, of
another size, unreadable or without its key, is dropped (it is done again); shards no record names
are removed. A line in the middle that is not a record is refused (:class:`JobError`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["JobError", "RecordsWarning", "MemoryStore", "RecordStore", "read_records", "records_file", "load_map"]

REQUIRED = ("image", "method", "status")


class JobError(Exception):
    """An output folder a job cannot use as asked: one line naming the problem and the fix."""


class RecordsWarning(UserWarning):
    """Records dropped while reading (duplicates, missing or damaged map shards)."""


def records_file(out, process_index: int = 0, process_count: int = 1) -> Path:
    """The records file of one process."""
    name = "records.jsonl" if process_count == 1 else f"records-p{process_index}-of-{process_count}.jsonl"
    return Path(out) / name


def _os_error(err: OSError, fix: str) -> JobError:
    """A one-line :class:`JobError` for an OS failure: what failed, on which path, and the fix."""
    where = f" {os.fsdecode(err.filename)}" if err.filename is not None else ""
    return JobError(f"cannot write{where}: {err.strerror or err}; {fix}")


def _read_lines(path: Path) -> tuple[list[dict], int]:
    """Complete records and the byte length they span (a torn last line is not counted).

    Raises:
      JobError: a line before the last that is not a JSON record (``image``, ``method``, ``status``).
    """
    try:
        data = path.read_bytes() if path.exists() else b""
    except OSError as err:
        raise JobError(f"cannot read {path}: {err.strerror or err}; make it readable") from None
    end = data.rfind(b"\n") + 1
    recs = []
    for lineno, line in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            why = None if isinstance(rec, dict) else "not a JSON object"
            why = why or next((f"no {k!r}" for k in REQUIRED if k not in rec), None)
        except ValueError as err:
            why = str(err).splitlines()[0]
        if why:
            raise JobError(f"{path}:{lineno} is not a record ({why}); delete that line (its image is "
                           "done again) or give another --out")  # fmt: skip
        recs.append(rec)
    return recs, end


def _identity(r: dict) -> tuple:
    """What makes a record one task's: image, method, target and the task's fields."""
    return (r["image"], r["method"], r.get("target"), r.get("rank"), r.get("protocol"), r.get("trial"))


def _group(r: dict) -> tuple[str, str]:
    return r["image"], r["method"]


class _ShardCheck:
    """Whether a record's map shard is there, of its recorded size, readable and holding its key
    (the zip directory is read, not the arrays: a damaged array fails its CRC when loaded)."""

    def __init__(self, out: Path):
        self.out = out
        self.seen: dict[str, tuple[int, frozenset]] = {}

    def _look(self, rel: str) -> tuple[int, frozenset]:
        try:
            with zipfile.ZipFile(self.out / rel) as z:
                keys = frozenset(n[:-4] for n in z.namelist() if n.endswith(".npy"))
            return (self.out / rel).stat().st_size, keys
        except (OSError, zipfile.BadZipFile, ValueError):
            return -1, frozenset()

    def __call__(self, r: dict) -> bool:
        rel = r.get("map_file")
        if not rel:
            return True
        if rel not in self.seen:
            self.seen[rel] = self._look(rel)
        size, keys = self.seen[rel]
        return size >= 0 and r.get("map_size", size) == size and r.get("map_key") in keys


def _usable(recs: list[dict], out: Path) -> tuple[list[dict], list[str]]:
    """The records to keep: duplicates dropped, then only (image, method) groups with all their ``of``
    records and every map shard usable. Returns the records and one line per kind of drop."""
    seen, unique = set(), []
    for r in recs:
        k = _identity(r)
        if k not in seen:
            seen.add(k)
            unique.append(r)
    said = []
    if len(unique) < len(recs):
        said.append(f"{len(recs) - len(unique)} duplicated record(s) dropped (one of each kept)")
    check = _ShardCheck(out)
    count = Counter(_group(r) for r in unique)
    broken = {_group(r) for r in unique if not check(r)}
    if broken:
        said.append(f"{len(broken)} (image, method) pair(s) whose map shard is missing or damaged "
                    f"(e.g. {next(iter(sorted(broken)))[0]}) dropped")  # fmt: skip
    keep = [r for r in unique if count[_group(r)] == r.get("of", 1) and _group(r) not in broken]
    return keep, said


def read_records(out, log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Every complete record under ``out`` (all processes' files), in file order.

    Duplicated records are dropped (one kept) and so are the (image, method) pairs whose map shard
    is missing or damaged; each kind of drop is reported once through ``log`` (default: a
    :class:`RecordsWarning`).

    Raises:
      FileNotFoundError: no records file under ``out``.
      JobError: a line in the middle of a records file that is not a record.
    """
    out = Path(out)
    files = sorted(out.glob("records*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no records.jsonl under {out}: run the job with --out {out} first")
    recs: list[dict] = []
    for f in files:
        keep, said = _usable(_read_lines(f)[0], out)
        recs += keep
        _report([f"{f}: {line}" for line in said], log)
    return recs


def _report(lines: list[str], log: Optional[Callable[[str], None]]) -> None:
    for msg in lines:
        log(msg) if log else warnings.warn(msg, RecordsWarning, stacklevel=3)


class MemoryStore:
    """The records and maps of a job, in memory; :class:`RecordStore` keeps them in ``OUT``."""

    def __init__(self):
        self.records: list[dict] = []
        self.maps: dict[tuple[str, str], np.ndarray] = {}
        self._index()

    def _index(self) -> None:
        self.done = {_group(r): r for r in self.records}

    def is_done(self, image: str, method: str) -> bool:
        return (image, method) in self.done

    def redo(self, content: dict[str, Optional[str]]) -> int:
        """Forget the records of the images in ``content`` (``{key: fingerprint}``) that were
        unreadable or recorded with other content; returns how many (image, method) pairs."""
        stale = {g for g, r in self.done.items() if g[0] in content
                 and (r["status"].startswith("unreadable") or r.get("content") != content[g[0]])}  # fmt: skip
        if stale:
            self.forget(stale)
        return len(stale)

    def forget(self, groups: set) -> None:
        """Drop the records of ``groups`` (``(image, method)`` pairs)."""
        self.records = [r for r in self.records if _group(r) not in groups]
        self._index()

    def write(self, records: list[dict], maps: Optional[dict[str, dict[str, np.ndarray]]] = None) -> None:
        """Keep ``maps`` (``{method: {map_key: map}}``) and ``records``."""
        for method, arrays in (maps or {}).items():
            for k, v in arrays.items():
                self.maps[(method, k)] = np.asarray(v)
        self.records += records
        self.done.update((_group(r), r) for r in records)

    def load_map(self, record: dict) -> np.ndarray:
        """The map of an ok record."""
        return self.maps[(record["method"], record["map_key"])]


class RecordStore(MemoryStore):
    """Append-only, resumable store of one process's records and maps under ``out``, held by one job.

    Args:
      out: the output folder (created).
      process_index, process_count: this process and how many write into ``out``.
      map_dtype: dtype the maps are stored in.
      settings: the job's settings: written to ``OUT/job.json``, or checked against the ones there.
      log: where drops on opening are reported (default: a :class:`RecordsWarning`).

    Raises:
      JobError: ``out`` is a file or cannot be written, another job holds it, ``job.json`` is
        corrupt or holds other settings, or ``records.jsonl`` has a line that is not a record.
    """

    def __init__(self, out, process_index: int = 0, process_count: int = 1, map_dtype="float32",
                 settings: Optional[dict] = None, log: Optional[Callable[[str], None]] = None):  # fmt: skip
        super().__init__()
        self.out = Path(out)
        self.path = records_file(self.out, process_index, process_count)
        self.prefix = "" if process_count == 1 else f"p{process_index}-"
        self.map_dtype = np.dtype(map_dtype)
        self._lock_fd = self._fd = None
        fix = "give --out a folder you can write to"
        if self.out.exists() and not self.out.is_dir():
            raise JobError(f"--out {self.out} is a file; give a folder for the job's records")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock(".lock" if process_count == 1 else f".lock-p{process_index}-of-{process_count}")
            if settings is not None:
                self._settings(settings)
            recs, end = _read_lines(self.path)
            keep, said = _usable(recs, self.out)
            _report([f"{self.path}: {line}" for line in said], log)
            size = self.path.stat().st_size if self.path.exists() else 0
            self.records = keep
            if len(keep) != len(recs) or end != size:
                self._rewrite()  # a torn line, a duplicate or an incomplete (image, method): cut away
            self._index()
            self._clean_shards()
            self._seq = self._next_seq()
            self._open()
        except OSError as err:
            self.close()
            raise _os_error(err, fix) from None
        except JobError:
            self.close()
            raise

    def _lock(self, name: str) -> None:
        import fcntl

        path = self.out / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JobError(f"{self.out} is in use by another job ({holder}); wait for it to end, or give "
                           "another --out (two jobs on one folder would overwrite each other's maps)") from None  # fmt: skip
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)

    def _settings(self, settings: dict) -> None:
        path = self.out / "job.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as err:
                raise JobError(f"{path} is damaged ({str(err).splitlines()[0]}); delete {self.out} to "
                               "start over, or give another --out") from None  # fmt: skip
            new = json.loads(json.dumps(settings, default=str))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                k = diff[0]
                raise JobError(f"{self.out} holds a job run with other settings ({k}: {old.get(k)!r} there, "
                               f"{new.get(k)!r} now); use another --out, or delete {self.out} to start over")  # fmt: skip
            return
        tmp = self.out / f".job.json.{os.getpid()}"  # processes of one job may write it at once: atomically
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(_line(r) for r in self.records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._open()

    def _open(self) -> None:
        """(Re)open the records file for appending: after a rewrite it is a new file."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _clean_shards(self) -> None:
        used = {r["map_file"] for r in self.records if r.get("map_file")}
        maps = self.out / "maps"
        for f in maps.glob(f"*/{self.prefix}*.npz*") if maps.is_dir() else ():
            rel = f.relative_to(self.out).as_posix()
            if rel not in used and (self.prefix or not re.match(r"p\d+-", f.name)):
                f.unlink()

    def _next_seq(self) -> int:
        pat = re.compile(re.escape(self.prefix) + r"(\d+)\.npz$")
        seqs = [int(m.group(1)) for f in self.out.glob("maps/*/*.npz") if (m := pat.match(f.name))]
        return max(seqs, default=-1) + 1

    def forget(self, groups: set) -> None:
        """Drop the records of ``groups`` from the file too, and the shards no record names."""
        super().forget(groups)
        try:
            self._rewrite()
            self._clean_shards()
        except OSError as err:
            raise _os_error(err, "make --out writable, then run the same command again") from None

    def write(self, records: list[dict], maps: Optional[dict[str, dict[str, np.ndarray]]] = None) -> None:
        """Store ``maps`` (``{method: {map_key: map}}``; one shard per method) then the ``records``.

        Each ok record with a ``map_key`` gets the ``map_file`` and ``map_size`` of its method's
        shard. A failed write (full disk, a folder turned read-only) leaves the files as they were.

        Raises:
          JobError: the write failed (one line: the path, the OS's reason, how to resume).
        """
        written: list[Path] = []
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            files = {}
            for method, arrays in (maps or {}).items():
                if not arrays:
                    continue
                rel = f"maps/{_safe(method)}/{self.prefix}{self._seq:06d}.npz"
                path = self.out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                written.append(tmp)
                with open(tmp, "wb") as f:
                    np.savez(f, **{k: np.asarray(v, self.map_dtype) for k, v in arrays.items()})
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                written.append(path)
                files[method] = (rel, path.stat().st_size)
            for r in records:
                if r.get("map_key") is not None and r["method"] in files:
                    r["map_file"], r["map_size"] = files[r["method"]]
            data = memoryview(b"".join(_line(r) for r in records))
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as err:
            for p in written:  # undo this batch: nothing half-written stays
                _quietly(p.unlink, missing_ok=True)
            _quietly(os.ftruncate, self._fd, start)
            raise _os_error(err, "free space or make --out writable, then run the same command "
                            "again to resume") from None  # fmt: skip
        if files:
            self._seq += 1
        super().write(records)

    def load_map(self, record: dict) -> np.ndarray:
        """The map of an ok record."""
        return load_map(self.out, record)

    def close(self) -> None:
        """Close the records file and release the lock."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_map(out, record: dict) -> np.ndarray:
    """The map a record names (``OUT/map_file[map_key]``)."""
    with np.load(Path(out) / record["map_file"]) as z:
        return z[record["map_key"]]


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _line(r: dict) -> bytes:
    return (json.dumps(r, sort_keys=True, allow_nan=True) + "\n").encode()

