"""Benchmark: a dataset attribution run on Ray with 1 and 2 workers against the in-process loop.

    .venv/bin/python benchmarks/distributed.py                       # the organism's 360 held-out prompts
    .venv/bin/python benchmarks/distributed.py --n-prompts 4         # a quick check that it works

Runs, one after another, on the same prompts and models (default: both organism models, as
``mechit compare`` attributes them):

1. the in-process run, as ``mechit attribute`` does it (:func:`mechit.attribution.attribute_dataset`,
   then :func:`mechit.attribution.dataset.write_dataset_tables`) with one torch thread;
2. :func:`mechit.distributed.run_on_ray` with 1 worker, then with 2 workers (1 thread
   each), on a local Ray cluster of ``--cpus`` CPUs (default 2) started once beforehand.

Every time is end to end, as a user sees it: model loading (and, on Ray, starting the
actor processes) and writing the tables included. ``speedup_2_workers`` is the 1-worker
time over the 2-worker time; ``overhead_ms_per_example`` is the 1-worker time minus the
in-process time, per example: Ray's task submission, scheduling and result transfer,
plus the actor's start amortised over the run. ``identical`` says whether all three runs
wrote byte-identical files (tables, records, tensors, manifest); when they did not, the
files that differ are printed (and listed under ``differing``). The last line is one JSON
object. On a shared machine the times say little; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mechit.attribution.dataset import attribute_dataset, write_dataset_tables
from mechit.data.prompts import read_prompts
from mechit.distributed import run_on_ray
from mechit.organism import held_out_prompts


def files_of(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def differing(reference: Path, other: Path) -> list[str]:
    """The files of either directory that the other lacks or holds with other bytes, sorted."""
    a, b = files_of(reference), files_of(other)
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def in_process(specs: list[str], records, out: Path) -> None:
    """The single-process run, as ``mechit attribute`` does it: the records, then the tables."""
    examples, tokens = attribute_dataset(specs, records, out, progress=False)
    write_dataset_tables(examples, tokens, out)


def prompt_set(n_prompts: int | None, directory: Path):
    """The organism's held-out prompts (the first ``n_prompts``, tasks interleaved so any prefix mixes them)."""
    by_task: dict = {}
    for record in held_out_prompts():
        by_task.setdefault(record["group"], []).append(record)
    interleaved = [r for rank in range(max(map(len, by_task.values())))
                   for task in sorted(by_task) for r in by_task[task][rank:rank + 1]]
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in interleaved[:n_prompts]), encoding="utf-8")
    return read_prompts(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=None, help="first N prompts (default: all 360)")
    parser.add_argument("--model", action="append",
                        help="model spec, repeatable (default: organism-base and organism-tuned)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    import ray

    specs = args.model or ["organism-base", "organism-tuned"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = prompt_set(args.n_prompts, tmp)
        n = len(records) * len(specs)
        print(f"{len(records)} prompts x {len(specs)} model(s) = {n} examples", file=sys.stderr)

        torch.set_num_threads(1)
        start = time.perf_counter()
        in_process(specs, records, tmp / "local")
        local = time.perf_counter() - start
        print(f"in process, 1 thread: {local:.1f} s ({n / local:.2f} examples/s)", file=sys.stderr)

        ray.init(num_cpus=args.cpus, log_to_driver=False, include_dashboard=False)
        seconds = {}
        for workers in (1, 2):
            start = time.perf_counter()
            run_on_ray(specs, records, tmp / f"ray{workers}", workers=workers, threads=1, progress=False)
            seconds[workers] = time.perf_counter() - start
            print(f"Ray, {workers} worker(s) x 1 thread: {seconds[workers]:.1f} s "
                  f"({n / seconds[workers]:.2f} examples/s)", file=sys.stderr)
        ray.shutdown()

        differ = {w: differing(tmp / "local", tmp / f"ray{w}") for w in (1, 2)}
        for w, names in differ.items():
            if names:
                print(f"Ray, {w} worker(s): {len(names)} files differ from the in-process run: "
                      f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}", file=sys.stderr)
    identical = not any(differ.values())
    print(json.dumps({"speedup_2_workers": round(seconds[1] / seconds[2], 3),
                      "overhead_ms_per_example": round(1000 * (seconds[1] - local) / n, 1),
                      "identical": identical, **({} if identical else {"differing": sorted(set().union(*differ.values()))}),
                      "n_examples": n, "seconds_in_process": round(local, 2),
                      "seconds_1_worker": round(seconds[1], 2), "seconds_2_workers": round(seconds[2], 2)}))


if __name__ == "__main__":
    main()
