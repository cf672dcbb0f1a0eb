"""`attribute-stats` reads CSV tables as the parquet ones (issue 20 §7): ids and groups
named NA or null stay text."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mechit.cli import main
from mechit.store import write_table


def _run_dir(path, suffix):
    rng = np.random.default_rng(0)
    ids = ["NA", "null", "None", "nan", "x1", "x2", "n/a", "x3"]
    rows = [dict(model=m, id=i, group=["NA", "null"][k % 2], label=[None, "followed", "not_followed"][k % 3],
                 n_prompt_tokens=5, n_response_tokens=3, n_instruction_tokens=2,
                 instruction_score=float(rng.normal(1 if m == "t" else 0)), response="NA", status="ok", error=None)
            for m in ("b", "t") for k, i in enumerate(ids)]
    path.mkdir()
    (path / "attribution_run.json").write_text(json.dumps({"settings": {"models": ["b", "t"]}}))
    write_table(pd.DataFrame(rows), path / f"attribution_examples{suffix}")


def test_csv_stats_equal_parquet_stats(tmp_path, capsys):
    for suffix in (".parquet", ".csv"):
        _run_dir(tmp_path / suffix[1:], suffix)
        assert main(["attribute-stats", str(tmp_path / suffix[1:]), "--n-boot", "200"]) == 0
    capsys.readouterr()
    parquet = pd.read_parquet(tmp_path / "parquet" / "attribution_stats.parquet")
    csv = pd.read_csv(tmp_path / "csv" / "attribution_stats.csv", keep_default_na=False, na_values=[""])
    assert set(parquet["group"]) >= {"NA", "null"}
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)
