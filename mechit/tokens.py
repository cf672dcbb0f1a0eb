"""Tokenisation shared by every analysis: prompt + response as one sequence, character
spans -> token masks, tokens -> words, and word vectors.

Rules (see docs/loading.md, "Tokens"):

- **One sequence.** Prompt and response are rendered into one text (plain
  concatenation, or the tokenizer's chat template with the prompt as the user message
  and the response as the assistant message) and tokenised once, with character offsets.
- **Which part a token is in.** A token belongs to the prompt (response) when its
  character range overlaps the prompt (response) text. Template and special tokens that
  overlap neither (BOS, ``<|im_start|>``, "user\\n") belong to neither. Without a chat
  template a token can straddle the prompt/response boundary; it then counts as a prompt
  token (a warning says so).
- **Span -> mask (straddlers).** A prompt token is in an instruction span when its
  characters, leading whitespace excluded, overlap the span; so a token that straddles a
  span edge is inside, and "▁the"/"Ġthe" is not pulled into a span that merely ends with
  the space before it. Byte-fallback pieces of one character share that character's range,
  so they are in or out together. Zero-width tokens (BOS) are never in a span.
- **Words.** A word starts at a token that begins with a space marker ("▁", "Ġ" or a
  space), after a newline or special token, and at the start; other tokens (sub-words,
  byte pieces, punctuation) continue the current word. Newline and special tokens are
  words of their own.
- **Word vectors.** The paper's convention: tokenise " " + word (leading space), drop a
  bare leading space-marker token, average the remaining rows.

>>> enc = encode(tokenizer, "Translate: the cat", " le chat")        # doctest: +SKIP
>>> span_mask(enc, [(0, 9)])                                         # doctest: +SKIP
tensor([ True, False, False, False])
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

import mechit.arch.weights as weight_views
from mechit.data.spans import validate_spans
from mechit.data.wordlists import validate_words
from mechit.errors import InputError

if TYPE_CHECKING:
    from jaxtyping import Bool, Float, Int
    from torch import Tensor

SPACE_MARKERS = ("▁", "Ġ", " ")
NEWLINE_TOKENS = {"Ċ", "\n", "<0x0A>", "ĊĊ", "\n\n", "ĉ", "\t", "<0x09>", "\r", "č", "<0x0D>"}
_SPECIAL = re.compile(r"^<(\|[^<>]*\||[A-Za-z_/][^<>\s]*)>$")
_BYTE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class Encoded:
    """Prompt and response tokenised as one sequence.

    Attributes:
        input_ids: Int[Tensor, "seq"], the whole sequence (template and special tokens included).
        prompt_positions: Int[Tensor, "n"], positions of the prompt's tokens (increasing).
        response_positions: Int[Tensor, "m"], positions of the response's tokens.
        tokens: the token strings of the whole sequence (len seq).
        prompt_offsets: per prompt position, its (start, end) characters in ``prompt``
            (clipped to the prompt).
        response_offsets: per response position, its (start, end) in ``response``.
        prompt, response: the strings given.
        text: the rendered text that was tokenised; ``offsets`` its per-token ranges.
        prompt_start, response_start: where character 0 of prompt / response sits in
            ``text`` (text position = own position + start). A template that strips the
            content leaves the stripped whitespace out of ``text``.
    """

    input_ids: "Int[Tensor, 'seq']"
    prompt_positions: "Int[Tensor, 'n']"
    response_positions: "Int[Tensor, 'm']"
    tokens: list[str]
    prompt_offsets: list[tuple[int, int]]
    response_offsets: list[tuple[int, int]]
    prompt: str
    response: str
    text: str = ""
    offsets: list[tuple[int, int]] = field(default_factory=list)
    prompt_start: int = 0
    response_start: int = 0

    @property
    def prompt_tokens(self) -> list[str]:
        """Token strings at the prompt positions."""
        return [self.tokens[i] for i in self.prompt_positions.tolist()]

    @property
    def response_tokens(self) -> list[str]:
        """Token strings at the response positions."""
        return [self.tokens[i] for i in self.response_positions.tolist()]


def _tokenizer_of(obj):
    """Accept a tokenizer or anything with a ``.tokenizer`` (a TransformerBridge)."""
    tok = getattr(obj, "tokenizer", None)
    return tok if tok is not None and not callable(getattr(obj, "get_vocab", None)) else obj


def _locate(text: str, part: str, start: int, prefix_end: int | None = None) -> tuple[int, int, int]:
    """Where ``part`` sits in ``text`` (searching from ``start``): (shift, begin, end).

    ``begin:end`` is the part's region in ``text``; ``shift`` maps text positions to
    positions in ``part`` (``i - shift``). A template that strips the content (Gemma's
    ``| trim``) is handled: the stripped part is found and its whitespace is missing.
    """
    if prefix_end is not None and text.startswith(part, prefix_end):
        return prefix_end, prefix_end, prefix_end + len(part)
    index = text.find(part, start)
    if index >= 0:
        return index, index, index + len(part)
    stripped = part.strip()
    index = text.find(stripped, start) if stripped else -1
    if index < 0:
        return -1, -1, -1
    return index - (len(part) - len(part.lstrip())), index, index + len(stripped)


def _render(tokenizer, prompt: str, response: str) -> tuple[str, tuple[int, int, int], tuple[int, int, int]]:
    """Chat-template text, and (shift, begin, end) of the prompt and of the response in it."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("chat_template=True but this tokenizer has no chat template; use chat_template=False")
    messages = [{"role": "user", "content": prompt}]
    if response:
        messages.append({"role": "assistant", "content": response})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not response)
    # The template's text before the user content does not depend on that content: find it
    # with a sentinel, so a prompt repeated inside a system message cannot confuse us.
    sentinel = "\x00MECHIT_PROMPT\x00"
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=True
    )
    prefix_end = probe.index(sentinel) if sentinel in probe and text.startswith(probe[: probe.index(sentinel)]) else None
    prompt_at = _locate(text, prompt, prefix_end or 0, prefix_end)
    if prompt_at[1] < 0:
        raise InputError("the chat template changes the prompt text beyond stripping whitespace; "
                         "pass the prompt as the template would render it")
    if not response:
        return text, prompt_at, (len(text), len(text), len(text))
    response_at = _locate(text, response, prompt_at[2])
    if response_at[1] < 0:
        raise InputError("the chat template changes the response text beyond stripping whitespace; "
                         "pass the response as the template would render it")
    return text, prompt_at, response_at


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` can stand for: the longest vocabulary
    string (a byte-level token of n bytes is n characters long, and decodes to at most n).

    >>> longest_token_chars(tiny) >= 1
    True
    """
    tokenizer = _tokenizer_of(tokenizer)
    cached = getattr(tokenizer, "_mechit_longest_token", None)
    if cached is None:
        cached = max((len(token) for token in tokenizer.get_vocab()), default=1)
        tokenizer._mechit_longest_token = cached  # one pass over the vocabulary per tokenizer
    return cached


def check_length(tokenizer, text: str, max_tokens: int, what: str = "prompt + response") -> None:
    """Refuse ``text`` when it surely holds more than ``max_tokens`` tokens, from its length in
    characters alone (more than ``max_tokens`` × :func:`longest_token_chars`): a 50 MB
    prompt is refused at once instead of being tokenised.

    >>> check_length(tiny, "word " * 100_000, 64)
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: field 'prompt': prompt + response are 500,000 characters, more than a context window of 64 tokens can hold (at most 64 tokens x 12 characters); shorten them
    """
    bound = max_tokens * longest_token_chars(tokenizer)
    if len(text) > bound:
        raise InputError(f"field 'prompt': {what} are {len(text):,} characters, more than a context window of "
                         f"{max_tokens} tokens can hold (at most {max_tokens} tokens x "
                         f"{longest_token_chars(tokenizer)} characters); shorten them")


def encode(tokenizer, prompt: str, response: str = "", *, chat_template: bool = False, device=None,
           prepend_bos: bool | None = None, max_tokens: int | None = None) -> Encoded:
    """Tokenise prompt + response once, as one sequence, and locate both parts.

    Args:
        tokenizer: a fast Hugging Face tokenizer, or a model with ``.tokenizer``.
        prompt: the prompt text (instruction spans are character offsets into it).
        response: the response text ("" for none).
        chat_template: render with the tokenizer's chat template (user -> prompt,
            assistant -> response; with no response the generation prompt is added).
        prepend_bos: without a chat template, put the BOS token first. Default: when
            the tokenizer has a BOS token and does not add one itself (as TransformerLens
            does). A chat template supplies its own special tokens, so never then.
        device: where the id and position tensors are made (default CPU; an analysis passes
            its model's device).
        max_tokens: the context window, or None. The text is first checked in characters
            (:func:`check_length`), then tokenised with truncation at ``max_tokens + 1``
            tokens; a longer sequence raises InputError.

    Returns:
        An :class:`Encoded`.

    >>> enc = encode(tokenizer, "Say hi.", " Hi!")                   # doctest: +SKIP
    >>> enc.prompt_tokens, enc.response_tokens                       # doctest: +SKIP
    (['▁Say', '▁hi', '.'], ['▁Hi', '!'])
    """
    tokenizer = _tokenizer_of(tokenizer)
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise InputError("prompt and response must be strings")
    if not prompt:
        raise InputError("the prompt is empty")
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"{type(tokenizer).__name__} is not a fast tokenizer; mechit needs character offsets")
    if chat_template:
        text, prompt_at, response_at = _render(tokenizer, prompt, response)
        add_special = False
    else:
        text, add_special = prompt + response, True
        prompt_at, response_at = (0, 0, len(prompt)), (len(prompt), len(prompt), len(text))
    limit = {}
    if max_tokens is not None:
        check_length(tokenizer, text, max_tokens)
        limit = {"truncation": True, "max_length": max_tokens + 1}
    batch = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True, **limit)
    ids = list(batch["input_ids"])
    offsets = [tuple(map(int, o)) for o in batch["offset_mapping"]]
    bos = getattr(tokenizer, "bos_token_id", None)
    if not chat_template and bos is not None:
        has_bos = ids[:1] == [bos] and offsets[0][1] == 0
        if prepend_bos is not False and not has_bos:
            ids, offsets = [bos] + ids, [(0, 0)] + offsets
        elif prepend_bos is False and has_bos:
            ids, offsets = ids[1:], offsets[1:]

    if max_tokens is not None and len(ids) > max_tokens:
        field = "response" if response else "prompt"  # the response is what does not fit, when one is given
        raise InputError(f"field '{field}': prompt + response are more than {max_tokens} tokens, longer than the "
                         f"model's context window of {max_tokens} tokens; shorten them")
    prompt_pos, response_pos = [], []
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        in_prompt = start < prompt_at[2] and end > prompt_at[1]
        in_response = response_at[2] > response_at[1] and start < response_at[2] and end > response_at[1]
        if in_prompt:
            prompt_pos.append(i)
            if in_response:
                warnings.warn(
                    f"token {tokenizer.convert_ids_to_tokens(ids[i])!r} straddles the prompt/response "
                    "boundary; it counts as a prompt token (end the prompt with a space or newline "
                    "to avoid this)",
                    stacklevel=2,
                )
        elif in_response:
            response_pos.append(i)

    def clip(positions, base, length):
        return [(max(offsets[i][0] - base, 0), min(offsets[i][1] - base, length)) for i in positions]

    return Encoded(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        prompt_positions=torch.tensor(prompt_pos, dtype=torch.long, device=device),
        response_positions=torch.tensor(response_pos, dtype=torch.long, device=device),
        tokens=tokenizer.convert_ids_to_tokens(ids),
        prompt_offsets=clip(prompt_pos, prompt_at[0], len(prompt)),
        response_offsets=clip(response_pos, response_at[0], len(response)),
        prompt=prompt,
        response=response,
        text=text,
        offsets=offsets,
        prompt_start=prompt_at[0],
        response_start=response_at[0],
    )


def span_mask(encoded: Encoded, spans: Sequence[tuple[int, int]], *, device=None) -> "Bool[Tensor, 'n']":
    """Mask over the prompt positions: True where a token overlaps an instruction span.

    ``spans`` are half-open character ranges [start, end) of ``encoded.prompt``. Rule: a
    token is in when its characters, leading whitespace excluded, overlap a span (so
    tokens straddling a span edge are in). Raises InputError for spans that break the rule
    of :mod:`mechit.data.spans` (empty, overlapping, or outside the prompt).

    >>> enc = encode(tokenizer, "Translate this: the cat")           # doctest: +SKIP
    >>> span_mask(enc, [(0, 14)])                                    # doctest: +SKIP
    tensor([ True,  True,  True, False, False])

    ``device``: where the mask is made (an analysis passes its model's device).
    """
    spans = validate_spans(spans, len(encoded.prompt))
    inside = []
    for start, end in encoded.prompt_offsets:
        piece = encoded.prompt[start:end]
        stripped = piece.lstrip()
        if stripped:
            start += len(piece) - len(stripped)
        inside.append(any(start < b and end > a and a < b for a, b in spans))
    return torch.tensor(inside, dtype=torch.bool, device=device)


def _is_special(token: str) -> bool:
    return bool(_SPECIAL.match(token)) and not _BYTE.match(token)


def group_words(tokens: Sequence[str]) -> list[list[int]]:
    """Group token positions into words (see the module docstring for the rule).

    >>> group_words(["<s>", "▁Trans", "late", "▁the", "▁", "4", "2", "!", "Ċ", "ok"])
    [[0], [1, 2], [3], [4, 5, 6, 7], [8], [9]]
    >>> group_words(["Hello", "Ġwor", "ld"])
    [[0], [1, 2]]
    """
    groups: list[list[int]] = []
    boundary_after = True
    for i, token in enumerate(tokens):
        alone = _is_special(token) or token in NEWLINE_TOKENS
        starts = boundary_after or alone or token.startswith(SPACE_MARKERS)
        if starts or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
        boundary_after = alone
    return groups


@dataclass
class WordVectors:
    """Word vectors: ``vectors[i]`` belongs to ``words[i]``; ``dropped`` lists the words
    that had no usable sub-tokens (only a space marker, or an unknown token).

    Attributes:
        words: kept words, in input order, duplicates removed.
        vectors: Float[Tensor, "n d_model"].
        dropped: words left out.
        token_ids: per kept word, the sub-token ids averaged.
    """

    words: list[str]
    vectors: "Float[Tensor, 'n d_model']"
    dropped: list[str]
    token_ids: list[list[int]] = field(default_factory=list)


def word_token_ids(tokenizer, words: Sequence[str]) -> tuple[list[str], list[list[int]], list[str]]:
    """Sub-token ids of each word under the leading-space convention.

    Returns (kept words, their id lists, dropped words).

    >>> word_token_ids(tokenizer, ["cat", "translate"])              # doctest: +SKIP
    (['cat', 'translate'], [[412], [88, 301]], [])
    """
    tokenizer = _tokenizer_of(tokenizer)
    words = list(dict.fromkeys(validate_words(words)))
    encoded = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    kept, ids_list, dropped = [], [], []
    for word, ids in zip(words, encoded):
        ids = list(ids)
        if ids and tokenizer.convert_ids_to_tokens(ids[0]) in SPACE_MARKERS:
            ids = ids[1:]
        if not ids or (unk is not None and unk in ids):
            dropped.append(word)
            continue
        kept.append(word)
        ids_list.append(ids)
    return kept, ids_list, dropped


def word_vectors(model, words: Sequence[str], *, side: str = "input") -> WordVectors:
    """Mean of each word's sub-token rows of the input embedding or of the unembedding.

    Args:
        model: a loaded TransformerBridge.
        words: the word list (validated: non-empty strings).
        side: "input" -> rows of :func:`mechit.arch.weights.input_embedding` (raw W_E);
            "output" -> columns of :func:`mechit.arch.weights.unembedding` (final norm folded).

    >>> wv = word_vectors(model, ["cat", "dog"])                     # doctest: +SKIP
    >>> wv.vectors.shape                                             # doctest: +SKIP
    torch.Size([2, 64])
    """
    if side not in ("input", "output"):
        raise InputError(f"side must be 'input' or 'output', not {side!r}")
    kept, ids_list, dropped = word_token_ids(model.tokenizer, words)
    if dropped:
        warnings.warn(
            f"{len(dropped)} of {len(kept) + len(dropped)} words have no usable sub-tokens and are "
            f"dropped (first: {dropped[:5]})",
            stacklevel=2,
        )
    table = weight_views.input_embedding(model) if side == "input" else weight_views.unembedding(model).T
    if not kept:
        return WordVectors([], table.new_zeros((0, table.shape[1])), dropped, [])
    flat = torch.tensor([i for ids in ids_list for i in ids], dtype=torch.long, device=table.device)
    starts = torch.tensor([0] + [len(ids) for ids in ids_list[:-1]], dtype=torch.long, device=table.device).cumsum(0)
    vectors = torch.nn.functional.embedding_bag(flat, table, starts, mode="mean")
    return WordVectors(kept, vectors, dropped, ids_list)
