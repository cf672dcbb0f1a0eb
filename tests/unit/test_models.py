"""Loading, pair checks, architecture facts and folded weight views on tiny models."""

from __future__ import annotations

import shutil
import signal
import warnings

import pytest
import torch

from mechit.arch.families import family
from mechit.models import gguf as mechit_gguf
from mechit.models import loading
from mechit.models.loading import Source
from mechit.errors import IncompatiblePairError, InputError, SpecError
from mechit.models.pair import ExtraSpecialTokensWarning, check_pair, load_pair
from mechit.models import load_model, resolve_spec
from mechit.arch.weights import (
    describe,
    embed_scale,
    input_embedding,
    kv_head,
    mlp_in_weights,
    mlp_out_weights,
    ov_weights,
    qk_weights,
    unembedding,
)

FAMILIES = ["llama", "gpt2", "gemma"]
TEXT = "Translate the cat into French, please."


@pytest.fixture(scope="session")
def tiny(tiny_llama, tiny_gpt2, tiny_gemma):
    return {"llama": tiny_llama, "gpt2": tiny_gpt2, "gemma": tiny_gemma}


@pytest.fixture(scope="session")
def hf_models(tiny_llama_dir, tiny_gpt2_dir, tiny_gemma_dir):
    from transformers import AutoModelForCausalLM

    dirs = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir, "gemma": tiny_gemma_dir}
    return {
        name: AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        for name, path in dirs.items()
    }


