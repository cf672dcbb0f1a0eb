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


def test_write_json_keeps_key_order_and_serialises_numpy_and_paths(tmp_path):
    import json

    import numpy as np

    from mechit.store import write_json

    path = write_json(tmp_path / "s.json", {"z": np.float32(0.5), "a": [np.int64(2)], "out": tmp_path})
    assert list(json.loads(path.read_text())) == ["z", "a", "out"]  # the summary reads in its own order
    assert json.loads(path.read_text()) == {"z": 0.5, "a": [2], "out": str(tmp_path)}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not list(tmp_path.glob(".*.tmp"))


def test_manifest_refuses_other_settings_and_keeps_finished_steps(tmp_path):
    from mechit.errors import InputError
    from mechit.store import Manifest

    path = tmp_path / "run" / "manifest.json"
    manifest = Manifest.open(path, {"model": "a", "layers": (0, 2)})
    assert not path.exists()  # nothing is written until the caller saves or finishes a step
    manifest.finish("heads", tables=["head_pairs"], seconds=1.0)
    again = Manifest.open(path, {"model": "a", "layers": (0, 2)})  # tuples compare as their JSON lists
    assert again.done("heads") and again.finished["heads"] == {"tables": ["head_pairs"], "seconds": 1.0}
    with pytest.raises(InputError, match=r"other settings \(differs in: layers, model\)"):
        Manifest.open(path, {"model": "b", "layers": (0, 1)})
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"manifest\.json: corrupt settings file of a run .*; delete it and rerun"):
        Manifest.open(path, {"model": "a", "layers": (0, 2)})


def test_read_tables_reads_each_named_table(tmp_path):
    from mechit.store import read_tables

    write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "one.parquet")
    write_table(pd.DataFrame({"b": ["x"]}), tmp_path / "two.parquet")
    tables = read_tables(tmp_path, ["two", "one"])
    assert list(tables) == ["two", "one"] and tables["one"]["a"].tolist() == [1, 2]
