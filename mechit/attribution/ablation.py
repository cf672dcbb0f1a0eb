"""Causal ablation beside the gradient: how much the response's log-probability falls
when a part of the prompt is taken away.

Gradient × input (:mod:`mechit.attribution.example`) is local and saturates: a confident
model has small gradients exactly where it relies most. :func:`ablate` measures the same
question causally. Prompt and response are tokenised once (:func:`mechit.tokens.encode`);
the prompt's tokens are split into parts by the instruction spans
(:func:`mechit.tokens.span_mask`): ``"instruction"`` (tokens overlapping a span),
``"context"`` (the other prompt tokens) and, with ``per_span=True``, ``"span k"`` (the
tokens of span ``k`` alone). For each part the response is scored teacher-forced, with and
without the part, and the drop is reported::

    effect_j = log p(y_j | prompt, y_<j) - log p(y_j | prompt with the part ablated, y_<j)

so a positive effect means the part helps the model give this response (captum's
``FeatureAblation`` convention: original output minus ablated output). Template and
special tokens (BOS, chat markers) belong to no part and are never ablated.

Three ways to ablate a part (``how``):

- ``"remove"``: its tokens are dropped from the sequence (later tokens move up);
- ``"mask"``: each of its tokens is replaced by one baseline token, :func:`mask_token_id`
  (the tokenizer's unknown token, else its padding token, else its end-of-sequence token);
- ``"mean"``: each of its input embeddings (the ``hook_embed`` output) is replaced by the
  mean input embedding over the whole vocabulary (:func:`mean_embedding`).

>>> frame = ablate(model, "Translate this phrase into Zel: red apple", "sazele vubo",
...                instruction_spans=[(0, 31)], chat_template=True)
>>> sorted(frame.part.unique())
['context', 'instruction']
>>> totals = frame.groupby("part").effect.sum()
>>> bool(totals["context"] > 0), bool(totals["instruction"] > 0)
(True, True)
"""

from __future__ import annotations

import sys
from typing import Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechit.arch.weights import embed_scale, input_embedding
from mechit.attribution.example import generate_response
from mechit.data.prompts import PromptRecord
from mechit.data.spans import span_problem
from mechit.errors import InputError
from mechit.runtime import device_of, upcast
from mechit.tokens import Encoded, encode, span_mask

How = Literal["remove", "mask", "mean"]
HOWS = ("remove", "mask", "mean")
COLUMNS = ["part", "how", "n_part_tokens", "response_index", "response_token", "logprob", "logprob_ablated",
           "effect", "total_effect"]