def _cache(model, text=TEXT):
    tokens = model.to_tokens(text)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _rms(x, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _layernorm(x, eps):
    x = x - x.mean(-1, keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _normalise(model, x):
    """Normalise without the scale, as the family's input norm does."""
    eps = model.cfg.eps
    return _layernorm(x, eps) if family(model).norm == "LayerNorm" else _rms(x, eps)


# ---------------------------------------------------------------- loading from a directory
@pytest.mark.parametrize("name", FAMILIES)
def test_load_dir_gives_the_hf_logits(tiny, hf_models, name):
    model, hf = tiny[name], hf_models[name]
    assert not model.training
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_describe_llama(tiny_llama):
    info = describe(tiny_llama)
    assert {k: info[k] for k in ("layers", "heads", "kv_heads", "d_model", "d_head", "d_mlp", "d_vocab")} == {
        "layers": 2, "heads": 4, "kv_heads": 2, "d_model": 64, "d_head": 16, "d_mlp": 128, "d_vocab": 956,
    }
    assert info["norm"] == "RMSNorm" and info["folded"] is False and info["embed_scale"] == 1.0
    assert info["architecture"] == "LlamaForCausalLM" and info["gated_mlp"] is True


def test_describe_gemma_and_gpt2(tiny_gemma, tiny_gpt2):
    gemma = describe(tiny_gemma)
    assert gemma["norm"] == "RMSNorm (1 + w)" and gemma["kv_heads"] == 1
    assert gemma["embed_scale"] == 8.0 and gemma["post_norms"] and gemma["qk_norm"]
    gpt2 = describe(tiny_gpt2)
    assert gpt2["norm"] == "LayerNorm" and gpt2["kv_heads"] == 4 and gpt2["gated_mlp"] is False


def test_unknown_architecture_falls_back_to_the_tl_config(tiny_gemma, monkeypatch):
    monkeypatch.setattr(tiny_gemma.cfg, "architecture", "SomethingNewForCausalLM")
    fam = family(tiny_gemma)
    assert fam.name == "SomethingNewForCausalLM"
    assert fam.norm_offset == 1.0  # TransformerLens flags Gemma's (1 + w) norm
    assert fam.sqrt_d_model_embed is False


# ---------------------------------------------------------------- architecture facts
@pytest.mark.parametrize("name", FAMILIES)
def test_embed_scale_matches_hook_embed(tiny, name):
    model = tiny[name]
    tokens, _, cache = _cache(model)
    expected = input_embedding(model)[tokens[0]] * embed_scale(model)
    torch.testing.assert_close(cache["hook_embed"][0], expected, atol=1e-5, rtol=1e-5)
    assert embed_scale(model) == (8.0 if name == "gemma" else 1.0)


def test_kv_head_mapping(tiny):
    assert [kv_head(tiny["llama"], h) for h in range(4)] == [0, 0, 1, 1]
    assert [kv_head(tiny["gemma"], h) for h in range(4)] == [0, 0, 0, 0]
    assert [kv_head(tiny["gpt2"], h) for h in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_folded_qkv_reproduce_the_hooks(tiny, name):
    model = tiny[name]
    _, _, cache = _cache(model)
    layer = 1
    x = _normalise(model, cache[f"blocks.{layer}.hook_resid_pre"][0])
    w_q, w_k = qk_weights(model, layer)
    w_v, _ = ov_weights(model, layer)
    attn = model.blocks[layer].attn
    # LayerNorm bias and projection biases are not part of the view: add them back here.
    ln_bias = (model.blocks[layer].ln1.original_component.bias.detach()
               if family(model).norm == "LayerNorm" else torch.zeros(model.cfg.d_model))
    for hook, weight, raw, bias_name in (("q", w_q, attn.W_Q, "b_Q"), ("k", w_k, attn.W_K, "b_K"),
                                         ("v", w_v, attn.W_V, "b_V")):
        observed = cache[f"blocks.{layer}.attn.hook_{hook}"][0]  # [pos, H or Hkv, dh]
        bias = getattr(attn, bias_name, None)
        for h in range(model.cfg.n_heads):
            src = kv_head(model, h) if hook != "q" else h
            extra = torch.einsum("d,de->e", ln_bias, raw.detach()[src])
            if bias is not None:
                extra = extra + bias.detach()[src]
            torch.testing.assert_close(x @ weight[h] + extra, observed[:, src], atol=1e-4, rtol=1e-4)


def test_gemma_qk_norm_scale_is_folded_into_columns(tiny_gemma):
    model, layer = tiny_gemma, 1
    _, _, cache = _cache(model)
    x = _rms(cache[f"blocks.{layer}.hook_resid_pre"][0], model.cfg.eps)
    w_q, w_k = qk_weights(model, layer)
    q_raw = cache[f"blocks.{layer}.attn.hook_q"][0]               # [pos, H, dh], before q_norm
    q_normed = cache[f"blocks.{layer}.attn.hook_q_normed"][0]     # [H, pos, dh]
    eps = model.blocks[layer].attn.q_norm.original_component.eps
    rms = torch.sqrt(q_raw.pow(2).mean(-1, keepdim=True) + eps)   # [pos, H, 1]
    for h in range(4):
        torch.testing.assert_close(x @ w_q[h], q_normed[h] * rms[:, h], atol=1e-4, rtol=1e-4)
    k_normed = cache[f"blocks.{layer}.attn.hook_k_normed"][0]
    k_raw = cache[f"blocks.{layer}.attn.hook_k"][0]
    rms_k = torch.sqrt(k_raw.pow(2).mean(-1, keepdim=True) + eps)
    for h in range(4):
        torch.testing.assert_close(x @ w_k[h], k_normed[0] * rms_k[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_folded_mlp_in_reproduces_the_hooks(tiny, name):
    model, layer = tiny[name], 0
    _, _, cache = _cache(model)
    x = _rms(cache[f"blocks.{layer}.hook_resid_mid"][0], model.cfg.eps)
    w_in, w_gate = mlp_in_weights(model, layer)
    torch.testing.assert_close(x @ w_in, cache[f"blocks.{layer}.mlp.hook_pre_linear"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x @ w_gate, cache[f"blocks.{layer}.mlp.hook_pre"][0], atol=1e-4, rtol=1e-4)


def test_gpt2_mlp_has_no_gate(tiny_gpt2):
    w_in, w_gate = mlp_in_weights(tiny_gpt2, 0)
    assert w_gate is None and w_in.shape == (64, 256)


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_folded_unembedding_reproduces_the_logits(tiny, name):
    model = tiny[name]
    _, logits, cache = _cache(model)
    x = _rms(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0], model.cfg.eps)
    torch.testing.assert_close(x @ unembedding(model), logits[0], atol=1e-4, rtol=1e-4)


def test_views_against_hf_parameters(tiny_gemma, tiny_llama, hf_models):
    gemma = hf_models["gemma"].model
    expected = gemma.layers[1].mlp.down_proj.weight.T * (1 + gemma.layers[1].post_feedforward_layernorm.weight)
    torch.testing.assert_close(mlp_out_weights(tiny_gemma, 1), expected.detach())
    w_v, w_o = ov_weights(tiny_gemma, 1)
    o_scale = 1 + gemma.layers[1].post_attention_layernorm.weight.detach()
    raw_o = gemma.layers[1].self_attn.o_proj.weight.detach().T.reshape(4, 16, 64)
    torch.testing.assert_close(w_o, raw_o * o_scale)
    llama = hf_models["llama"].model
    torch.testing.assert_close(mlp_out_weights(tiny_llama, 0), llama.layers[0].mlp.down_proj.weight.T.detach())
    v_rows = llama.layers[1].self_attn.v_proj.weight.detach().T * llama.layers[1].input_layernorm.weight.detach()[:, None]
    w_v, _ = ov_weights(tiny_llama, 1)
    torch.testing.assert_close(w_v[3], v_rows.reshape(64, 2, 16)[:, 1])   # head 3 reads KV head 1


def test_views_are_detached_fp32_copies(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.original_model.state_dict().items()}
    views = [*qk_weights(tiny_llama, 0), *ov_weights(tiny_llama, 0), mlp_in_weights(tiny_llama, 0)[0],
             mlp_out_weights(tiny_llama, 0), input_embedding(tiny_llama), unembedding(tiny_llama)]
    for view in views:
        assert view.dtype == torch.float32 and not view.requires_grad
        view.mul_(0)
    after = tiny_llama.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_layer_out_of_range(tiny_llama):
    with pytest.raises(InputError, match="layer 2 out of range"):
        qk_weights(tiny_llama, 2)


# ---------------------------------------------------------------- spec resolution & bad input
def test_resolve_spec_kinds(tiny_llama_dir, tmp_path):
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert resolve_spec("gpt2").kind == "hub"
    assert resolve_spec(tiny_llama_dir) == Source("dir", str(tiny_llama_dir))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert resolve_spec(gguf).kind == "gguf"
    assert resolve_spec(tmp_path).kind == "gguf"  # a directory holding exactly one .gguf


@pytest.mark.parametrize("spec, message", [
    ("no/such/dir/", "neither a hub id"),
    ("./relative/missing", "neither a hub id"),
    ("a b c", "neither a hub id"),
    ("missing-model.gguf", "GGUF file not found"),
])
def test_bad_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        load_model(spec)


def test_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(SpecError, match="not a .gguf file"):
        load_model(path)


def test_directory_without_config(tmp_path):
    with pytest.raises(SpecError, match="no config.json"):
        load_model(tmp_path)


def test_missing_organism_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "organism_dir", lambda which: tmp_path / which)
    with pytest.raises(SpecError, match="organism-tuned.*missing"):
        load_model("organism-tuned")
    with pytest.raises(SpecError, match="organism-base"):
        load_pair()


def test_truncated_safetensors(tiny_llama_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SpecError, match="cannot load model .*broken"):
        load_model(broken)


def _write_gguf(path, arch: str, n_values: int = 4096):
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.arange(n_values, dtype=np.float32).reshape(-1, 16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_unsupported_architecture(tmp_path):
    path = _write_gguf(tmp_path / "bert.gguf", "bert")
    assert mechit_gguf.gguf_architecture(path) == "bert"
    with pytest.raises(SpecError, match="architecture 'bert' is not supported"):
        load_model(path)


def test_gguf_corrupt_and_truncated(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(SpecError, match="cannot read GGUF file .*garbage.gguf"):
        load_model(garbage)
    import struct

    headless = tmp_path / "headless.gguf"
    headless.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    with pytest.raises(SpecError, match="no general.architecture field"):
        load_model(headless)
    good = _write_gguf(tmp_path / "llama.gguf", "llama")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SpecError, match="truncated.gguf"):
        load_model(truncated)


def test_gguf_memo_is_scoped(tmp_path):
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    path = _write_gguf(tmp_path / "llama.gguf", "llama")
    with mechit_gguf._gguf_parsed_once():
        assert gguf.GGUFReader(str(path)) is gguf.GGUFReader(str(path))  # parsed once
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map
    with pytest.raises(SpecError):
        load_model(path)  # fails inside the memo (a 'llama' file without weights) ...
    assert gguf.GGUFReader is reader  # ... and still restores gguf


class _Hang(Exception):
    pass


@pytest.fixture
def no_hang():
    """Fail (instead of hanging) if the body takes more than 10 s: the offline contract."""
    def alarm(*_):
        raise _Hang("hub lookup did not fail within 10 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_uncached_hub_id_with_hub_offline(monkeypatch, no_hang):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError) as info:
        load_model("nobody-xyz/not-a-cached-model")
    message = str(info.value)
    assert "nobody-xyz/not-a-cached-model" in message and "HF_HUB_OFFLINE" in message
    assert "local model directory" in message and ".gguf" in message


def test_uncached_hub_id_with_unreachable_hub(monkeypatch, no_hang):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SpecError) as info:
        load_model("nobody-xyz/not-a-cached-model")
    message = str(info.value)
    assert "cannot be reached" in message and "127.0.0.1:9" in message and ".gguf" in message


def test_cached_hub_id_loads_from_the_cache_without_network(tiny_llama_dir, tmp_path, monkeypatch, no_hang):
    import huggingface_hub.constants as hub_constants

    commit = "0" * 40
    repo = tmp_path / "models--someone--tiny-llama"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # unreachable: must not be needed
    model = load_model("someone/tiny-llama")
    assert describe(model)["layers"] == 2 and model.mechit_spec == "someone/tiny-llama"


# ---------------------------------------------------------------- pairs
def test_pair_of_compatible_models(tiny_pair_dirs):
    base_dir, tuned_dir = tiny_pair_dirs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtraSpecialTokensWarning)
        pair = load_pair(base_dir, tuned_dir)
    assert [name for name, _ in pair] == ["base", "tuned"]
    assert pair.base_spec == str(base_dir) and pair.tuned_spec == str(tuned_dir)
    assert not torch.equal(pair.base.W_E, pair.tuned.W_E)


def test_load_pair_needs_both(tiny_llama_dir):
    with pytest.raises(SpecError, match="both base and tuned"):
        load_pair(tiny_llama_dir)


@pytest.mark.parametrize("variant, overrides, message", [
    ("gemma", {}, "architectures differ: LlamaForCausalLM vs Gemma3ForCausalLM"),
    ("llama", {"num_hidden_layers": 3}, "config n_layers differs: 2 vs 3"),
    ("llama", {"num_key_value_heads": 4}, "config n_key_value_heads differs: 2 vs 4"),
    ("llama", {"intermediate_size": 96}, "config d_mlp differs: 128 vs 96"),
    ("llama", {"tie_word_embeddings": True}, "parameter lm_head.weight exists only in the first model"),
    ("llama", {"attention_bias": True}, "parameter model.layers.0.self_attn.q_proj.bias exists only in the second"),
])
def test_pair_mismatch_names_the_first_difference(tiny_llama, tiny_dirs, variant, overrides, message):
    name = f"{variant}-" + "-".join(f"{k}{v}" for k, v in overrides.items())
    other = load_model(tiny_dirs(variant, name, **overrides))
    with pytest.raises(IncompatiblePairError, match=message):
        check_pair(tiny_llama, other)


def test_pair_vocabulary_mismatch(tiny_llama, tiny_llama_dir, tiny_gemma_dir, tmp_path):
    # Same architecture and shapes (both vocabularies have 956 tokens), other tokenizer.
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_llama_dir, mixed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_gemma_dir / name, mixed / name)
    other = load_model(mixed)
    assert other.cfg.d_vocab == tiny_llama.cfg.d_vocab
    with pytest.raises(IncompatiblePairError, match="token '<unk>' has id 0 vs 3"):
        check_pair(tiny_llama, other)


def test_extra_special_tokens_are_allowed_with_a_warning(tiny_llama, tiny_dirs):
    tuned = load_model(tiny_dirs("llama", "llama-chat", seed=2, extra_special_tokens=["<|tool|>", "<|sys|>"]))
    assert tuned.cfg.d_vocab == tiny_llama.cfg.d_vocab + 2
    with pytest.warns(ExtraSpecialTokensWarning, match=r"second model only: \['<\|sys\|>', '<\|tool\|>'\]"):
        check_pair(tiny_llama, tuned)
    with pytest.warns(ExtraSpecialTokensWarning, match="first model only"):
        check_pair(tuned, tiny_llama)


def test_extra_ordinary_tokens_are_refused(tiny_llama, tiny_dirs):
    tuned = load_model(tiny_dirs("llama", "llama-extra-word", extra_tokens=["zzqxword"]))
    with pytest.raises(IncompatiblePairError, match="'zzqxword' .* only in the second .* not an added special token"):
        check_pair(tiny_llama, tuned)


# ---------------------------------------------------------------- mechit info
def test_info_command(tiny_gemma_dir, capsys):
    from mechit import cli

    assert cli.main(["info", str(tiny_gemma_dir)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert {k: lines[k] for k in ("layers", "heads", "kv_heads", "d_model", "d_mlp", "d_vocab", "norm", "folded")} == {
        "layers": "2", "heads": "4", "kv_heads": "1", "d_model": "64", "d_mlp": "128", "d_vocab": "956",
        "norm": "RMSNorm (1 + w)", "folded": "False",
    }


def test_info_command_json(tiny_llama_dir, capsys):
    import json

    from mechit import cli

    assert cli.main(["info", "--json", str(tiny_llama_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kv_heads"] == 2 and info["architecture"] == "LlamaForCausalLM"


def test_info_command_bad_spec(capsys):
    from mechit import cli

    assert cli.main(["info", "no/such/dir/"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mechit: error: model spec 'no/such/dir/' is neither a hub id (owner/name), "
                   "an existing directory nor a .gguf file"]


# ---------------------------------------------------------------- freed memory back to the OS
def _rss_anon_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status RssAnon (not Linux)")


def test_release_free_memory_returns_freed_heap_pages():
    import ctypes

    from mechit import runtime as memory

    if memory._malloc_trim() is None:
        pytest.skip("not glibc")
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 1024  # 64 MiB in blocks below any mmap threshold: all on the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)  # resident now
    for block in blocks[:-1]:
        libc.free(block)  # the last block stays, so free() cannot shrink the heap top itself
    before = _rss_anon_mb()
    assert memory.release_free_memory() is True
    released = before - _rss_anon_mb()
    libc.free(blocks[-1])
    assert released > 32, f"only {released:.1f} MiB of 64 MiB freed heap went back to the OS"


def test_load_model_releases_free_memory_and_keeps_the_weights(tiny_llama_dir, tiny_llama, monkeypatch):
    calls = []
    monkeypatch.setattr(loading, "release_free_memory", lambda: calls.append(1) or True)
    untrimmed = load_model(tiny_llama_dir)
    assert calls == [1]
    trimmed = tiny_llama  # loaded with the real release_free_memory
    assert untrimmed.original_model.state_dict().keys() == trimmed.original_model.state_dict().keys()
    for name, value in trimmed.original_model.state_dict().items():
        assert torch.equal(value, untrimmed.original_model.state_dict()[name]), name
    tokens = trimmed.to_tokens(TEXT)
    with torch.no_grad():
        assert torch.equal(trimmed(tokens), untrimmed(tokens))


def test_trim_hooks_leave_the_forward_unchanged(tiny_llama):
    from mechit.runtime import trim_hooks

    hooks = trim_hooks(tiny_llama)
    assert [name for name, _ in hooks] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    tokens = tiny_llama.to_tokens(TEXT)
    with torch.no_grad():
        assert torch.equal(tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks), tiny_llama(tokens))
