"""Does a checkpoint hold the model its config describes? Checked from file headers before any weight loads.

Transformers fills a tensor the checkpoint lacks with random values and drops one it does
not expect, and only logs it; a ``config.json`` of another architecture over the same
weights loads none of them. :func:`check_checkpoint` compares the tensor names and shapes
stored in a model directory (safetensors headers, or the tensor table of a
``pytorch_model.bin`` read by torch's safe reader onto the meta device) with those of the
model the config builds, built on the meta device (no memory); names are matched with
transformers' own renaming rules, and tied weights (an unembedding shared with the
embedding) may be absent. The layer count is compared first, so a config claiming
100,000 layers is refused before anything is built. :func:`check_gguf_tensors` does the
same for a GGUF file: every block ``blk.N`` of ``block_count`` holds the same tensors.

>>> from mechit.models import organism_dir, read_plan
>>> check_checkpoint("tuned", organism_dir("tuned"), read_plan("organism-tuned"))
>>> stored_tensors(organism_dir("tuned"))["model.embed_tokens.weight"]
(2048, 160)
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

from mechit.errors import SpecError, first_line
from mechit.models.plan import ModelPlan, read_safetensors_header

SHOWN = 3  # names quoted in a refusal
_LAYER = re.compile(r"^(.*?)\.(\d+)\.")


def stored_tensors(directory: "str | Path") -> "dict[str, tuple[int, ...]]":
    """``{name: shape}`` of every tensor in a model directory's ``*.safetensors`` headers, or else
    its ``*.bin`` files (read by ``torch.load(weights_only=True)`` onto the meta device); {} when
    it has neither.

    >>> from mechit.models import organism_dir
    >>> len(stored_tensors(organism_dir("tuned")))
    57
    """
    directory = Path(directory)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(directory.glob("*.safetensors")):
        header = read_safetensors_header(file)
        shapes.update({name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"})
    if shapes:
        return shapes
    for file in sorted(directory.glob("*.bin")):
        try:
            state = torch.load(file, map_location="meta", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - zip, pickle and unpickling errors of every kind
            raise SpecError(f"cannot read the PyTorch weights {file}: {type(error).__name__}: {first_line(error)} "
                            "(corrupt file, or a pickle that is not a plain state dict?)") from error
        if not isinstance(state, dict):
            raise SpecError(f"{file} holds a {type(state).__name__}, not a state dict of tensors")
        shapes.update({name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)})
    return shapes


def _layers(names) -> "tuple[str, int]":
    """(the prefix of the repeated blocks, e.g. "model.layers", and how many indices it holds)."""
    found: dict[str, set[int]] = {}
    for name in names:
        match = _LAYER.match(name)
        if match:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    if not found:
        return "", 0
    prefix = Counter({p: len(i) for p, i in found.items()}).most_common(1)[0][0]
    return prefix, len(found[prefix])


def _refuse(spec: str, directory: Path, what: str) -> SpecError:
    return SpecError(f"model {spec!r}: the weights in {directory} do not match its config.json ({what}); "
                     "the checkpoint is incomplete or the config describes another model")


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def check_checkpoint(spec: str, directory: "str | Path", plan: ModelPlan, *, trust_remote_code: bool = False) -> None:
    """SpecError (one line, naming a few tensors) when the weights in ``directory`` are not those
    of the model its ``config.json`` describes: a missing, unexpected or misshapen tensor, or
    another number of layers. Reads headers only; the model is built on the meta device.

    >>> from mechit.models import organism_dir, read_plan
    >>> check_checkpoint("tuned", organism_dir("tuned"), read_plan("organism-tuned"))  # a sound checkpoint passes
    """
    from transformer_lens.model_bridge.sources.transformers.helpers import (
        get_hf_model_class_for_architecture,
    )
    from transformers import AutoConfig

    directory = Path(directory)
    stored = stored_tensors(directory)
    if not stored:
        return  # no weights here: transformers reports that
    prefix, n_stored = _layers(stored)
    if plan.n_layers > n_stored:
        held = f"{prefix}.0-{n_stored - 1}" if n_stored else "no numbered layers"
        raise _refuse(spec, directory, f"config.json says {plan.n_layers} layers, the weights hold {n_stored} ({held})")
    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        model_class = get_hf_model_class_for_architecture((config.architectures or [plan.architecture])[0])
        with torch.device("meta"):
            meta = model_class.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - a config transformers cannot build: loading reports it in one line
        return
    missing, unexpected, misshapen = _compare(meta, stored)
    if missing or unexpected:
        parts = [f"{len(missing)} missing: {_names(missing)}"] if missing else []
        parts += [f"{len(unexpected)} unexpected: {_names(unexpected)}"] if unexpected else []
        raise _refuse(spec, directory, "; ".join(parts))
    if misshapen:
        raise _refuse(spec, directory, f"{len(misshapen)} of another shape: " + ", ".join(
            f"{name} {list(stored_shape)} where the config implies {list(wanted)}"
            for name, stored_shape, wanted in misshapen[:SHOWN]))


def _compare(meta, stored: dict) -> tuple[set, set, list]:
    """(missing, unexpected, misshapen) names of ``stored`` against the meta model, matched with
    transformers' renaming rules (legacy names, base-model prefix); tied and ignorable names dropped."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        rename_source_key,
    )

    expected = meta.state_dict()
    transforms = get_model_conversion_mapping(meta)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    matched, unexpected, misshapen = set(), set(), []
    for name, shape in stored.items():
        target, converted = rename_source_key(name, renamings, converters, meta.base_model_prefix, expected)
        if target not in expected and name in expected:
            target, converted = rename_source_key(name, [], [], meta.base_model_prefix, expected)
        if target not in expected:
            unexpected.add(name)
            continue
        matched.add(target)
        if converted is None and tuple(expected[target].shape) != tuple(shape):
            misshapen.append((name, shape, tuple(expected[target].shape)))
    tied = set(getattr(meta, "all_tied_weights_keys", {}) or {})
    info = SimpleNamespace(missing_keys=set(expected) - matched - tied, unexpected_keys=unexpected)
    meta._adjust_missing_and_unexpected_keys(info)  # the model's own ignore patterns (old buffers, ...)
    return info.missing_keys, info.unexpected_keys, misshapen


