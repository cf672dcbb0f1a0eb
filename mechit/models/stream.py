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
from mechit.arch.stream import StreamedConfig, StreamedModel
from mechit.errors import SpecError
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
    weights (a cached hub id, a ``save_pretrained`` directory, the organism): its config,
    safetensors headers and tokenizer are read now, no weight is.

    Args:
        spec: as for :func:`mechit.models.load_model`, except ``.gguf`` files.
        device: where the weights go when read ("auto"/None: CUDA when there is one).
        dtype: the dtype weights are read in (None: the checkpoint's own); give the dtype
            :func:`~mechit.models.load_model` loads in to read exactly its weights.
        trust_remote_code: passed to the tokenizer.

    Raises:
        SpecError: a GGUF file, a directory without ``*.safetensors`` files, or a family
            with no tensor names in the family table.

    >>> open_streamed("organism-tuned").weight("W_in", 0).shape     # (d_model, d_mlp)
    torch.Size([160, 448])
    """
    from transformers import AutoTokenizer

    directory = checkpoint_dir(spec)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise SpecError(f"model {str(spec)!r}: {directory} has no *.safetensors files to stream from")
    plan = read_plan(spec)
    fam = FAMILIES.get(plan.architecture)
    if fam is None or fam.tensors is None:
        raise SpecError(f"model {str(spec)!r}: streaming is not available for {plan.architecture} (the family "
                        "table has no tensor names for it); load the model without --stream")
    target = choose_device(device)
    cfg = StreamedConfig(
        architecture=plan.architecture, n_layers=plan.n_layers, n_heads=plan.n_heads,
        n_key_value_heads=plan.n_key_value_heads, d_model=plan.d_model, d_head=plan.d_head, d_mlp=plan.d_mlp,
        d_vocab=plan.d_vocab, gated_mlp="W_gate" in fam.tensors,
        dtype=getattr(torch, plan.own_dtype) if dtype is None else choose_dtype(dtype, target, plan.own_dtype),
        device=target, model_name=str(spec),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    return StreamedModel(files, cfg, tokenizer, spec=str(spec))


def checkpoint_dir(spec: "str | Path") -> Path:
    """The local directory of a model spec whose weights can be streamed (a cached hub id, a
    ``save_pretrained`` directory, the organism); SpecError for a GGUF file or an uncached id.

    >>> checkpoint_dir("organism-tuned").name
    'tuned'
    """
    source = resolve_spec(spec)
    if source.kind == "hub":
        source = _resolve_hub(source)
    if source.kind != "dir":
        raise SpecError(f"model {str(spec)!r}: streaming reads safetensors checkpoints, not {source.kind} "
                        "files; pass a Hugging Face model directory, or load the model without --stream")
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
        except SpecError:  # not streamable (no safetensors, a GGUF file, GPT-2): load_model refuses in one line
            return load_model(spec, **loading)
        print(f"mechit: {spec} does not fit in memory; streaming its weights layer by layer", file=sys.stderr)
        return streamed
    return load_model(spec, **loading)
