"""Issue 18 on the organism pair: Ray and sharded runs write exactly the files a single process writes.

A local Ray cluster (``ray.init(num_cpus=2)``) is started once for the module. Prompts:
one held-out prompt per task (13), under both models (26 records). The reference is
``attribute_dataset`` in this process; every run below must reproduce its whole output
directory byte for byte: both parquet tables, every JSON record, every safetensors file,
the run manifest, and nothing else (no lock or temporary file left behind).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mechit.attribution.dataset import attribute_dataset, run_summary, write_dataset_tables
from mechit.cli import main
from mechit.data.prompts import read_prompts
from mechit.distributed import run_on_ray, run_shard, shard_records
from mechit.distributed.lock import lock_path
from mechit.errors import InputError
from mechit.models import load_model
from mechit.organism import held_out_prompts
from mechit.store import RecordStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.distributed

SPECS = ["organism-base", "organism-tuned"]


N_RECORDS = 2 * 13  # one held-out prompt of each of the organism's 13 tasks, under both models


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    first_of_task: dict = {}
    for record in held_out_prompts():
        first_of_task.setdefault(record["group"], record)
    path = tmp_path_factory.mktemp("prompts") / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in first_of_task.values()), encoding="utf-8")
    return read_prompts(path)


def in_thread(function, **kwargs) -> tuple[threading.Thread, dict]:
    """Start ``function(**kwargs)`` in a thread; the dict gets its "value", or its "error"."""
    result: dict = {}

    def target():
        try:
            result["value"] = function(**kwargs)
        except BaseException as error:  # noqa: BLE001 - reported by the test's assertion
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def files_of(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(records, tmp_path_factory):
    """The single-process run's files. One torch thread, as each Ray worker has (threads=1)."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        examples, tokens = attribute_dataset(SPECS, records, out, progress=False)
        write_dataset_tables(examples, tokens, out)
        summary = run_summary(examples)
    finally:
        torch.set_num_threads(threads)
    assert summary["done"] == 2 * len(records) == N_RECORDS and summary["failed"] == 0
    files = files_of(out)
    assert {"attribution_examples.parquet", "attribution_tokens.parquet", "attribution_run.json"} <= set(files)
    assert sum(name.startswith("records/") for name in files) == N_RECORDS
    return files


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield
    ray.shutdown()


def test_two_workers_identical_and_a_second_driver_refused(cluster, records, reference, tmp_path):
    out = tmp_path / "ray"
    driver, first = in_thread(run_on_ray, specs=SPECS, records=records, out=out, workers=2, progress=False)
    lock = lock_path(out, "ray driver")
    while not lock.exists() and driver.is_alive():
        time.sleep(0.05)
    # a second driver on the same directory, while the first runs: refused, naming the live one
    with pytest.raises(InputError, match=rf"another mechit ray driver is running on this directory \(pid {os.getpid()} "):
        run_on_ray(SPECS, records, out, workers=2, progress=False)
    driver.join()
    assert "error" not in first, first.get("error")
    assert first["value"]["done"] == N_RECORDS and first["value"]["failed"] == 0
    assert files_of(out) == reference
    ours = pd.read_parquet(out / "attribution_examples.parquet")
    assert not ours.duplicated(["model", "id"]).any()


@pytest.fixture
def one_thread():
    """One torch thread, as the reference run and each Ray worker have: the products' rounding
    depends on how the work is split between threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_three_shards_then_merge_identical(records, reference, tmp_path, one_thread):
    out = tmp_path / "shards"
    shards = [shard_records(records, i, 3) for i in range(3)]
    assert sorted(r.id for s in shards for r in s) == sorted(r.id for r in records)
    pending = []
    for i in range(3):
        summary = run_shard(SPECS, records, out, shard=(i, 3), progress=False)
        assert summary["done"] == (N_RECORDS if i == 2 else 2 * len(shards[i]))
        pending.append(summary["pending"])
    assert pending == [N_RECORDS - 2 * len(shards[0]), 2 * len(shards[2]), 0]  # the last shard merged by itself
    assert files_of(out) == reference
    # a shard rerun resumes: it finds its records and writes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (out / "records").rglob("*.json")}
    run_shard(SPECS, records, out, shard=(1, 3), progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # `mechit merge DIR` rebuilds the same tables from the records
    for table in ("attribution_examples.parquet", "attribution_tokens.parquet"):
        (out / table).unlink()
    assert main(["merge", str(out)]) == 0
    assert files_of(out) == reference


def report_pid_and_load(pid_dir: str, spec: str):
    """A loader that leaves its process id in ``pid_dir`` (one empty file per load), then loads."""
    Path(pid_dir, str(os.getpid())).touch()
    return load_model(spec)


def test_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, records, reference, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the loader is defined in this test module
    out, pids = tmp_path / "killed", tmp_path / "pids"
    pids.mkdir()
    loader = functools.partial(report_pid_and_load, str(pids))
    driver, result = in_thread(run_on_ray, specs=SPECS, records=records, out=out, workers=2, loader=loader,
                               progress=False)
    store = RecordStore(out)
    while sum(store.done(s, r.id) for s in SPECS for r in records) < 3 and driver.is_alive():
        time.sleep(0.05)
    started = {int(p.name) for p in pids.iterdir()}
    assert started and driver.is_alive()
    victim = min(started)
    os.kill(victim, signal.SIGKILL)
    driver.join()
    assert "error" not in result, result.get("error")
    assert result["value"]["done"] == N_RECORDS
    assert {int(p.name) for p in pids.iterdir()} - started  # Ray restarted the worker: a new process loaded a model
    assert files_of(out) == reference  # nothing lost, nothing duplicated, no temporary left
    assert len(list((out / "records").rglob("*.json"))) == N_RECORDS
