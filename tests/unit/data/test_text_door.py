"""Text at the door (issue 20 §3, §6, §7): lone surrogates, JSON numbers and nesting, byte
offsets, and the paper TSV's /n decoding warning."""

from __future__ import annotations

import json
import warnings

import pytest

from mechit.data.prompts import read_jsonl, read_paper_tsv, read_prompts
from mechit.data.text import byte_spans, lone_surrogate, parse_json, printable
from mechit.errors import InputError


@pytest.mark.parametrize("text, problem", [
    ('{"a": NaN}', "NaN is not a finite number"),
    ('{"a": -Infinity}', "-Infinity is not a finite number"),
    ('[1e400]', "1e400 is out of range"),
    ('[' + "7" * 101 + ']', "101 digits is out of range"),
    ('[' * 50_000 + ']' * 50_000, "nested too deeply"),
])
def test_json_limits(text, problem):
    with pytest.raises(InputError, match=problem):
        parse_json(text)


def test_json_within_limits_equals_json_loads():
    text = '{"s": [[0, ' + "9" * 100 + '], [1.5e300, -2]], "t": "\\ud83d\\ude00"}'
    assert parse_json(text) == json.loads(text)


def test_surrogates_found_and_spelled():
    assert lone_surrogate(json.loads('"ok \\ud83d\\ude00"')) is None  # a pair is one code point
    assert lone_surrogate(json.loads('"ab\\udfff"')) == 2
    assert printable("a\ud800b") == "a\\ud800b" and printable("😀") == "😀"
    printable("x\udc80").encode("utf-8")  # writable


def test_byte_spans_hand_computed():
    # "né 😀 x": n(1 byte) é(2) space(1) 😀(4) space(1) x(1) -> byte starts 0,1,3,4,8,9 ; end 10
    text = "né 😀 x"
    assert byte_spans(text, [(0, 3), (4, 8), (9, 10)]) == ((0, 2), (3, 4), (5, 6))
    assert [text[s:e] for s, e in byte_spans(text, [(0, 3), (4, 8)])] == ["né", "😀"]
    with pytest.raises(InputError, match=r"byte offset 6 falls inside the character '😀' \(bytes 4..8\)"):
        byte_spans(text, [(4, 6)])
    assert byte_spans(text, [(0, 14)]) == ((0, 10),)  # past the end stays past the end (6 characters)


def test_read_jsonl_surrogates(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "Say \\ud800 hi", "response": "x", "group": "g\\udc00"}\n'
                    '{"id": "b", "prompt": "Say hi", "response": "hi"}\n')
    bad, good = read_jsonl(path)
    assert "field 'prompt' holds a lone surrogate \\ud800 at character 4" in bad.error
    assert bad.prompt == "Say \\ud800 hi" and bad.group == "g\\udc00"  # the record can be written as UTF-8
    json.dumps(bad.__dict__, ensure_ascii=False).encode("utf-8")
    assert good.error is None
    path.write_text('{"id": "a\\ud800", "prompt": "Say hi"}\n')
    with pytest.raises(InputError, match=r"p.jsonl:1: field 'id' 'a\\ud800' holds a lone surrogate"):
        read_jsonl(path)


def test_read_jsonl_byte_spans(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "Résumé: the cat", "instruction_spans": [[0, 9]]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    (chars,) = read_prompts(path)
    (converted,) = read_prompts(path, span_units="bytes")
    assert chars.instruction_spans == ((0, 9),) and converted.instruction_spans == ((0, 7),)
    assert converted.prompt[0:7] == "Résumé:"


def test_unreadable_prompt_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match="cannot read the prompt file .*File name too long"):
        read_prompts(tmp_path / ("x" * 300 + ".jsonl"))


HEADER = "ID\tPrompt\tResponse\tInstruct&Context\n"


def test_tsv_decoding_warns_outside_the_authors_ids(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text(HEADER + "quiz_1\tAnswer yes/no: is it red?\tno\tAnswer&&&\n")
    with pytest.warns(UserWarning, match=r"mine.tsv: /n and /t were read as newline and tab .* in 1 places, first at "
                                         r"line 2 in 'Answer yes/no: is it red'"):
        (record,) = read_paper_tsv(path)
    assert record.prompt == "Answer yes\no: is it red?"  # the authors' rule, kept
    authors = tmp_path / "authors.tsv"
    authors.write_text(HEADER + "lima_1\tSay hi./nBe brief.\thi\tSay hi.&&&\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_paper_tsv(authors)
