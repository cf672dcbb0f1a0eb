"""The one span rule (mechit/data/spans.py), and the places that apply it: prompt files,
attribute() and span_mask() refuse exactly the same spans."""

import re

import pytest

from mechit.data.prompts import PromptRecord, check_record
from mechit.data.spans import span_problem, validate_spans
from mechit.attribution.example import attribute
from mechit.errors import InputError
from mechit.tokens import encode, span_mask

PROMPT = "Summarize: the cat sat."  # 23 characters

CASES = [  # spans, the problem's words (None: fine)
    ([], None),
    ([(0, 10)], None),
    ([(0, 10), (10, 23)], None),  # touching is not overlapping
    ([(11, 14), (0, 9)], None),  # any order
    ([(3, 3)], "span 0 [3, 3) is empty or reversed"),
    ([(9, 2)], "span 0 [9, 2) is empty or reversed"),
    ([(0, 24)], "span 0 [0, 24) lies outside the prompt (characters 0..23)"),
    ([(0, 4), (-1, 2)], "span 1 [-1, 2) lies outside the prompt"),
    ([(0, 9), (15, 20), (8, 12)], "spans [0, 9) and [8, 12) overlap"),
    ([(0, 5), (0, 5)], "spans [0, 5) and [0, 5) overlap"),
    ([(1, 2, 3)], "expected a pair"),
    ([(1.0, 3)], "must be integers"),
    ([(True, 3)], "must be integers"),
]


@pytest.mark.parametrize("spans, words", CASES)
def test_span_rule(spans, words):
    problem = span_problem(spans, len(PROMPT))
    if words is None:
        assert problem is None
        assert validate_spans(spans, len(PROMPT)) == [tuple(s) for s in spans]
    else:
        assert problem is not None and words in problem
        with pytest.raises(InputError, match=re.escape(problem)):
            validate_spans(spans, len(PROMPT))


@pytest.mark.parametrize("spans, words", [c for c in CASES if c[0] and all(len(s) == 2 for s in c[0])])
def test_prompt_files_and_span_mask_apply_the_same_rule(tiny_llama, spans, words):
    record = PromptRecord("a", PROMPT, None, tuple(spans), source="p.jsonl:1")
    recorded = check_record(record)
    enc = encode(tiny_llama.tokenizer, PROMPT, " ok")
    if words is None:
        assert recorded is None and len(span_mask(enc, spans)) == len(enc.prompt_positions)
    else:
        assert recorded == f"p.jsonl:1: example 'a': field 'instruction_spans': {span_problem(spans, len(PROMPT))}"
        with pytest.raises(InputError, match="instruction_spans"):
            attribute(tiny_llama, PROMPT, " ok", instruction_spans=spans)
        with pytest.raises(InputError):
            span_mask(enc, spans)


def test_validate_spans_accepts_lists_and_numpy_integers():
    import numpy as np

    assert validate_spans([[0, 4], (4, 10)], 10) == [(0, 4), (4, 10)]
    checked = validate_spans(np.array([[1, 3]]), 10)
    assert checked == [(1, 3)] and type(checked[0][0]) is int
