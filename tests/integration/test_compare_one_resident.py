"""``mechit compare`` with room for one organism model but not two: one model resident at a
time, and the same tables as the run that holds both."""

from __future__ import annotations

import json
import weakref

import pandas as pd
import pytest

import mechit.models.pair as pair_module
import mechit.models.resident as resident
from mechit.models import read_plan
from mechit.organism import held_out_prompts
from mechit.pipeline.run import Options, compare

OPTIONS = dict(max_new_tokens=4, head_top_k=20, n_attention_heads=2, n_components=8, concept_top_k=5, rotation_k=4,
               label_seeds=1, labeller="lexicon", similarity="embedding")
ONE_MODEL = 4 * read_plan("organism-tuned").parameters  # float32 bytes (the CPU dtype)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in held_out_prompts()[:3]), encoding="utf-8")
    return path


def tracked(real, live: list, most: list):
    """``real`` (a loader) that records each model it returns and, after each load, how many
    loaded models are alive (weak references: a model the pair dropped dies at its gc.collect)."""

    def load(spec, **kw):
        model = real(spec, **kw)
        live.append(weakref.ref(model))
        most.append(sum(ref() is not None for ref in live))
        return model

    return load


def run(prompts, out, monkeypatch, **loading):
    live, most = [], []
    monkeypatch.setattr(resident, "load_model", tracked(resident.load_model, live, most))
    monkeypatch.setattr(pair_module, "load_model", tracked(pair_module.load_model, live, most))
    compare(prompts=prompts, out=out, options=Options(**OPTIONS), progress=False, report=False, device="cpu",
            **loading)
    return most


def test_one_model_resident_gives_the_same_tables(prompts, tmp_path, monkeypatch, capsys):
    both = run(prompts, tmp_path / "both", monkeypatch)
    assert both == [1, 2]  # the tracker sees two models when both are held
    one = run(prompts, tmp_path / "one", monkeypatch, max_memory=ONE_MODEL + ONE_MODEL // 2)
    assert max(one) == 1 and len(one) == 8  # base, tuned: attribution, faithfulness, attention mass, patterns
    assert "compare runs one model at a time" in capsys.readouterr().err
    tables = sorted(p.name for p in (tmp_path / "both").glob("*.parquet"))
    assert tables == sorted(p.name for p in (tmp_path / "one").glob("*.parquet")) and len(tables) > 20
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / name), pd.read_parquet(tmp_path / "both" / name),
                                      check_exact=True, obj=name)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("both", "one")]
    assert summaries[0]["residency"] == {"mode": "both"} and summaries[1]["residency"]["mode"] == "one at a time"
    assert summaries[0]["models"] == summaries[1]["models"]
