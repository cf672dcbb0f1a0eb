"""Prompt readers: JSONL and the paper's TSV, validation messages naming example and field."""

import json
from pathlib import Path

import pytest

from mechit.errors import InputError
from mechit.data.prompts import PromptRecord, check_record, decode_tsv_field, read_prompts, tsv_group

FIXTURE = Path(__file__).parent.parent / "fixtures" / "paper_prompts.tsv"


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_tsv_fixture():
    records = read_prompts(FIXTURE, spans="literal")
    assert [r.id for r in records] == ["lima_1", "lima_2", "selfinstruct_10", "selfinstruct_11"]
    assert [r.group for r in records] == ["lima", "lima", "selfinstruct", "selfinstruct"]
    assert all(r.error is None and r.label is None for r in records)
    r1, r2, r3, r4 = records
    assert r1.prompt == "Translate this text into french:\nthe cat sat on the mat"
    assert r1.response == "le chat"
    assert r1.instruction_spans == ((0, 31),)
    assert r2.prompt == 'Write a story about a "good" dog.'
    assert r2.response == 'Once there was a "good" dog.'
    assert r2.instruction_spans == ((0, len(r2.prompt)),)
    assert r3.prompt == "Answer the question.\tKeep it short.\nQuestion: why is the sky blue?"
    assert r3.response is None  # empty response field: none given
    assert [r3.prompt[s:e] for s, e in r3.instruction_spans] == ["Answer the question.", "Keep it short."]
    # "Summarize" twice (first occurrence both times) and "the dog sat": spans merged and sorted
    assert [r4.prompt[s:e] for s, e in r4.instruction_spans] == ["Summarize", "the dog sat"]


def test_tsv_decoding_rules():
    assert decode_tsv_field('"a ""b"" c"') == 'a "b" c'
    assert decode_tsv_field("x/ny/tz") == "x\ny\tz"
    assert decode_tsv_field('"') == '"'
    assert tsv_group("alpaca_eval_123") == "alpaca_eval" and tsv_group("x_1a") == "x_1a"


def test_tsv_bad_lines(tmp_path):
    header = "ID\tPrompt\tResponse\tInstruct&Context\n"
    bad = tmp_path / "bad.tsv"
    bad.write_text(header + "a_1\tonly two\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.tsv:2: example 'a_1': invalid TSV line with 2 fields"):
        read_prompts(bad)
    bad.write_text("id\tprompt\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.tsv:1: header"):
        read_prompts(bad)
    bad.write_text(header + "a_1\tSay hi\thi\tSay\na_1\tSay yo\tyo\tSay\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.tsv:3: example 'a_1': field 'ID' duplicates line 2"):
        read_prompts(bad)
    bad.write_text(header + "a_1\tSay hi\thi\tShout&&&\n", encoding="utf-8")
    (record,) = read_prompts(bad)
    assert "example 'a_1'" in record.error and "field 'Instruct&Context'" in record.error and "'Shout'" in record.error
    bad.write_bytes(header.encode() + b"a_1\tSay \xff hi\thi\tSay\n")
    (record,) = read_prompts(bad)
    assert record.error.startswith(f"{bad}:2: example 'a_1': field 'Prompt'") and "0xff" in record.error


def test_jsonl_valid(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "t1", "prompt": "Translate: the cat", "response": None, "instruction_spans": [[0, 9]],
         "group": "translate", "label": "followed"},
        "",
        {"id": "t2", "prompt": "Say hi", "response": " hi"},
    ])
    r1, r2 = read_prompts(path, strict=True)
    assert r1 == PromptRecord("t1", "Translate: the cat", None, ((0, 9),), "translate", "followed", f"{path}:1")
    assert r2.instruction_spans == () and r2.group is None and r2.source == f"{path}:3"


@pytest.mark.parametrize("row, field, words", [
    ({"id": "a", "prompt": ""}, "prompt", "is empty"),
    ({"id": "a", "prompt": "hi", "response": "  "}, "response", "is empty"),
    ({"id": "a", "prompt": "hi", "instruction_spans": [[0, 5]]}, "instruction_spans", "outside the prompt"),
    ({"id": "a", "prompt": "hello", "instruction_spans": [[0, 3], [2, 4]]}, "instruction_spans", "overlap"),
    ({"id": "a", "prompt": "hello", "instruction_spans": [[3, 3]]}, "instruction_spans", "empty"),
    ({"id": "a", "prompt": "hello", "instruction_spans": [["x", 3]]}, "instruction_spans", "integer pairs"),
    ({"id": "a", "prompt": "hello", "label": "yes"}, "label", "'followed'"),
    ({"id": "a", "prompt": 3}, "prompt", "must be a string"),
    ({"id": "a", "prompt": "hello", "colour": 1}, "colour", "is unknown"),
])
def test_jsonl_record_errors_name_example_and_field(tmp_path, row, field, words):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "ok", "prompt": "fine"}, row])
    ok, bad = read_prompts(path)
    assert ok.error is None
    assert bad.error.startswith(f"{path}:2: example 'a': field '{field}'") and words in bad.error
    with pytest.raises(InputError, match="example 'a'"):
        read_prompts(path, strict=True)


def test_jsonl_file_errors(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, '{"id": "b", "prompt": '])
    with pytest.raises(InputError, match=r"p.jsonl:2: invalid JSON"):
        read_prompts(path)
    write_jsonl(path, [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    with pytest.raises(InputError, match=r"p.jsonl:2: example 'a': field 'id' duplicates line 1"):
        read_prompts(path)
    write_jsonl(path, [{"prompt": "x"}])
    with pytest.raises(InputError, match=r"p.jsonl:1: field 'id'"):
        read_prompts(path)
    path.write_bytes(b'{"id": "u", "prompt": "caf\xe9"}\n')
    (record,) = read_prompts(path)
    assert record.error.startswith(f"{path}:1: example 'u': field 'prompt'") and "not valid UTF-8" in record.error
    with pytest.raises(InputError, match="no such prompt file"):
        read_prompts(tmp_path / "missing.jsonl")


def test_check_record_accepts_touching_spans():
    record = PromptRecord("a", "hello world", "x", ((6, 11), (0, 6)), source="f:1")
    assert check_record(record) is None


def test_invalid_json_names_the_problem_once(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x\ty"}\n', encoding="utf-8")  # a raw tab inside a JSON string
    with pytest.raises(InputError) as caught:
        read_prompts(path)
    assert str(caught.value) == f"{path}:1: invalid JSON (Invalid control character at column 25); each line must be one JSON object"
