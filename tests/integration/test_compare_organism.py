"""The main job end to end: ``mechit compare`` with its defaults on the embedded organism pair.

One test (a few minutes on 2 cores): every stage on the held-out prompts, then the tables,
the summary and the report are checked. The wall time is printed, not asserted.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from mechit.data.wordlists import INSTRUCTION_VERBS
from mechit.models import load_model
from mechit.organism import held_out_prompts, vocabulary
from mechit.organism.weights import model_dir
from mechit.views.report import external_references
from mechit.vocab import default_words

pytestmark = pytest.mark.skipif(
    not all((model_dir(name) / "config.json").is_file() for name in ("base", "tuned")),
    reason="the organism weights are not built",
)


def default_words_of_organism() -> list[str]:
    return default_words(load_model("organism-base"))


def test_compare_organism_end_to_end(tmp_path, capsys):
    from mechit import cli

    out = tmp_path / "organism"
    started = time.perf_counter()
    code = cli.main(["compare", "--out", str(out)])
    seconds = time.perf_counter() - started
    assert code == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out

    n = len(held_out_prompts())
    examples = pd.read_parquet(out / "attribution_examples.parquet")
    assert len(examples) == 2 * n
    assert examples["error"].isna().mean() > 0.95
    assert set(examples["group"]) == {r["group"] for r in held_out_prompts()}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["base"]["spec"] == "organism-base"
    assert summary["prompts"]["n"] == n
    assert [f["holds"] is not None for f in summary["findings"]] == [True, True, True]
    findings = {f["key"]: f for f in summary["findings"]}
    # Finding 1 does not hold on the organism (docs/report.md): the tuned model answers closed tasks in
    # a few tokens read off the input; most prompt groups point the other way, the paired interval below 0
    attribution = findings["attribution"]
    numbers = attribution["numbers"]
    assert attribution["holds"] is False and numbers["test"] == "paired t-test"
    assert attribution["verdict"].startswith(
        "Does not hold on this pair: the difference points the other way (paired t-test, one-sided p = ")
    assert numbers["diff"] < 0 and numbers["diff_ci"][0] <= numbers["diff"] <= numbers["diff_ci"][1] < 0
    assert numbers["diff"] == pytest.approx(numbers["tuned_mean"] - numbers["base_mean"])
    assert numbers["p_value"] > 0.95 and numbers["groups_up"] < numbers["n_groups"] / 2
    # Finding 2: the verdict follows the measured difference and names its test
    heads = findings["heads"]
    difference = heads["numbers"]["instruction_mean"] - heads["numbers"]["general_mean"]
    assert heads["holds"] == (difference > 0 and heads["numbers"]["p_value"] < 0.05)
    assert "(Welch t-test, one-sided p" in heads["verdict"]
    assert ("points the other way" in heads["verdict"]) == (difference < 0)
    # one word rule and one yardstick for both models, stated in summary.json
    used = summary["options"]["heads"]
    assert used["words"] == "default" and used["top_k"] == 100 and used["n_words"] > len(vocabulary())
    assert used["similarity_id"].startswith(used["similarity"])
    assert heads["numbers"]["n_instruction"] <= len(set(INSTRUCTION_VERBS) & set(default_words_of_organism()))
    head = summary["headline"]
    assert head["attribution"]["n"] >= 0.95 * n
    assert 0 <= head["heads"]["instruction_mean"] <= 1
    assert head["ffn"]["seed0_base_n"] == head["ffn"]["seed0_tuned_n"] > 0

    page = (out / "report.html").read_text(encoding="utf-8")
    assert external_references(page) == []
    assert 'class="missing"' not in page

    with capsys.disabled():
        print(f"\nmechit compare on the organism: {seconds:.0f} s end to end")
        for finding in summary["findings"]:
            print(" -", finding["measured"], finding["verdict"])
