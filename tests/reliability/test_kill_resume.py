"""Crash safety (issue 8 §1): SIGKILL ``mechit attribute`` at three seeded random points,
resume after each, and compare every output file byte-for-byte with an uninterrupted run.

The runs are real, separate processes forked from a server that imported mechit once
(``_fork_runner.py``; a fresh interpreter costs ~10 s of imports here). Models: the
embedded organism pair when its weights are installed, else two tiny Llama directories.
Prompts: 54 of ``mechit.organism.held_out_prompts()`` (6 per task), so 108 records.

Checks: no kill leaves a record that a resume rewrites (finished records keep their
mtime), the final file set and every file's bytes equal the uninterrupted run's (tables,
JSON records, safetensors, run manifest): no duplicate, partial or missing record; and no
temporary file is left after the final resume (the kills' leftovers, and one planted with
a dead writer's pid so that the check never depends on where a kill landed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from .forked import Runner, files, leftovers, plant_stale_temporary, records_done, running

SEED = 8
N_PER_TASK = 6
KILLS = 3


@pytest.fixture(scope="module")
def model_specs(tiny_pair_dirs):
    from mechit.organism.weights import weights_dir

    root = weights_dir()
    if (root / "base" / "config.json").is_file() and (root / "tuned" / "config.json").is_file():
        return ["organism-base", "organism-tuned"]
    return [str(p) for p in tiny_pair_dirs]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    from mechit.organism import held_out_prompts

    by_task: dict = {}
    for record in held_out_prompts():
        by_task.setdefault(record["group"], []).append(record)
    chosen = [r for task in sorted(by_task) for r in by_task[task][:N_PER_TASK]]
    assert len(chosen) >= 50
    path = tmp_path_factory.mktemp("kill") / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    return path


def test_sigkill_and_resume_gives_identical_files(model_specs, prompts_file, tmp_path):
    runner = Runner(tmp_path)
    try:
        def argv(out):
            return ["attribute", *[a for spec in model_specs for a in ("--model", spec)],
                    "--prompts", str(prompts_file), "--out", str(out), "--max-new-tokens", "8"]

        reference = tmp_path / "reference"
        status = runner.wait(runner.start(argv(reference), tmp_path / "reference.log"))
        assert status == 0, (tmp_path / "reference.log").read_text()[-3000:]
        total = len(records_done(reference))
        n_examples = sum(1 for _ in prompts_file.open())
        assert total == len(model_specs) * n_examples

        rng = random.Random(SEED)
        targets = sorted(rng.sample(range(3, total - 3), KILLS))
        out = tmp_path / "killed"
        survived, finished_before = 0, {}
        for target in targets:
            pid = runner.start(argv(out), tmp_path / "killed.log")
            deadline = time.monotonic() + 300
            while running(pid) and len(records_done(out)) < target and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.15))  # land anywhere in the next record's work or write
            os.kill(pid, signal.SIGKILL)
            status = runner.wait(pid)
            assert status == -signal.SIGKILL, f"the run ended ({status}) before kill at {target}"
            survived += 1
            done = records_done(out)
            # records finished before an earlier kill were not rewritten by the resume
            for path, mtime in finished_before.items():
                assert path.stat().st_mtime_ns == mtime, f"{path} rewritten by a resume"
            finished_before = {p: p.stat().st_mtime_ns for p in done}
            for path in done:  # every record on disk is complete JSON
                json.loads(path.read_text(encoding="utf-8"))
        stale = leftovers(out)  # what the kills left mid-write
        planted = plant_stale_temporary(out / "records")
        status = runner.wait(runner.start(argv(out), tmp_path / "killed.log"))
        assert status == 0, (tmp_path / "killed.log").read_text()[-3000:]
        for path, mtime in finished_before.items():
            assert path.stat().st_mtime_ns == mtime, f"{path} rewritten by the final resume"
    finally:
        runner.close()

    assert survived == KILLS
    assert leftovers(out) == [] and not planted.exists(), leftovers(out)
    got, want = files(out), files(reference)
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))[:10]
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"{len(differ)} files differ from the uninterrupted run, e.g. {differ[:5]}"
    examples = pd.read_parquet(out / "attribution_examples.parquet")
    assert len(examples) == total and not examples.duplicated(["model", "id"]).any()
    assert examples["error"].isna().all() and examples["instruction_score"].notna().all()
    assert len(list((out / "tensors").rglob("*.safetensors"))) == total
    print(f"kills survived: {survived} (after {targets} records of {total}); temporary files left by the kills "
          f"and removed by the resume: {len(stale)} (+1 planted)")


def _stages_done(out: Path) -> list[str]:
    try:
        return list(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["finished"])
    except (OSError, ValueError, KeyError):
        return []


def _stage_tables(out: Path) -> dict[Path, int]:
    """mtime of every table of the stages the manifest marks finished."""
    if not (out / "manifest.json").is_file():  # written when the first stage finishes
        return {}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    paths = [out / f"{t}.parquet" for stage in manifest["finished"].values() for t in stage["tables"]]
    return {p: p.stat().st_mtime_ns for p in paths}


def _compare_kill_and_resume(argv, n_examples: int, tmp_path: Path, seed: int) -> tuple[int, int]:
    """Kill `mechit compare` during attribution (after some records), during heads and during ffn
    (a random moment after the previous stage finished), resume after each, and compare every
    table, record and tensor with an uninterrupted run's, byte for byte; finished stages are
    never redone and no temporary file is left. Returns (kills survived, temporary files the
    kills left)."""
    runner = Runner(tmp_path)
    rng = random.Random(seed)
    try:
        reference = tmp_path / "reference"
        status = runner.wait(runner.start(argv(reference), tmp_path / "reference.log"))
        assert status == 0, (tmp_path / "reference.log").read_text()[-3000:]
        out = tmp_path / "killed"
        points = [("records", rng.randint(2, 2 * n_examples - 2)), ("stage", "attribution"), ("stage", "faithfulness"),
                  ("stage", "heads")]
        survived, finished_tables = 0, {}
        for kind, target in points:
            pid = runner.start(argv(out), tmp_path / "killed.log")
            deadline = time.monotonic() + 300
            while running(pid) and time.monotonic() < deadline:
                if kind == "records" and len(records_done(out)) >= target:
                    break
                if kind == "stage" and target in _stages_done(out):
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5 if kind == "stage" else 0.1))
            stages_before = _stages_done(out)
            os.kill(pid, signal.SIGKILL)
            status = runner.wait(pid)
            assert status == -signal.SIGKILL, f"the run ended ({status}) before the kill at {kind} {target}"
            survived += 1
            assert _stages_done(out)[: len(stages_before)] == stages_before
            for path, mtime in finished_tables.items():
                assert path.stat().st_mtime_ns == mtime, f"{path.name}: a finished stage was redone"
            finished_tables = _stage_tables(out)
        stale = leftovers(out)
        planted = plant_stale_temporary(out)
        status = runner.wait(runner.start(argv(out), tmp_path / "killed.log"))
        assert status == 0, (tmp_path / "killed.log").read_text()[-3000:]
        for path, mtime in finished_tables.items():
            assert path.stat().st_mtime_ns == mtime, f"{path.name}: a finished stage was redone"
    finally:
        runner.close()
    assert leftovers(out) == [] and not planted.exists(), leftovers(out)
    skip = {"summary.json", "manifest.json"}  # timings and versions
    got = {k: v for k, v in files(out).items() if k not in skip}
    want = {k: v for k, v in files(reference).items() if k not in skip}
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))[:10]
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"{len(differ)} files differ from the uninterrupted run, e.g. {differ[:5]}"
    assert _stages_done(out) == _stages_done(reference) == ["attribution", "faithfulness", "heads", "ffn"]
    return survived, len(stale)


def test_compare_sigkill_in_each_stage_and_resume(tiny_pair_dirs, prompts_file, tmp_path):
    """`mechit compare` on the tiny pair, killed once in each stage and resumed."""
    few = tmp_path / "prompts.jsonl"
    few.write_text("".join(prompts_file.read_text(encoding="utf-8").splitlines(keepends=True)[::5]), encoding="utf-8")
    n_examples = len(few.read_text(encoding="utf-8").splitlines())

    def argv(out):
        return ["compare", "--base", str(tiny_pair_dirs[0]), "--tuned", str(tiny_pair_dirs[1]), "--prompts", str(few),
                "--out", str(out), "--words", "200", "--max-new-tokens", "8", "--no-report"]

    survived, stale = _compare_kill_and_resume(argv, n_examples, tmp_path, SEED)
    assert survived == 4  # killed in attribution, faithfulness, heads and ffn
    print(f"compare kills survived: {survived}; temporary files left by the kills and removed by the resume: "
          f"{stale} (+1 planted)")


def _organism_installed() -> bool:
    from mechit.organism.weights import weights_dir

    return all((weights_dir() / name / "config.json").is_file() for name in ("base", "tuned"))


@pytest.mark.skipif(not _organism_installed(), reason="the organism weights are not built")
def test_compare_on_the_organism_pair_sigkill_in_each_stage_and_resume(tmp_path):
    """The same on the organism pair (shipped in the package, so CI runs it): the organism's own
    vocabulary, chat template and generated responses, 18 held-out prompts (2 per task), all
    three stages; about 20 s of stage work per run on one core."""
    from mechit.organism import held_out_prompts

    by_task: dict = {}
    for record in held_out_prompts():
        by_task.setdefault(record["group"], []).append(record)
    chosen = [r for task in sorted(by_task) for r in by_task[task][:2]]
    prompts = tmp_path / "organism.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")

    def argv(out):
        return ["compare", "--base", "organism-base", "--tuned", "organism-tuned", "--prompts", str(prompts),
                "--out", str(out), "--max-new-tokens", "8", "--no-report"]

    survived, stale = _compare_kill_and_resume(argv, len(chosen), tmp_path, SEED + 1)
    assert survived == 4  # killed in attribution, faithfulness, heads and ffn
    print(f"organism compare kills survived: {survived}; temporary files left by the kills and removed by the "
          f"resume: {stale} (+1 planted)")
