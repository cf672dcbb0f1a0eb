"""Input→output attribution (PAPER.md §1): which prompt tokens drive the response.

:func:`attribute` tokenises prompt and response once, computes the signed gradient ×
input of every response token's probability with respect to every prompt token's input
embedding (exact, from one forward pass: :mod:`mechit.attribution.grad`), then the
paper's sparsified levels, importance density and instruction score
(:mod:`mechit.attribution.scores`). The same call runs on a pre-trained and on an
instruction-tuned model.

>>> import mechit                                                    # doctest: +SKIP
>>> model = mechit.load_model("organism-tuned")                      # doctest: +SKIP
>>> a = mechit.attribute(model, "Translate to Zel: the cat", "ka mira",
...                      instruction_spans=[(0, 16)])                # doctest: +SKIP
>>> a.raw.shape, round(a.score, 3)                                   # doctest: +SKIP
(torch.Size([9, 4]), 1.23)
>>> a.to_frame().head()                                              # doctest: +SKIP
>>> a.show()                                                         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from circuitsvis.tokens import colored_tokens_multi
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechit.attribution.grad import (
    DEFAULT_MEMORY_BUDGET,
    Method,
    block_path_bytes,
    choose_method,
    cotangent_bytes,
    forward_bytes,
    gradient_x_input,
    product_bytes,
)
from mechit.attribution.scores import density, instruction_score, rescale, sparsify
from mechit.data.spans import span_problem
from mechit.errors import EmptyResponseError, InputError
from mechit.runtime import device_of
from mechit.tokens import encode, span_mask


@dataclass
class Attribution:
    """The attribution of one (prompt, response) pair by one model.

    Tensors (CPU, fp32):

    - ``raw`` [n_prompt, n_response]: signed gradient × input ``<dp_j/de_i, e_i>``;
    - ``levels`` [n_prompt, n_response]: sparsified integer levels (0 or b+1..L);
    - ``density_raw`` [n_prompt]: importance density ``||levels_i||_1 / ||levels_i||_p``;
    - ``density`` [n_prompt]: ``density_raw`` rescaled by its maximum over the prompt
      (what the paper analyses, and what ``score`` uses);
    - ``probs`` [n_response]: teacher-forced probability of each response token;
    - ``instruction_mask`` [n_prompt] or None: prompt tokens overlapping an instruction span;
    - ``input_ids`` [seq], ``prompt_positions`` [n_prompt], ``response_positions`` [n_response].

    ``score`` is the instruction score (None without spans). ``prompt_tokens`` /
    ``response_tokens`` are token strings with character ``*_offsets`` into ``prompt`` /
    ``response``. ``generated`` says whether the response was generated greedily.
    """

    raw: Float[Tensor, "n_prompt n_response"]
    levels: Float[Tensor, "n_prompt n_response"]
    density_raw: Float[Tensor, " n_prompt"]
    density: Float[Tensor, " n_prompt"]
    probs: Float[Tensor, " n_response"]
    instruction_mask: Bool[Tensor, " n_prompt"] | None
    score: float | None
    input_ids: Int[Tensor, " seq"]
    prompt_positions: Int[Tensor, " n_prompt"]
    response_positions: Int[Tensor, " n_response"]
    prompt_tokens: list[str]
    response_tokens: list[str]
    prompt_offsets: list[tuple[int, int]]
    response_offsets: list[tuple[int, int]]
    prompt: str
    response: str
    generated: bool
    method: str
    L: int
    b: int
    p: float

    def to_frame(self, kind: str = "tokens") -> pd.DataFrame:
        """A tidy DataFrame.

        ``kind="tokens"``: one row per prompt token — position (in ``input_ids``), token,
        char_start, char_end (in ``prompt``), density (rescaled), density_raw,
        in_instruction. ``kind="pairs"``: one row per (prompt token, response token) —
        prompt_position, prompt_token, response_position, response_token, prob, raw, level.

        >>> a.to_frame().columns.tolist()  # doctest: +SKIP
        ['position', 'token', 'char_start', 'char_end', 'density', 'density_raw', 'in_instruction']
        """
        n, m = self.raw.shape
        if kind == "tokens":
            mask = self.instruction_mask if self.instruction_mask is not None else torch.zeros(n, dtype=torch.bool)
            return pd.DataFrame({
                "position": self.prompt_positions.tolist(),
                "token": self.prompt_tokens,
                "char_start": [s for s, _ in self.prompt_offsets],
                "char_end": [e for _, e in self.prompt_offsets],
                "density": self.density.tolist(),
                "density_raw": self.density_raw.tolist(),
                "in_instruction": mask.tolist(),
            })
        if kind == "pairs":
            return pd.DataFrame({
                "prompt_position": self.prompt_positions.repeat_interleave(m).tolist(),
                "prompt_token": [t for t in self.prompt_tokens for _ in range(m)],
                "response_position": self.response_positions.repeat(n).tolist(),
                "response_token": self.response_tokens * n,
                "prob": self.probs.repeat(n).tolist(),
                "raw": self.raw.reshape(-1).tolist(),
                "level": self.levels.reshape(-1).tolist(),
            })
        raise ValueError(f"kind must be 'tokens' or 'pairs', not {kind!r}")

    def show(self):
        """A circuitsvis view: prompt tokens coloured by density, or by one response token's attribution.

        The first button colours by the rescaled density; button ``j: token`` colours by
        ``raw[:, j]`` divided by that column's largest absolute value (signed).

        >>> a.show()  # doctest: +SKIP
        """
        scale = self.raw.abs().amax(dim=0, keepdim=True).clamp(min=torch.finfo(self.raw.dtype).tiny)
        values = torch.cat([self.density[:, None], self.raw / scale], dim=1)  # (n, 1 + m)
        labels = ["density"] + [f"{j}: {tok}" for j, tok in enumerate(self.response_tokens)]
        return colored_tokens_multi(self.prompt_tokens, values, labels)


def generate_response(model, prompt: str, *, chat_template: bool = False, max_new_tokens: int = 128) -> str:
    """Greedy (deterministic) continuation of ``prompt``, stopped at end-of-sequence, as text.

    >>> generate_response(model, "The capital of France is", max_new_tokens=5)  # doctest: +SKIP
    ' Paris.'
    """
    tokenizer = model.tokenizer
    encoded = encode(tokenizer, prompt, "", chat_template=chat_template)
    device = device_of(model)
    ids = encoded.input_ids[None].to(device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, verbose=False,
                             stop_at_eos=True, return_type="tokens")
    new = out[0, ids.shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    if eos is not None and eos in new:
        new = new[: new.index(eos)]
    return tokenizer.decode(new, skip_special_tokens=True)


def context_window(model) -> int | None:
    """The model's maximum sequence length (``cfg.n_ctx``), or None if unknown."""
    return getattr(model.cfg, "n_ctx", None)


