"""``mechit compare`` on a tiny Llama pair (tuned = base with perturbed weights): tables,
summary, report, resuming, and the one-line errors for bad input."""

from __future__ import annotations

import errno
import json
from importlib.metadata import version
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import mechit.outdir as outdir_mod
import mechit.pipeline.run as compare_mod
from mechit.pipeline.run import Options, compare
from mechit.errors import IncompatiblePairError, InputError, MechitError
from mechit.views.report import external_references

N_PROMPTS = 8
FAST = dict(max_new_tokens=6, n_words=400, concept_top_k=8, head_top_k=30, n_attention_heads=2)

ALL_TABLES = {
    "attribution_examples", "attribution_tokens", "attribution_stats",
    "faithfulness_examples", "faithfulness_summary",
    "head_pairs", "head_shift", "head_shift_overall", "head_changes", "instruction_attention",
    "attention_patterns", "attention_tokens",
    "ffn_concepts", "ffn_labels", "ffn_label_proportions", "ffn_label_table", "ffn_rotation", "ffn_angles",
    "ffn_neurons", "ffn_matches", "ffn_changed",
}


@pytest.fixture(scope="module")
def pair_dirs(tiny_dirs, tmp_path_factory) -> tuple[Path, Path]:
    """(base, tuned): the tiny Llama and a copy whose weights moved by 5 % noise."""
    from safetensors.torch import load_file, save_file

    base = tiny_dirs("llama")
    tuned = tmp_path_factory.mktemp("tuned") / "llama-tuned"
    shutil.copytree(base, tuned)
    weights = load_file(str(tuned / "model.safetensors"))
    generator = torch.Generator().manual_seed(7)
    moved = {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=generator) if v.ndim == 2 else v
             for k, v in weights.items()}
    save_file(moved, str(tuned / "model.safetensors"), metadata={"format": "pt"})
    return base, tuned


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    """The first prompts of the built-in English set, one per task type."""
    from mechit.pipeline.checks import default_prompts_path

    lines = default_prompts_path().read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(lines[::7][:N_PROMPTS]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(pair_dirs, prompts_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "run"
    report = compare(*pair_dirs, prompts=prompts_file, out=out, options=Options(**FAST), progress=False)
    assert report == out / "report.html"
    return out


def test_every_table_is_plain_parquet(run):
    written = {p.stem for p in run.glob("*.parquet")}
    assert ALL_TABLES <= written
    examples = pd.read_parquet(run / "attribution_examples.parquet")
    assert len(examples) == 2 * N_PROMPTS and set(examples["model"]) == {"base", "tuned"}
    assert examples["error"].isna().all()
    assert set(pd.read_parquet(run / "head_pairs.parquet")["model"]) == {"base", "tuned"}
    stats = pd.read_parquet(run / "attribution_stats.parquet")
    overall = stats[(stats["comparison"] == "tuned_vs_base") & (stats["group"] == "(all)")].iloc[0]
    assert overall["n"] == N_PROMPTS
    wide = examples.pivot(index="id", columns="model", values="instruction_score")
    assert overall["mean_diff"] == pytest.approx((wide["tuned"] - wide["base"]).mean())


def test_instruction_attention_is_kept_per_example_and_read_back_from_its_records(run):
    """The heads stage writes one attention record per (model, example) under DIR/attention (a
    rerun, a shard or a Ray worker skips it), and its table is those records in order."""
    from mechit.pipeline.prompt_work import attention_store, attention_table

    table = pd.read_parquet(run / "instruction_attention.parquet")
    assert len(list((run / "attention" / "records").rglob("*.json"))) == 2 * N_PROMPTS
    ids = list(dict.fromkeys(table["id"]))
    rebuilt = attention_table(attention_store(run), ["base", "tuned"], [{"id": i} for i in ids])
    pd.testing.assert_frame_equal(rebuilt, table)


def test_summary_holds_headline_versions_models_seeds(run):
    summary = json.loads((run / "summary.json").read_text())
    assert [f["key"] for f in summary["findings"]] == ["attribution", "heads", "ffn"]
    assert all(f["holds"] in (True, False) for f in summary["findings"])
    head = summary["headline"]["attribution"]
    examples = pd.read_parquet(run / "attribution_examples.parquet")
    assert head["tuned_mean"] == pytest.approx(examples.query("model == 'tuned'")["instruction_score"].mean())
    assert head["base_ci"][0] <= head["base_mean"] <= head["base_ci"][1]
    overall = pd.read_parquet(run / "head_shift_overall.parquet")
    assert len(overall) == 1 and overall["layers"][0] == "0-1"
    assert summary["headline"]["heads"]["n_instruction"] == overall["n_instruction"][0]
    assert 0.0 <= summary["headline"]["ffn"]["mean_angle_deg"] <= 90.0
    assert summary["versions"]["torch"] == version("torch")
    assert summary["models"]["base"]["spec"].endswith("llama")
    assert summary["seeds"]["torch"] == 0
    assert summary["prompts"]["n"] == N_PROMPTS
    assert set(summary["stages"]) == {"attribution", "faithfulness", "heads", "ffn"}


def test_faithfulness_tables_hold_both_views_of_every_scored_example(run):
    examples = pd.read_parquet(run / "attribution_examples.parquet")
    faith = pd.read_parquet(run / "faithfulness_examples.parquet")
    scored = examples[examples["status"] == "ok"]
    assert len(faith) == len(scored) and set(zip(faith["model"], faith["id"])) == set(zip(scored["model"], scored["id"]))
    assert faith["error"].isna().all() and (faith["how"] == "remove").all()
    assert faith[["instruction_effect", "context_effect", "instruction_mass", "context_mass"]].notna().all().all()
    merged = faith.merge(scored, on=["model", "id"], suffixes=("", "_attr"))
    assert (merged["instruction_score"] == merged["instruction_score_attr"]).all()
    tokens = pd.read_parquet(run / "attribution_tokens.parquet")
    first = tokens[(tokens["model"] == "tuned") & (tokens["id"] == faith["id"].iloc[0])]
    row = faith[(faith["model"] == "tuned") & (faith["id"] == faith["id"].iloc[0])].iloc[0]
    assert row["instruction_mass"] == pytest.approx(first.loc[first["in_instruction"], "density"].sum())
    assert row["context_mass"] == pytest.approx(first.loc[~first["in_instruction"], "density"].sum())
    table = pd.read_parquet(run / "faithfulness_summary.parquet")
    assert table["model"].tolist() == ["base", "tuned"] and table["n"].tolist() == [N_PROMPTS, N_PROMPTS]


def test_faithfulness_ablation_is_the_one_of_the_attributed_response(run, pair_dirs):
    """The stage's effects are those of ``mechit.ablate`` on the response the attribution used."""
    from mechit.attribution.ablation import ablate
    from mechit.models import load_model

    examples = pd.read_parquet(run / "attribution_examples.parquet").set_index(["model", "id"])
    faith = pd.read_parquet(run / "faithfulness_examples.parquet")
    prompts = pd.read_parquet(run / "attribution_prompts.parquet").set_index("id")
    model = load_model(pair_dirs[1])
    row = faith[faith["model"] == "tuned"].iloc[0]
    frame = ablate(model, prompts.loc[row["id"], "prompt"], examples.loc[("tuned", row["id"]), "response"],
                   instruction_spans=[tuple(s) for s in prompts.loc[row["id"], "instruction_spans"]],
                   chat_template=True)  # the tiny tokenizers have one, so compare renders prompts with it
    totals = frame.groupby("part")["total_effect"].first()
    assert row["instruction_effect"] == totals["instruction"] and row["context_effect"] == totals["context"]


def test_summary_faithfulness_equals_a_direct_computation_from_the_tables(run):
    from scipy.stats import spearmanr

    summary = json.loads((run / "summary.json").read_text())["faithfulness"]
    faith = pd.read_parquet(run / "faithfulness_examples.parquet")
    assert set(summary) == {"base", "tuned"}
    for model, numbers in summary.items():
        rows = faith[faith["model"] == model]
        assert numbers["n"] == len(rows) == N_PROMPTS
        assert numbers["how"] == "remove"
        assert numbers["instruction_effect"] == pytest.approx(rows["instruction_effect"].mean(), rel=1e-12)
        assert numbers["context_effect"] == pytest.approx(rows["context_effect"].mean(), rel=1e-12)
        rho, p = spearmanr(rows["instruction_score"], rows["instruction_effect"])
        assert numbers["rank_correlation"] == pytest.approx(rho, rel=1e-12)
        assert numbers["rank_p_value"] == pytest.approx(p, rel=1e-12)
        gradient = (rows["instruction_mass"] > rows["context_mass"]).map({True: "instruction", False: "context"})
        causal = (rows["instruction_effect"] > rows["context_effect"]).map({True: "instruction", False: "context"})
        assert numbers["same_part_share"] == pytest.approx((gradient == causal).mean(), rel=1e-12)


def test_faithfulness_needs_the_attribution_stage(pair_dirs, prompts_file, tmp_path, monkeypatch):
    _no_load(monkeypatch)
    with pytest.raises(InputError, match="needs the attribution stage"):
        compare(*pair_dirs, prompts=prompts_file, out=tmp_path / "o", only="faithfulness", progress=False)
    with pytest.raises(InputError, match="ablation must be one of remove, mask, mean, not 'zero'"):
        compare(*pair_dirs, prompts=prompts_file, out=tmp_path / "p", options=Options(ablation="zero"),
                progress=False)


def test_report_is_offline_and_opens_with_numbers(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    assert external_references(page) == []
    assert "unpkg.com" not in page and "sourceMappingURL" not in page
    findings = page[page.index('id="findings"'):page.index("<h2>Figures")]
    assert len(re.findall(r"p = \d", findings)) >= 3
    assert "95 % CI" in findings
    for fig in ("fig-scores", "fig-density", "fig-shift", "fig-angles", "fig-labels", "fig-attention"):
        assert f'id="{fig}"' in page
    assert page.count("data:image/png;base64,") >= 4
    assert 'class="missing"' not in page
    assert page.count("CircuitsVis.render(") == 2  # base and tuned attention views
    section = page[page.index('<section id="faithfulness">'):page.index("<h2>Figures")]
    summary = json.loads((run / "summary.json").read_text())
    tuned = summary["faithfulness"]["tuned"]
    assert f"{tuned['instruction_effect']:+.3g} for tuned" in section
    assert f"n = {N_PROMPTS}" in section and "The gradient view and the causal view" in section


def test_rerun_skips_finished_stages(run, pair_dirs, prompts_file, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in run.glob("*.parquet")}

    def boom(ctx):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(compare_mod, "STAGE_RUNNERS", dict.fromkeys(compare_mod.STAGE_RUNNERS, boom))
    compare(*pair_dirs, prompts=prompts_file, out=run, options=Options(**FAST), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("*.parquet")} == before


def test_other_settings_in_the_same_dir_are_refused(run, pair_dirs, prompts_file):
    with pytest.raises(InputError, match="other settings.*options"):
        compare(*pair_dirs, prompts=prompts_file, out=run, options=Options(**{**FAST, "n_words": 300}),
                progress=False)


def test_disk_full_reports_and_keeps_finished_stages(pair_dirs, prompts_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_write = compare_mod.write_table

    def full_on_heads(frame, path):
        if Path(path).name.startswith("head"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(frame, path)

    monkeypatch.setattr(compare_mod, "write_table", full_on_heads)
    with pytest.raises(MechitError) as info:
        compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution,heads", options=Options(**FAST),
                progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("disk full while writing")
    assert "finished stages kept: attribution" in message
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["finished"]) == ["attribution"]
    assert len(pd.read_parquet(out / "attribution_examples.parquet")) == 2 * N_PROMPTS
    assert not list(out.glob("head*.parquet")) and not list(out.glob(".*.tmp"))

    # space freed: the rerun does only what is missing
    monkeypatch.setattr(compare_mod, "write_table", real_write)
    calls = []
    runners = dict(compare_mod.STAGE_RUNNERS)
    monkeypatch.setattr(compare_mod, "STAGE_RUNNERS",
                        {k: (lambda ctx, k=k: calls.append(k) or runners[k](ctx)) for k in runners})
    compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution,heads", options=Options(**FAST),
            progress=False)
    assert calls == ["heads"]
    assert (out / "head_shift.parquet").exists()


def test_interrupted_attribution_resumes_per_example(pair_dirs, prompts_file, tmp_path, monkeypatch):
    """Examples finished before a crash are not attributed again."""
    import mechit.attribution.dataset as run_mod

    out = tmp_path / "run"
    real = run_mod._one
    seen = []

    def crash_after_three(model, spec, record, options, mode):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append((spec, record.id))
        return real(model, spec, record, options, mode)

    monkeypatch.setattr(run_mod, "_one", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution", options=Options(**FAST),
                progress=False)
    done = list(seen)
    seen.clear()
    monkeypatch.setattr(run_mod, "_one", lambda *a: seen.append((a[1], a[2].id)) or real(*a))
    compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution", options=Options(**FAST),
            progress=False, report=False)
    assert not set(done) & set(seen)
    assert len(done) + len(seen) == 2 * N_PROMPTS
    assert len(pd.read_parquet(out / "attribution_examples.parquet")) == 2 * N_PROMPTS


def test_interrupted_faithfulness_resumes_per_example(pair_dirs, prompts_file, tmp_path, monkeypatch):
    """Examples ablated before a crash are not ablated again; the tables equal an uninterrupted run's."""
    import mechit.pipeline.prompt_work as work_mod  # where ablate_example calls ablate_prompts

    out = tmp_path / "run"
    real = work_mod.ablate_prompts
    seen = []

    def crash_after_three(model, records, **kw):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.extend(r.id for r in records)
        return real(model, records, **kw)

    monkeypatch.setattr(work_mod, "ablate_prompts", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution,faithfulness", options=Options(**FAST),
                progress=False)
    done = len(seen)
    seen.clear()
    monkeypatch.setattr(work_mod, "ablate_prompts", lambda model, records, **kw: seen.extend(r.id for r in records)
                        or real(model, records, **kw))
    compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution,faithfulness", options=Options(**FAST),
            progress=False, report=False)
    assert done == 3 and len(seen) == 2 * N_PROMPTS - 3
    faith = pd.read_parquet(out / "faithfulness_examples.parquet")
    assert len(faith) == 2 * N_PROMPTS and faith["instruction_effect"].notna().all()


# ---------------------------------------------------------------------------- bad input


def _no_load(monkeypatch):
    """Fail loudly if a check comes after loading the models."""
    def refuse(*a, **k):
        raise AssertionError("models were loaded before the input was checked")

    monkeypatch.setattr(compare_mod, "open_pair", refuse)


def test_same_model_twice(pair_dirs, tmp_path, monkeypatch):
    _no_load(monkeypatch)
    base, _ = pair_dirs
    with pytest.raises(InputError, match="same model"):
        compare(base, Path(str(base) + "/"), out=tmp_path / "o", progress=False)
    with pytest.raises(InputError, match="same model"):
        compare(base, base.parent / ".." / base.parent.name / base.name, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_invalid_prompt_file(pair_dirs, tmp_path, monkeypatch):
    _no_load(monkeypatch)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "Say hi.", "instruction_spans": [[0, 99]]}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: example 'a'.*instruction_spans"):
        compare(*pair_dirs, prompts=bad, out=tmp_path / "o", progress=False)
    bad.write_text("not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: invalid JSON"):
        compare(*pair_dirs, prompts=bad, out=tmp_path / "o", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        compare(*pair_dirs, prompts=tmp_path / "missing.jsonl", out=tmp_path / "o", progress=False)


def test_output_dir_not_writable(pair_dirs, prompts_file, tmp_path, monkeypatch):
    _no_load(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable"):
        compare(*pair_dirs, prompts=prompts_file, out=blocker / "out", progress=False)


def test_no_space_left_before_starting(pair_dirs, prompts_file, tmp_path, monkeypatch):
    _no_load(monkeypatch)
    monkeypatch.setattr(outdir_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    with pytest.raises(MechitError, match=r"disk full: only 1.0 MiB free"):
        compare(*pair_dirs, prompts=prompts_file, out=tmp_path / "o", progress=False)


def test_incompatible_pair(tiny_dirs, tmp_path):
    with pytest.raises(IncompatiblePairError):
        compare(tiny_dirs("llama"), tiny_dirs("gpt2"), out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_cli_prints_one_line(pair_dirs, tmp_path, capsys, monkeypatch):
    from mechit import cli

    _no_load(monkeypatch)
    base, _ = pair_dirs
    code = cli.main(["compare", "--base", str(base), "--tuned", str(base), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mechit: error: --base and --tuned are the same model")


def test_each_table_is_written_once_and_read_back_only_on_resume(pair_dirs, prompts_file, tmp_path, monkeypatch):
    """Stages hand their frames on: a fresh run reads no table; a resumed run reads the
    finished stages' tables once, for the summary and the report."""
    out = tmp_path / "run"
    writes, reads = [], []
    real_write, real_read = compare_mod.write_table, pd.read_parquet
    monkeypatch.setattr(compare_mod, "write_table", lambda frame, path: writes.append(Path(path).name)
                        or real_write(frame, path))
    monkeypatch.setattr(pd, "read_parquet", lambda path, **kw: reads.append(Path(path).name) or real_read(path, **kw))
    compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution", options=Options(**FAST), progress=False)
    attribution = ["attribution_prompts", "attribution_examples", "attribution_tokens", "attribution_stats"]
    assert writes == [f"{name}.parquet" for name in attribution] and reads == []
    assert not (out / "attribution_examples.csv").exists()

    writes.clear()
    compare(*pair_dirs, prompts=prompts_file, out=out, only="attribution,heads", options=Options(**FAST),
            progress=False)
    assert reads == [f"{name}.parquet" for name in attribution]
    assert len(writes) == len(set(writes)) and not set(writes) & set(reads)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["holds"] is not None for f in summary["findings"]] == [True, True, False]


def _imported_run(folder: Path) -> Path:
    """An attribution run in the layout `mechit attribute-import` writes: two models on the same
    prompts (the tuned one 0.1 higher on every prompt of group "user"), and ratings on the tuned one."""
    from mechit.store import write_json

    write_json(folder / "attribution_run.json", {"settings": {"models": ["llama-7b", "vicuna-7b"]}, "finished": {}})
    ids = [f"user_{i}" for i in range(6)] + [f"lima_{i}" for i in range(6)]
    base = [0.2 + 0.01 * i for i in range(12)]
    tuned = [s + (0.1 if i < 6 else 0.0) + 0.003 * (i % 3) for i, s in enumerate(base)]
    labels = ["followed", "not_followed"] * 6
    pd.DataFrame({"id": ids * 2, "group": [i.split("_")[0] for i in ids] * 2,
                  "model": ["llama-7b"] * 12 + ["vicuna-7b"] * 12, "instruction_score": base + tuned,
                  "label": [None] * 12 + labels}).to_parquet(folder / "attribution_examples.parquet")
    return folder


def test_paper_results_become_the_papers_tables_section(run, pair_dirs, prompts_file, tmp_path):
    """`compare --paper-results DIR` writes the rows of `attribute-stats DIR` as a table, into
    summary.json and as the report's section; the finished stages are not rerun."""
    from mechit.attribution.run_stats import run_stats

    paper = _imported_run(tmp_path / "paper")
    out = tmp_path / "run"
    shutil.copytree(run, out)
    compare(*pair_dirs, prompts=prompts_file, out=out, options=Options(**FAST), progress=False,
            paper_results=paper)
    expected = run_stats(paper)
    written = pd.read_parquet(out / "paper_attribution_stats.parquet")
    pd.testing.assert_frame_equal(written, expected)
    tuned = written[written.comparison == "tuned_vs_base"].set_index("group")
    assert tuned.loc["user", "mean_a"] - tuned.loc["user", "mean_b"] == pytest.approx(0.103)  # 0.1 + the mean of 0.003 x (0, 1, 2, 0, 1, 2)
    assert list(written.comparison.unique()) == ["tuned_vs_base", "followed_vs_not"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["paper_tables"]["source"] == str(paper)
    assert [(r["comparison"], r["group"]) for r in summary["paper_tables"]["rows"]] == \
        list(zip(written.comparison, written.group))
    page = (out / "report.html").read_text()
    section = page[page.index('<section id="paper-tables">'):]
    section = section[:section.index("</section>")]
    assert "Followed vs not followed" in section and "Tuned vs base" in section
    user = next(r for r in summary["paper_tables"]["rows"] if r["comparison"] == "tuned_vs_base" and r["group"] == "user")
    assert f"<td>{user['mean_a']:.3g}</td><td>{user['mean_b']:.3g}</td>" in section


def test_paper_results_that_are_not_a_run_are_refused_before_loading(pair_dirs, prompts_file, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_mod, "open_pair", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(InputError, match="no attribution_run.json"):
        compare(*pair_dirs, prompts=prompts_file, out=tmp_path / "o", progress=False, paper_results=tmp_path)
