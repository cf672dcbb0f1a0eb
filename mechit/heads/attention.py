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
response token) as its only query. Run it on both models and compare:

>>> import mechit                                                      # doctest: +SKIP
>>> pair = mechit.load_pair()                                          # doctest: +SKIP
>>> prompts = mechit.organism.held_out_prompts()[:20]                  # doctest: +SKIP
>>> base = mechit.instruction_attention(pair.base, prompts)            # doctest: +SKIP
>>> tuned = mechit.instruction_attention(pair.tuned, prompts)          # doctest: +SKIP
"""

from __future__ import annotations


from pathlib import Path
from typing import Iterable

import pandas as pd

from mechit.errors import InputError

COLUMNS = ["id", "group", "layer", "head", "instruction_mass", "prompt_mass", "instruction_share",
           "n_instruction_tokens", "n_prompt_tokens", "n_response_tokens"]


def _records(prompts) -> list[dict]:
    """Prompt records as dicts: a path (JSONL/TSV via :func:`mechit.data.prompts.read_prompts`),
    dicts, or :class:`mechit.data.prompts.PromptRecord` objects."""
    if isinstance(prompts, (str, Path)):
        from mechit.data.prompts import read_prompts

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

    >>> df = instruction_attention(model, [{"id": "a", "prompt": "Translate: cat ",
    ...     "response": "kima", "instruction_spans": [[0, 9]]}])          # doctest: +SKIP
    >>> df.groupby("layer")["instruction_share"].mean()                   # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm

    from mechit.arch.weights import select_indices
    from mechit.tokens import encode, span_mask

    records = _records(prompts)
    layer_list = select_indices("layer", layers, model.cfg.n_layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layer_list]
    rows = []
    for rec in tqdm(records, desc="instruction attention", unit="prompt", disable=not progress):
        enc = encode(model.tokenizer, rec["prompt"], rec["response"], chat_template=chat_template)
        instruction = enc.prompt_positions[span_mask(enc, rec["instruction_spans"])]
        queries = enc.response_positions if len(enc.response_positions) else enc.prompt_positions[-1:]
        with torch.no_grad():
            _, cache = model.run_with_cache(enc.input_ids[None], names_filter=lambda name: name in names)
        for layer, name in zip(layer_list, names):
            pattern = cache[name][0].float()[:, queries, :]  # (heads, queries, keys)
            instruction_mass = pattern[:, :, instruction].sum(-1).mean(-1)  # (heads,)
            prompt_mass = pattern[:, :, enc.prompt_positions].sum(-1).mean(-1)
            share = instruction_mass / prompt_mass.clamp_min(1e-12)
            for head in range(pattern.shape[0]):
                rows.append((rec["id"], rec["group"], layer, head, float(instruction_mass[head]),
                             float(prompt_mass[head]), float(share[head]), len(instruction),
                             len(enc.prompt_positions), len(enc.response_positions)))
    return pd.DataFrame(rows, columns=COLUMNS)

