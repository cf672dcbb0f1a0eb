"""Checks on text at the door: what every prompt file passes before mechit keeps a string.

- **JSON numbers and nesting.** :func:`parse_json` refuses ``NaN``/``Infinity``, floats
  out of range (``1e400``), integers of more than :data:`MAX_INT_DIGITS` digits and
  nesting too deep for the parser, each with one line.
- **Lone surrogates.** A JSON escape such as ``"\\ud800"`` decodes to a code point that
  is no Unicode character: it cannot be written as UTF-8, so no record holding it could
  be stored. :func:`lone_surrogate` finds one; :func:`printable` spells it as
  ``\\ud800`` so the example's error record can still be written.
- **Offsets.** Spans are ``[start, end)`` offsets in code points (Python ``str``
  indices), not UTF-16 units nor bytes; :func:`byte_spans` converts offsets given in
  UTF-8 bytes.

>>> lone_surrogate("ok \\ud800"), printable("ok \\ud800")
(3, 'ok \\\\ud800')
>>> byte_spans("café au lait", [(0, 5), (6, 13)])
((0, 4), (5, 12))
"""

from __future__ import annotations

import json
import math
import re

from mechit.errors import InputError

MAX_INT_DIGITS = 100  # no offset, count or rating has more digits; Python refuses 4,300 with a traceback
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate code point in ``text`` (a JSON ``\\udXXX`` escape
    without its pair), or None. Proper pairs decode to one code point and never match.

    >>> lone_surrogate(json.loads('"\\\\ud83d\\\\ude00"')) is None
    True
    """
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


def printable(text: str) -> str:
    """``text`` with lone surrogates spelled as ``\\udXXX``, so it can be written as UTF-8.

    >>> printable("a\\udfffb").encode("utf-8")
    b'a\\\\udfffb'
    """
    return text if lone_surrogate(text) is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _constant(name: str):
    raise InputError(f"number {name} is not a finite number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError(f"a number of {len(text.lstrip('-'))} digits is out of range (at most {MAX_INT_DIGITS})")
    return int(text)


def parse_json(text: str):
    """``json.loads(text)`` with the limits of the module docstring; InputError names the problem.

    >>> parse_json('{"a": [1, 2.5]}')
    {'a': [1, 2.5]}
    >>> parse_json('[1e400]')
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: number 1e400 is out of range
    >>> parse_json("[" * 100_000 + "]" * 100_000)
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: JSON nested too deeply (arrays or objects inside each other)
    """
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise InputError("JSON nested too deeply (arrays or objects inside each other)") from None


def byte_spans(text: str, spans) -> tuple[tuple[int, int], ...]:
    """Spans given as UTF-8 byte offsets of ``text``, as code-point offsets.

    An offset outside the text is kept out of range (the span rule then names it); one
    that falls inside a character's bytes raises InputError.

    >>> byte_spans("é!", [(1, 3)])
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: byte offset 1 falls inside the character 'é' (bytes 0..2); byte offsets must fall between characters
    """
    data = text.encode("utf-8")
    starts = {}  # byte offset -> code point offset, at character boundaries
    position = 0
    for index, char in enumerate(text):
        starts[position] = index
        position += len(char.encode("utf-8"))
    starts[position] = len(text)

    def convert(offset: int) -> int:
        if offset < 0 or offset > len(data):
            return offset + (len(text) - len(data) if offset > len(data) else 0)
        if offset not in starts:
            first = max(b for b in starts if b < offset)
            char = text[starts[first]]
            raise InputError(f"byte offset {offset} falls inside the character {char!r} (bytes {first}.."
                             f"{first + len(char.encode('utf-8'))}); byte offsets must fall between characters")
        return starts[offset]

    return tuple((convert(start), convert(end)) for start, end in spans)
