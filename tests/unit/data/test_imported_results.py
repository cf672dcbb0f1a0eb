"""Imported attribution results: the allow-list unpickler, both formats, token offsets, and the
``attribute-import`` -> ``attribute-stats`` path on fixtures in the authors' formats."""

import json
import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from mechit.cli import main
from mechit.data.imported import read_result, token_offsets
from mechit.data.prompts import read_prompts
from mechit.data.ratings import ratings_of, read_ratings
from mechit.errors import InputError
from mechit.store import RecordStore

FIXTURES = Path(__file__).parent.parent.parent / "fixtures"
FINAL, RATINGS = FIXTURES / "paper_final.tsv", FIXTURES / "paper_ratings.tsv"


def sp_tokens(text: str) -> list[str]:
    """SentencePiece-style strings of ``text`` (dummy leading space, ``▁`` for spaces, byte pieces
    for newlines and non-ASCII characters), as the authors' ``Input``/``Output``."""
    tokens = []
    for piece in re.findall(r"\n| ?[^ \n]+| ", " " + text.strip()):
        if piece == "\n":
            tokens.append("<0x0A>")
        elif piece.isascii():
            tokens.append(piece.replace(" ", "▁"))
        else:
            head = "".join(c for c in piece if c.isascii())
            tokens.append(head.replace(" ", "▁"))
            tokens.extend(f"<0x{b:02X}>" for c in piece if not c.isascii() for b in c.encode())
    return tokens


def write_pickle(path: Path, example_id: str, prompt_tokens, response_tokens, explain, protocol=4):
    path.write_bytes(pickle.dumps({"ID": example_id, "Input": prompt_tokens, "Reference": "ref",
                                   "Output": response_tokens, "Explain": np.asarray(explain, np.float32)},
                                  protocol=protocol))


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_reader_admits_arrays_and_refuses_any_other_global(tmp_path):
    for protocol in (3, 4, 5):  # _reconstruct (3, 4) and _frombuffer (5); the authors' Python 3 wrote 3 or 4
        write_pickle(tmp_path / "a.pkl", "a", ["▁Say", "▁hi"], ["▁hello"], [[10.0], [8.0]], protocol=protocol)
        result = read_result(tmp_path / "a.pkl")
        assert result.kind == "levels" and result.prompt_tokens == ["▁Say", "▁hi"]
        assert torch.equal(result.matrix, torch.tensor([[10.0], [8.0]]))
    marker = tmp_path / "ran"
    (tmp_path / "hostile.pkl").write_bytes(pickle.dumps({"ID": "h", "Explain": Hostile(marker)}))
    with pytest.raises(InputError, match=r"hostile.pkl: the pickle refers to (posix|nt)\.system; only numpy arrays"):
        read_result(tmp_path / "hostile.pkl")
    assert not marker.exists()  # refused before anything ran
    (tmp_path / "ordered.pkl").write_bytes(pickle.dumps(__import__("collections").OrderedDict(a=1)))
    with pytest.raises(InputError, match=r"refers to collections\.OrderedDict"):
        read_result(tmp_path / "ordered.pkl")
    (tmp_path / "torn.pkl").write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(InputError, match="torn.pkl: not a readable pickle"):
        read_result(tmp_path / "torn.pkl")
    write_pickle(tmp_path / "shape.pkl", "s", ["▁a"], ["▁b", "▁c"], [[1.0]])
    with pytest.raises(InputError, match=r"shape.pkl: the matrix has shape \(1, 1\); expected \(1, 2\)"):
        read_result(tmp_path / "shape.pkl")


