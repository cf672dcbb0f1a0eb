"""Load models and check pairs; the table of model families.

This module and :mod:`mechit.weight_views` are the only places in mechit that know model
families. Everything an analysis needs about an architecture (norm kind, Gemma's ``1 + w``
norm scale and √d_model embedding scale, GQA head sharing, sandwich norms, which GGUF
architectures load) is a row of :data:`FAMILIES`, reached through :func:`family` and the
weight views.

Loaded models keep their **raw** weights: the forward pass gives the real model's
logits (what attribution needs). Analyses that read weights ask for *folded views*
(:mod:`mechit.weight_views`: ``qk_weights``, ``ov_weights``, ``mlp_in_weights``,
``unembedding``), computed on demand as detached fp32 tensors; the model is never
modified. TransformerLens' in-place compatibility mode is never used. See docs/loading.md.

>>> model = load_model("tests/tiny-llama")                     # doctest: +SKIP
>>> model.cfg.n_layers                                        # doctest: +SKIP
2
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlparse

from mechit.errors import IncompatiblePairError, SpecError
from mechit.memory import release_free_memory

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

ORGANISM_SPECS = ("organism-base", "organism-tuned")
HUB_PROBE_TIMEOUT_S = 4.0


# --------------------------------------------------------------------------------------
# The registry: every architecture fact mechit relies on.
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Architecture facts of one model family.

    Attributes:
        name: short family name shown by ``mechit info``.
        norm: "RMSNorm" or "LayerNorm" (LayerNorm biases and centring are not folded).
        norm_offset: effective norm scale is ``norm_offset + weight`` (Gemma stores w - 1).
        sqrt_d_model_embed: the embedding output is ``W_E[token] * sqrt(d_model)``.
        post_norms: sandwich norms after attention and MLP outputs (Gemma 2/3); their
            scales are folded into the columns of W_O and W_out.
        qk_norm: per-head norms on queries and keys (Gemma 3, Qwen 3); their scales are
            folded into the columns of W_Q and W_K.
        gguf: the ``general.architecture`` name of this family in GGUF files, if loadable.
        hand_block_vjp: decoder blocks are Llama's (pre-RMSNorm, rotary attention with
            grouped KV heads, SiLU-gated MLP, no sliding window): attribution takes the
            hand-written block products of :mod:`mechit.attribution_llama`.
    """

    name: str
    norm: str = "RMSNorm"
    norm_offset: float = 0.0
    sqrt_d_model_embed: bool = False
    post_norms: bool = False
    qk_norm: bool = False
    gguf: str | None = None
    hand_block_vjp: bool = False


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", gguf="llama", hand_block_vjp=True),
    "MistralForCausalLM": Family("mistral", gguf="mistral"),
    "Qwen2ForCausalLM": Family("qwen2", gguf="qwen2"),
    "Qwen3ForCausalLM": Family("qwen3", qk_norm=True, gguf="qwen3"),
    "GPT2LMHeadModel": Family("gpt2", norm="LayerNorm", gguf="gpt2"),
    "GemmaForCausalLM": Family("gemma", norm_offset=1.0, sqrt_d_model_embed=True),
    "Gemma2ForCausalLM": Family(
        "gemma2", norm_offset=1.0, sqrt_d_model_embed=True, post_norms=True, gguf="gemma2"
    ),
    "Gemma3ForCausalLM": Family(
        "gemma3", norm_offset=1.0, sqrt_d_model_embed=True, post_norms=True, qk_norm=True,
        gguf="gemma3",
    ),
}
GGUF_ARCHITECTURES = {f.gguf: arch for arch, f in FAMILIES.items() if f.gguf}


