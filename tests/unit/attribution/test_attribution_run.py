"""Dataset runs: tables, raw safetensors, failures recorded, resume after interruption, CLI, stats."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import mechit.attribution.dataset as run_module
from mechit.attribution.example import attribute
from mechit.attribution.dataset import (EXAMPLE_COLUMNS, TOKEN_COLUMNS, attribute_dataset, run_summary,
                                        write_dataset_tables)
from mechit.cli import main
from mechit.models import load_model
from mechit.data.prompts import read_prompts
from mechit.store import RecordStore

FIXTURE = Path(__file__).parents[3] / "tests" / "fixtures" / "paper_prompts.tsv"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    rows = [
        {"id": "t1", "prompt": "Translate this text into french: the cat", "response": " le chat",
         "instruction_spans": [[0, 32]], "group": "translate", "label": "followed"},
        {"id": "t2", "prompt": "Write a story about a dog", "response": " the dog sat", "instruction_spans": [[0, 13]],
         "group": "write", "label": "not_followed"},
        {"id": "bad-span", "prompt": "Say hi", "response": " hi", "instruction_spans": [[0, 50]], "group": "write"},
        {"id": "too-long", "prompt": "word " * 300, "response": " ok", "group": "write"},
        {"id": "t3", "prompt": "Explain the question please", "response": " answer the question",
         "instruction_spans": [[0, 7]], "group": "translate", "label": "not_followed"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def files_of(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_dataset_run_tables_and_raw(tiny_pair_dirs, prompts, tmp_path):
    specs = [str(d) for d in tiny_pair_dirs]
    records = read_prompts(prompts)
    frames = attribute_dataset(specs, records, tmp_path, progress=False)
    summary = run_summary(frames[0])
    assert summary["done"] == 6 and summary["failed"] == 4
    assert not list(tmp_path.glob("attribution_*.parquet"))  # writing is the caller's step
    write_dataset_tables(*frames, tmp_path)
    examples = pd.read_parquet(tmp_path / "attribution_examples.parquet")
    tokens = pd.read_parquet(tmp_path / "attribution_tokens.parquet")
    pd.testing.assert_frame_equal(examples, frames[0])
    pd.testing.assert_frame_equal(tokens, frames[1])
    assert list(examples.columns) == EXAMPLE_COLUMNS and list(tokens.columns) == TOKEN_COLUMNS
    assert EXAMPLE_COLUMNS[0] == TOKEN_COLUMNS[0] == "model"  # the one convention: model first
    assert list(examples.model) == [specs[0]] * 5 + [specs[1]] * 5
    assert list(examples.id) == ["t1", "t2", "bad-span", "too-long", "t3"] * 2
    errors = dict(zip(examples.id, examples.error))
    assert "example 'bad-span'" in errors["bad-span"] and "field 'instruction_spans'" in errors["bad-span"]
    assert "example 'too-long'" in errors["too-long"] and "context window" in errors["too-long"]
    # the stored numbers are those of a direct call
    model = load_model(specs[1])
    direct = attribute(model, records[0].prompt, records[0].response, instruction_spans=[(0, 32)])
    row = examples[(examples.model == specs[1]) & (examples.id == "t1")].iloc[0]
    assert row.instruction_score == pytest.approx(direct.score, rel=1e-6)
    assert row.n_prompt_tokens == len(direct.prompt_tokens) and row.n_instruction_tokens == int(direct.instruction_mask.sum())
    part = tokens[(tokens.model == specs[1]) & (tokens.id == "t1")]
    assert list(part.token) == direct.prompt_tokens
    torch.testing.assert_close(torch.tensor(part.density.to_numpy(), device="cpu"), direct.density.double().cpu())
    raw = load_file(str(RecordStore(tmp_path).tensor_path(specs[1], "t1")))
    assert set(raw) == {"input_ids", "prompt_positions", "response_positions", "raw"}
    assert torch.equal(raw["input_ids"], direct.input_ids.cpu()) and torch.allclose(raw["raw"], direct.raw.cpu(), rtol=1e-5)


def test_resume_after_interruption_gives_identical_files(tiny_pair_dirs, prompts, tmp_path, monkeypatch):
    specs = [str(d) for d in tiny_pair_dirs]
    records = read_prompts(prompts)
    write_dataset_tables(*attribute_dataset(specs, records, tmp_path / "whole", progress=False), tmp_path / "whole")

    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # model 1: t1, t2, too-long, t3 (bad-span needs no call); model 2: t1, then dies
            raise KeyboardInterrupt
        return attribute(*args, **kwargs)

    monkeypatch.setattr(run_module, "attribute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        attribute_dataset(specs, records, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "attribution_examples.parquet").exists()
    monkeypatch.setattr(run_module, "attribute", attribute)
    done_before = files_of(tmp_path / "resumed" / "records")
    write_dataset_tables(*attribute_dataset(specs, records, tmp_path / "resumed", progress=False),
                         tmp_path / "resumed")
    whole, resumed = files_of(tmp_path / "whole"), files_of(tmp_path / "resumed")
    assert sorted(whole) == sorted(resumed)
    assert all(whole[name] == resumed[name] for name in whole)
    assert len(done_before) == 5 + 1  # the first model's 5 records and the second model's t1
    # a third run changes nothing and a run with other settings is refused
    write_dataset_tables(*attribute_dataset(specs, records, tmp_path / "resumed", progress=False),
                         tmp_path / "resumed")
    assert files_of(tmp_path / "resumed") == resumed
    from mechit.errors import InputError

    with pytest.raises(InputError, match="other settings"):
        attribute_dataset(specs, records, tmp_path / "resumed", progress=False, L=5)


def test_cli_tsv_run_and_stats(tiny_pair_dirs, tmp_path, capsys):
    specs = [str(d) for d in tiny_pair_dirs]
    out = tmp_path / "run"
    argv = ["attribute", "--model", specs[0], "--model", specs[1], "--prompts", str(FIXTURE), "--out", str(out),
            "--max-new-tokens", "4", "--format", "csv"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4 examples x 2 models" in err
    examples = pd.read_csv(out / "attribution_examples.csv")
    assert list(examples.group.unique()) == ["lima", "selfinstruct"]
    generated = examples[examples.id == "selfinstruct_10"]
    assert generated.response.notna().all()  # no reference response: generated greedily and recorded
    assert main(["attribute-stats", str(out), "--n-boot", "200"]) == 0
    stats = pd.read_csv(out / "attribution_stats.csv")
    assert set(stats.comparison) == {"tuned_vs_base"} and list(stats.group) == ["(all)", "lima", "selfinstruct"]
    assert list(stats.n) == [4, 2, 2]
    assert main(["attribute-stats", str(tmp_path / "nothing")]) == 2
    assert "no attribution_run.json" in capsys.readouterr().err
    # a run in the other table format into the same directory would mix two sets of tables
    assert main(argv[:-1] + ["parquet"]) == 2
    assert "holds csv tables of another run" in capsys.readouterr().err
