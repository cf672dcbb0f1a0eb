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

from mechit.errors import SpecError, first_line
from mechit.models.gguf import load_gguf
from mechit.runtime import release_free_memory

if TYPE_CHECKING:
    import torch
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
        compatibility mode: read folded weights through :mod:`mechit.arch.weights`.

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
        model = load_gguf(Path(source.location), device=device, dtype=dtype, trust_remote_code=trust_remote_code,
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
            f"cannot load model {source.spec!r} from {where}: {type(error).__name__}: {first_line(error)} "
            "(a corrupt or truncated weights file, or an architecture TransformerLens does not support?)"
        ) from error