def test_safetensors_layout(tmp_path):
    meta = {"prompt_tokens": json.dumps(["▁Say", "▁hi"]), "response_tokens": json.dumps(["▁yo"])}
    save_file({"raw": torch.tensor([[0.5], [2.0]])}, str(tmp_path / "x.safetensors"), metadata=meta)
    result = read_result(tmp_path / "x.safetensors")
    assert (result.id, result.kind, result.response_tokens) == ("x", "raw", ["▁yo"])
    save_file({"raw": torch.zeros(2, 1), "levels": torch.zeros(2, 1)}, str(tmp_path / "y.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="exactly one of 'levels' or 'raw'"):
        read_result(tmp_path / "y.safetensors")
    save_file({"levels": torch.zeros(2, 1)}, str(tmp_path / "z.safetensors"))
    with pytest.raises(InputError, match="metadata must hold 'prompt_tokens' and 'response_tokens'"):
        read_result(tmp_path / "z.safetensors")


def test_token_offsets_follow_the_characters():
    prompt = "  Translate: café\nok "
    tokens = sp_tokens(prompt)
    assert tokens == ["▁Translate:", "▁caf", "<0xC3>", "<0xA9>", "<0x0A>", "ok"]
    offsets = token_offsets(prompt, tokens)
    assert [prompt[s:e] for s, e in offsets] == ["Translate:", " caf", "é", "é", "\n", "ok"]
    assert token_offsets("hi", ["<s>", "hi"]) == [(0, 0), (0, 2)]
    with pytest.raises(InputError, match="the token strings spell ' Say ho'"):
        token_offsets("Say hi", ["▁Say", "▁ho"])


def planted(example_id, n, m, tuned, rating):
    """Tuned: level 10 on the first half of the prompt (all of it when followed, rating >= 2), in every
    response column; base: level 10 on the last prompt token only. Levels 0..10, as the authors stored them."""
    explain = np.zeros((n, m), np.float32)
    if tuned:
        explain[: (n if rating >= 2 else max(1, n // 2)), :] = 10.0
    else:
        explain[n - 1, :] = 10.0
    return explain


@pytest.fixture
def release(tmp_path):
    """Result folders per model in the authors' format, built from the fixture prompt file."""
    records = read_prompts(FINAL)
    ratings = ratings_of(read_ratings(RATINGS), "vicuna_7B")
    for name, tuned in (("ifa_llama_7b", False), ("ifa_vicuna_7b", True)):
        folder = tmp_path / "results" / name
        folder.mkdir(parents=True)
        for r in records:
            prompt_tokens, response_tokens = sp_tokens(r.prompt), sp_tokens(r.response)
            explain = planted(r.id, len(prompt_tokens), len(response_tokens), tuned, ratings[r.id])
            write_pickle(folder / f"{r.id}.pkl", r.id, prompt_tokens, response_tokens, explain)
    return tmp_path


def test_import_then_stats_reproduce_the_papers_tables(release, capsys):
    out, results = release / "out", release / "results"
    assert main(["attribute-import", "--results", str(results / "ifa_llama_7b"), "--model", "llama-7b",
                 "--prompts", str(FINAL), "--out", str(out)]) == 0
    assert main(["attribute-import", "--results", str(results / "ifa_vicuna_7b"), "--model", "vicuna-7b",
                 "--prompts", str(FINAL), "--ratings", str(RATINGS), "--ratings-model", "vicuna_7B",
                 "--out", str(out)]) == 0
    assert "12 examples for vicuna-7b: 12 done, 0 failed, 0 empty responses, 10 labelled" in capsys.readouterr().err
    examples = pd.read_parquet(out / "attribution_examples.parquet")
    tokens = pd.read_parquet(out / "attribution_tokens.parquet")
    from mechit.attribution.dataset import EXAMPLE_COLUMNS, TOKEN_COLUMNS

    assert list(examples.columns) == EXAMPLE_COLUMNS and list(tokens.columns) == TOKEN_COLUMNS
    assert list(examples.model) == ["llama-7b"] * 12 + ["vicuna-7b"] * 12 and (examples.status == "ok").all()
    score = examples.set_index(["model", "id"]).instruction_score
    # lima_author_3: 6 prompt tokens, all in the one instruction sentence. Vicuna (rated 1): level 10 on
    # tokens 0..2 in every column -> rescaled density 1 on 3 tokens; llama: 1 on the last token.
    assert score["vicuna-7b", "lima_author_3"] == pytest.approx(3 / math.log2(2 + 6), rel=1e-6)
    assert score["llama-7b", "lima_author_3"] == pytest.approx(1 / math.log2(2 + 6), rel=1e-6)
    # the authors' sentence span, mapped by characters: "▁Sort" .. "▁order." and nothing of the context
    part = tokens[(tokens.model == "vicuna-7b") & (tokens.id == "user_oriented_task_3")]
    assert list(part[part.in_instruction].token) == ["▁Sort", "▁them", "▁in", "▁ascending", "▁order."]
    labels = examples[examples.model == "vicuna-7b"].set_index("id").label
    assert pd.isna(labels["lima_author_4"])  # rating 0: dropped
    assert pd.isna(labels["mtbench_84"])  # rated 1 but "x = 3." is 3 tokens: too short
    assert labels["user_oriented_task_0"] == "followed" and labels["user_oriented_task_2"] == "not_followed"
    assert examples[examples.model == "llama-7b"].label.isna().all()
    stored = load_file(str(RecordStore(out).tensor_path("vicuna-7b", "lima_author_3")))
    assert set(stored) == {"levels"} and float(stored["levels"].max()) == 10.0

    assert main(["attribute-stats", str(out), "--base", "llama-7b", "--tuned", "vicuna-7b", "--n-boot", "200"]) == 0
    stats = pd.read_parquet(out / "attribution_stats.parquet")
    models = stats[stats.comparison == "tuned_vs_base"].set_index("group")
    assert list(models.index) == ["(all)", "lima", "mtbench", "user"] and list(models.n) == [12, 4, 4, 4]
    for group, part in examples.groupby("group"):
        assert models.loc[group, "mean_a"] == pytest.approx(part[part.model == "vicuna-7b"].instruction_score.mean())
        assert models.loc[group, "mean_b"] == pytest.approx(part[part.model == "llama-7b"].instruction_score.mean())
    assert (models.mean_a > models.mean_b).all()
    followed = stats[stats.comparison.str.startswith("followed")].set_index("group")
    assert set(followed.model) == {"vicuna-7b"}
    assert followed.loc[["(all)", "lima", "mtbench", "user"], ["n_a", "n_b"]].values.tolist() == [[6, 4], [2, 1], [2, 1], [2, 2]]
    assert followed.loc["(all)", "mean_a"] > followed.loc["(all)", "mean_b"]
    manifest = json.loads((out / "attribution_run.json").read_text())["settings"]
    assert manifest["models"] == ["llama-7b", "vicuna-7b"] and manifest["imported"]["vicuna-7b"]["ratings_model"] == "vicuna_7B"


def test_levels_are_not_normalised_again_and_raw_is_sparsified(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Say hi", "response": "ok",
                                   "instruction_spans": [[0, 3]]}) + "\n", encoding="utf-8")
    folder = tmp_path / "res"
    folder.mkdir()
    # column 2 peaks at 8: as levels it stays 8; normalised again it would become 10
    write_pickle(folder / "a.pkl", "a", ["▁Say", "▁hi"], ["▁o", "k"], [[10.0, 8.0], [9.0, 0.0]])
    assert main(["attribute-import", "--results", str(folder), "--model", "m", "--prompts", str(prompts),
                 "--out", str(tmp_path / "out")]) == 0
    levels = load_file(str(RecordStore(tmp_path / "out").tensor_path("m", "a")))["levels"]
    assert levels.tolist() == [[10.0, 8.0], [9.0, 0.0]]
    (folder / "a.pkl").unlink()
    meta = {"prompt_tokens": json.dumps(["▁Say", "▁hi"]), "response_tokens": json.dumps(["▁o", "k"])}
    save_file({"raw": torch.tensor([[10.0, 8.0], [9.0, 0.0]])}, str(folder / "a.safetensors"), metadata=meta)
    assert main(["attribute-import", "--results", str(folder), "--model", "m", "--prompts", str(prompts),
                 "--out", str(tmp_path / "out")]) == 0
    stored = load_file(str(RecordStore(tmp_path / "out").tensor_path("m", "a")))
    assert stored["levels"].tolist() == [[10.0, 10.0], [9.0, 0.0]] and set(stored) == {"levels", "raw"}


def test_import_records_failures_and_refuses_a_mixed_out(tmp_path, release, capsys):
    folder = release / "results" / "ifa_llama_7b"
    (folder / "lima_author_2.pkl").unlink()
    write_pickle(folder / "lima_author_3.pkl", "x", ["▁Other", "▁words"], ["▁a"], [[10.0], [0.0]])
    out = tmp_path / "out"
    assert main(["attribute-import", "--results", str(folder), "--model", "llama-7b", "--prompts", str(FINAL),
                 "--out", str(out), "--format", "csv"]) == 1
    errors = pd.read_csv(out / "attribution_examples.csv").set_index("id").error
    assert "example 'lima_author_2': no result file lima_author_2.pkl" in errors["lima_author_2"]
    assert "example 'lima_author_3': the token strings spell ' Other words'" in errors["lima_author_3"]
    assert main(["attribute-import", "--results", str(folder), "--model", "other", "--prompts", str(FINAL),
                 "--out", str(out)]) == 2
    assert "holds imports with another --format" in capsys.readouterr().err
    (out / "attribution_run.json").write_text(json.dumps({"settings": {"models": ["a"], "ids": []}, "finished": {}}))
    assert main(["attribute-import", "--results", str(folder), "--model", "llama-7b", "--prompts", str(FINAL),
                 "--out", str(out), "--format", "csv"]) == 2
    assert "holds a `mechit attribute` run" in capsys.readouterr().err
