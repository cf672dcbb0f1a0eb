"""Open a checkpoint for the weight-only analyses without building the model: a
:class:`~mechit.arch.stream.StreamedModel` reads each layer's tensors from disk when an
analysis asks for them (``mechit heads --stream``, ``mechit ffn --stream``; see
docs/loading.md, "Streaming").

>>> streamed = open_streamed("organism-tuned")
>>> streamed.cfg.n_layers, streamed.cfg.gated_mlp
(6, True)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mechit.arch.families import FAMILIES
from mechit.arch.gguf_tensors import GGUFTensors
from mechit.arch.stream import SafetensorsFiles, StreamedConfig, StreamedModel
from mechit.errors import SpecError
from mechit.models.gguf import _gguf_parsed_once
from mechit.models.loading import _resolve_hub, load_model, read_plan, resolve_spec
from mechit.models.plan import check_fits
from mechit.runtime import choose_device, choose_dtype

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def open_streamed(
    spec: "str | Path", *, device: "str | torch.device | None" = None, dtype: "str | torch.dtype | None" = None,
    trust_remote_code: bool = False,
) -> StreamedModel:
    """A :class:`~mechit.arch.stream.StreamedModel` of a model directory with safetensors
    weights (a cached hub id, a ``save_pretrained`` directory, the organism) or of a ``.gguf``
    file: its config (or GGUF header), tensor table and tokenizer are read now, no weight is.
    GGUF tensors are dequantised one at a time when read, as transformers does when it loads
    the file (:mod:`mechit.arch.gguf_tensors`), so the results equal the loaded model's.

    Args:
        spec: as for :func:`mechit.models.load_model`.
        device: where the weights go when read ("auto"/None: CUDA when there is one).
        dtype: the dtype weights are read in (None: the checkpoint's own); give the dtype
            :func:`~mechit.models.load_model` loads in to read exactly its weights.
        trust_remote_code: passed to the tokenizer.

    Raises:
        SpecError: a directory without ``*.safetensors`` files, an unreadable GGUF file, or a
            family with no tensor names in the family table (GPT-2: one line says why).

    >>> open_streamed("organism-tuned").weight("W_in", 0).shape     # (d_model, d_mlp)
    torch.Size([160, 448])
    """
    from transformers import AutoTokenizer

    with _gguf_parsed_once():  # a GGUF header is parsed once for the plan, the tensor table and the tokenizer
        plan = read_plan(spec)  # a hub id must be cached: its config is read from the cache
        source = resolve_spec(spec)
        if source.kind == "hub":
            source = _resolve_hub(source)
        location = Path(source.location)
        files = sorted(location.glob("*.safetensors")) if source.kind == "dir" else []
        if source.kind == "dir" and not files:
            raise SpecError(f"model {str(spec)!r}: {location} has no *.safetensors files to stream from")
        fam = FAMILIES.get(plan.architecture)
        names = None if fam is None else (fam.gguf_tensors if source.kind == "gguf" else fam.tensors)
        if names is None:
            why = "the family table has no tensor names for it" if fam is None else fam.not_streamed
            raise SpecError(f"model {str(spec)!r}: streaming is not available for {plan.architecture} ({why}); "
                            "load the model without --stream")
        target = choose_device(device)
        cfg = StreamedConfig(
            architecture=plan.architecture, n_layers=plan.n_layers, n_heads=plan.n_heads,
            n_key_value_heads=plan.n_key_value_heads, d_model=plan.d_model, d_head=plan.d_head, d_mlp=plan.d_mlp,
            d_vocab=plan.d_vocab, gated_mlp="W_gate" in names,
            dtype=getattr(torch, plan.own_dtype) if dtype is None else choose_dtype(dtype, target, plan.own_dtype),
            device=target, model_name=str(spec),
        )
        if source.kind == "gguf":
            tensors = GGUFTensors(location, fam, plan.n_layers, plan.n_heads, plan.n_key_value_heads)
            tokenizer = AutoTokenizer.from_pretrained(str(location.parent), gguf_file=location.name,
                                                      trust_remote_code=trust_remote_code)
        else:
            tensors = SafetensorsFiles(files)
            tokenizer = AutoTokenizer.from_pretrained(str(location), trust_remote_code=trust_remote_code)
    return StreamedModel(tensors, cfg, tokenizer, spec=str(spec))


def checkpoint_dir(spec: "str | Path") -> Path:
    """The local directory of a model spec with safetensors weights (a cached hub id, a
    ``save_pretrained`` directory, the organism), whose headers give every stored tensor's
    shape; SpecError for a GGUF file or an uncached id.

    >>> checkpoint_dir("organism-tuned").name
    'tuned'
    """
    source = resolve_spec(spec)
    if source.kind == "hub":
        source = _resolve_hub(source)
    if source.kind != "dir":
        raise SpecError(f"model {str(spec)!r}: comparing a pair one model at a time reads tensor shapes from "
                        f"safetensors headers, not {source.kind} files; pass a Hugging Face model directory")
    return Path(source.location)


def fits_in_memory(spec: "str | Path", *, device=None, dtype=None, device_map=None, max_memory: int | None = None,
                   **_ignored) -> bool:
    """Whether the memory plan says the model's weights fit where :func:`~mechit.models.load_model`
    would put them (True when there is no plan to read, or for ``device_map``: then
    ``load_model`` decides).

    >>> fits_in_memory("organism-tuned", device="cpu", max_memory=2**10)
    False
    """
    if device_map is not None:
        return True
    try:
        plan = read_plan(spec)
        target = choose_device(device)
        dtype = choose_dtype(dtype, target, plan.own_dtype)
    except (SpecError, ValueError):  # no plan, or a device/dtype name load_model will refuse
        return True
    try:
        check_fits(plan, dtype, target, max_memory)
    except SpecError:
        return False
    return True


def open_for_weights(spec: "str | Path", *, stream: bool = False, **loading) -> "TransformerBridge | StreamedModel":
    """The model a weight-only analysis reads: streamed with ``stream=True`` or when the
    weights do not fit (:func:`fits_in_memory`; a note goes to stderr) and the checkpoint can
    be streamed, else loaded with :func:`~mechit.models.load_model` and ``loading`` (its
    keyword arguments), which refuses a model that does not fit.

    >>> open_for_weights("organism-tuned", stream=True, device="cpu")
    StreamedModel('organism-tuned', LlamaForCausalLM, 6 layers)
    """
    streamed_options = {key: loading[key] for key in ("device", "trust_remote_code") if key in loading}
    if stream:
        return open_streamed(spec, **streamed_options)
    if not fits_in_memory(spec, **loading):
        try:
            streamed = open_streamed(spec, **streamed_options)
        except SpecError:  # not streamable (no safetensors, GPT-2): load_model refuses in one line
            return load_model(spec, **loading)
        print(f"mechit: {spec} does not fit in memory; streaming its weights layer by layer", file=sys.stderr)
        return streamed
    return load_model(spec, **loading)
