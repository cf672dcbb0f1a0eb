"""The memory plan: a model's shape, parameter count and weight memory, read before anything loads.

:func:`mechit.models.read_plan` reads only ``config.json`` and the safetensors headers of a model
directory, or the header of a GGUF file: no weights, seconds for a 70B checkpoint. The
parameter count is exact when safetensors headers or a GGUF file are there (the sum of
the tensor shapes), and computed from the config otherwise (a directory with no weights).
:func:`check_fits` compares the weights in the dtype they will load in with what the
device has free (or ``--max-memory``) and refuses in one line: :func:`mechit.models.load_model`
calls it before loading anything.

>>> from mechit.models import read_plan
>>> plan = read_plan("organism-tuned")
>>> plan.n_layers, plan.parameters == sum(p.numel() for p in model.original_model.parameters())
(6, True)
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mechit.arch.families import FAMILIES, GGUF_ARCHITECTURES, Family
from mechit.errors import InputError, SpecError, first_line
from mechit.runtime import free_memory

GIB = 2**30


@dataclass(frozen=True)
class ModelPlan:
    """A model's shape and size from its config or file headers (TransformerLens cfg names).

    ``parameters`` counts every stored tensor (embeddings, both when untied); ``own_dtype``
    is the checkpoint's dtype name ("bfloat16", ...; "float32" for GGUF, which mechit
    dequantises); ``source`` says what was read ("safetensors headers", "config.json",
    "gguf header").
    """

    spec: str
    architecture: str
    family: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    parameters: int
    own_dtype: str
    source: str

    @property
    def cfg(self) -> "ModelPlan":
        """The plan itself, so size estimators written for ``model.cfg`` accept a plan as a model."""
        return self

    def weight_bytes(self, dtype: torch.dtype) -> int:
        """Bytes of the weights loaded in ``dtype``.

        >>> from mechit.models import read_plan
        >>> plan = read_plan("organism-tuned")
        >>> plan.weight_bytes(torch.bfloat16) == 2 * plan.parameters
        True
        """
        return self.parameters * torch.empty((), dtype=dtype).element_size()

    def summary(self) -> dict:
        """The fields ``mechit info`` prints, in order, as plain values.

        >>> from mechit.models import read_plan
        >>> read_plan("organism-tuned").summary()["layers"]
        6
        """
        fam = FAMILIES.get(self.architecture, Family(self.family))
        fields = asdict(self)
        return {
            "spec": self.spec, "architecture": self.architecture, "family": self.family,
            "layers": self.n_layers, "heads": self.n_heads, "kv_heads": self.n_key_value_heads,
            "d_model": self.d_model, "d_head": self.d_head, "d_mlp": self.d_mlp, "d_vocab": self.d_vocab,
            "norm": fam.norm + (" (1 + w)" if fam.norm_offset else ""), "post_norms": fam.post_norms,
            "qk_norm": fam.qk_norm, "folded": False, "parameters": self.parameters,
            "own_dtype": fields["own_dtype"], "read_from": self.source,
        }


def plan_from_files(spec: str, path: Path) -> ModelPlan:
    """The :class:`ModelPlan` of a model directory (``config.json``, safetensors headers) or a
    ``.gguf`` file; ``spec`` is the name errors and the plan show. See
    :func:`mechit.models.read_plan` for any spec.

    >>> from mechit.models import organism_dir
    >>> plan_from_files("tuned", organism_dir("tuned")).source
    'safetensors headers'
    """
    if path.suffix.lower() == ".gguf":
        return _gguf_plan(spec, path)
    return _directory_plan(spec, path)


def check_fits(plan: ModelPlan, dtype: torch.dtype, device: "torch.device | None", max_memory: int | None = None) -> None:
    """SpecError (one line) when the weights in ``dtype`` exceed ``max_memory`` bytes, or
    else the free memory of ``device`` (None: every CUDA device, for ``--device-map``).

    >>> from mechit.models import read_plan
    >>> check_fits(read_plan("organism-tuned"), torch.float32, torch.device("cpu"), max_memory=2**10)
    Traceback (most recent call last):
    ...
    mechit.errors.SpecError: model 'organism-tuned' needs 0.01 GiB for its weights in float32 (0.00 B parameters) but --max-memory allows 0.00 GiB; pass --dtype bfloat16, --device-map auto over several GPUs, or a smaller model
    """
    need = plan.weight_bytes(dtype)
    have, where = available_memory(device, max_memory)
    if need > have:
        raise SpecError(
            f"model {plan.spec!r} needs {need / GIB:.2f} GiB for its weights in {str(dtype).removeprefix('torch.')} "
            f"({plan.parameters / 1e9:.2f} B parameters) but {where} {have / GIB:.2f} GiB"
            + ("" if max_memory is not None or device is None else " free")
            + "; pass --dtype bfloat16, --device-map auto over several GPUs, or a smaller model"
        )


def available_memory(device: "torch.device | None", max_memory: int | None = None) -> tuple[int, str]:
    """(bytes the weights may take, the words that say where): ``max_memory`` when given, else the
    free memory of ``device`` (None: every CUDA device together, for ``--device-map``).

    >>> available_memory(torch.device("cpu"), max_memory=2**30)
    (1073741824, '--max-memory allows')
    """
    if max_memory is not None:
        return max_memory, "--max-memory allows"
    if device is None:
        have = sum(free_memory(f"cuda:{i}") for i in range(torch.cuda.device_count()))
        return have, f"{torch.cuda.device_count()} CUDA device(s) have"
    return free_memory(device), f"{device} has"


# ---------------------------------------------------------------- directories: config.json, safetensors headers
def _first(config: dict, *names, default=None):
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def _size(value) -> int:
    """A config's size field as an int; ValueError for a bool, a fraction, inf or NaN (TypeError for None).

    >>> _size(64), _size(64.0)
    (64, 64)
    >>> _size(2.5)
    Traceback (most recent call last):
    ...
    ValueError: 2.5 is not a whole number
    """
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _directory_plan(spec: str, directory: Path) -> ModelPlan:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise SpecError(f"model spec {spec!r}: cannot read {path}: {first_line(error)}") from error
    if not isinstance(config, dict) or not isinstance(config.get("text_config", {}), dict):
        raise SpecError(f"model spec {spec!r}: {path} must hold a JSON object (a model config)")
    model_type = str(config.get("model_type", "")).removesuffix("_text")
    by_type = [arch for arch, fam in FAMILIES.items() if fam.name == model_type]
    named = config.get("architectures")
    architecture = ([named] if isinstance(named, str) else named or by_type or ["unknown"])[0]
    config = {**config, **config.get("text_config", {})}  # multimodal configs nest the language model
    try:
        d_model = _size(_first(config, "hidden_size", "n_embd", "d_model"))
        n_heads = _size(_first(config, "num_attention_heads", "n_head"))
        shape = dict(
            n_layers=_size(_first(config, "num_hidden_layers", "n_layer")), n_heads=n_heads,
            n_key_value_heads=_size(_first(config, "num_key_value_heads", default=n_heads)), d_model=d_model,
            d_head=_size(_first(config, "head_dim", default=d_model // n_heads if n_heads > 0 else 0)),
            d_mlp=_size(_first(config, "intermediate_size", "n_inner", default=4 * d_model)),
            d_vocab=_size(config["vocab_size"]),
        )
    except (TypeError, KeyError, ValueError):
        raise SpecError(f"model spec {spec!r}: {path} lacks the shape fields (hidden_size, num_hidden_layers, "
                        "num_attention_heads, vocab_size) as whole numbers") from None
    wrong = [f"{name} {value}" for name, value in shape.items() if value < 1]
    if wrong or shape["n_heads"] % shape["n_key_value_heads"]:  # InputError: loading must not go on without a plan
        raise InputError(f"model spec {spec!r}: {path} gives impossible sizes ("
                        + (", ".join(wrong) or f"{shape['n_heads']} heads over {shape['n_key_value_heads']} KV heads")
                        + "); sizes must be positive and the KV heads must divide the heads")
    fam = FAMILIES.get(architecture, Family(architecture))
    counted = _safetensors_parameters(directory)
    own = _first(config, "torch_dtype", "dtype")
    if counted is not None:
        parameters, source = counted[0], "safetensors headers"
        own = own or counted[1]
    else:
        parameters, source = _config_parameters(config, architecture, fam, shape), "config.json"
    return ModelPlan(spec, architecture, fam.name, parameters=parameters, own_dtype=str(own or "float32"),
                     source=source, **shape)


_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def read_safetensors_header(file: Path) -> dict:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets), read
    without its data; refuses a file that cannot hold the data its header describes.

    >>> from mechit.models import organism_dir
    >>> header = read_safetensors_header(organism_dir("tuned") / "model.safetensors")
    >>> header["model.embed_tokens.weight"]["dtype"]
    'F16'
    """
    try:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise SpecError(f"cannot read the safetensors header of {file}: {first_line(error)} "
                        "(corrupt or truncated file?)") from error
    data_end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if file.stat().st_size < 8 + length + data_end:
        raise SpecError(f"cannot load model from {file}: the file is truncated ({file.stat().st_size} bytes, "
                        f"its header needs {8 + length + data_end}); download or copy it again")
    return header


