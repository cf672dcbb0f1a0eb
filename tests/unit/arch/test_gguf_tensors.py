"""GGUF tensors read one at a time (mechit/arch/gguf_tensors.py) equal what transformers'
GGUF loader makes of them: gguf's dequantiser, then transformers' own tensor processors
(Llama's Q/K reverse permutation, Gemma's norm minus one) as the reference, on small files
written here with gguf's writer (F32 norms, Q8_0 and F16 matrices)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS

from mechit.arch.families import FAMILIES, GGUF_ARCHITECTURES
from mechit.arch.gguf_tensors import GGUFTensors, unpermute_rows

N_HEADS, N_KV, D_HEAD, D_MODEL = 4, 2, 4, 32
CPU = torch.device("cpu")


def _write(path, arch: str, tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    for name, (array, kind) in tensors.items():
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _transformers(path, arch: str) -> dict[str, torch.Tensor]:
    """What transformers' load_gguf_checkpoint makes of each tensor (before renaming it)."""
    processor = TENSOR_PROCESSORS.get(arch, TENSOR_PROCESSORS["llama"].__mro__[1])(
        config={"num_attention_heads": N_HEADS, "num_key_value_heads": N_KV})
    out = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        weights = processor.process(weights=gguf.dequantize(tensor.data, tensor.tensor_type), name=tensor.name).weights
        out[tensor.name] = torch.from_numpy(np.copy(weights))
    return out


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Gemma3ForCausalLM", "Qwen2ForCausalLM"])
def test_reads_equal_transformers_processing(tmp_path, architecture):
    fam = FAMILIES[architecture]
    rng = np.random.default_rng(0)
    names = fam.gguf_tensors
    q8, f16, f32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    tensors = {
        names["W_E"].format(layer=0): (rng.normal(size=(16, D_MODEL)).astype(np.float32), q8),
        names["W_Q"].format(layer=1): (rng.normal(size=(N_HEADS * D_HEAD, D_MODEL)).astype(np.float32), q8),
        names["W_K"].format(layer=1): (rng.normal(size=(N_KV * D_HEAD, D_MODEL)).astype(np.float32), f16),
        names["W_V"].format(layer=1): (rng.normal(size=(N_KV * D_HEAD, D_MODEL)).astype(np.float32), q8),
        names["ln1"].format(layer=1): ((1 + 0.1 * rng.normal(size=D_MODEL)).astype(np.float32), f32),
        names["ln_final"]: ((1 + 0.1 * rng.normal(size=D_MODEL)).astype(np.float32), f32),
    }
    path = tmp_path / "model.gguf"
    _write(path, fam.gguf, tensors)
    reference = _transformers(path, fam.gguf)
    streamed = GGUFTensors(path, fam, 2, N_HEADS, N_KV)
    assert set(streamed.keys()) == set(tensors)
    for name in tensors:
        got = streamed.read(name, CPU)
        assert got.dtype == torch.float32 and torch.equal(got, reference[name]), name
    raw_q = gguf.dequantize(gguf.GGUFReader(str(path)).tensors[1].data, q8)
    permuted = not torch.equal(streamed.read(names["W_Q"].format(layer=1), CPU), torch.from_numpy(np.copy(raw_q)))
    assert permuted == fam.gguf_unpermute_qk
    norm = streamed.read(names["ln_final"], CPU)
    assert torch.equal(norm, torch.from_numpy(tensors[names["ln_final"]][0] - 1 if fam.gguf_norms_plus_one
                                              else tensors[names["ln_final"]][0]))


def test_unpermute_rows_undoes_llama_cpp():
    """llama.cpp's converter permutes rows (h, half, d) -> (h, d, half); unpermute_rows undoes it."""
    w = np.arange(N_KV * D_HEAD * 3, dtype=np.float32).reshape(N_KV * D_HEAD, 3)
    permuted = w.reshape(N_KV, 2, D_HEAD // 2, 3).swapaxes(1, 2).reshape(w.shape)  # convert_hf_to_gguf.py's permute
    assert not np.array_equal(permuted, w)
    assert np.array_equal(unpermute_rows(permuted, N_KV), w)


@pytest.mark.parametrize("gguf_arch", sorted(a for a, arch in GGUF_ARCHITECTURES.items()
                                             if FAMILIES[arch].gguf_tensors is not None
                                             and a in gguf.MODEL_ARCH_NAMES.values()))  # llama.cpp writes Mistral as llama
def test_gguf_names_are_the_ones_transformers_maps(gguf_arch):
    """The family table's GGUF names are gguf's names for the Hugging Face names of the same row,
    the map transformers inverts when it loads a file."""
    fam = FAMILIES[GGUF_ARCHITECTURES[gguf_arch]]
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, 3)
    assert fam.tensors.keys() == fam.gguf_tensors.keys()
    for name, hf in fam.tensors.items():
        if name == "W_U" and name_map.get_name("lm_head") is None:  # Gemma 2: tied, gguf maps no output
            continue
        hf_name = hf.format(layer=2).removesuffix(".weight")
        assert name_map.get_name(hf_name) + ".weight" == fam.gguf_tensors[name].format(layer=2), name
