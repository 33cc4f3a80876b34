"""The dataset harness: jobs over whole datasets, the evaluation protocols, reports.

* :mod:`~xattr_jax.harness.pipeline` — the input pipeline (grain: parallel decode, resize, prefetch).
* :mod:`~xattr_jax.harness.job` — :func:`run_job`: stream, batch, shard over the local devices,
  attribute, record; resumable.
* :mod:`~xattr_jax.harness.records` — ``OUT/records.jsonl`` and the map shards, one job at a time.
* :mod:`~xattr_jax.harness.protocols` — the evaluation protocols, one function per metric.
* :mod:`~xattr_jax.harness.evaluate` — :func:`evaluate`: the protocols as a job.
* :mod:`~xattr_jax.harness.report` — markdown and JSON reports.
* :mod:`~xattr_jax.harness.progress` — the jobs' progress bars (rich) and what Ctrl-C reports.

The commands over it, ``xattr explain`` and ``xattr eval``, are in :mod:`xattr_jax.app`.
"""

from .evaluate import evaluate
from .job import JobResult, Task, run_job, top_k_plan
from .pipeline import Loaded, load, stream
from .records import JobError, MemoryStore, RecordStore, RecordsWarning, load_map, read_records
from .report import markdown_table, write_report

__all__ = [
    "evaluate",
    "markdown_table",
    "write_report",
    "run_job",
    "top_k_plan",
    "Task",
    "JobResult",
    "MemoryStore",
    "RecordStore",
    "JobError",
    "RecordsWarning",
    "read_records",
    "load_map",
    "Loaded",
    "load",
    "stream",
]