def family(model: "TransformerBridge") -> Family:
    """The :class:`Family` row for a loaded model.

    Unknown architectures fall back to what TransformerLens' config says (norm type and
    the ``1 + w`` offset flag); everything else takes the plain defaults.

    >>> family(load_model("tests/tiny-gemma")).norm_offset    # doctest: +SKIP
    1.0
    """
    cfg = model.cfg
    arch = getattr(cfg, "architecture", None)
    if arch in FAMILIES:
        return FAMILIES[arch]
    return Family(
        name=str(arch or "unknown"),
        norm="LayerNorm" if getattr(cfg, "normalization_type", "RMS") in ("LN", "LNPre") else "RMSNorm",
        norm_offset=1.0 if getattr(cfg, "rmsnorm_uses_offset", False) else 0.0,
    )


# --------------------------------------------------------------------------------------
# Spec resolution and loading
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A resolved model spec: ``kind`` is "hub", "dir" or "gguf"; ``location`` the id or path."""

    kind: str
    location: str
    spec: str = field(default="", compare=False)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def organism_dir(which: str) -> Path:
    """Directory of the embedded organism's ``which`` ("base" or "tuned") weights.

    >>> organism_dir("tuned").parts[-3:]
    ('organism', 'weights', 'tuned')
    """
    return Path(__file__).parent / "organism" / "weights" / which


def resolve_spec(spec: "str | Path") -> Source:
    """Decide what kind of model ``spec`` names, without loading anything.

    >>> resolve_spec("HuggingFaceTB/SmolLM2-135M").kind
    'hub'
    >>> resolve_spec("no/such/dir/")
    Traceback (most recent call last):
    ...
    mechit.errors.SpecError: model spec 'no/such/dir/' is neither a hub id (owner/name), an existing directory nor a .gguf file
    """
    text = str(spec)
    if text in ORGANISM_SPECS:
        path = organism_dir(text.split("-", 1)[1])
        if not (path / "config.json").is_file():
            raise SpecError(
                f"model spec {text!r}: the embedded organism weights are missing ({path}); "
                "build them with `mechit organism train` or pass a hub id, directory or .gguf file"
            )
        return Source("dir", str(path), text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return Source("dir", str(path), text)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source("gguf", str(ggufs[0]), text)
        raise SpecError(
            f"model spec {text!r}: directory has no config.json"
            + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else "")
            + "; expected a Hugging Face model directory (save_pretrained) or a .gguf file"
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return Source("gguf", str(path), text)
        raise SpecError(
            f"model spec {text!r} is a file but not a .gguf file; pass its directory "
            "(a Hugging Face model directory), a .gguf file or a hub id"
        )
    if path.suffix.lower() == ".gguf":
        raise SpecError(f"model spec {text!r}: GGUF file not found")
    if _HUB_ID.match(text) and not text.endswith("/") and text not in (".", ".."):
        return Source("hub", text, text)
    raise SpecError(
        f"model spec {text!r} is neither a hub id (owner/name), an existing directory nor a .gguf file"
    )


def load_model(
    spec: "str | Path",
    *,
    device: "str | torch.device | None" = None,
    dtype: "torch.dtype | None" = None,
    trust_remote_code: bool = False,
    **bridge_options,
) -> "TransformerBridge":
    """Load a model as a TransformerBridge with raw weights, in eval mode.

    Args:
        spec: a hub id ("owner/name"), a local Hugging Face directory, a ``.gguf`` file
            (tokenizer and weights both from the file), or "organism-base" /
            "organism-tuned" (the embedded pair).
        device: torch device; ``None`` lets TransformerLens choose.
        dtype: torch dtype, default float32 (GGUF weights are dequantised to fp32).
        trust_remote_code: passed to transformers for hub ids and directories.
        **bridge_options: passed to ``TransformerBridge.boot_transformers``.

    Returns:
        The bridge; its forward pass equals the Hugging Face model's logits. Never in
        compatibility mode: read folded weights through :mod:`mechit.weight_views`.

    Raises:
        SpecError: the spec cannot be resolved, the hub is unreachable and the model is
            not cached, the GGUF architecture is unsupported, or the weights are unreadable.

    A hub id that is cached loads from the cache without contacting the hub; one that is
    not cached fails within a few seconds when ``HF_HUB_OFFLINE`` is set or the hub
    cannot be reached.

    >>> model = load_model("SmolLM2-135M-Instruct.Q4_1.gguf")    # doctest: +SKIP
    >>> model.cfg.n_layers                                       # doctest: +SKIP
    30
    """
    import torch

    source = resolve_spec(spec)
    dtype = dtype or torch.float32
    if source.kind == "hub":
        source = _resolve_hub(source)
    if source.kind == "gguf":
        model = _load_gguf(Path(source.location), device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                           **bridge_options)
    else:
        model = _boot(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                      **bridge_options)
    model.eval()
    model.mechit_spec = str(spec)
    release_free_memory()  # loading frees hundreds of temporaries; see mechit/memory.py
    return model


def _hub_offline() -> bool:
    import huggingface_hub.constants as hub_constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(getattr(hub_constants, "HF_HUB_OFFLINE", False))


def _hub_endpoint() -> str:
    import huggingface_hub.constants as hub_constants

    return os.environ.get("HF_ENDPOINT") or hub_constants.ENDPOINT


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` (DNS included)."""
    url = urlparse(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _resolve_hub(source: Source) -> Source:
    """A cached hub id becomes its snapshot directory; an uncached one needs a reachable hub."""
    from huggingface_hub import snapshot_download

    repo = source.location
    try:
        snapshot = Path(snapshot_download(repo, local_files_only=True))
        if (snapshot / "config.json").is_file():
            return Source("dir", str(snapshot), source.spec)
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        pass
    hint = "download it where there is network, or pass a local model directory or a .gguf file"
    if _hub_offline():
        raise SpecError(f"model {repo!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    endpoint = _hub_endpoint()
    if not _hub_reachable(endpoint):
        raise SpecError(f"model {repo!r} is not cached and the hub ({endpoint}) cannot be reached; {hint}")
    return source


def _boot(source: Source, *, device, dtype, trust_remote_code: bool, **bridge_options):
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(
            source.location, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            **bridge_options,
        )
    except SpecError:
        raise
    except Exception as error:  # transformers raises OSError, ValueError, SafetensorError...
        where = source.location if source.kind == "dir" else "the hub"
        raise SpecError(
            f"cannot load model {source.spec!r} from {where}: {type(error).__name__}: {_first_line(error)} "
            "(a corrupt or truncated weights file, or an architecture TransformerLens does not support?)"
        ) from error


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_architecture(path: "str | Path") -> str:
    """The ``general.architecture`` field of a GGUF file, read from the header only.

    Raises SpecError when the file is not a readable GGUF file.

    >>> gguf_architecture("SmolLM2-135M-Instruct.Q4_1.gguf")          # doctest: +SKIP
    'llama'
    """
    import struct

    def fail(why: str) -> SpecError:
        return SpecError(f"cannot read GGUF file {path}: {why} (corrupt or truncated file?)")

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise fail("no GGUF magic number")
            (version,) = struct.unpack("<I", f.read(4))
            order = "<" if version < 0x10000 else ">"  # big-endian files read as a huge version

            def read(fmt: str):
                size = struct.calcsize(order + fmt)
                data = f.read(size)
                if len(data) != size:
                    raise fail("file ends inside the header")
                return struct.unpack(order + fmt, data)[0]

            def string() -> str:
                length = read("Q")
                if length > 1 << 20:
                    raise fail(f"implausible string length {length}")
                return f.read(length).decode("utf-8")

            def skip(kind: int) -> None:
                if kind == _GGUF_STRING:
                    string()
                elif kind == _GGUF_ARRAY:
                    inner, count = read("I"), read("Q")
                    for _ in range(count):
                        skip(inner)
                elif kind in _GGUF_SCALARS:
                    read(_GGUF_SCALARS[kind])
                else:
                    raise fail(f"unknown metadata type {kind}")

            read("Q")  # tensor count
            for _ in range(read("Q")):
                key, kind = string(), read("I")
                if key == "general.architecture" and kind == _GGUF_STRING:
                    return string()
                skip(kind)
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"{type(error).__name__}: {_first_line(error)}") from error
    raise fail("no general.architecture field")


@contextlib.contextmanager
def _gguf_parsed_once():
    """While loading, parse each GGUF file once and build each tensor-name map once.

    transformers parses the file three times (tokenizer, config, weights) and rebuilds
    gguf's tensor-name map for every tensor; on two CPU cores that is most of the load
    time. Both are pure functions of their arguments, so they are memoised for the
    duration of one load (the gguf module's names are restored afterwards).
    """
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def _load_gguf(path: Path, *, device, dtype, trust_remote_code: bool, **bridge_options):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = gguf_architecture(path)
    if arch not in GGUF_ARCHITECTURES:
        raise SpecError(
            f"GGUF file {path}: architecture {arch!r} is not supported; mechit loads "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))}"
        )
    try:
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      trust_remote_code=trust_remote_code)
            hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype,
                                                            trust_remote_code=trust_remote_code)
    except Exception as error:
        raise SpecError(
            f"cannot load GGUF file {path}: {type(error).__name__}: {_first_line(error)} "
            "(corrupt or truncated file?)"
        ) from error
    hf_model.config.architectures = [GGUF_ARCHITECTURES[arch]]
    return TransformerBridge.boot_transformers(
        str(path), hf_model=hf_model, tokenizer=tokenizer, device=device, trust_remote_code=trust_remote_code,
        **bridge_options,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# --------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------
@dataclass
class ModelPair:
    """A pre-trained model and its instruction-tuned version, checked compatible.

    Iterating gives ``("base", base), ("tuned", tuned)``.

    >>> pair = load_pair()                                   # doctest: +SKIP
    >>> [name for name, _ in pair]                           # doctest: +SKIP
    ['base', 'tuned']
    """

    base: "TransformerBridge"
    tuned: "TransformerBridge"
    base_spec: str = ""
    tuned_spec: str = ""

    def __iter__(self) -> Iterator[tuple[str, "TransformerBridge"]]:
        yield "base", self.base
        yield "tuned", self.tuned


def load_pair(base: "str | Path | None" = None, tuned: "str | Path | None" = None, **kw) -> ModelPair:
    """Load and check a (pre-trained, instruction-tuned) pair; no arguments -> the organism.

    ``kw`` goes to :func:`load_model`. Raises IncompatiblePairError (see :func:`check_pair`).

    >>> pair = load_pair("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    """
    if base is None and tuned is None:
        base, tuned = ORGANISM_SPECS
    elif base is None or tuned is None:
        raise SpecError("load_pair needs both base and tuned specs (or neither, for the embedded organism)")
    base_model = load_model(base, **kw)
    tuned_model = load_model(tuned, **kw)
    check_pair(base_model, tuned_model)
    return ModelPair(base_model, tuned_model, str(base), str(tuned))


class ExtraSpecialTokensWarning(UserWarning):
    """The tuned and base tokenizers differ only by added special tokens (allowed)."""


PAIR_PROBE_TEXT = "Translate the following sentence into French: The quick brown fox, 42 naïve cafés!"


def check_pair(a: "TransformerBridge", b: "TransformerBridge") -> None:
    """Refuse two models that cannot be compared; the error names the first difference.

    Checked in order: architecture; the config sizes (layers, heads, KV heads, d_model,
    d_head, d_mlp); every parameter's shape; the tokenizer vocabulary (each shared token
    string must have the same id, and a probe sentence must tokenise identically).

    Allowed with an :class:`ExtraSpecialTokensWarning`: one tokenizer has extra *added
    special* tokens (chat markers such as ``<|im_start|>``) that the other lacks. Then the
    vocabulary axis of the embedding and unembedding may be longer by those rows; all
    other shapes must still match.

    >>> check_pair(load_model("a"), load_model("b"))         # doctest: +SKIP
    """
    from mechit.weight_views import n_kv_heads, qk_weights

    arch_a, arch_b = getattr(a.cfg, "architecture", None), getattr(b.cfg, "architecture", None)
    if arch_a != arch_b:
        raise IncompatiblePairError(f"architectures differ: {arch_a} vs {arch_b}")
    for key in ("n_layers", "n_heads", "n_key_value_heads", "d_model", "d_head", "d_mlp"):
        va, vb = (n_kv_heads(a), n_kv_heads(b)) if key == "n_key_value_heads" else (
            getattr(a.cfg, key, None), getattr(b.cfg, key, None))
        if va != vb:
            raise IncompatiblePairError(f"config {key} differs: {va} vs {vb}")
    extra_a, extra_b = _vocabulary_difference(a.tokenizer, b.tokenizer)
    va, vb = a.cfg.d_vocab, b.cfg.d_vocab
    params_a = dict(_named_shapes(a, va))
    params_b = dict(_named_shapes(b, vb))
    for name, shape in params_a.items():
        if name not in params_b:
            raise IncompatiblePairError(f"parameter {name} exists only in the first model")
        if shape != params_b[name]:
            raise IncompatiblePairError(
                f"parameter {name} shape differs: {_show(shape, va)} vs {_show(params_b[name], vb)}"
            )
    for name in params_b:
        if name not in params_a:
            raise IncompatiblePairError(f"parameter {name} exists only in the second model")
    if va != vb and not (extra_a if va > vb else extra_b):
        raise IncompatiblePairError(f"vocabulary size differs: {va} vs {vb}")
    if extra_a or extra_b:
        warnings.warn(
            "tokenizers differ only by added special tokens "
            f"(first model only: {sorted(extra_a)[:8]}, second model only: {sorted(extra_b)[:8]}); "
            "the shared vocabulary is identical, so the pair is compared on it",
            ExtraSpecialTokensWarning,
            stacklevel=2,
        )


def _named_shapes(model, d_vocab: int):
    """(name, shape) of every parameter, with the vocabulary axis written as 'V'."""
    for name, param in model.original_model.named_parameters():
        yield name.replace("._original_component", ""), tuple("V" if size == d_vocab else size for size in param.shape)


def _show(shape, d_vocab) -> str:
    return "[" + ", ".join(str(d_vocab if s == "V" else s) for s in shape) + "]"


def _vocabulary_difference(tok_a, tok_b) -> tuple[set[str], set[str]]:
    """Token strings only in a / only in b, after checking these may differ.

    Raises IncompatiblePairError naming the first token whose id differs, or the first
    extra token that is not an added special token, or a probe sentence that splits
    differently.
    """
    vocab_a, vocab_b = tok_a.get_vocab(), tok_b.get_vocab()
    for token, index in sorted(vocab_a.items(), key=lambda item: item[1]):
        other = vocab_b.get(token)
        if other is not None and other != index:
            raise IncompatiblePairError(
                f"tokenizer vocabularies differ: token {token!r} has id {index} vs {other}"
            )
    extra_a = set(vocab_a) - set(vocab_b)
    extra_b = set(vocab_b) - set(vocab_a)
    for extra, tok, which in ((extra_a, tok_a, "first"), (extra_b, tok_b, "second")):
        special = {str(t) for t in getattr(tok, "all_special_tokens", [])}
        added = {str(t.content) for t in tok.added_tokens_decoder.values() if t.special}
        for token in sorted(extra, key=lambda t: tok.convert_tokens_to_ids(t)):
            if token not in special and token not in added:
                raise IncompatiblePairError(
                    f"tokenizer vocabularies differ: token {token!r} (id "
                    f"{tok.convert_tokens_to_ids(token)}) is only in the {which} model's tokenizer "
                    "and is not an added special token"
                )
    ids_a = tok_a(PAIR_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    ids_b = tok_b(PAIR_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if ids_a != ids_b:
        raise IncompatiblePairError(
            f"tokenizers split the same text differently: {PAIR_PROBE_TEXT!r} -> "
            f"{tok_a.convert_ids_to_tokens(ids_a)} vs {tok_b.convert_ids_to_tokens(ids_b)}"
        )
    return extra_a, extra_b
