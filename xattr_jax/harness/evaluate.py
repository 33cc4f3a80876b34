"""``evaluate``: the evaluation protocols over a dataset, as a dataset job (resumable with ``out``).

Example:
  >>> from xattr_jax.data.samples import synthetic_samples
  >>> from xattr_jax.harness import evaluate, write_report
  >>> model, variables = load_embedded("small_vgg")
  >>> res = evaluate(model, variables, synthetic_samples(50), ["gradient", "grad_cam"],
  ...                preprocess="embedded")
  >>> write_report(res, "out/")
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence

from xattr_jax._constants import BOX_THRESHOLD, POINTING_TOLERANCE
from xattr_jax.harness import protocols
from xattr_jax.harness.job import run_job
from xattr_jax.harness.records import MemoryStore, RecordStore, read_records

__all__ = ["evaluate", "EB_METHODS", "harness_options"]

EB_METHODS = ("excitation_backprop", "contrastive_excitation_backprop")


def harness_options(method: str) -> dict:
    """Options the harness passes for ``method``: the pointing game's top signal for Excitation
    Backprop, ``signal="pointing"`` (TorchRay's and Caffe's: the class score map weighted by its
    softmax over positions); nothing for the other methods.

    The pointing signal asks nothing of the architecture: on a fully convolutional model's
    ``[N, h, w, classes]`` scores it is the spatial softmax, and on ``[N, classes]`` logits (a dense
    head, or a global pool) it is the one-hot logit itself, so those maps are the default signal's.
    """
    return {"signal": "pointing"} if method in EB_METHODS else {}


def evaluate(
    model,
    variables,
    samples: Sequence,
    methods: Sequence[str],
    *,
    preprocess: str,
    batch_size: int = 16,
    tolerance: float = POINTING_TOLERANCE,
    box_threshold: float = BOX_THRESHOLD,
    max_box_thresholds: Optional[Sequence[float]] = None,
    deletion_images: int = 32,
    deletion_steps: int = 64,
    score: str = "sigmoid",
    options: Optional[dict] = None,
    out=None,
    save_maps: bool = False,
    keep_maps: bool = False,
    progress: bool = True,
    settings: Optional[dict] = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the protocols (:mod:`xattr_jax.harness.protocols`) for each method on ``samples``.

    Args:
      model, variables: the model.
      samples: :class:`xattr_jax.data.samples.Sample` with trials (``synthetic_samples``,
        ``voc_samples``, ``coco_samples``, ``imagenet_samples``).
      methods: method names; one that cannot be built or whose calls raise gets an ``"error"``.
      preprocess: the preprocessing mode (:data:`xattr_jax.data.preprocess.PREPROCESSING`).
      batch_size: trials per attribution call (rounded up to a multiple of the local devices).
      tolerance: pointing-game radius in pixels.
      box_threshold: the box-accuracy threshold (fraction of the map's maximum).
      max_box_thresholds: the MaxBoxAcc sweep (default 0.1, 0.2, ..., 0.9).
      deletion_images: the first this many images also get deletion/insertion (0: none).
      deletion_steps: steps of the deletion/insertion curves.
      score: ``"sigmoid"`` or ``"softmax"`` probability for deletion/insertion.
      options: extra options per method, ``{method: {option: value}}``.
      out: a folder: records go to ``out/records.jsonl`` and a rerun resumes; ``None``: in memory.
        Under ``jax.distributed`` each process evaluates its share of ``samples`` and the result
        covers every process's records (``out`` required).
      save_maps: also store every trial's map (with ``out``).
      keep_maps: return the maps too, ``result["maps"] = {method: {(image key, class): map}}`` (the
        method's map at its own resolution; in memory, so without ``out``).
      progress: a progress bar on stderr.
      settings: with ``out``, the job's settings: written to ``OUT/job.json``, or checked against
        the ones there (a resumed job must have the same).
      log: where messages go (default: stderr).

    Returns:
      dict: ``num_images``, ``num_trials``, ``num_difficult``, ``unreadable`` (``[[key, why]]``),
      ``center`` (baseline) and ``methods`` ``{name: {pointing_all, pointing_difficult, box_acc,
      max_box_acc, max_box_acc_threshold, deletion_auc, insertion_auc, seconds}}`` or
      ``{"error": ...}``.

    Raises:
      xattr_jax.harness.records.JobError: ``out`` cannot be used (another job holds it, other
        settings, damaged files, a failed write).
    """
    import jax

    from xattr_jax.program import call_model

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if score not in ("sigmoid", "softmax"):
        raise ValueError(f"score must be 'sigmoid' or 'softmax', got {score!r}")
    if not samples:
        raise ValueError("no samples to evaluate")
    if out is None and jax.process_count() > 1:
        raise ValueError("under jax.distributed, evaluate needs out= (the processes share their records there)")
    ts = protocols.DEFAULT_THRESHOLDS if max_box_thresholds is None else tuple(max_box_thresholds)
    trials = [t for s in samples for t in s.trials]
    apply = jax.jit(call_model(model))
    squash = jax.nn.sigmoid if score == "sigmoid" else jax.nn.softmax
    predict = lambda x: squash(apply(variables, x))  # noqa: E731
    opts = {m: {**harness_options(m), **dict((options or {}).get(m, {}))} for m in methods}
    deletion_keys = {s.key for s in list(samples)[: max(0, deletion_images)]}
    n_proc = jax.process_count()
    if keep_maps and out is not None:
        raise ValueError("keep_maps keeps the maps in memory: use it without out= (or save_maps=True with out=)")
    store = MemoryStore() if out is None else RecordStore(out, jax.process_index(), n_proc,
                                                          settings=settings, log=say)  # fmt: skip
    try:
        job = run_job(
            model, variables, samples, methods, preprocess=preprocess, store=store, options=opts,
            plan=protocols.eval_plan(deletion_keys),
            consume=protocols.eval_consume(predict, tolerance=tolerance, box_threshold=box_threshold,
                                           thresholds=ts, deletion_steps=deletion_steps),
            batch_size=batch_size, save_maps=save_maps or keep_maps, progress=progress, log=say,
        )  # fmt: skip
    finally:
        if out is not None:
            store.close()
    records = store.records
    if out is not None and n_proc > 1:  # every process's records, once all have finished
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("xattr evaluate: records written")
        records = read_records(out, log=say)
    summary = protocols.summarise(records, ts)
    result: dict[str, Any] = {
        "num_images": len(samples),
        "num_trials": len(trials),
        "num_difficult": int(sum(bool(t.difficult) for t in trials)),
        "difficult_flags": all(t.difficult is not None for t in trials),
        "unreadable": sorted({(r["image"], r["status"]) for r in records
                              if r["status"].startswith("unreadable")}),  # fmt: skip
        "tolerance_px": tolerance,
        "box_threshold": box_threshold,
        "deletion_images": len(deletion_keys),
        "deletion_steps": deletion_steps,
        "score": score,
        "center": protocols.center_baseline(samples, tolerance),
        "methods": {},
    }
    for m in methods:
        entry = summary.get(m)
        if m in job.failed:
            say(f"{m}: failed ({job.failed[m]})")
            result["methods"][m] = {"error": job.failed[m]}
        elif entry is None:
            result["methods"][m] = {"error": "no record (every image unreadable)"}
        else:
            entry["seconds"] = round(job.seconds.get(m, 0.0), 2)
            result["methods"][m] = entry
    if keep_maps:
        result["maps"] = {m: {} for m in methods}
        for r in records:
            if r["status"] == "ok" and r.get("protocol") == "pointing":
                result["maps"][r["method"]][(r["image"], r["target"])] = store.load_map(r)
    return result
