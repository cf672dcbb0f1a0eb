"""Issue 18 for ``mechit compare``: its per-prompt work in shards or on Ray gives the tables of one process.

Prompts: the first held-out prompt of 6 tasks, with their reference responses (fast), under
the organism pair; stages ``attribution,faithfulness`` (the heads and FFN stages are weight
work the finishing process does; instruction attention is checked through the job itself).
The reference is a single-process ``compare`` into its own directory; a run split into two
shards, then finished, and a run on 2 Ray workers must write the same per-prompt tables, byte
for byte, and the same records.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch

from mechit.cli import main
from mechit.distributed.jobs import run_job_on_ray, run_job_shard
from mechit.distributed.ray_runner import run_tasks_on_ray
from mechit.errors import InputError
from mechit.heads.attention import instruction_attention
from mechit.models import load_pair
from mechit.organism import held_out_prompts
from mechit.pipeline.prompt_work import PromptJob, attention_store, attention_table
from mechit.pipeline.run import Options, compare
from mechit.store import write_table

pytestmark = pytest.mark.distributed

ONLY = "attribution,faithfulness"
TABLES = ["attribution_examples", "attribution_tokens", "attribution_prompts", "attribution_stats",
          "faithfulness_examples", "faithfulness_summary"]
PER_PROMPT_FOLDERS = ("records", "tensors", "ablation")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    first_of_task: dict = {}
    for record in held_out_prompts():
        first_of_task.setdefault(record["group"], record)
    path = tmp_path_factory.mktemp("prompts") / "six.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in list(first_of_task.values())[:6]), encoding="utf-8")
    return path


def per_prompt_files(out: Path) -> dict:
    """Every per-prompt table and record of a compare directory, as bytes."""
    files = {f"{name}.parquet": (out / f"{name}.parquet").read_bytes() for name in TABLES}
    for folder in PER_PROMPT_FOLDERS:
        files.update({str(p.relative_to(out)): p.read_bytes() for p in sorted((out / folder).rglob("*"))
                      if p.is_file()})
    return files


@pytest.fixture(scope="module")
def reference(prompts, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    compare(prompts=prompts, out=out, only=ONLY, options=Options(response="reference"), progress=False,
            report=False)
    files = per_prompt_files(out)
    assert sum(name.startswith("ablation/records/") for name in files) == 12  # 6 examples x 2 models
    return files


def shard_args(prompts: Path, out: Path, shard: str) -> list[str]:
    return ["compare", "--prompts", str(prompts), "--out", str(out), "--only", ONLY, "--response", "reference",
            "--no-report", "--shard", shard]


def test_two_shards_then_finished_identical_to_one_process(prompts, reference, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(shard_args(prompts, out, "0/2")) == 0
    assert "examples still miss per-prompt records" in capsys.readouterr().err
    assert not (out / "attribution_examples.parquet").exists()  # the tables wait for the last shard
    # `mechit merge DIR` refuses while the other shard's examples miss records
    assert main(["merge", str(out)]) == 2
    assert "examples miss per-prompt records (first: " in capsys.readouterr().err
    # a shard given other arguments is refused by the manifest
    assert main(shard_args(prompts, out, "1/2") + ["--ablation", "mask"]) == 2
    assert "holds a run with other settings (differs in: options)" in capsys.readouterr().err
    assert main(shard_args(prompts, out, "1/2")) == 0  # the last shard finishes the comparison
    assert per_prompt_files(out) == reference
    # `mechit merge DIR` on a compare directory rebuilds the tables the same way
    for name in TABLES:
        (out / f"{name}.parquet").unlink()
    (out / "manifest.json").write_text(json.dumps({**json.loads((out / "manifest.json").read_text()),
                                                   "finished": {}}))
    assert main(["merge", str(out)]) == 0
    assert per_prompt_files(out) == reference


def refuse(value):
    raise InputError(f"example {value}: refused")


def make_refusing_work():
    """The work of an actor whose every task raises a MechitError."""
    return refuse


def test_two_ray_workers_identical_to_one_process(prompts, reference, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        out = tmp_path / "ray"
        compare(prompts=prompts, out=out, only=ONLY, options=Options(response="reference"), progress=False,
                report=False, per_prompt=functools.partial(run_job_on_ray, workers=2, progress=False))
        # a task's own error reaches the driver as it is, not wrapped in Ray's traceback
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with pytest.raises(InputError, match=r"^example 7: refused$"):
            run_tasks_on_ray([(7,)], make_refusing_work, workers=1, progress=False)
    finally:
        ray.shutdown()
    assert per_prompt_files(out) == reference
    assert not list(out.glob(".mechit-*.lock"))


def test_sharded_attention_records_give_the_single_process_table(prompts, tmp_path):
    """The heads stage's instruction_attention, from records written by 2 shards, equals
    ``pair.run(instruction_attention, records)`` (the table a single process wrote before it
    kept records), parquet byte for byte."""
    records = [json.loads(line) for line in prompts.read_text().splitlines()][:3]
    threads = torch.get_num_threads()
    try:
        job = PromptJob(tmp_path, {"base": "organism-base", "tuned": "organism-tuned"}, {}, records, ["heads"],
                        Options(response="reference"))
        assert [run_job_shard(job, (i, 2), progress=False) for i in range(2)][-1] == 0
        pair = load_pair()
        direct = pair.run(instruction_attention, records, chat_template=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    from_records = attention_table(attention_store(tmp_path), ["base", "tuned"], records)
    assert len(from_records) == 2 * 3 * pair.base.cfg.n_layers * pair.base.cfg.n_heads
    assert (write_table(from_records, tmp_path / "a.parquet").read_bytes()
            == write_table(direct, tmp_path / "b.parquet").read_bytes())
