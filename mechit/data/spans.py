"""The one rule for instruction spans: ``[start, end)`` character ranges of a prompt.

A span is a pair of integers with ``0 <= start < end <= len(prompt)``: not empty, inside
the prompt, and no two spans overlap (spans that touch, ``[0, 4)`` and ``[4, 9)``, are
fine). Prompt files (:mod:`mechit.data.prompts`), :func:`mechit.attribute` and
:func:`mechit.tokens.span_mask` all check spans here.

>>> span_problem([(0, 3), (3, 6)], 6) is None
True
>>> span_problem([(0, 3), (2, 5)], 6)
'spans [0, 3) and [2, 5) overlap'
"""

from __future__ import annotations

import numbers

from mechit.errors import InputError


def span_problem(spans, prompt_length: int) -> str | None:
    """What is wrong with ``spans`` over a prompt of ``prompt_length`` characters, or None.

    >>> span_problem([(4, 9)], 6)
    'span 0 [4, 9) lies outside the prompt (characters 0..6)'
    >>> span_problem([(3, 3)], 6)
    'span 0 [3, 3) is empty or reversed (start must be below end)'
    >>> span_problem([("a", 3)], 6)
    "span 0 ('a', 3): start and end must be integers"
    """
    pairs = []
    for k, span in enumerate(spans):
        try:
            start, end = span
        except (TypeError, ValueError):
            return f"span {k} {span!r}: expected a pair [start, end)"
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, end)):
            return f"span {k} {tuple(span)!r}: start and end must be integers"
        start, end = int(start), int(end)
        if start >= end:
            return f"span {k} [{start}, {end}) is empty or reversed (start must be below end)"
        if start < 0 or end > prompt_length:
            return f"span {k} [{start}, {end}) lies outside the prompt (characters 0..{prompt_length})"
        pairs.append((start, end))
    ordered = sorted(pairs)
    for (a, b), (c, d) in zip(ordered, ordered[1:]):
        if c < b:
            return f"spans [{a}, {b}) and [{c}, {d}) overlap"
    return None


def validate_spans(spans, prompt_length: int) -> list[tuple[int, int]]:
    """``spans`` as a list of ``(start, end)`` Python ints, in the order given; InputError
    naming the first problem (:func:`span_problem`).

    >>> validate_spans([[0, 4], (4, 10)], 10)
    [(0, 4), (4, 10)]
    >>> validate_spans([(5, 2)], 10)
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: span 0 [5, 2) is empty or reversed (start must be below end)
    """
    problem = span_problem(spans, prompt_length)
    if problem is not None:
        raise InputError(problem)
    return [(int(start), int(end)) for start, end in spans]
