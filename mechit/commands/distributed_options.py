"""The options that spread a dataset run over processes and machines: ``--shard I/N``,
``--ray [ADDRESS]``, ``--workers N``, ``--threads N`` (docs/distributed.md).

A command adds them with :func:`add_distributed_options`. ``mechit attribute`` calls the
runner that :func:`distributed_runner` picks (None: :func:`mechit.attribution.attribute_dataset`
in this process): the same arguments and files; it writes the tables itself once the run is
complete and returns the summary (plus ``pending`` for a shard). ``mechit compare`` hands
the runner that :func:`per_prompt_runner` picks to :func:`mechit.pipeline.run.compare`
(``per_prompt``): it does the per-prompt work of a shard or on Ray, and the comparison goes
on in process once every example has its records.
"""

from __future__ import annotations

import argparse
import functools

from mechit.commands.args import positive_int
from mechit.errors import InputError


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard``, ``--ray``, ``--workers`` and ``--threads`` to ``parser``.

    >>> parser = argparse.ArgumentParser()
    >>> add_distributed_options(parser)
    >>> args = parser.parse_args(["--ray", "--workers", "2"])
    >>> args.ray, args.workers, args.shard
    ('auto', 2, None)
    """
    group = parser.add_argument_group("distributed runs (docs/distributed.md)")
    group.add_argument("--shard", metavar="I/N",
                       help="process shard I (0-based) of N, a deterministic share balanced by token count, "
                            "into the shared --out; the last shard to finish writes the tables")
    group.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="run on Ray actors (pip install 'mechit[ray]'): a new local cluster, $RAY_ADDRESS, "
                            "or the cluster at ADDRESS")
    group.add_argument("--workers", type=positive_int, metavar="N",
                       help="with --ray: N CPU workers (default: one per GPU of the cluster, else one per CPU)")
    group.add_argument("--threads", type=positive_int, default=1, metavar="N", help="with --ray: torch threads per worker")


def distributed_runner(args: argparse.Namespace):
    """``run_shard`` / ``run_on_ray`` bound to the options, or None for a run in this process
    (:func:`mechit.attribution.attribute_dataset`).

    >>> parser = argparse.ArgumentParser()
    >>> add_distributed_options(parser)
    >>> distributed_runner(parser.parse_args(["--shard", "1/4"])).keywords
    {'shard': (1, 4)}
    >>> distributed_runner(parser.parse_args(["--shard", "0/2", "--ray"]))
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --shard and --ray exclude each other: Ray spreads the whole run itself
    """
    from mechit.distributed import parse_shard, run_on_ray, run_shard

    _check_together(args)
    if args.shard is not None:
        return functools.partial(run_shard, shard=parse_shard(args.shard))
    if args.ray is not None:
        return functools.partial(run_on_ray, address=None if args.ray == "auto" else args.ray,
                                 workers=args.workers, threads=args.threads)
    return None


def per_prompt_runner(args: argparse.Namespace):
    """The runner of ``mechit compare``'s per-prompt work for ``--shard`` or ``--ray``
    (:mod:`mechit.distributed.jobs`), or None for a run in this process.

    >>> parser = argparse.ArgumentParser()
    >>> add_distributed_options(parser)
    >>> per_prompt_runner(parser.parse_args(["--shard", "1/4"])).keywords
    {'shard': (1, 4)}
    >>> per_prompt_runner(parser.parse_args(["--workers", "2"]))
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --workers and --threads go with --ray
    """
    from mechit.distributed import parse_shard
    from mechit.distributed.jobs import run_job_on_ray, run_job_shard
    from mechit.distributed.ray_runner import import_ray

    _check_together(args)
    if args.shard is not None:
        return functools.partial(run_job_shard, shard=parse_shard(args.shard))
    if args.ray is not None:
        import_ray()  # without Ray: the one-line error before the comparison writes anything
        return functools.partial(run_job_on_ray, address=None if args.ray == "auto" else args.ray,
                                 workers=args.workers, threads=args.threads)
    return None


def _check_together(args: argparse.Namespace) -> None:
    """Refuse options that do not go together (--shard with --ray; --workers or --threads without --ray)."""
    if args.shard is not None and args.ray is not None:
        raise InputError("--shard and --ray exclude each other: Ray spreads the whole run itself")
    if args.ray is None and (args.workers is not None or args.threads != 1):
        raise InputError("--workers and --threads go with --ray")
