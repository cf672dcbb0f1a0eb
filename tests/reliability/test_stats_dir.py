"""``mechit attribute-stats DIR`` (issue 20 §5, §7): statistics of a CSV run equal the parquet
run's when some examples have no group, and DIR gets the one output-directory check
before anything is read.

The runs are made by ``mechit attribute-import`` from hand-written result matrices (no
model), for a paper-TSV prompt set whose ids ``_1``/``_2`` have no group part: their group
used to be ``""``, which a CSV table reads back as missing, so the CSV run's statistics
lacked the parquet run's ``""`` group. JSONL groups ``""`` are refused at the door (corpus
case ``i20c-jsonl-empty-group``).
"""

from __future__ import annotations

import errno
import json
import os
import pickle

import numpy as np
import pandas as pd

from mechit import outdir
from mechit.cli import main

IDS = ["_1", "_2", "lima_3", "lima_4", "lima_5"]
PROMPT_TOKENS = ["▁Say", "▁hi", "▁to", "▁the", "▁cat"]  # spell "Say hi to the cat"


def _prompt_set(path):
    rows = ["ID\tPrompt\tResponse\tInstruct&Context"] + [f"{i}\tSay hi to the cat\thi cat\tSay hi" for i in IDS]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _results(folder, seed):
    """One pickle per example in the authors' layout, levels 0..10 (each column's maximum 10)."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for example_id in IDS:
        levels = rng.integers(0, 11, size=(len(PROMPT_TOKENS), 2)).astype(np.float32)
        levels[rng.integers(len(PROMPT_TOKENS)), :] = 10
        levels[:, 0][levels[:, 0] == levels[:, 0].min()] = 0
        (folder / f"{example_id}.pkl").write_bytes(pickle.dumps(
            {"ID": example_id, "Input": PROMPT_TOKENS, "Output": ["▁hi", "▁cat"], "Reference": "hi cat",
             "Explain": levels}))
    return folder


def test_csv_stats_equal_parquet_stats_for_examples_without_group(tmp_path, capsys):
    prompts = _prompt_set(tmp_path / "prompts.tsv")
    results = {model: _results(tmp_path / f"results-{model}", seed) for seed, model in enumerate(["base", "tuned"])}
    tables = {}
    for table_format in ("parquet", "csv"):
        out = tmp_path / table_format
        for model, folder in results.items():
            assert main(["attribute-import", "--results", str(folder), "--model", model, "--prompts", str(prompts),
                         "--spans", "literal", "--out", str(out), "--format", table_format]) == 0
        assert main(["attribute-stats", str(out), "--n-boot", "200"]) == 0
        path = out / f"attribution_stats.{table_format}"
        tables[table_format] = (pd.read_parquet(path) if table_format == "parquet"
                                else pd.read_csv(path, keep_default_na=False, na_values=[""]))
    capsys.readouterr()
    examples = pd.read_parquet(tmp_path / "parquet" / "attribution_examples.parquet")
    assert examples.set_index("id")["group"].isna().groupby(level=0).all().to_dict() == {
        "_1": True, "_2": True, "lima_3": False, "lima_4": False, "lima_5": False}
    parquet, csv = tables["parquet"], tables["csv"]
    # per comparison: every example ("(all)", n = 5 pairs) and the lima group (n = 3); no "" group
    assert sorted(zip(parquet["group"], parquet["n"])) == [("(all)", 5), ("lima", 3)]
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_stats_dir_checked_before_anything_is_read(tmp_path, monkeypatch, capsys):
    """Root ignores permission bits, so the read-only file system is planted (as in tests/unit/test_outdir.py)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "attribution_run.json").write_text(json.dumps({"settings": {"models": ["a", "b"]}, "finished": {}}))
    (run / "attribution_examples.parquet").write_bytes(b"not read")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def must_not_read(*args, **kwargs):
        raise AssertionError("attribute-stats read its table before checking DIR")

    monkeypatch.setattr(outdir.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(pd, "read_parquet", must_not_read)
    assert main(["attribute-stats", str(run)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"mechit: error: DIR {run} is not writable (Read-only file system); choose another DIR"
