"""The built-in English instruction prompt set (mechit/data/english_prompts.jsonl)."""

from __future__ import annotations

import re

import pytest

from mechit.pipeline.checks import default_prompts_path
from mechit.data.prompts import read_prompts

# words that open an instruction in this set: the paper's instruction verbs plus a few
# imperatives and question openers
OPENERS = {
    "translate", "give", "please", "summarize", "write", "condense", "classify", "is", "decide", "label",
    "identify", "based", "answer", "explain", "what", "describe", "correct", "rewrite", "fix", "make",
    "edit", "compose", "create", "generate", "solve", "calculate", "how", "find", "convert", "list",
    "extract", "pick", "keep", "show",
}
QUESTION_WORDS = {"is", "what", "how", "based"}  # may open a context sentence too


@pytest.fixture(scope="module")
def records():
    return read_prompts(default_prompts_path(), strict=True)


def test_size_and_task_types(records):
    groups = {r.group for r in records}
    assert len(records) >= 50
    assert len(groups) >= 6
    assert min(sum(r.group == g for r in records) for g in groups) >= 5
    assert len({r.id for r in records}) == len(records)


def test_every_span_lies_inside_its_prompt_in_order(records):
    for r in records:
        assert r.instruction_spans, r.id
        previous_end = 0
        for start, end in r.instruction_spans:
            assert previous_end <= start < end <= len(r.prompt), (r.id, start, end)
            previous_end = end


def test_spans_cover_whole_instruction_sentences(records):
    for r in records:
        for start, end in r.instruction_spans:
            text = r.prompt[start:end]
            assert text == text.strip(), (r.id, text)
            assert text[0].isupper() and text[-1] in ".:?!", (r.id, text)
            assert re.split(r"\W+", text.lower())[0] in OPENERS, (r.id, text)
            # a span starts and ends on a boundary: nothing of the same sentence is cut off
            assert start == 0 or not r.prompt[start - 1].isalnum(), (r.id, text)
            assert end == len(r.prompt) or not r.prompt[end].isalnum(), (r.id, text)


def test_context_holds_no_uncovered_instruction(records):
    """Outside the spans, no sentence opens with an instruction word: the spans cover the instruction."""
    for r in records:
        context = list(r.prompt)
        for start, end in r.instruction_spans:
            context[start:end] = [" "] * (end - start)
        for sentence in re.split(r"(?<=[.:?!\n])\s+", "".join(context)):
            words = re.split(r"\W+", sentence.strip().lower())
            assert words[0] not in OPENERS - QUESTION_WORDS, (r.id, sentence)
