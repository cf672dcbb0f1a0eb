"""Sharded and Ray runs of dataset attribution, merged into the tables a single process writes.

- :func:`run_shard`: ``--shard I/N``, one deterministic, token-balanced share of a run,
  for any scheduler (SLURM arrays, Kubernetes indexed jobs); the last shard merges.
- :func:`run_on_ray`: ``--ray [ADDRESS]``, actors that pull examples from a queue
  (the optional extra ``mechit[ray]``).
- :func:`merge`: ``mechit merge DIR``, the tables from the records.
- :func:`run_job_shard`, :func:`run_job_on_ray`: the same for per-example jobs, such as
  ``mechit compare``'s per-prompt work (:mod:`mechit.distributed.jobs`).

See docs/distributed.md.

>>> from mechit.distributed import parse_shard
>>> parse_shard("0/4")
(0, 4)
"""

from mechit.distributed.jobs import run_job_on_ray, run_job_shard
from mechit.distributed.merge import merge
from mechit.distributed.ray_runner import run_on_ray
from mechit.distributed.runs import run_shard
from mechit.distributed.shards import parse_shard, shard_records

__all__ = ["merge", "parse_shard", "run_job_on_ray", "run_job_shard", "run_on_ray", "run_shard", "shard_records"]
