"""How much attention the response pays to the instruction, per layer and head.

For each prompt record (prompt JSONL schema: ``prompt``, ``response``, ``instruction_spans``)
the prompt and response are tokenised as one sequence (:func:`mechit.tokens.encode`) and
run once, caching only ``blocks.{L}.attn.hook_pattern`` under ``torch.no_grad``. A prompt
token belongs to the instruction when it overlaps an instruction span
(:func:`mechit.tokens.span_mask`). For each head, with A the attention pattern:

- ``instruction_mass``: mean over response positions q of sum over instruction tokens k of A[q, k];
- ``prompt_mass``: the same over all prompt tokens (the rest goes to template/BOS tokens
  and to the response itself);
- ``instruction_share`` = instruction_mass / prompt_mass: the instruction's share of the
  attention the response pays to the prompt.

A record without a response uses the last prompt position (the one that predicts the first
response token) as its only query.

The patterns themselves, for views (:func:`mechit.views.heads.attention`):
:func:`attention_patterns` (one forward pass: tokens and a tensor per layer) and
:func:`pattern_table` (the same as a tidy frame, ready for ``pair.run``).

Run it on both models and compare:

>>> records = [{"id": "a", "prompt": "Translate: cat\\n", "response": "kima", "instruction_spans": [[0, 9]]}]
>>> mass = pair.run(instruction_attention, records, layers=[0], progress=False)
>>> mass.groupby("model").size().to_dict() == {"base": model.cfg.n_heads, "tuned": model.cfg.n_heads}
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechit.arch.weights import select_indices
from mechit.data.prompts import read_prompts
from mechit.errors import InputError
from mechit.runtime import device_of, upcast
from mechit.tokens import encode, span_mask

COLUMNS = ["id", "group", "layer", "head", "instruction_mass", "prompt_mass", "instruction_share",
           "n_instruction_tokens", "n_prompt_tokens", "n_response_tokens"]


def _records(prompts) -> list[dict]:
    """Prompt records as dicts: a path (JSONL/TSV via :func:`mechit.data.prompts.read_prompts`),
    dicts, or :class:`mechit.data.prompts.PromptRecord` objects."""
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts(prompts, strict=True)
    if isinstance(prompts, dict):
        prompts = [prompts]
    out = []
    for k, rec in enumerate(prompts):
        rec = rec if isinstance(rec, dict) else vars(rec)
        prompt = rec.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise InputError(f"prompt record {rec.get('id', k)!r}: field 'prompt' is missing or empty")
        out.append({"id": str(rec.get("id", k)), "group": rec.get("group"), "prompt": prompt,
                    "response": rec.get("response") or "",
                    "instruction_spans": [tuple(s) for s in rec.get("instruction_spans") or ()]})
    if not out:
        raise InputError("no prompt records given")
    return out


def instruction_attention(
    model, prompts, *, chat_template: bool = False, layers: int | Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Attention mass from response positions to instruction tokens, per record, layer and head.

    ``prompts``: a prompt file path, or a list of records (dicts or PromptRecord).
    ``chat_template`` wraps each prompt in the tokenizer's chat template (spans still refer
    to the raw prompt). Returns a tidy frame with the module's columns, one row per
    (record, layer, head).

    >>> df = instruction_attention(model, [{"id": "a", "prompt": "Translate: cat\\n",
    ...     "response": "kima", "instruction_spans": [[0, 9]]}], progress=False)
    >>> df[["layer", "head"]].drop_duplicates().shape[0] == model.cfg.n_layers * model.cfg.n_heads
    True
    >>> bool(((df["instruction_mass"] <= df["prompt_mass"] + 1e-6) & (df["prompt_mass"] <= 1 + 1e-6)).all())
    True
    """
    records = _records(prompts)
    layer_list = select_indices("layer", layers, model.cfg.n_layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layer_list]
    device = device_of(model)
    rows = []
    for rec in tqdm(records, desc="instruction attention", unit="prompt", disable=not progress):
        enc = encode(model.tokenizer, rec["prompt"], rec["response"], chat_template=chat_template)
        instruction = enc.prompt_positions[span_mask(enc, rec["instruction_spans"])]
        queries = enc.response_positions if len(enc.response_positions) else enc.prompt_positions[-1:]
        with torch.no_grad():
            _, cache = model.run_with_cache(enc.input_ids[None].to(device), names_filter=lambda name: name in names)
        for layer, name in zip(layer_list, names):
            pattern = upcast(cache[name][0])[:, queries, :]  # (heads, queries, keys)
            instruction_mass = pattern[:, :, instruction].sum(-1).mean(-1)  # (heads,)
            prompt_mass = pattern[:, :, enc.prompt_positions].sum(-1).mean(-1)
            share = instruction_mass / prompt_mass.clamp_min(1e-12)
            for head in range(pattern.shape[0]):
                rows.append((rec["id"], rec["group"], layer, head, float(instruction_mass[head]),
                             float(prompt_mass[head]), float(share[head]), len(instruction),
                             len(enc.prompt_positions), len(enc.response_positions)))
    return pd.DataFrame(rows, columns=COLUMNS)


