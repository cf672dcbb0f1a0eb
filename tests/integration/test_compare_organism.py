"""The main job end to end: ``mechit compare`` with its defaults on the embedded organism pair.

One test (a few minutes on 2 cores): every stage on the held-out prompts, then the tables,
the summary and the report are checked. The wall time is printed, not asserted.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from mechit.organism import held_out_prompts
from mechit.organism.weights import model_dir
from mechit.views.report import external_references

pytestmark = pytest.mark.skipif(
    not all((model_dir(name) / "config.json").is_file() for name in ("base", "tuned")),
    reason="the organism weights are not built",
)


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
    head = summary["headline"]
    assert head["attribution"]["n"] >= 0.95 * n
    assert 0 <= head["heads"]["instruction_mean"] <= 1
    assert head["ffn"]["base_n"] == head["ffn"]["tuned_n"] > 0

    page = (out / "report.html").read_text(encoding="utf-8")
    assert external_references(page) == []
    assert 'class="missing"' not in page

    with capsys.disabled():
        print(f"\nmechit compare on the organism: {seconds:.0f} s end to end")
        for finding in summary["findings"]:
            print(" -", finding["measured"], finding["verdict"])
