"""Shards of a tiny pair merge into a single process's files; merge refuses incomplete runs; the CLI options."""

import argparse
import json
import sys

import pytest

from mechit.attribution.dataset import attribute_dataset, write_dataset_tables
from mechit.cli import main
from mechit.commands.distributed_options import (
    add_distributed_options,
    distributed_runner,
    per_prompt_runner,
)
from mechit.data.prompts import read_prompts
from mechit.distributed import (
    merge,
    run_job_on_ray,
    run_job_shard,
    run_on_ray,
    run_shard,
)
from mechit.errors import InputError, MechitError


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    rows = [{"id": f"p{k}", "prompt": "Translate this text: " + "the cat " * k, "response": " le chat",
             "instruction_spans": [[0, 9]], "group": "translate"} for k in range(1, 6)]
    rows.insert(2, {"id": "bad-span", "prompt": "Say hi", "response": " hi", "instruction_spans": [[0, 50]]})
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return read_prompts(path)


def files_of(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_two_shards_equal_one_process_and_merge_refuses_a_partial_run(tiny_pair_dirs, records, tmp_path, capsys):
    specs = [str(d) for d in tiny_pair_dirs]
    single = tmp_path / "single"
    write_dataset_tables(*attribute_dataset(specs, records, single, progress=False), single, "csv")
    out = tmp_path / "sharded"
    first = run_shard(specs, records, out, shard=(0, 2), progress=False, table_format="csv")
    assert first["pending"] > 0 and not (out / "attribution_examples.csv").exists()
    with pytest.raises(InputError, match=rf"{first['pending']} of 12 records are missing"):
        merge(out)
    assert main(["merge", str(out)]) == 2
    assert "records are missing" in capsys.readouterr().err.strip().splitlines()[-1]
    last = run_shard(specs, records, out, shard=(1, 2), progress=False, table_format="csv")
    assert last["pending"] == 0 and last["failed"] == 2 and last["done"] == 10
    assert files_of(out) == files_of(tmp_path / "single")
    with pytest.raises(InputError, match="holds a run with other settings"):  # shards must share the arguments
        run_shard(specs, records, out, shard=(1, 2), progress=False, table_format="csv", L=5)


def test_without_ray_one_line_says_how_to_install(monkeypatch, records, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(MechitError, match=r"^--ray needs Ray, which is not installed: pip install 'mechit\[ray\]'$"):
        run_on_ray(["organism-base"], records, tmp_path, workers=1)
    assert not tmp_path.joinpath("attribution_run.json").exists()  # refused before anything is written


def test_options_pick_the_runner():
    parser = argparse.ArgumentParser()
    add_distributed_options(parser)
    ray_runner = distributed_runner(parser.parse_args(["--ray", "ray://head:10001", "--workers", "3"]))
    assert ray_runner.func is run_on_ray and ray_runner.keywords == {"address": "ray://head:10001", "workers": 3,
                                                                      "threads": 1}
    assert distributed_runner(parser.parse_args(["--ray"])).keywords["address"] is None
    assert distributed_runner(parser.parse_args([])) is None
    with pytest.raises(InputError, match="--workers and --threads go with --ray"):
        distributed_runner(parser.parse_args(["--workers", "2"]))
    with pytest.raises(InputError, match="0..N-1"):
        distributed_runner(parser.parse_args(["--shard", "2/2"]))


def test_compare_options_pick_the_per_prompt_runner(monkeypatch, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_distributed_options(parser)
    shard = per_prompt_runner(parser.parse_args(["--shard", "1/3"]))
    assert shard.func is run_job_shard and shard.keywords == {"shard": (1, 3)}
    ray_runner = per_prompt_runner(parser.parse_args(["--ray", "--workers", "2", "--threads", "2"]))
    assert ray_runner.func is run_job_on_ray and ray_runner.keywords == {"address": None, "workers": 2, "threads": 2}
    assert per_prompt_runner(parser.parse_args([])) is None
    with pytest.raises(InputError, match="--shard and --ray exclude each other"):
        per_prompt_runner(parser.parse_args(["--shard", "0/2", "--ray"]))
    # without Ray, `mechit compare --ray` stops in one line before anything is written
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), "--ray"]) == 2
    assert capsys.readouterr().err == "mechit: error: --ray needs Ray, which is not installed: pip install 'mechit[ray]'\n"
    assert not out.exists()
