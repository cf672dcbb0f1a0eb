"""Determinism (issue 8 §3): the same inputs give byte-identical outputs on two runs.

One run in this process, one in a separate process (forked from ``_fork_runner.py``) with a
different ``PYTHONHASHSEED`` and the same number of torch threads; every file of the two
output directories (parquet and CSV tables, JSON records and manifest, safetensors) must
have the same bytes. Generation is greedy, so ``--response generate`` is covered too, and
the row order is models as given, then examples in file order.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from .forked import Runner, files

PROMPTS = [
    {"id": "t1", "prompt": "Translate the cat into french", "response": "le chat", "instruction_spans": [[0, 9]],
     "group": "translate", "label": "followed"},
    {"id": "g1", "prompt": "Write a story about the dog", "response": None, "instruction_spans": [[0, 7]],
     "group": "write", "label": None},
    {"id": "e1", "prompt": "the mat: explain this text", "response": "it is a mat", "instruction_spans": [[9, 16]],
     "group": "explain", "label": "not_followed"},
    {"id": "bad", "prompt": "Say hi", "response": "", "instruction_spans": [], "group": "write", "label": None},
]
RUNS = {
    "reference": [],
    "generate-chat-csv": ["--response", "generate", "--chat-template", "--format", "csv"],
}
ORGANISM = "organism"  # the embedded pair on 6 of its held-out prompts, when its weights are installed


def organism_installed() -> bool:
    from mechit.organism.weights import weights_dir

    return all((weights_dir() / name / "config.json").is_file() for name in ("base", "tuned"))


@pytest.fixture(scope="module")
def outputs(tiny_pair_dirs, tmp_path_factory):
    """{run name: (in-process output dir, other-process output dir)}."""
    from mechit.cli import main

    root = tmp_path_factory.mktemp("determinism")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS), encoding="utf-8")
    models = [a for d in tiny_pair_dirs for a in ("--model", str(d))]
    argv = {name: ["attribute", *models, "--prompts", str(prompts), "--max-new-tokens", "6", *extra]
            for name, extra in RUNS.items()}
    if organism_installed():
        from mechit.organism import held_out_prompts

        organism_prompts = root / "organism.jsonl"
        organism_prompts.write_text("".join(json.dumps(r) + "\n" for r in held_out_prompts()[::60]), encoding="utf-8")
        # the organism answers in its chat format (without it, it mostly ends at once: empty responses)
        argv[ORGANISM] = ["attribute", "--model", "organism-base", "--model", "organism-tuned",
                          "--prompts", str(organism_prompts), "--response", "generate", "--chat-template",
                          "--max-new-tokens", "8"]
    for name in argv:
        main([*argv[name], "--out", str(root / name / "a")])
    runner = Runner(root, PYTHONHASHSEED="12345", RUNNER_THREADS=str(torch.get_num_threads()))
    try:
        for name in argv:
            status = runner.wait(runner.start([*argv[name], "--out", str(root / name / "b")], root / f"{name}.log"))
            assert status in (0, 1), (root / f"{name}.log").read_text()[-3000:]  # 1: the bad example failed
    finally:
        runner.close()
    return {name: (root / name / "a", root / name / "b") for name in argv}


@pytest.mark.parametrize("name", [*RUNS, ORGANISM])
def test_two_runs_are_byte_identical(outputs, name):
    if name not in outputs:
        pytest.skip("the organism weights are not installed")
    a, b = outputs[name]
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    tables = [k for k in fa if k.endswith((".parquet", ".csv"))]
    assert len(tables) == 2 and len([k for k in fa if k.endswith(".safetensors")]) >= 2 * 3
    if name == ORGANISM:  # generated answers to attribute, not empty ones
        examples = pd.read_parquet(a / "attribution_examples.parquet")
        assert (examples["status"] == "ok").mean() >= 0.8, examples[["model", "id", "status"]]
    differ = [k for k in fa if fa[k] != fb[k]]
    assert differ == [], f"differ between two runs: {differ}"


@pytest.mark.parametrize("name", list(RUNS))
def test_row_order_is_models_then_file_order(outputs, tiny_pair_dirs, name):
    a, _ = outputs[name]
    suffix = ".csv" if "csv" in name else ".parquet"
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    examples = read(a / f"attribution_examples{suffix}")
    ids = [r["id"] for r in PROMPTS]
    assert list(examples["id"]) == ids * 2
    assert list(examples["model"]) == [str(tiny_pair_dirs[0])] * 4 + [str(tiny_pair_dirs[1])] * 4
    tokens = read(a / f"attribution_tokens{suffix}")
    keys = list(dict.fromkeys(zip(tokens["model"], tokens["id"])))
    assert keys == [(m, i) for m in map(str, tiny_pair_dirs) for i in ids if i != "bad"]
    assert (tokens.groupby(["model", "id"], sort=False)["position"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_generation_is_greedy(outputs, tiny_pair_dirs):
    """The generated response equals argmax decoding done here by hand."""
    from mechit.models import load_model
    from mechit.tokens import encode

    a, _ = outputs["reference"]
    examples = pd.read_parquet(a / "attribution_examples.parquet")
    model = load_model(tiny_pair_dirs[0])
    row = examples[(examples["id"] == "g1") & (examples["model"] == str(tiny_pair_dirs[0]))].iloc[0]
    ids = encode(model.tokenizer, "Write a story about the dog", "").input_ids
    n_prompt = len(ids)
    with torch.no_grad():
        for _ in range(6):
            nxt = model(ids[None])[0, -1].argmax()
            ids = torch.cat([ids, nxt[None]])
            if int(nxt) == model.tokenizer.eos_token_id:
                break
    expected = model.tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)
    assert row["response"].strip() == expected.strip()
