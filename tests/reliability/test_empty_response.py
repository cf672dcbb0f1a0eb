"""Empty generated responses (review R11): with ``--response generate`` a model may end its
answer at once (the organism's base model does for a few held-out prompts). There is
nothing to attribute, but it is the model's behaviour, not a failure: the example is kept
with status ``"empty_response"``, ``n_response_tokens = 0``, no score, no token rows and
no tensors; the run does not count it as failed (exit 0); the statistics leave it out and
say how many they left out (``n_excluded``).

The empty answer is forced by replacing :func:`mechit.attribution.example.generate_response` for
one prompt (the tiny models answer every prompt); everything else runs for real.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

PROMPTS = [
    {"id": "a", "group": "g1", "label": "followed", "prompt": "Say hi to the cat", "instruction_spans": [[0, 6]]},
    {"id": "silent", "group": "g1", "label": "followed", "prompt": "Tell the dog a story",
     "instruction_spans": [[0, 4]]},
    {"id": "b", "group": "g2", "label": "not_followed", "prompt": "Write about the mat", "instruction_spans": [[0, 5]]},
    {"id": "c", "group": "g2", "label": "followed", "prompt": "Answer the question", "instruction_spans": [[0, 6]]},
]


@pytest.fixture
def silent_base(monkeypatch):
    """The model loaded from the first directory answers the "silent" prompt with nothing."""
    import mechit.attribution.example as attribution

    real = attribution.generate_response

    def generate(model, prompt, **kwargs):
        if prompt == PROMPTS[1]["prompt"] and getattr(model, "mechit_spec", "").endswith("llama"):
            return ""
        return real(model, prompt, **kwargs)

    monkeypatch.setattr(attribution, "generate_response", generate)


def test_empty_response_is_kept_flagged_and_left_out_of_statistics(tiny_pair_dirs, tmp_path, silent_base, capsys):
    from mechit.cli import main
    from mechit.stats import compare_labels, compare_models

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    out = tmp_path / "out"
    base, tuned = map(str, tiny_pair_dirs)
    argv = ["attribute", "--model", base, "--model", tuned, "--prompts", str(prompts), "--out", str(out),
            "--response", "generate", "--max-new-tokens", "4"]
    assert main(argv) == 0  # an empty answer is not a failure
    err = capsys.readouterr().err
    assert "7 done, 0 failed, 1 empty responses" in err and f"[{base}] silent" in err, err

    examples = pd.read_parquet(out / "attribution_examples.parquet").set_index(["model", "id"])
    row = examples.loc[(base, "silent")]
    assert row["status"] == "empty_response" and row["n_response_tokens"] == 0 and row["n_prompt_tokens"] > 0
    assert row["response"] == "" and pd.isna(row["error"]) and math.isnan(row["instruction_score"])
    others = examples.drop(index=(base, "silent"))
    assert (others["status"] == "ok").all() and others["instruction_score"].notna().all()
    assert (others["n_response_tokens"] > 0).all()
    tokens = pd.read_parquet(out / "attribution_tokens.parquet")
    assert not ((tokens["model"] == base) & (tokens["id"] == "silent")).any()
    assert ((tokens["model"] == tuned) & (tokens["id"] == "silent")).any()
    assert len(list((out / "tensors").rglob("*.safetensors"))) == 7

    # a resume reads the flagged record back as it was
    assert main(argv) == 0
    again = pd.read_parquet(out / "attribution_examples.parquet").set_index(["model", "id"])
    assert again.loc[(base, "silent"), "status"] == "empty_response"

    frame = examples.reset_index()
    models = compare_models(frame, base, tuned, n_boot=200).set_index("group")
    assert models.loc["(all)", ["n", "n_excluded"]].tolist() == [3, 1]
    assert models.loc["g1", ["n", "n_excluded"]].tolist() == [1, 1]
    assert models.loc["g2", ["n", "n_excluded"]].tolist() == [2, 0]
    scored = frame[frame["status"] == "ok"]
    paired = scored.pivot(index="id", columns="model", values="instruction_score").dropna()
    assert models.loc["(all)", "mean_diff"] == pytest.approx(float((paired[tuned] - paired[base]).mean()))
    labels = compare_labels(frame, n_boot=200).set_index(["model", "group"])
    assert labels.loc[(base, "(all)"), ["n", "n_excluded"]].tolist() == [3, 1]
    assert labels.loc[(tuned, "(all)"), ["n", "n_excluded"]].tolist() == [4, 0]

    # `mechit attribute-stats` writes the same counts
    assert main(["attribute-stats", str(out), "--n-boot", "200"]) == 0
    written = pd.read_parquet(out / "attribution_stats.parquet")
    row = written[(written["comparison"] == "tuned_vs_base") & (written["group"] == "(all)")].iloc[0]
    assert (row["n"], row["n_excluded"]) == (3, 1)


def test_attribute_raises_empty_response_error(tiny_llama, monkeypatch):
    """The library call says what happened, with the generated text and the prompt length."""
    import mechit.attribution.example as attribution
    from mechit.errors import EmptyResponseError, InputError

    monkeypatch.setattr(attribution, "generate_response", lambda model, prompt, **kw: "  \n")
    with pytest.raises(EmptyResponseError, match="empty response") as caught:
        attribution.attribute(tiny_llama, "Say hi to the cat")
    assert isinstance(caught.value, InputError)
    assert caught.value.response == "  \n" and caught.value.n_prompt_tokens > 0