def attention_patterns(
    model, prompt: str, response: str = "", *, layers: int | Iterable[int] | None = None, chat_template: bool = False,
) -> tuple[list[str], dict[int, Float[Tensor, "heads pos pos"]]]:
    """Tokens and attention patterns of one forward pass: ``(tokens, {layer: Float[heads, pos, pos]})``,
    read from ``blocks.{L}.attn.hook_pattern`` under ``torch.no_grad`` (on the model's device).

    >>> tokens, patterns = attention_patterns(model, "Say hi.", layers=[0])
    >>> patterns[0].shape == (model.cfg.n_heads, len(tokens), len(tokens))
    True
    """
    layer_list = select_indices("layer", layers, model.cfg.n_layers)
    names = {f"blocks.{layer}.attn.hook_pattern": layer for layer in layer_list}
    enc = encode(model.tokenizer, prompt, response, chat_template=chat_template)
    with torch.no_grad():
        _, cache = model.run_with_cache(enc.input_ids[None].to(device_of(model)), names_filter=lambda name: name in names)
    return enc.tokens, {layer: upcast(cache[name][0]) for name, layer in names.items()}


def pattern_table(
    model, prompt: str, response: str = "", *, layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None, chat_template: bool = False,
) -> pd.DataFrame:
    """:func:`attention_patterns` as a tidy frame over the causal triangle (key <= query; the
    rest is zero): layer, head, query, key, weight, the layout of ``mechit compare``'s
    ``attention_patterns`` table without its ``model`` column, which ``pair.run`` adds.

    >>> table = pair.run(pattern_table, "Say hi.", layers=[1], heads=[0, 2])
    >>> sums = table.groupby(["model", "head", "query"])["weight"].sum()   # each query's row sums to 1
    >>> sums.groupby(["model", "head"]).size().to_dict() == {(m, h): table["query"].max() + 1
    ...                                                     for m in ("base", "tuned") for h in (0, 2)}
    True
    >>> bool(((sums - 1).abs() < 1e-5).all())
    True
    """
    tokens, patterns = attention_patterns(model, prompt, response, layers=layers, chat_template=chat_template)
    head_list = select_indices("head", heads, model.cfg.n_heads)
    frames = []
    for layer, pattern in patterns.items():  # (heads, pos, pos)
        query, key = torch.tril_indices(len(tokens), len(tokens), device=pattern.device)
        for head in head_list:
            frames.append(pd.DataFrame({"layer": layer, "head": head, "query": query.cpu().numpy(),
                                        "key": key.cpu().numpy(), "weight": pattern[head][query, key].cpu().numpy()}))
    columns = ["layer", "head", "query", "key", "weight"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
