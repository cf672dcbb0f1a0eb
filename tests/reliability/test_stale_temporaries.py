"""Leftovers of killed writes (review R9): a SIGKILL inside :func:`mechit.store.atomic_path`
leaves a hidden ``.NAME.mechit-PID-XXXXXXXX.tmp``; the next run into the same directory
removes those whose writer is dead, and nothing else (users' files, a live writer's
temporaries). ``test_kill_resume.py`` checks the same after real kills.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from .forked import dead_pid, plant_stale_temporary

WORDS = "the cat sat on mat dog story about write give find make tell please answer question".split()


def _plant(directory: Path) -> tuple[list[Path], list[Path]]:
    """(stale mechit temporaries, files that must stay) under ``directory``."""
    stale = [plant_stale_temporary(directory), plant_stale_temporary(directory / "records" / "m-0123456789")]
    keep = [directory / name for name in (
        ".notes.tmp",                                      # a user's hidden temporary file
        "data.tmp",
        f"x.json.mechit-{dead_pid()}-abcd1234.tmp",        # not hidden: not ours
        ".x.json.mechit-abc-abcd1234.tmp",                 # no pid
        f".x.json.mechit-{dead_pid()}-abcd1234.tmp.bak",   # other suffix
        f".x.json.mechit-{os.getppid()}-abcd1234.tmp",     # ours, but its writer runs
    )]
    for path in keep:
        path.write_text("keep")
    return stale, keep


def test_remove_stale_temporaries_removes_only_dead_writers_files(tmp_path):
    from mechit.store import remove_stale_temporaries

    stale, keep = _plant(tmp_path)
    assert remove_stale_temporaries(tmp_path) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.read_text() == "keep" for p in keep)
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_atomic_path_names_its_temporary_after_the_writer(tmp_path):
    from mechit.store import atomic_path

    target = tmp_path / "table.parquet"
    with atomic_path(target) as tmp:
        assert re.fullmatch(rf"\.table\.parquet\.mechit-{os.getpid()}-[a-z0-9_]{{8}}\.tmp", tmp.name), tmp.name
        tmp.write_text("done")
    assert target.read_text() == "done" and [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_attribute_and_ffn_runs_remove_stale_temporaries(tiny_llama_dir, tmp_path):
    from mechit.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Say hi to the cat", "response": "hi cat",
                                   "instruction_spans": [[0, 6]]}) + "\n")
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    runs = {
        "attribute": ["attribute", "--model", str(tiny_llama_dir), "--prompts", str(prompts), "--out", "{out}"],
        "ffn": ["ffn", "--model", str(tiny_llama_dir), "--out", "{out}", "--words", str(words), "--top-k", "2",
                "--n-components", "2", "--neurons", "2", "--layers", "0"],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        out.mkdir()
        stale, keep = _plant(out)
        assert main([a.format(out=out) for a in argv]) == 0
        assert not any(p.exists() for p in stale), name
        assert all(p.read_text() == "keep" for p in keep), name
    assert len(pd.read_parquet(tmp_path / "ffn" / "neurons.parquet")) > 0


def test_compare_write_check_leftover_is_removed_by_the_next_run(tmp_path, monkeypatch):
    """A kill inside compare's write check leaves ``.write-test.mechit-PID-XXXXXXXX.tmp``:
    named like every other temporary, it is removed once its writer is dead."""
    import tempfile

    from mechit.outdir import check_out_dir
    from mechit.store import remove_stale_temporaries

    seen = []
    real = tempfile.NamedTemporaryFile

    def spy(*args, **kwargs):
        handle = real(*args, **kwargs)
        seen.append(Path(handle.name).name)
        return handle

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", spy)
    check_out_dir(tmp_path)
    assert len(seen) == 1
    leftover = tmp_path / seen[0].replace(f"-{os.getpid()}-", f"-{dead_pid()}-")
    leftover.write_text("")
    assert remove_stale_temporaries(tmp_path) == [leftover]