def check_gguf_tensors(spec: str, path: "str | Path", plan: ModelPlan) -> None:
    """SpecError when a GGUF file's tensor table is incomplete: a block of ``block_count`` absent,
    a block lacking a tensor the others hold, or no token embedding.

    >>> check_gguf_tensors("smol", "SmolLM2-135M-Instruct.Q4_1.gguf", plan)   # doctest: +SKIP
    """
    import gguf

    reader = gguf.GGUFReader(path, "r")
    names = [t.name for t in reader.tensors]
    blocks: dict[int, set[str]] = {}
    for name in names:
        match = re.match(r"^blk\.(\d+)\.(.+)$", name)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(match.group(2))
    where = f"GGUF file {path}"
    absent = sorted(set(range(plan.n_layers)) - set(blocks))
    if absent or len(blocks) != plan.n_layers:
        raise SpecError(f"model {spec!r}: {where} says {plan.n_layers} blocks but holds {len(blocks)}"
                        + (f" (blk.{absent[0]} is absent)" if absent else "") + "; the file is incomplete")
    every = set().union(*blocks.values()) if blocks else set()
    gaps = sorted(f"blk.{i}.{t}" for i, held in blocks.items() for t in every - held)
    if gaps:
        raise SpecError(f"model {spec!r}: {where} lacks {len(gaps)} block tensors: {_names(gaps)}; the file is incomplete")
    if "token_embd.weight" not in names:
        raise SpecError(f"model {spec!r}: {where} lacks token_embd.weight; the file is incomplete")
