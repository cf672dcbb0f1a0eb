"""The paper's ratings file: followed / not-followed judgements of each model's responses.

The authors' ``AnnotatedDataset.tsv`` has the header
``File\\tModel\\tPrompt\\tReference\\tInstruct\\tResponse\\tRating``, one row per (example,
model). The example id is ``File`` without ``.pkl``; ``Model`` names the rated model
(``vicuna_7B``, ``alpaca_7B``, ...); ``Rating`` is a number. Their analysis script
(``analysis_following_hypothesis.py``) turns a rating into a label by three rules, each an
option here (:class:`RatingRules`):

- ratings ``<= drop_at_most`` (0) are dropped: the example gets no label;
- ratings ``>= followed_from`` (2) are "followed", the others (1) "not_followed";
- responses shorter than ``min_response_tokens`` (5) tokens get no label. Only the caller
  knows the token count: :func:`label` takes it.

>>> label(3.0), label(1.0), label(0.0), label(4.0, n_response_tokens=3)
('followed', 'not_followed', None, None)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mechit.data.prompts import PromptRecord
from mechit.errors import InputError

RATINGS_HEADER = ["File", "Model", "Prompt", "Reference", "Instruct", "Response", "Rating"]


@dataclass(frozen=True)
class RatingRules:
    """The authors' rules from a rating to a label (see the module docstring).

    >>> RatingRules().followed_from
    2.0
    """

    drop_at_most: float = 0.0
    followed_from: float = 2.0
    min_response_tokens: int = 5


def label(rating: float | None, n_response_tokens: int | None = None, rules: RatingRules = RatingRules()) -> str | None:
    """"followed", "not_followed" or None (no rating, a dropped rating, or a response too short).

    >>> label(2.0), label(2.0, rules=RatingRules(followed_from=3))
    ('followed', 'not_followed')
    """
    if rating is None or rating <= rules.drop_at_most:
        return None
    if n_response_tokens is not None and n_response_tokens < rules.min_response_tokens:
        return None
    return "followed" if rating >= rules.followed_from else "not_followed"


def read_ratings(path: str | Path) -> dict[tuple[str, str], float]:
    """``{(example id, model name): rating}`` from a ratings file; one rating per (id, model).

    >>> path = Path("ratings.tsv")
    >>> _ = path.write_text("\\t".join(RATINGS_HEADER) + "\\n"
    ...                     "user_task_1.pkl\\tvicuna_7B\\tSay hi\\thi\\tSay hi&&&\\thello\\t4\\n")
    >>> read_ratings(path)
    {('user_task_1', 'vicuna_7B'): 4.0}
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ratings file")
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    header = lines[0].lstrip("\ufeff").rstrip("\r").split("\t")
    if header != RATINGS_HEADER:
        raise InputError(f"{path}:1: header is {lines[0][:80]!r}; expected {chr(9).join(RATINGS_HEADER)!r}")
    ratings, seen = {}, {}
    for number, text in enumerate(lines[1:], start=2):
        text = text.rstrip("\r")
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != len(RATINGS_HEADER):
            raise InputError(f"{path}:{number}: invalid ratings line with {len(fields)} fields; expected "
                             f"{len(RATINGS_HEADER)} ({', '.join(RATINGS_HEADER)})")
        key = (fields[0].strip().removesuffix(".pkl"), fields[1].strip())
        try:
            rating = float(fields[-1])
        except ValueError:
            raise InputError(f"{path}:{number}: example {key[0]!r}: field 'Rating' is {fields[-1][:20]!r}, "
                             "not a number") from None
        if key in seen:
            raise InputError(f"{path}:{number}: example {key[0]!r}, model {key[1]!r}: rated again "
                             f"(first on line {seen[key]}); one rating per example and model")
        seen[key] = number
        ratings[key] = rating
    return ratings


def ratings_of(ratings: dict[tuple[str, str], float], model: str) -> dict[str, float]:
    """The ratings of one ``Model`` name, by example id; refuses a name the file does not hold.

    >>> ratings_of({("a", "vicuna_7B"): 4.0, ("a", "alpaca_7B"): 1.0}, "alpaca_7B")
    {'a': 1.0}
    """
    chosen = {example: rating for (example, name), rating in ratings.items() if name == model}
    if not chosen:
        names = sorted({name for _, name in ratings})
        raise InputError(f"--ratings-model {model!r} is not in the ratings file (it holds {', '.join(names)})")
    return chosen


def label_records(records: Sequence[PromptRecord], ratings: dict[str, float],
                  rules: RatingRules = RatingRules()) -> list[PromptRecord]:
    """The records with ``label`` set from their rating (no token count: the length rule is left to the caller).

    >>> [r.label for r in label_records([PromptRecord("a", "Say hi", None)], {"a": 1.0})]
    ['not_followed']
    """
    return [dataclasses.replace(r, label=label(ratings.get(r.id), rules=rules)) for r in records]
