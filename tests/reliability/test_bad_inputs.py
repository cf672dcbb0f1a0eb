"""The bad-input corpus (issue 8 §2): every case in ``tests/bad_inputs/cases.json`` runs
``mechit.cli.main`` in-process on tiny model directories and must

- exit non-zero;
- print exactly one ``error:`` line on stderr (for a bad example among good ones: exactly
  one line carrying that example's message) naming the file/line/field and the problem
  (all ``expect`` substrings, ignoring case), and no traceback;
- for a prompt file with good records mixed in (``good_ids``): still process the good
  records (they have scores in ``attribution_examples`` and rows in ``attribution_tokens``)
  and record the bad one with its message in the ``error`` column;
- write nothing outside ``--out`` (the corpus folder is the working directory and must not change).

Case fields: ``id``, ``input`` (a path relative to ``tests/bad_inputs``, or null),
``args`` (placeholders ``{input}``, ``{out}``, ``{model}``, ``{tuned}``, ``{gpt2}``,
``{truncated_model}``, ``{bad_config_model}``), ``expect`` (substrings), optional
``good_ids``/``bad_id`` and ``env``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
CASES = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def models(tiny_dirs, tmp_path_factory):
    """Model directories the cases name: good tiny ones and broken copies."""
    base, tuned = tiny_dirs("llama"), tiny_dirs("llama", "llama-tuned", seed=1)
    root = tmp_path_factory.mktemp("broken-models")
    truncated = root / "truncated"
    shutil.copytree(base, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad_config = root / "bad-config"
    shutil.copytree(base, bad_config)
    (bad_config / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')
    return {"model": base, "tuned": tuned, "truncated_model": truncated, "bad_config_model": bad_config,
            "gpt2": None, "_tiny_dirs": tiny_dirs, **_checkpoint_mismatches(base, tiny_dirs("gpt2"), root)}


def _checkpoint_mismatches(base: Path, gpt2: Path, root: Path) -> dict:
    """Issue 20 family 1: copies of the tiny Llama whose weights are not what config.json says."""
    from safetensors.torch import load_file, save_file

    def variant(name: str, drop=(), add=None, config=None) -> Path:
        path = root / name
        shutil.copytree(base, path)
        weights = {k: v for k, v in load_file(str(base / "model.safetensors")).items()
                   if not any(k.startswith(d) for d in drop)}
        save_file({**weights, **(add or {})}, str(path / "model.safetensors"), metadata={"format": "pt"})
        if config is not None:
            (path / "config.json").write_text(json.dumps(config(json.loads((base / "config.json").read_text()))))
        return path

    import torch

    return {
        "missing_tensors_model": variant("missing-tensors", drop=("model.layers.1.", "lm_head.")),
        "missing_mlp_model": variant("missing-mlp", drop=("model.layers.1.mlp.", "lm_head.")),
        "missing_norm_model": variant("missing-norm", drop=("model.norm.",)),
        "unexpected_tensor_model": variant("unexpected-tensor", add={"model.layers.0.extra.weight": torch.zeros(2)}),
        "other_arch_model": variant("other-arch", config=lambda c: json.loads((gpt2 / "config.json").read_text())),
        "many_layers_model": variant("many-layers", config=lambda c: {**c, "num_hidden_layers": 100000}),
        "fewer_layers_model": variant("fewer-layers", config=lambda c: {**c, "num_hidden_layers": 1}),
        "negative_layers_model": variant("negative-layers", config=lambda c: {**c, "num_hidden_layers": -1}),
        "wider_mlp_model": variant("wider-mlp", config=lambda c: {**c, "intermediate_size": c["intermediate_size"] * 2}),
    }


def _fill(arg: str, values: dict) -> str:
    for key, value in values.items():
        if "{" + key + "}" in arg:
            if value is None and key == "gpt2":
                value = values["_tiny_dirs"]("gpt2")
            arg = arg.replace("{" + key + "}", str(value))
    return arg


def run_cli(argv: list[str], capsys) -> tuple[int, str, BaseException | None]:
    """(exit code, stderr, uncaught exception) of ``mechit.cli.main(argv)`` in-process."""
    from mechit.cli import main

    escaped = None
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception as error:  # noqa: BLE001 - the CLI would print a traceback
        code, escaped = 1, error
    return code, capsys.readouterr().err, escaped


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if "error:" in line]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(CORPUS)
    for key, value in case.get("env", {}).items():
        monkeypatch.setenv(key, value)
    before = _tree_digest(CORPUS)
    out = tmp_path / "out"
    values = {**models, "input": case["input"], "out": out}
    argv = [_fill(a, values) for a in case["args"]]
    code, stderr, escaped = run_cli(argv, capsys)

    assert escaped is None, f"uncaught {type(escaped).__name__} (the CLI would print a traceback): {escaped}"
    assert "Traceback" not in stderr
    assert code != 0, f"exit code 0 for a bad input; stderr:\n{stderr}"
    if case.get("good_ids"):
        lines = [line for line in stderr.replace("\r", "\n").splitlines()
                 if all(s.lower() in line.lower() for s in case["expect"])]
        assert len(lines) == 1, f"expected one line with {case['expect']}; stderr:\n{stderr}"
        examples = pd.read_parquet(out / "attribution_examples.parquet")
        tokens = pd.read_parquet(out / "attribution_tokens.parquet")
        good = examples[examples["id"].isin(case["good_ids"])]
        assert len(good) == len(case["good_ids"]) and good["error"].isna().all(), good
        assert good["instruction_score"].notna().all() and (good["n_prompt_tokens"] > 0).all()
        assert set(tokens["id"]) == set(case["good_ids"])
        (bad,) = examples.loc[examples["id"] == case["bad_id"], "error"]
        assert all(s.lower() in bad.lower() for s in case["expect"]), bad
    else:
        lines = _error_lines(stderr)
        assert len(lines) == 1, f"expected exactly one error line; stderr:\n{stderr}"
        missing = [s for s in case["expect"] if s.lower() not in lines[0].lower()]
        assert not missing, f"{missing} not in {lines[0]!r}"
    assert _tree_digest(CORPUS) == before, "the run wrote outside --out"


def test_corpus_size():
    """Issue 8 asks for at least 25 malformed inputs, across every kind of input."""
    kinds = {c["id"].split("_")[0] for c in CASES}
    assert len(CASES) >= 25 and {"jsonl", "tsv", "words", "corpus", "model", "cli"} <= kinds
    for case in CASES:
        if case["input"] and "does_not_exist" not in case["input"] and "no/such" not in case["input"] \
                and "absent" not in case["input"]:
            assert (CORPUS / case["input"]).exists(), case["id"]


@pytest.mark.parametrize("case_id", ["jsonl_bad_json", "model_garbage_gguf"])
def test_debug_shows_the_exception(case_id, models, tmp_path, monkeypatch):
    """With --debug the MechitError propagates (the traceback is shown) instead of one line."""
    from mechit.cli import main
    from mechit.errors import MechitError

    monkeypatch.chdir(CORPUS)
    case = next(c for c in CASES if c["id"] == case_id)
    argv = [_fill(a, {**models, "input": case["input"], "out": tmp_path / "out"}) for a in case["args"]]
    with pytest.raises(MechitError, match=case["expect"][-1]):
        main(["--debug", *argv])


def test_ids_cannot_escape_out(models, tmp_path, monkeypatch, capsys):
    """An example id like ``../../../escaped`` names files inside --out only."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    code, stderr, escaped = run_cli(["attribute", "--model", str(models["model"]), "--prompts",
                                     str(CORPUS / "prompts/path_id.jsonl"), "--out", str(out),
                                     "--max-new-tokens", "2"], capsys)
    assert escaped is None and code == 0, stderr
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    examples = pd.read_parquet(out / "attribution_examples.parquet")
    assert list(examples["id"]) == ["good1", "../../../escaped", "good2"] and examples["error"].isna().all()
