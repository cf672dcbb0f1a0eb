"""The conventions of Wu et al.'s released data: their example groups and their instruction spans.

The paper's prompt file marks instructions as literal pieces (the ``Instruct&Context``
column). The authors' loader (``utils.annotate`` in their repository) widens each piece
to the whole prompt *sentence* that contains it. :func:`authors_spans` applies that rule
and returns character spans:

1. keep the instruction column before ``&&&`` (the context follows it);
2. turn newlines into ``|||`` and split at ``|||``: the pieces;
3. split each piece into sentences with :data:`SENTENCE_BREAK` (``(?<=[.!?:])\\s+``);
4. the prompt's sentences are its lines, each split by the same regex;
5. each piece sentence marks the first prompt sentence that contains it; a leading
   ``Input:`` of the marked sentence is dropped;
6. empty sentences and a bare ``Output:`` are dropped; edge whitespace of a marked
   sentence is not part of its span.

Two choices where the released code is silent or cannot run: piece sentences are
trimmed of surrounding whitespace before the search, and an empty piece sentence marks
nothing (the released code would mark the prompt's first sentence for it, since ``""``
is in every string).

>>> prompt = "Translate this text into french:\\nthe cat sat on the mat"
>>> [prompt[s:e] for s, e in authors_spans(prompt, "Translate this text|||&&&the cat sat on the mat")]
['Translate this text into french:']
>>> paper_group("user_oriented_task_12")
'user'
"""

from __future__ import annotations

import re

from mechit.errors import InputError

SENTENCE_BREAK = re.compile(r"(?<=[.!?:])\s+")
INPUT_PREFIX = "Input:"
BARE_OUTPUT = "Output:"


def paper_group(example_id: str) -> str:
    """The authors' group of an example: its id before the first ``_`` (``user``, ``lima``, ``mtbench``).

    >>> paper_group("lima_author_3"), paper_group("mtbench_81"), paper_group("plain")
    ('lima', 'mtbench', 'plain')
    """
    return example_id.split("_", 1)[0]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``: its lines, each split by :data:`SENTENCE_BREAK`.

    Sentences keep the whitespace the split leaves (a line's own edges); empty lines give
    empty sentences, as the authors' ``sent_tokenize`` does.

    >>> text = "Do this. Then that!\\nInput: cats"
    >>> [text[s:e] for s, e in sentence_spans(text)]
    ['Do this.', 'Then that!', 'Input:', 'cats']
    """
    spans, line_start = [], 0
    for line in text.split("\n"):
        start = 0
        for gap in SENTENCE_BREAK.finditer(line):
            spans.append((line_start + start, line_start + gap.start()))
            start = gap.end()
        spans.append((line_start + start, line_start + len(line)))
        line_start += len(line) + 1
    return spans


def instruction_sentences(annotation: str) -> list[str]:
    """The piece sentences of an ``Instruct&Context`` field (rules 1–3), trimmed, empty ones dropped.

    >>> instruction_sentences("Rewrite it. Be brief.|||Input: Sincerely\\n\\nOutput:&&&context")
    ['Rewrite it.', 'Be brief.', 'Input:', 'Sincerely', 'Output:']
    """
    instruction = annotation.split("&&&", 1)[0]
    found = []
    for piece in instruction.replace("\n", "|||").split("|||"):
        found.extend(s.strip() for s in SENTENCE_BREAK.split(piece) if s.strip())
    return found


def _marked(prompt: str, start: int, end: int) -> tuple[int, int] | None:
    """The span a marked sentence contributes: ``Input:`` and edge whitespace removed; None if nothing is left."""
    if prompt[start:end].lstrip().startswith(INPUT_PREFIX):
        start = prompt.index(INPUT_PREFIX, start) + len(INPUT_PREFIX)
    text = prompt[start:end]
    start, end = start + len(text) - len(text.lstrip()), end - len(text) + len(text.rstrip())
    if start >= end or prompt[start:end] == BARE_OUTPUT:
        return None
    return start, end


def authors_spans(prompt: str, annotation: str) -> tuple[tuple[int, int], ...]:
    """Instruction spans of one example under the authors' sentence rule (see the module docstring).

    Returns sorted, disjoint ``[start, end)`` character spans of ``prompt``. Raises
    :class:`~mechit.errors.InputError` when a piece sentence lies in no prompt sentence.

    >>> prompt = "Come up with synonyms for the word.\\n\\nInput: Sincerely\\n\\nOutput:"
    >>> [prompt[s:e] for s, e in authors_spans(prompt, "synonyms|||Input: Sincerely\\n\\nOutput:&&&")]
    ['Come up with synonyms for the word.', 'Sincerely']
    """
    sentences = sentence_spans(prompt)
    spans = set()
    for piece in instruction_sentences(annotation):
        hit = next(((s, e) for s, e in sentences if piece in prompt[s:e]), None)
        if hit is None:
            raise InputError(f"instruction sentence {piece[:40]!r} lies in no sentence of the prompt")
        span = _marked(prompt, *hit)
        if span is not None:
            spans.add(span)
    return tuple(sorted(spans))
