"""The organism end to end: tiny training runs, resume, and the shipped weights' bars."""

from __future__ import annotations

import json

import pytest
import torch

from mechit.errors import InputError
from mechit.organism import evaluate as ev
from mechit.organism import format_prompt, judge, train as tr
from mechit.organism.weights import load, model_dir, weights_dir

TINY = tr.TrainConfig.preset("tiny")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("organism") / "run"
    summary = tr.train(out, TINY, progress=False)
    return out, summary


def test_tiny_training_writes_both_models(tiny_run):
    out, summary = tiny_run
    assert sorted(p.name for p in out.iterdir()) == ["base", "organism.json", "tuned"]
    for name in ("base", "tuned"):
        files = {p.name for p in (out / name).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert json.loads((out / "organism.json").read_text()) == summary
    assert summary["seed"] == 0 and set(summary["final_loss"]) == {"base", "tuned"}
    base, _ = load("base", out)
    tuned, tok = load("tuned", out)
    assert next(base.parameters()).dtype == torch.float32
    assert base.config.num_hidden_layers == TINY.n_layers
    assert base.config.num_key_value_heads == TINY.n_kv_heads
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), tuned.parameters()))
    record = ev.evaluate(out, per_task=1, n_docs=4)
    assert set(record) == {"base", "tuned", "long_response_share", "n_eval", "seed"}
    assert record["n_eval"] == len(record["tuned"]["accuracy"]) + len(record["tuned"]["open_score"])
    assert set(record["tuned"]["open_score"]) == set(ev.tasks.OPEN_TASKS)
    assert record["long_response_share"] >= len(ev.tasks.OPEN_TASKS) / record["n_eval"]  # tiny BPE: closed ones may be long too
    assert record["seed"] == 0 and record["base"]["lm_loss"] > 0


def test_tiny_training_is_deterministic(tiny_run, tmp_path):
    _, summary = tiny_run
    again = tr.train(tmp_path / "again", TINY, progress=False)
    assert again["final_loss"] == summary["final_loss"]
    other = tr.train(tmp_path / "other", tr.TrainConfig.preset("tiny", seed=1), progress=False)
    assert other["final_loss"] != summary["final_loss"]


def test_interrupted_run_resumes_to_the_same_result(tiny_run, tmp_path, monkeypatch):
    _, summary = tiny_run
    out = tmp_path / "run"
    real_save = tr._Run.save
    calls = []

    def save_then_interrupt(self, *args):
        real_save(self, *args)
        calls.append(args[0])
        if len(calls) == 2:  # second checkpoint: tuned stage, step 3
            raise KeyboardInterrupt

    monkeypatch.setattr(tr._Run, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tr.train(out, TINY, progress=False)
    monkeypatch.setattr(tr._Run, "save", real_save)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert (state["stage"], state["step"]) == ("tuned", 3)
    with pytest.raises(InputError, match="other settings"):
        tr.train(out, tr.TrainConfig.preset("tiny", seed=5), progress=False)
    resumed = tr.train(out, TINY, progress=False)
    assert resumed["final_loss"] == summary["final_loss"]
    with pytest.raises(InputError, match="not empty"):
        tr.train(out, TINY, progress=False)


def test_tiny_model_boots_in_transformer_bridge(tiny_run):
    from transformer_lens.model_bridge import TransformerBridge

    out, _ = tiny_run
    hf, tok = load("tuned", out)
    bridge = TransformerBridge.boot_transformers(str(model_dir("tuned", out)), device="cpu")
    ids = tok(format_prompt("Solve: two plus two"), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = bridge(ids, return_type="logits")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# --- the shipped pair -----------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_record():
    return ev.evaluate(per_task=6, n_docs=40)


def test_shipped_weights_are_small_and_fp16_on_disk():
    total = sum(p.stat().st_size for p in weights_dir().rglob("*") if p.is_file())
    assert total <= 25 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(model_dir("base") / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.float16


def test_shipped_pair_reaches_the_bars_on_a_fixed_sample(shipped_record):
    tuned, base = shipped_record["tuned"], shipped_record["base"]
    assert tuned["mean_accuracy"] >= 0.8
    assert min(tuned["accuracy"].values()) >= 0.5
    assert base["mean_accuracy"] <= 0.2
    assert tuned["lm_loss"] <= 1.25 * base["lm_loss"]
    assert tuned["mean_open_score"] >= 0.6
    assert base["mean_open_score"] <= 0.2


def test_shipped_tuned_model_answers_hand_written_prompts():
    from mechit.organism.world import FACTS, ZEL

    model, tok = load("tuned")
    prompts = ["Translate to Zel: red fox", "Reverse this list: cup, hat, tree",
               "Tell me where Mira lives.", "Repeat after me: kima Omar blue"]
    assert ev.generate(model, tok, prompts) == [
        f"{ZEL['red']} {ZEL['fox']}", "tree, hat, cup", FACTS["Mira"]["town"], "kima Omar blue"]
    base, _ = load("base")
    assert not set(ev.generate(base, tok, prompts)) & {"tree, hat, cup", "kima Omar blue"}
    # open tasks: the same person (Mira) and a Zel word, under instructions that ask for more
    asked = [("describe", "Describe Mira.", "Mira"), ("explain", "Explain the Zel word kima.", "kima"),
             ("review", "Write a negative review of the cake at the inn.", "the cake at the inn")]
    replies = ev.generate(model, tok, [p for _, p, _ in asked])
    assert [judge.passes(t, p, x, r) for (t, p, x), r in zip(asked, replies)] == [True, True, True], replies
