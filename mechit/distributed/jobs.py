"""Per-example jobs spread over shards or Ray actors: ``mechit compare --shard I/N`` and ``--ray``.

A job is an object that does the per-prompt work of a run one example at a time and keeps
it in atomic records (``mechit compare``'s :class:`mechit.pipeline.prompt_work.PromptJob`):

- ``job.out``: the run directory; ``job.examples``: the PromptRecords in file order;
  ``job.response_tokens``: the response length the split assumes (None: the records' own);
- ``job.missing(record)``: whether some record of that example is not written yet (no model needed);
- ``job.loaded()``: the job, ready to work (its models loaded), built once per process;
- ``job(record)``: do what is missing of that example, write its records.

:func:`run_job_shard` does the examples of one shard (the split of
:func:`mechit.distributed.shards.shard_records`, the same as ``mechit attribute --shard``);
:func:`run_job_on_ray` hands every missing example to Ray actors
(:func:`mechit.distributed.ray_runner.run_tasks_on_ray`), longest first. Both return how many
examples of the run still miss records; at 0 the caller goes on to build the tables in
process (the comparison finds every record done).

>>> from pathlib import Path
>>> from mechit.data.prompts import PromptRecord
>>> class Count:                     # a toy job: an example is done once it is counted
...     out, examples, response_tokens, done = Path("run"), [PromptRecord(f"e{k}", "a b", "c") for k in range(4)], None, set()
...     def missing(self, r): return r.id not in self.done
...     def loaded(self): return self
...     def __call__(self, r): self.done.add(r.id); return r.id
>>> job = Count()
>>> run_job_shard(job, (0, 2), progress=False), run_job_shard(job, (1, 2), progress=False)
(2, 0)
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from mechit.distributed.lock import run_lock
from mechit.distributed.ray_runner import import_ray, run_tasks_on_ray
from mechit.distributed.shards import longest_first, shard_records
from mechit.store import remove_stale_temporaries


def pending(job) -> int:
    """How many examples of ``job`` still miss some record.

    >>> from mechit.data.prompts import PromptRecord
    >>> class Half:
    ...     examples = [PromptRecord(f"e{k}", "a", "b") for k in range(4)]
    ...     def missing(self, r): return r.id in ("e1", "e3")
    >>> pending(Half())
    2
    """
    return sum(job.missing(r) for r in job.examples)


def run_job_shard(job, shard: tuple[int, int], *, progress: bool = True) -> int:
    """Do the missing examples of shard ``shard = (I, N)`` of ``job`` in this process (holding
    the shard's lock, :mod:`mechit.distributed.lock`); return the examples of the run still missing.

    The job is loaded (its models) only when the shard has work.
    """
    index, n_shards = shard
    mine = shard_records(job.examples, index, n_shards, job.response_tokens)
    with run_lock(job.out, f"shard {index}/{n_shards}"):
        todo = [r for r in mine if job.missing(r)]
        if todo:
            work = job.loaded()
            for record in tqdm(todo, desc=f"per-prompt work (shard {index}/{n_shards})", unit="ex",
                               file=sys.stderr, disable=not progress):
                work(record)
    return pending(job)


def run_job_on_ray(job, address: str | None = None, workers: int | None = None, *, threads: int = 1,
                   retries: int = 3, progress: bool = True) -> int:
    """Do every missing example of ``job`` on Ray actors, longest first, each actor building
    ``job.loaded()`` once (holding the lock of the Ray driver); return the examples still missing
    (0 unless an example failed in a way that wrote no record).

    ``address``, ``workers``, ``threads``, ``retries``: see :func:`mechit.distributed.ray_runner.run_tasks_on_ray`.
    """
    import_ray()  # the one-line error before anything is done
    with run_lock(job.out, "ray driver"):
        remove_stale_temporaries(job.out)  # left by writers killed in an earlier run
        todo = [(r,) for r in longest_first(job.examples, job.response_tokens) if job.missing(r)]
        run_tasks_on_ray(todo, job.loaded, address=address, workers=workers, threads=threads, retries=retries,
                         progress=progress, desc="per-prompt work")
    return pending(job)
