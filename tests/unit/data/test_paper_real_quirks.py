"""The shapes of the authors' real prompt file that our first fixtures lacked (measured in docs/attribution.md).

Each line below is written for this test and copies a quirk's shape, not the authors' text:
no ``&&&`` at all (429 of the 492 lines we checked), an ``Input: `` piece whose trailing
space yields an empty piece sentence, a bare ``Input:`` piece, a response wrapped in
double quotes, and ``/n`` inside the instruction column.
"""

import runpy
from pathlib import Path

from mechit.data.prompts import read_paper_tsv

HEADER = "ID\tPrompt\tResponse\tInstruct&Context\n"
LINES = [
    # no &&&: the whole column is instruction pieces
    "user_task_1\tPlan a picnic. Keep it cheap./n/nInput: Saturday/n/nOutput:\tBread and fruit.\tPlan a picnic.|||Saturday\n",
    # "Input: " then &&&: an empty piece sentence, and the "Input:" sentence marks nothing
    "user_task_2\tFix the typo./n/nInput: teh cat/n/nOutput:\tthe cat\tFix the typo.|||Input: &&&teh cat\n",
    # a response wrapped in quotes loses its outer quotes, as the authors' decode does
    "lima_author_3\tName a colour. Be quick.\t\"Red\" is one.\"\tBe quick.\n",
    # /n inside the instruction column splits it into pieces
    "mtbench_4\tSing a song./nThen bow.\tLa la.\tSing a song./nThen bow.&&&\n",
]


def read(tmp_path, spans):
    path = tmp_path / "quirks.tsv"
    path.write_text(HEADER + "".join(LINES), encoding="utf-8")
    return {r.id: r for r in read_paper_tsv(path, spans=spans)}


def marked(record):
    return [record.prompt[s:e] for s, e in record.instruction_spans]


def test_real_file_shapes_read_without_errors_under_both_conventions(tmp_path):
    for spans in ("authors", "literal"):
        records = read(tmp_path, spans)
        assert [r.error for r in records.values()] == [None] * 4


def test_authors_convention_on_the_real_file_shapes(tmp_path):
    records = read(tmp_path, "authors")
    assert marked(records["user_task_1"]) == ["Plan a picnic.", "Saturday"]
    assert marked(records["user_task_2"]) == ["Fix the typo."]
    assert marked(records["lima_author_3"]) == ["Be quick."]
    assert records["lima_author_3"].response == 'Red" is one.'
    assert marked(records["mtbench_4"]) == ["Sing a song.", "Then bow."]
    assert [r.group for r in records.values()] == ["user", "user", "lima", "mtbench"]


def test_literal_convention_keeps_the_input_prefix(tmp_path):
    records = read(tmp_path, "literal")
    assert marked(records["user_task_2"]) == ["Fix the typo.", "Input:"]


def test_check_script_agrees_with_its_independent_reference(tmp_path, capsys):
    path = tmp_path / "quirks.tsv"
    path.write_text(HEADER + "".join(LINES), encoding="utf-8")
    script = runpy.run_path(str(Path(__file__).parents[3] / "scripts" / "paper_data_check.py"))
    script["main"](str(path))
    out = capsys.readouterr().out
    assert "records: 4" in out  # only user_task_2 differs: literal keeps "Input:"
    assert "authors vs literal: 1 of 4 prompts differ" in out
    assert "independent reference of the authors' rule: 0 differ" in out
