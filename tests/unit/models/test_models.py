"""Loading, spec resolution, GGUF checks, pairs and ``mechit info`` on tiny models."""

from __future__ import annotations

import shutil
import signal
import warnings

import pytest
import torch

from mechit.models import gguf as mechit_gguf
from mechit.models import loading
from mechit.models.loading import Source
from mechit.arch.weights import describe
from mechit.errors import IncompatiblePairError, SpecError
from mechit.models.pair import ExtraSpecialTokensWarning, check_pair, load_pair
from mechit.models import load_model, resolve_spec

FAMILIES = ["llama", "gpt2", "gemma"]
TEXT = "Translate the cat into French, please."



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