def _memory_needs(model, seq: int, n_prompt: int, n_response: int, method: Method) -> tuple[int, int]:
    """``(kept, one)``: bytes the forward pass of ``seq`` tokens keeps (every block's input in
    reverse mode, :func:`~mechit.attribution.grad.block_path_bytes`; the whole graph in
    forward mode, :func:`~mechit.attribution.grad.forward_bytes`) and the least the
    products need beside it (one product, and in reverse mode one response token's
    cotangents)."""
    if choose_method(n_prompt, n_response, method) == "reverse":
        return block_path_bytes(model, seq, n_response), product_bytes(model, seq) + cotangent_bytes(model, seq)
    return forward_bytes(model, seq, n_response), product_bytes(model, seq)


def _check_max_memory(model, seq: int, n_prompt: int, n_response: int, method: Method, max_memory: int | None,
                      what: str) -> tuple[int, int]:
    """:func:`_memory_needs`; InputError if their sum exceeds ``max_memory``."""
    kept, one = _memory_needs(model, seq, n_prompt, n_response, method)
    need = kept + one
    if max_memory is not None and need > max_memory:
        raise InputError(f"field 'prompt': {what} {seq} tokens, which need ~{need / 2**20:.1f} MiB (forward pass "
                         f"~{kept / 2**20:.1f} MiB + one gradient product), more than --max-memory "
                         f"{max_memory / 2**20:.1f} MiB; raise --max-memory or shorten the example")
    return kept, one


