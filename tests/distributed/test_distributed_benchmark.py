"""benchmarks/distributed.py compares like with like: its in-process run writes what a distributed run writes.

The benchmark once printed ``"identical": false`` on any prompt set: its in-process run wrote
the records but not the tables, which every shard or Ray run writes. Its in-process run and a
one-shard run (no Ray needed) over 2 prompts must now leave the same files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mechit.distributed import run_shard

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "distributed.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("distributed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_in_process_run_leaves_the_files_of_a_distributed_run(benchmark, tmp_path):
    records = benchmark.prompt_set(2, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark's in-process run and its Ray workers
    try:
        benchmark.in_process(["organism-tuned"], records, tmp_path / "local")
        run_shard(["organism-tuned"], records, tmp_path / "shard", shard=(0, 1), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "local" / "attribution_examples.parquet").is_file()
    assert benchmark.differing(tmp_path / "local", tmp_path / "shard") == []
    (tmp_path / "local" / "attribution_tokens.parquet").unlink()
    assert benchmark.differing(tmp_path / "local", tmp_path / "shard") == ["attribution_tokens.parquet"]
