"""Load one model as a TransformerBridge: resolve a spec (hub id, directory, ``.gguf`` file,
the embedded organism) and boot it with raw weights, in eval mode.

Loaded models keep their **raw** weights: the forward pass gives the real model's
logits (what attribution needs). Analyses that read weights ask for *folded views*
(:mod:`mechit.arch.weights`: ``qk_weights``, ``ov_weights``, ``mlp_in_weights``,
``unembedding``), computed on demand as detached fp32 tensors; the model is never
modified. TransformerLens' in-place compatibility mode is never used. See docs/loading.md.

>>> resolve_spec("HuggingFaceTB/SmolLM2-135M").kind
'hub'
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from mechit.errors import InputError, SpecError, first_line
from mechit.models.checkpoint import check_checkpoint, check_gguf_tensors
from mechit.models.gguf import load_gguf
from mechit.models.plan import ModelPlan, check_fits, plan_from_files
from mechit.runtime import choose_device, choose_dtype, release_free_memory

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ORGANISM_SPECS = ("organism-base", "organism-tuned")
HUB_PROBE_TIMEOUT_S = 4.0


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
    return Path(__file__).parents[1] / "organism" / "weights" / which


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


def read_plan(spec: "str | Path") -> ModelPlan:
    """The memory plan of a model (:class:`~mechit.models.plan.ModelPlan`): its shape and
    parameter count from ``config.json`` and safetensors headers, or a GGUF header, without
    loading weights. A hub id must be cached.

    >>> plan = read_plan("organism-tuned")
    >>> plan.n_layers, plan.source
    (6, 'safetensors headers')
    """
    source = resolve_spec(spec)
    if source.kind == "hub":
        source = _resolve_hub(source)
        if source.kind == "hub":
            raise SpecError(f"model {source.location!r} is not in the local Hugging Face cache: its plan needs "
                            "config.json; download it first or pass a local directory")
    return plan_from_files(str(spec), Path(source.location))


def load_model(
    spec: "str | Path",
    *,
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = None,
    device_map: "str | dict | None" = None,
    max_memory: int | None = None,
    trust_remote_code: bool = False,
    **bridge_options,
) -> "TransformerBridge":
    """Load a model as a TransformerBridge with raw weights, in eval mode, after checking
    that its weights fit.

    Args:
        spec: a hub id ("owner/name"), a local Hugging Face directory, a ``.gguf`` file
            (tokenizer and weights both from the file), or "organism-base" /
            "organism-tuned" (the embedded pair).
        device: torch device or "auto"/None (CUDA when there is one, else the CPU;
            :func:`mechit.runtime.choose_device`).
        dtype: torch dtype or its name ("float32", "bfloat16", "float16"); "auto"/None is
            the checkpoint's own dtype on a GPU and float32 on the CPU
            (:func:`mechit.runtime.choose_dtype`). GGUF weights are dequantised, then cast.
        device_map: spread the model over several devices through accelerate (e.g. "auto");
            excludes ``device``. Not for GGUF files.
        max_memory: bytes the weights may take (default: the device's free memory).
        trust_remote_code: passed to transformers for hub ids and directories.
        **bridge_options: passed to ``TransformerBridge.boot_transformers``.

    Returns:
        The bridge; its forward pass equals the Hugging Face model's logits. Never in
        compatibility mode: read folded weights through :mod:`mechit.arch.weights`.

    Raises:
        SpecError: the spec cannot be resolved, the hub is unreachable and the model is
            not cached, the GGUF architecture is unsupported, the weights are unreadable,
            they are not those of the model the config describes (a missing, unexpected or
            misshapen tensor: :mod:`mechit.models.checkpoint`), or they do not fit (both
            checked from the config and file headers before any weight is read).

    A hub id that is cached loads from the cache without contacting the hub; one that is
    not cached fails within a few seconds when ``HF_HUB_OFFLINE`` is set or the hub
    cannot be reached.

    >>> tuned = load_model("organism-tuned", device="cpu", dtype="bfloat16")
    >>> tuned.W_E.dtype, tuned.W_E.device.type
    (torch.bfloat16, 'cpu')
    """
    source = resolve_spec(spec)
    if source.kind == "hub":
        source = _resolve_hub(source)
    if device_map is not None and device not in (None, "auto"):
        raise SpecError(f"model {str(spec)!r}: pass either --device or --device-map, not both")
    plan = _plan_if_readable(source)
    try:
        target = None if device_map is not None else choose_device(device)
        dtype = choose_dtype(dtype, target or "cuda", plan.own_dtype if plan else None)
    except ValueError as error:  # a device or dtype name that does not exist
        raise InputError(str(error)) from None
    if plan is not None:
        check_fits(plan, dtype, target, max_memory)
        if source.kind == "gguf":
            check_gguf_tensors(str(spec), source.location, plan)
        else:
            check_checkpoint(str(spec), source.location, plan, trust_remote_code=trust_remote_code)
    if source.kind == "gguf":
        if device_map is not None:
            raise SpecError(f"GGUF file {source.location}: --device-map is not supported for GGUF files; use --device")
        model = load_gguf(Path(source.location), device=target, dtype=dtype, trust_remote_code=trust_remote_code,
                          **bridge_options)
    else:
        model = _boot(source, device=target, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code,
                      **bridge_options)
    model.eval()
    model.mechit_spec = str(spec)
    release_free_memory()  # loading frees hundreds of temporaries; see mechit/runtime.py
    return model


def _plan_if_readable(source: Source) -> "ModelPlan | None":
    """The plan of a local source; None for an uncached hub id or a config without shape
    fields (then transformers reports the problem when it loads)."""
    if source.kind == "hub":
        return None
    try:
        return plan_from_files(source.spec or source.location, Path(source.location))
    except SpecError:
        return None


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


def _boot(source: Source, *, device, dtype, device_map, trust_remote_code: bool, **bridge_options):
    from transformer_lens.model_bridge import TransformerBridge

    placement = {"device": device} if device_map is None else {"device_map": device_map}
    try:
        return TransformerBridge.boot_transformers(
            source.location, dtype=dtype, trust_remote_code=trust_remote_code, **placement, **bridge_options,
        )
    except SpecError:
        raise
    except Exception as error:  # transformers raises OSError, ValueError, SafetensorError...
        where = source.location if source.kind == "dir" else "the hub"
        raise SpecError(
            f"cannot load model {source.spec!r} from {where}: {type(error).__name__}: {first_line(error)} "
            "(a corrupt or truncated weights file, or an architecture TransformerLens does not support?)"
        ) from error