def _safetensors_parameters(directory: Path) -> "tuple[int, str | None] | None":
    """(number of stored values, dtype name of the largest float tensor) from every
    ``*.safetensors`` header in ``directory``; None when there is none."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total, by_dtype = 0, {}
    for file in files:
        header = read_safetensors_header(file)
        for name, entry in header.items():
            if name != "__metadata__":
                count = math.prod(entry["shape"])
                total += count
                by_dtype[entry["dtype"]] = by_dtype.get(entry["dtype"], 0) + count
    floats = {k: v for k, v in by_dtype.items() if k in _SAFETENSORS_DTYPES}
    return total, (_SAFETENSORS_DTYPES[max(floats, key=floats.get)] if floats else None)


def _config_parameters(config: dict, architecture: str, fam: Family, shape: dict) -> int:
    """Parameters of a decoder-only transformer from its config (no weights at hand).

    Per layer: Q and O (``d * H * dh`` each), K and V (``d * Hkv * dh`` each), the MLP
    (3 matrices when gated, 2 with biases otherwise), the norms; plus the embedding,
    the unembedding when untied, learned positions (GPT-2) and the final norm.
    """
    d, dh, d_mlp, vocab = shape["d_model"], shape["d_head"], shape["d_mlp"], shape["d_vocab"]
    heads, kv = shape["n_heads"], shape["n_key_value_heads"]
    gpt2 = fam.norm == "LayerNorm"
    attention = 2 * d * heads * dh + 2 * d * kv * dh
    if gpt2 or config.get("attention_bias"):
        attention += (heads + 2 * kv) * dh + d
    elif fam.name == "qwen2":
        attention += (heads + 2 * kv) * dh
    mlp = 2 * d * d_mlp + d_mlp + d if gpt2 else 3 * d * d_mlp
    norm = 2 * d if gpt2 else d  # LayerNorm has a bias
    norms = norm * (4 if fam.post_norms else 2) + (2 * dh if fam.qk_norm else 0)
    tied = config.get("tie_word_embeddings", gpt2 or fam.norm_offset != 0.0)
    embeddings = vocab * d * (1 if tied else 2) + (int(config.get("n_positions", 0)) * d if gpt2 else 0)
    return shape["n_layers"] * (attention + mlp + norms) + embeddings + norm


# ---------------------------------------------------------------- GGUF header
def _gguf_plan(spec: str, path: Path) -> ModelPlan:
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")  # memory-maps the file: reads the header and tensor table only
    except Exception as error:  # gguf raises ValueError, struct errors, OSError...
        raise SpecError(f"cannot read GGUF file {path}: {type(error).__name__}: {first_line(error)} "
                        "(corrupt or truncated file?)") from error

    def field(key: str, default=None):
        item = reader.fields.get(key)
        return default if item is None else item.contents()

    arch = field("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise SpecError(f"GGUF file {path}: architecture {arch!r} is not supported; mechit loads "
                        f"{', '.join(sorted(GGUF_ARCHITECTURES))}")
    architecture = GGUF_ARCHITECTURES[arch]
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    try:
        d_model, n_heads = int(field(f"{arch}.embedding_length")), int(field(f"{arch}.attention.head_count"))
        shape = dict(
            n_layers=int(field(f"{arch}.block_count")), n_heads=n_heads,
            n_key_value_heads=int(field(f"{arch}.attention.head_count_kv", n_heads)), d_model=d_model,
            d_head=int(field(f"{arch}.attention.key_length", d_model // n_heads)),
            d_mlp=int(field(f"{arch}.feed_forward_length")), d_vocab=len(tokens.data) if tokens else 0,
        )
    except (TypeError, ValueError):
        raise SpecError(f"GGUF file {path}: the header lacks the shape fields ({arch}.embedding_length, "
                        f"{arch}.block_count, ...)") from None
    return ModelPlan(spec, architecture, FAMILIES[architecture].name, **shape,
                     parameters=int(sum(t.n_elements for t in reader.tensors)), own_dtype="float32",
                     source="gguf header")