def mask_token_id(tokenizer) -> int:
    """The baseline token of ``how="mask"``: the unknown token, else the padding token, else
    the end-of-sequence token of ``tokenizer`` (a tokenizer or a model with ``.tokenizer``).

    >>> model.tokenizer.convert_ids_to_tokens(mask_token_id(model))   # the organism has no unk token
    '<pad>'
    >>> tiny.tokenizer.convert_ids_to_tokens(mask_token_id(tiny))
    '<unk>'
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    for name in ("unk_token_id", "pad_token_id", "eos_token_id"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            return int(token)
    raise InputError("how='mask' needs a baseline token, but the tokenizer has no unk, pad or eos token")


def mean_embedding(model) -> Float[Tensor, " d_model"]:
    """The baseline of ``how="mean"``: the mean input embedding over the vocabulary, scaled as
    the ``hook_embed`` output is (Gemma's √d_model included), on the model's device.

    >>> mean_embedding(tiny).shape
    torch.Size([64])
    """
    device = device_of(model)
    return (input_embedding(model).to(device).mean(dim=0) * embed_scale(model)).to(model.W_E.dtype)


def parts(encoded: Encoded, spans: Sequence[tuple[int, int]], *, per_span: bool = False) -> dict[str, Bool[Tensor, " n"]]:
    """The parts of the prompt to ablate, as masks over ``encoded.prompt_positions``:
    ``"instruction"``, ``"context"`` and with ``per_span`` one ``"span k"`` per span.

    >>> enc = encode(model, "Repeat this: red fox", "red fox")
    >>> {name: mask.tolist() for name, mask in parts(enc, [(0, 12)]).items()}
    {'instruction': [True, True, True, False, False], 'context': [False, False, False, True, True]}
    """
    instruction = span_mask(encoded, spans)
    out = {"instruction": instruction, "context": ~instruction}
    if per_span:
        out.update({f"span {k}": span_mask(encoded, [span]) for k, span in enumerate(spans)})
    return out


def response_logprobs(model, input_ids: Int[Tensor, " seq"], response_positions: Int[Tensor, " m"],
                      replace: Bool[Tensor, " seq"] | None = None,
                      baseline: Float[Tensor, " d_model"] | None = None) -> Float[Tensor, " m"]:
    """Teacher-forced ``log p(y_j | tokens before it)`` of the tokens at ``response_positions``
    (float32 or wider, on the model's device). With ``replace`` and ``baseline``, the input
    embeddings at the ``replace`` positions become ``baseline`` (a ``hook_embed`` hook).

    >>> enc = encode(model, "Repeat this: red fox", "red fox", chat_template=True)
    >>> enc.response_tokens
    ['Ġred', 'Ġfox']
    >>> response_logprobs(model, enc.input_ids, enc.response_positions).exp().tolist()
    [0.97..., 0.99...]
    """
    device = device_of(model)
    input_ids, response_positions = input_ids.to(device), response_positions.to(device)
    hooks = []
    if replace is not None:
        where = replace.to(device)[None, :, None]  # (1, seq, 1)

        def swap(embedded, hook):
            return torch.where(where, baseline.to(embedded.dtype), embedded)

        hooks.append(("hook_embed", swap))
    with torch.no_grad():
        logits = model.run_with_hooks(input_ids[None], fwd_hooks=hooks)[0]  # (seq, vocab)
        scores = torch.log_softmax(upcast(logits[response_positions - 1]), dim=-1)  # (m, vocab)
    return scores.gather(1, input_ids[response_positions][:, None])[:, 0]


def _ablated_logprobs(model, encoded: Encoded, positions: Int[Tensor, " k"], how: How,
                      baseline_id: int | None, mean: Tensor | None) -> Float[Tensor, " m"]:
    """Response log-probabilities with the tokens at ``positions`` (of ``encoded.input_ids``) ablated."""
    ids, response = encoded.input_ids, encoded.response_positions
    drop = torch.zeros(len(ids), dtype=torch.bool)
    drop[positions] = True
    if how == "remove":
        kept = ~drop
        moved = response - drop.long().cumsum(0)[response]  # new index of each response token
        if int(moved[0]) == 0:
            raise InputError("how='remove' would leave no token before the response; use how='mask' or 'mean'")
        return response_logprobs(model, ids[kept], moved)
    if how == "mask":
        return response_logprobs(model, torch.where(drop, baseline_id, ids), response)
    return response_logprobs(model, ids, response, replace=drop, baseline=mean)


def ablate(model, prompt: str, response: str, *, instruction_spans: Sequence[tuple[int, int]],
           how: How = "remove", per_span: bool = False, chat_template: bool = False) -> pd.DataFrame:
    """Teacher-forced drop in the response's log-probability when each part of the prompt is ablated.

    ``instruction_spans`` are ``[start, end)`` character ranges of ``prompt`` (as for
    :func:`mechit.attribute`); ``how`` is ``"remove"``, ``"mask"`` or ``"mean"`` (module
    docstring); ``per_span`` adds one part per span; ``chat_template`` renders prompt and
    response with the tokenizer's chat template.

    Returns one row per (part, response token): part, how, n_part_tokens (prompt tokens
    ablated), response_index (0..m-1), response_token, logprob (unablated),
    logprob_ablated, effect (``logprob - logprob_ablated``) and total_effect (the part's
    effect summed over the response: the drop in ``log p(response | prompt)``). A part
    with no tokens has effect 0. Raises :class:`~mechit.errors.InputError` for an empty
    prompt or response, bad spans or an unknown ``how``.

    >>> f = ablate(model, "Repeat this: red fox", "red fox", instruction_spans=[(0, 12)], how="mask")
    >>> f[["part", "response_token", "n_part_tokens"]].values.tolist()
    [['instruction', 'red', 3], ['instruction', 'Ġfox', 3], ['context', 'red', 2], ['context', 'Ġfox', 2]]
    >>> bool((f.effect == f.logprob - f.logprob_ablated).all())
    True
    """
    if how not in HOWS:
        raise InputError(f"how must be one of {', '.join(HOWS)}, not {how!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("field 'prompt' is empty; give a non-empty prompt")
    if not isinstance(response, str) or not response.strip():
        raise InputError("field 'response' is empty; ablation scores a given response")
    spans = [tuple(s) for s in instruction_spans]
    problem = span_problem(spans, len(prompt))
    if problem:
        raise InputError(f"field 'instruction_spans': {problem}")
    encoded = encode(model.tokenizer, prompt, response, chat_template=chat_template)
    if len(encoded.prompt_positions) == 0 or len(encoded.response_positions) == 0:
        raise InputError("field 'prompt' or 'response' tokenises to no tokens")
    baseline_id = mask_token_id(model.tokenizer) if how == "mask" else None
    mean = mean_embedding(model) if how == "mean" else None
    full = response_logprobs(model, encoded.input_ids, encoded.response_positions)  # (m,)
    tokens = encoded.response_tokens
    rows = []
    for name, mask in parts(encoded, spans, per_span=per_span).items():
        positions = encoded.prompt_positions[mask]
        ablated = _ablated_logprobs(model, encoded, positions, how, baseline_id, mean) if len(positions) else full
        before, after = full.double().cpu(), ablated.double().cpu()  # effects subtracted in float64
        effect = before - after
        total = float(effect.sum())
        for j, token in enumerate(tokens):
            rows.append((name, how, len(positions), j, token, float(before[j]), float(after[j]), float(effect[j]),
                         total))
    return pd.DataFrame(rows, columns=COLUMNS)


def ablate_prompts(model, records: Sequence[PromptRecord], *, how: How = "remove", per_span: bool = False,
                   chat_template: bool = False, max_new_tokens: int = 128, progress: bool = True) -> pd.DataFrame:
    """:func:`ablate` over a prompt set: one frame, the columns of :func:`ablate` after
    ``id``, ``group`` and ``error``.

    A record without a response gets the model's greedy response (``max_new_tokens``).
    A record that cannot be ablated (its ``error`` is set, its response is empty, ...)
    gives one row with the message in ``error`` and the other columns empty, and the run
    goes on. ``progress`` shows a progress bar on stderr.

    >>> from mechit.organism import held_out_prompts
    >>> records = [PromptRecord(r["id"], r["prompt"], r["response"], tuple(map(tuple, r["instruction_spans"])),
    ...                         r["group"]) for r in held_out_prompts()[:2]]
    >>> f = ablate_prompts(model, records, chat_template=True, progress=False)
    >>> f.groupby(["id", "part"]).total_effect.first().round(1).to_dict()
    {('translate-000', 'context'): 9.8, ('translate-000', 'instruction'): 12.5, ('translate-001', 'context'): 11.2, ('translate-001', 'instruction'): 8.2}
    """
    frames = []
    for record in tqdm(records, desc=f"ablate ({how})", unit="ex", file=sys.stderr, disable=not progress):
        head = {"id": record.id, "group": record.group}
        try:
            if record.error:
                raise InputError(record.error)
            response = record.response
            if response is None:
                response = generate_response(model, record.prompt, chat_template=chat_template,
                                             max_new_tokens=max_new_tokens)
            frame = ablate(model, record.prompt, response, instruction_spans=record.instruction_spans, how=how,
                           per_span=per_span, chat_template=chat_template)
            frame.insert(0, "error", None)
        except InputError as error:
            frame = pd.DataFrame([{"error": f"example {record.id!r}: {error}"}], columns=["error", *COLUMNS])
        for key, value in reversed(head.items()):
            frame.insert(0, key, value)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["id", "group", "error", *COLUMNS])
    return pd.concat(frames, ignore_index=True)
