"""A dataset job: attribute every image of a dataset with several methods, on every local device.

:func:`run_job` streams the samples through the input pipeline (:func:`xattr_jax.harness.pipeline.stream`),
groups decoded images of one shape into batches, places each batch on all local devices (batch axis
sharded over a one-axis mesh, variables replicated; one compiled program per shape and method),
runs one forward for the predictions and each method on the (image, target) tasks, and hands the
maps to a ``consume`` hook (the evaluation protocols) and to a :class:`~xattr_jax.harness.records.RecordStore`
(``OUT/records.jsonl`` + map shards), batch by batch. Images whose methods are all recorded are
skipped, so running the same job again resumes it; images recorded unreadable, or whose file
changed since (:meth:`~xattr_jax.data.samples.Sample.fingerprint`), are done again.

Under ``jax.distributed`` (``distribute=True``) process ``p`` of ``n`` takes samples ``p, p + n, ...``
and attributes them on its own local devices; no collective crosses hosts.

Noise (SmoothGrad) is drawn from a key derived from the image's key and the target, so a map does
not depend on the batch an image lands in, or on whether the job was resumed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import zlib
from collections import defaultdict
from typing import Any, Callable, Optional, Sequence

import numpy as np

import xattr_jax as xa
from xattr_jax.data.samples import Sample
from xattr_jax.harness.pipeline import Loaded, stream
from xattr_jax.harness.progress import progress_bar

__all__ = ["Task", "JobResult", "run_job", "top_k_plan"]


@dataclasses.dataclass
class Task:
    """One attribution: an image, a target class, and fields its records carry (rank, protocol...)."""

    loaded: Loaded
    target: int
    fields: dict


@dataclasses.dataclass
class JobResult:
    """What a job did: records written per status, failed methods, seconds per method."""

    images: int = 0
    skipped: int = 0
    devices: int = 1
    records: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    failed: dict = dataclasses.field(default_factory=dict)  # method -> first error message
    seconds: dict = dataclasses.field(default_factory=lambda: defaultdict(float))
    unreadable: list = dataclasses.field(default_factory=list)  # (image key, reason)


def top_k_plan(k: int = 1, target: Optional[int] = None) -> Callable:
    """Tasks for an image: a fixed ``target``, or its ``k`` highest-scoring classes (``rank`` 0..k-1)."""

    def plan(loaded: Loaded, logits: np.ndarray) -> list[tuple[int, dict]]:
        if target is not None:
            return [(int(target), {})]
        order = np.argsort(-logits, kind="stable")[:k]
        return [(int(c), {"rank": r}) for r, c in enumerate(order)]

    return plan


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _fingerprint(sample: Sample) -> Optional[str]:
    try:
        return sample.fingerprint()
    except OSError:  # gone since: done again, and recorded unreadable
        return None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_job(
    model,
    variables,
    samples: Sequence[Sample],
    methods: Sequence[str],
    *,
    preprocess: str,
    store,
    plan: Optional[Callable] = None,
    consume: Optional[Callable] = None,
    options: Optional[dict] = None,
    batch_size: int = 16,
    key: int = 0,
    save_maps: bool = True,
    class_names: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    distribute: bool = True,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> JobResult:
    """Attribute ``samples`` with ``methods`` and write the records to ``store``.

    Args:
      model, variables: the model (a Flax module or a callable ``model(variables, x)``).
      samples: the images (:mod:`xattr_jax.data.samples`).
      methods: method names.
      preprocess: the preprocessing mode (:data:`xattr_jax.data.preprocess.PREPROCESSING`).
      store: a :class:`~xattr_jax.harness.records.RecordStore` or
        :class:`~xattr_jax.harness.records.MemoryStore`.
      plan: ``(loaded, logits) -> [(target, fields)]``, the tasks of one image (default: its top-1
        class, :func:`top_k_plan`).
      consume: ``(method, tasks, maps) -> [fields]``, per-task fields computed from the maps (e.g.
        the evaluation protocols); runs before the records are written.
      options: per-method options ``{method: {option: value}}``.
      batch_size: at most this many tasks per attribution call, rounded up to a multiple of the
        local device count; a smaller call is padded to the next power of two (a multiple of the
        devices), not to ``batch_size``: memory follows the data, with a few compilations per shape.
      key: seed of the noise keys (methods that draw noise).
      save_maps: store the maps in the records' shards.
      class_names: the model's class names; records then carry ``target_name``.
      threads: decoding threads (default: CPU count).
      distribute: under ``jax.distributed``, take this process's share of ``samples``.
      progress: a progress bar on stderr (images done, ETA).
      log: where messages go (default stderr).

    Returns:
      :class:`JobResult`. A method that cannot be built is in ``failed`` and gets no records; a call
      that raises gives its tasks ``status = "failed: ..."`` records and marks the method failed.
    """
    import jax
    import jax.numpy as jnp

    from xattr_jax.program import call_model

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    plan = plan or top_k_plan(1)
    result = JobResult(devices=len(jax.local_devices()))
    if distribute and jax.process_count() > 1:
        samples = list(samples)[jax.process_index() :: jax.process_count()]
    fns = {}
    for m in methods:
        try:
            fns[m] = xa.attributor(model, m, **dict((options or {}).get(m, {})))
        except Exception as err:  # reported per method; the others run
            result.failed[m] = _first_line(err)
            say(f"{m}: cannot be built ({result.failed[m]}); skipped")
    recorded = [s for s in samples if any(store.is_done(s.key, m) for m in fns)]
    if recorded:  # redo what was unreadable, and images whose file changed since
        redone = store.redo({s.key: _fingerprint(s) for s in recorded})
        if redone:
            say(f"{redone} (image, method) pair(s) unreadable before or changed since: done again")
    todo = [s for s in samples if any(not store.is_done(s.key, m) for m in fns)]
    result.skipped = len(samples) - len(todo)
    if not fns or not todo:
        return result

    devices = jax.local_devices()
    nd = len(devices)
    batch = int(math.ceil(batch_size / nd) * nd)
    if nd > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("batch",))
        put = lambda a: jax.device_put(a, NamedSharding(mesh, PartitionSpec("batch")))  # noqa: E731
        variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
    else:
        put = jnp.asarray
    forward = jax.jit(call_model(model))
    base = jax.random.key(key)
    keys_for = jax.jit(jax.vmap(lambda a, b: jax.random.fold_in(jax.random.fold_in(base, a), b)))

    def pad(rows: list) -> list:  # to a power-of-two bucket (a multiple of the devices), not to `batch`
        n = min(batch, -(-(1 << (len(rows) - 1).bit_length()) // nd) * nd)
        return rows + [rows[-1]] * (n - len(rows))

    def run_group(lds: list[Loaded], bar) -> None:
        x = np.stack(pad([ld.x for ld in lds]))
        xs = put(x)
        logits = np.asarray(forward(variables, xs))[: len(lds)]
        probs = _softmax(logits)
        tasks, of = [], {}
        for ld, z in zip(lds, logits):
            mine = [Task(ld, t, f) for t, f in plan(ld, z)]
            of[ld.sample.key] = len(mine)
            tasks += mine
        row = {id(ld): i for i, ld in enumerate(lds)}
        records, shards = [], defaultdict(dict)
        for m, fn in fns.items():
            mine = [t for t in tasks if not store.is_done(t.loaded.sample.key, m)]
            t0 = time.perf_counter()
            for a in range(0, len(mine), batch):
                chunk = mine[a : a + batch]
                full = pad(chunk)
                tx = np.stack([t.loaded.x for t in full])
                tt = np.array([t.target for t in full], np.int32)
                crc = np.array([zlib.crc32(t.loaded.sample.key.encode("utf-8", "surrogateescape")) for t in full],
                               np.uint32)  # fmt: skip
                try:
                    res = fn(variables, put(tx), put(tt), key=keys_for(crc, tt.astype(np.uint32)))
                    maps = np.asarray(res.map)[: len(chunk)]
                    extra = consume(m, chunk, maps) if consume else [{}] * len(chunk)
                except Exception as err:  # this method's tasks fail; the job goes on
                    msg = _first_line(err)
                    result.failed.setdefault(m, msg)
                    for t in chunk:
                        records.append(_record(t, m, of, f"failed: {msg}"))
                    continue
                for i, t in enumerate(chunk):
                    i_img = row[id(t.loaded)]
                    rec = _record(t, m, of, "ok")
                    rec.update(logit=float(logits[i_img, t.target]), prob=float(probs[i_img, t.target]),
                               predicted=int(np.argmax(logits[i_img])), **extra[i])  # fmt: skip
                    if class_names is not None:
                        rec["target_name"] = class_names[t.target]
                    if save_maps:
                        rec["map_key"] = f"{t.loaded.sample.key}#{t.target}"
                        rec["map_shape"] = list(maps[i].shape)
                        shards[m][rec["map_key"]] = maps[i]
                    records.append(rec)
            result.seconds[m] += time.perf_counter() - t0
        store.write(records, shards)
        for r in records:
            result.records[r["status"].split(":", 1)[0]] += 1
        result.images += len(lds)
        bar.advance(len(lds))

    with progress_bar(len(todo), f"{len(fns)} method(s) x {len(todo)} image(s)", progress, unit="images",
                      resumable=True) as bar:
        pending: dict[tuple, list[Loaded]] = defaultdict(list)
        for ld in stream(todo, preprocess, threads=threads, prefetch=2 * batch):
            if ld.error is not None:
                recs = [_record(Task(ld, None, {}), m, {ld.sample.key: 1}, ld.error)
                        for m in fns if not store.is_done(ld.sample.key, m)]  # fmt: skip
                store.write(recs)
                result.unreadable.append((ld.sample.key, ld.error))
                result.records["unreadable"] += len(recs)
                result.images += 1
                bar.advance(1)
                continue
            group = pending[ld.x.shape]
            group.append(ld)
            if len(group) == batch:
                run_group(pending.pop(ld.x.shape), bar)
        for group in pending.values():
            run_group(group, bar)
    return result


def _record(task: Task, method: str, of: dict, status: str) -> dict[str, Any]:
    key = task.loaded.sample.key
    rec = {"image": key, "method": method, "target": task.target, "status": status, "of": of[key]}
    if task.loaded.sample.path is not None:
        rec["file"] = str(task.loaded.sample.path)
    if task.loaded.content is not None:
        rec["content"] = task.loaded.content
    rec.update(task.fields)
    return rec
