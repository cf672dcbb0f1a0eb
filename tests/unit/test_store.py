"""RecordStore: atomic records, done markers, tensors readable without mechit, atomic tables."""

import os

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mechit.store import RecordStore, atomic_path, slug, write_table


def test_slug_is_safe_and_distinct():
    assert slug("a/b") != slug("a_b") and "/" not in slug("a/b")
    assert slug("../../etc") .startswith("etc-")
    assert slug("x" * 500).count("x") == 60


def test_write_read_done(tmp_path):
    store = RecordStore(tmp_path)
    assert not store.done("HuggingFaceTB/SmolLM2", "ex/1")
    store.write("HuggingFaceTB/SmolLM2", "ex/1", {"score": 0.25, "tokens": [1, 2]},
                tensors={"raw": torch.arange(6.0).reshape(2, 3).T})  # non-contiguous on purpose
    assert store.done("HuggingFaceTB/SmolLM2", "ex/1") and not store.done("other", "ex/1")
    assert store.read("HuggingFaceTB/SmolLM2", "ex/1") == {"score": 0.25, "tokens": [1, 2]}
    loaded = load_file(str(store.tensor_path("HuggingFaceTB/SmolLM2", "ex/1")))
    assert torch.equal(loaded["raw"], torch.arange(6.0).reshape(2, 3).T)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_failed_write_leaves_nothing(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(TypeError):
        store.write("m", "k", {"bad": object()})
    assert not store.done("m", "k")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.txt"]


def test_write_table_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "score": [0.5, None]})
    pd.testing.assert_frame_equal(pd.read_parquet(write_table(frame, tmp_path / "t.parquet")), frame)
    pd.testing.assert_frame_equal(pd.read_csv(write_table(frame, tmp_path / "t.csv")), frame)


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os

    from mechit.store import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
