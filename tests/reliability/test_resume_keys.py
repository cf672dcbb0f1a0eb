"""Issue 20 families 2 and 8: a resumed ``mechit attribute`` never trusts a stale or half-written
record. Records are keyed by the example's content and the model's weights; a record that
does not parse is recomputed; each with one line saying so. Files are fsynced before rename."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mechit.cli import main
from mechit.store import Manifest, RecordStore, atomic_path

GOOD = [{"id": "good1", "prompt": "Translate the cat into french", "response": "le chat", "instruction_spans": [[0, 9]]},
        {"id": "good2", "prompt": "Explain this text about dog", "response": "the dog sat", "instruction_spans": [[0, 7]]}]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _attribute(model: Path, prompts: Path, out: Path, capsys) -> tuple[pd.DataFrame, str]:
    code = main(["attribute", "--model", str(model), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    return pd.read_parquet(out / "attribution_examples.parquet"), err


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "recomputing" in line]


@pytest.fixture
def model_dir(tiny_pair_dirs, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_pair_dirs[0], tmp_path / "model"))


def test_an_edited_example_under_the_same_id_is_recomputed(model_dir, tmp_path, capsys):
    prompts, out = _write(tmp_path / "p.jsonl", GOOD), tmp_path / "out"
    first, _ = _attribute(model_dir, prompts, out, capsys)
    edited = [GOOD[0], {**GOOD[1], "response": "a dog ran off"}]
    again, err = _attribute(model_dir, _write(prompts, edited), out, capsys)
    fresh, _ = _attribute(model_dir, prompts, tmp_path / "fresh", capsys)
    assert again["response"].tolist() == ["le chat", "a dog ran off"]
    pd.testing.assert_frame_equal(again, fresh)  # the same as a run that never saw the old text
    assert again.loc[0, "instruction_score"] == first.loc[0, "instruction_score"]
    (note,) = _notes(err)
    assert "1 record(s)" in note and "other example content" in note and "'good2'" in note


def test_replaced_weights_are_recomputed(model_dir, tiny_pair_dirs, tmp_path, capsys):
    prompts, out = _write(tmp_path / "p.jsonl", GOOD), tmp_path / "out"
    first, _ = _attribute(model_dir, prompts, out, capsys)
    shutil.copyfile(tiny_pair_dirs[1] / "model.safetensors", model_dir / "model.safetensors")  # other weights
    again, err = _attribute(model_dir, prompts, out, capsys)
    fresh, _ = _attribute(tiny_pair_dirs[1], prompts, tmp_path / "fresh", capsys)
    assert not first["instruction_score"].equals(again["instruction_score"])
    pd.testing.assert_series_equal(again["instruction_score"], fresh["instruction_score"])
    (note,) = _notes(err)
    assert "2 record(s)" in note and "other weights" in note


def test_an_unchanged_rerun_recomputes_nothing(model_dir, tmp_path, capsys):
    prompts, out = _write(tmp_path / "p.jsonl", GOOD), tmp_path / "out"
    first, _ = _attribute(model_dir, prompts, out, capsys)
    record = next((out / "records").rglob("*.json"))
    stamp = record.stat().st_mtime_ns
    again, err = _attribute(model_dir, prompts, out, capsys)
    pd.testing.assert_frame_equal(first, again)
    assert _notes(err) == [] and record.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", [b"", b'{"model": "x", "id": "good1", "rec'])
def test_a_record_cut_short_is_recomputed_with_one_line(model_dir, tmp_path, capsys, damage):
    prompts, out = _write(tmp_path / "p.jsonl", GOOD), tmp_path / "out"
    first, _ = _attribute(model_dir, prompts, out, capsys)
    RecordStore(out).record_path(str(model_dir), "good1").write_bytes(damage)  # what a power cut can leave
    again, err = _attribute(model_dir, prompts, out, capsys)
    pd.testing.assert_frame_equal(first, again)
    (note,) = _notes(err)
    assert "1 record(s)" in note and "did not parse" in note and "'good1'" in note


def test_store_state_names_what_changed(tmp_path):
    store = RecordStore(tmp_path)
    assert store.state("m", "a", {"example": "e1"}) == "missing"
    store.write("m", "a", {"x": 1}, inputs={"example": "e1", "weights": None})
    assert store.state("m", "a", {"example": "e1", "weights": "w1"}) == "done"  # unknown then: matches
    assert store.state("m", "a", {"example": "e2", "weights": "w1"}) == "changed: example"
    store.write("m", "a", {"x": 1}, inputs={"example": "e1", "weights": "w1"})
    assert store.state("m", "a", {"example": "e1", "weights": "w2"}) == "changed: weights"
    store.record_path("m", "a").write_text('{"model": "m"}')  # parses, but no record
    assert store.state("m", "a", {"example": "e1"}) == "corrupt"


def test_atomic_path_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "r.json"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
        temporary = str(tmp)
    assert events[:2] == [("fsync", temporary), ("replace", str(target))]
    assert events[2] == ("fsync", str(tmp_path))  # the directory entry too


def test_manifest_null_setting_matches_any_and_a_change_is_named(tmp_path):
    path = tmp_path / "manifest.json"
    Manifest.open(path, {"base_weights": None, "top_k": 3}).save()
    Manifest.open(path, {"base_weights": "abc", "top_k": 3}).save()  # a hub model cached since: accepted
    with pytest.raises(Exception, match=r"differs in: base_weights"):
        Manifest.open(path, {"base_weights": "def", "top_k": 3})
