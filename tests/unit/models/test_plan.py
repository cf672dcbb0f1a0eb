"""The memory plan (mechit/models/plan.py), `mechit info` without weights, and the refusal
before loading."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from mechit.errors import SpecError
from mechit.models import check_fits, load_model, read_plan

# Llama-2-70B's config.json as published (meta-llama/Llama-2-70b-hf).
LLAMA2_70B = {
    "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 8192, "intermediate_size": 28672,
    "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 64, "num_hidden_layers": 80,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "torch_dtype": "float16",
    "vocab_size": 32000,
}
# Hand count: embeddings 2 * 32000 * 8192; per layer Q, O 8192^2 each, K, V 8192 * 1024 each,
# MLP 3 * 8192 * 28672, two norms 2 * 8192; final norm 8192.
LLAMA2_70B_PARAMETERS = 2 * 32000 * 8192 + 80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192) + 8192


@pytest.fixture
def llama70b_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA2_70B))
    return tmp_path


def test_70b_config_plan_without_weights(llama70b_dir):
    plan = read_plan(llama70b_dir)
    assert plan.parameters == LLAMA2_70B_PARAMETERS == 68_976_648_192
    assert plan.source == "config.json" and plan.own_dtype == "float16"
    assert (plan.n_layers, plan.n_heads, plan.n_key_value_heads, plan.d_head) == (80, 64, 8, 128)
    assert plan.weight_bytes(torch.bfloat16) == 2 * LLAMA2_70B_PARAMETERS
    assert plan.weight_bytes(torch.float32) == 4 * LLAMA2_70B_PARAMETERS


def test_info_on_70b_config_prints_parameters_and_sizes_fast(llama70b_dir, capsys):
    from mechit import cli

    started = time.perf_counter()
    assert cli.main(["info", "--json", str(llama70b_dir)]) == 0
    elapsed = time.perf_counter() - started
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == LLAMA2_70B_PARAMETERS and info["read_from"] == "config.json"
    assert info["weights bfloat16 GiB"] == round(2 * LLAMA2_70B_PARAMETERS / 2**30, 3) == 128.479
    assert info["weights float32 GiB"] == 256.958
    assert elapsed < 10, "mechit info must not load weights"


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma"])
def test_config_count_equals_loaded_count(family, tiny_dirs, tmp_path):
    """The config formula (no weights at hand) and the safetensors headers both give the
    number of parameters transformers' own model of the directory has."""
    from transformers import AutoModelForCausalLM

    directory = tiny_dirs(family)
    loaded = load_model(directory)
    expected = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(directory).parameters())
    assert read_plan(directory).source == "safetensors headers"
    assert read_plan(directory).parameters == expected
    config_only = tmp_path / family
    config_only.mkdir()
    shutil.copy(directory / "config.json", config_only / "config.json")
    assert read_plan(config_only).source == "config.json"
    assert read_plan(config_only).parameters == expected
    assert read_plan(config_only).n_layers == loaded.cfg.n_layers
    assert read_plan(config_only).d_mlp == loaded.cfg.d_mlp


def test_check_fits_uses_max_memory(tiny_llama_dir):
    plan = read_plan(tiny_llama_dir)
    need = plan.weight_bytes(torch.float32)
    check_fits(plan, torch.float32, torch.device("cpu"), max_memory=need)
    with pytest.raises(SpecError, match=r"needs .* GiB for its weights in float32 .* --max-memory allows"):
        check_fits(plan, torch.float32, torch.device("cpu"), max_memory=need - 1)
    check_fits(plan, torch.bfloat16, torch.device("cpu"), max_memory=need // 2)


@pytest.mark.parametrize("argv", [
    ["heads", "--model", "{m}", "--out", "{out}"],
    ["ffn", "--model", "{m}", "--out", "{out}"],
    ["compare", "--base", "{m}", "--tuned", "{t}", "--out", "{out}", "--only", "heads"],
])
def test_command_refuses_a_model_that_does_not_fit_in_one_line(argv, llama70b_dir, tmp_path, capsys):
    from mechit import cli

    tuned = tmp_path / "tuned"
    shutil.copytree(llama70b_dir, tuned)
    started = time.perf_counter()
    code = cli.main([a.format(m=llama70b_dir, t=tuned, out=tmp_path / "out") for a in argv])
    elapsed = time.perf_counter() - started
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mechit:")]  # not progress bars
    assert code == 2 and len(err) == 1, err
    assert "needs 256.96 GiB for its weights in float32 (68.98 B parameters)" in err[0]
    assert elapsed < 10


def test_load_model_checks_the_weights_in_the_dtype_they_load_in(tiny_llama_dir):
    cap = read_plan(tiny_llama_dir).weight_bytes(torch.bfloat16)
    with pytest.raises(SpecError, match="in float32 .* --max-memory allows"):
        load_model(tiny_llama_dir, device="cpu", max_memory=cap)
    model = load_model(tiny_llama_dir, device="cpu", dtype="bfloat16", max_memory=cap)
    assert {p.dtype for p in model.original_model.parameters()} == {torch.bfloat16}