def attribute(
    model,
    prompt: str,
    response: str | None = None,
    *,
    instruction_spans: list[tuple[int, int]] | None = None,
    chat_template: bool = False,
    max_new_tokens: int = 128,
    L: int = 10,
    b: int = 7,
    p: float = 4,
    method: Method = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_memory: int | None = None,
) -> Attribution:
    """Gradient × input attribution of ``response`` to ``prompt`` under ``model`` (PAPER.md §1).

    ``response=None`` generates one greedily (``max_new_tokens``) and records it.
    ``instruction_spans`` are ``[start, end)`` character offsets into ``prompt``; a prompt
    token is in the instruction when it overlaps a span (:func:`mechit.tokens.span_mask`).
    ``chat_template=True`` wraps the prompt in the tokenizer's chat template (spans still
    refer to the bare prompt). ``L``, ``b``, ``p`` are the paper's constants. ``method``
    ("auto", "reverse", "forward") and ``memory_budget`` (bytes) only change speed and memory.
    ``max_memory`` (bytes, None = no cap) bounds the whole attribution of the example: what
    the forward pass keeps (:func:`_memory_needs`) plus one chunk of gradient products;
    chunks shrink to fit, and an example whose forward pass and single product do not fit
    is refused before any forward pass runs.

    Raises :class:`InputError` for an empty prompt or response, bad spans, or a sequence
    longer than the model's context window or the memory budget;
    :class:`~mechit.errors.EmptyResponseError` (an InputError) when the generated
    response is empty.

    >>> a = attribute(model, "Summarize: cats purr.", "Cats purr.", instruction_spans=[(0, 9)])  # doctest: +SKIP
    >>> a.raw.shape == (len(a.prompt_tokens), len(a.response_tokens))                          # doctest: +SKIP
    True
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("field 'prompt' is empty; give a non-empty prompt")
    spans = [tuple(s) for s in (instruction_spans or [])]
    problem = span_problem(spans, len(prompt))
    if problem:
        raise InputError(f"field 'instruction_spans': {problem}")
    window = context_window(model)
    generated = response is None
    if generated:
        prompt_len = len(encode(model.tokenizer, prompt, "", chat_template=chat_template, max_tokens=window).input_ids)
        if window is not None and prompt_len + max_new_tokens > window:
            raise InputError(f"field 'prompt': {prompt_len} prompt tokens + max_new_tokens={max_new_tokens} "
                             f"exceed the model's context window of {window} tokens")
        _check_max_memory(model, prompt_len + 1, prompt_len, 1, method, max_memory,
                          "the prompt and a one-token response are")
        response = generate_response(model, prompt, chat_template=chat_template, max_new_tokens=max_new_tokens)
        if not response.strip():
            raise EmptyResponseError("field 'response': the model generated an empty response (end of sequence "
                                     "at once, or only whitespace); there is nothing to attribute",
                                     response=response, n_prompt_tokens=prompt_len)
    elif not isinstance(response, str) or not response.strip():
        raise InputError("field 'response' is empty; give a non-empty response or None to generate one")
    encoded = encode(model.tokenizer, prompt, response, chat_template=chat_template, max_tokens=window,
                     device=device_of(model))
    seq = len(encoded.input_ids)
    if window is not None and seq > window:
        raise InputError(f"field 'response': prompt + response are {seq} tokens, longer than the model's "
                         f"context window of {window} tokens; shorten them")
    n_response = len(encoded.response_positions)
    kept, need = _check_max_memory(model, seq, len(encoded.prompt_positions), n_response, method, max_memory,
                                   "prompt + response are")
    if max_memory is not None:
        memory_budget = min(memory_budget, max_memory - kept)
    if need > memory_budget:
        raise InputError(f"field 'prompt': prompt + response are {seq} tokens; one gradient product needs "
                         f"~{need / 2**20:.1f} MiB, more than the memory budget of {memory_budget / 2**20:.1f} MiB "
                         "(--memory-budget-mb); raise the budget or shorten the example")
    if len(encoded.prompt_positions) == 0 or len(encoded.response_positions) == 0:
        raise InputError("field 'prompt' or 'response' tokenises to no tokens")
    raw, probs = gradient_x_input(model, encoded.input_ids, encoded.prompt_positions, encoded.response_positions,
                                  method=method, memory_budget=memory_budget, max_memory=max_memory)
    levels = sparsify(raw, L=L, b=b)  # scored on the model's device; the results leave through .cpu()
    density_raw = density(levels, p=p)
    density_rescaled = rescale(density_raw)
    mask = span_mask(encoded, spans, device=raw.device) if spans else None
    score = instruction_score(density_rescaled, mask) if mask is not None else None
    tokens = encoded.tokens
    return Attribution(
        raw=raw.cpu(), levels=levels.cpu(), density_raw=density_raw.cpu(), density=density_rescaled.cpu(),
        probs=probs.cpu(), instruction_mask=None if mask is None else mask.cpu(), score=score,
        input_ids=encoded.input_ids.cpu(), prompt_positions=encoded.prompt_positions.cpu(),
        response_positions=encoded.response_positions.cpu(),
        prompt_tokens=[tokens[i] for i in encoded.prompt_positions.tolist()],
        response_tokens=[tokens[i] for i in encoded.response_positions.tolist()],
        prompt_offsets=[tuple(o) for o in encoded.prompt_offsets],
        response_offsets=[tuple(o) for o in encoded.response_offsets],
        prompt=prompt, response=response, generated=generated,
        method=choose_method(len(encoded.prompt_positions), len(encoded.response_positions), method),
        L=L, b=b, p=p,
    )
