"""Fuzzing the door (issue 20): random and mutated JSONL / paper-TSV prompt files and option
values go through ``mechit.cli.main`` in-process, ``mechit attribute`` on a tiny Llama.

Every outcome must be one of

- ``ok``: exit 0, tables written;
- ``examples failed``: exit 1, tables written, each failed example recorded with a one-line
  :class:`~mechit.errors.MechitError` message (never ``TypeError: ...`` and the like);
- ``refused``: exit 2 with exactly one ``error:`` line (a MechitError);
- ``refused by argparse``: ``SystemExit(2)`` with exactly one ``error:`` line;

never another exception, a traceback or a second error line. Examples are cheap without
narrowing what they reach: the model is loaded once (the loader is replaced by the
session's tiny Llama), the argument parser is built once (``mechit.cli.build_parser``,
two thirds of an example's time when rebuilt for each; ``main`` still parses every
``argv`` with it), prompt files hold at most three lines, and generated responses are one
token long. The outcome counts, with every distinct error kind (a message with its file,
ids, quoted values and numbers blanked), are printed (``-s``) and written to
``fuzz_outcomes.json`` in the test's tmp dir; docs/reliability.md records them.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mechit.cli
from mechit.cli import main

MAX_EXAMPLES = 3000
NASTY = ["\\ud800", "\\udc00x", "Infinity", "-Infinity", "NaN", "1e400", "-1e400", "9" * 5000, "[" * 5000,
         "]" * 3, "{", "}", '"', "\\", "\x00", "\n", "\t", "/n", "/t", "&&&", "|||", "null", "true", "-0", "1.5",
         '"id": "a"', '"prompt": ""', '"response": null', '"instruction_spans": [[0, 3]]', '"label": "yes"',
         "😀", "é", "\u202e", "\ufeff", '"group": "NA"', " " * 40]
BAD_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\r\n"]
OPTION_VALUES = ["nan", "inf", "-inf", "0", "-1", "1", "2", "4", "7", "10", "1e-300", "1e9", "1000000000", "x", "",
                 "3.5", "16"]
OPTIONS = {  # flag -> values to draw from (a few valid, most not)
    "-p": OPTION_VALUES, "-L": OPTION_VALUES, "-b": OPTION_VALUES,
    "--max-new-tokens": ["0", "-1", "nan", "1", "2", "x"],
    "--memory-budget-mb": OPTION_VALUES, "--max-memory": OPTION_VALUES,
    "--format": ["parquet", "csv", "xlsx"], "--span-units": ["characters", "bytes", "utf16"],
    "--spans": ["authors", "literal", "none"], "--method": ["auto", "reverse", "forward", "sideways"],
    "--prompt-format": ["auto", "jsonl", "tsv", "csv"], "--response": ["reference", "generate", "x"],
}
UNEXPECTED = re.compile(r"\b[A-Z]\w*(Error|Exception): ")  # how a failed example records a bug, not a MechitError
HEADER = "ID\tPrompt\tResponse\tInstruct&Context"
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")  # a repr'd value, as messages quote them


def error_kind(message: str) -> str:
    """The kind of an error message: file paths, ids, quoted values and numbers blanked.

    ``/tmp/x/prompts.jsonl:3: example 'a': field 'prompt' is empty`` is of the kind
    ``F:N: example '…': field '…' is empty``.
    """
    message = re.sub(r"\S*/(?:prompts\.(?:jsonl|tsv)|out)\b", "F", message)
    return re.sub(r"\d+(?:\.\d+)?", "N", QUOTED.sub("'…'", message))

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
short_words = st.sampled_from(["Say hi.", "Translate: the cat", "Summarize this text about dog", "yes/no?",
                               "http://x.org/news", "Résumé 😀", "a"])
texts = st.one_of(short_words, words)


@st.composite
def jsonl_record(draw) -> str:
    prompt = draw(texts)
    record = {"id": draw(st.one_of(st.sampled_from(["a", "b", "NA", "null", "../x", "a b"]), words)),
              "prompt": prompt,
              "response": draw(st.one_of(st.none(), texts)),
              "instruction_spans": draw(st.lists(st.tuples(st.integers(-3, 40), st.integers(-3, 40)), max_size=3)),
              "group": draw(st.one_of(st.none(), st.sampled_from(["NA", "null", "g"]), words)),
              "label": draw(st.sampled_from([None, "followed", "not_followed", "maybe"]))}
    for key in draw(st.lists(st.sampled_from(list(record)), max_size=2)):
        record.pop(key, None)
    return json.dumps(record, ensure_ascii=draw(st.booleans()))


@st.composite
def tsv_row(draw) -> str:
    fields = [draw(st.one_of(st.sampled_from(["lima_1", "user_oriented_task_2", "quiz_3", ""]), words)),
              draw(texts), draw(texts),
              draw(texts) + draw(st.sampled_from(["&&&", "|||", "", "&&&ctx"])) + draw(texts)]
    return "\t".join(f.replace("\t", "/t").replace("\n", "/n") for f in fields)


@st.composite
def prompt_file(draw) -> tuple[str, bytes]:
    """(suffix, file bytes): a valid-looking file, then a few mutations."""
    if draw(st.booleans()):
        suffix, lines = ".jsonl", draw(st.lists(jsonl_record(), min_size=0, max_size=3))
    else:
        suffix, lines = ".tsv", [draw(st.sampled_from([HEADER, HEADER.lower(), "ID\tPrompt"]))] + draw(
            st.lists(tsv_row(), min_size=0, max_size=3))
    text = "\n".join(lines)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(NASTY)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        else:
            text = text + "\n" + text[at:]
    data = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return suffix, data


options = st.lists(st.sampled_from(list(OPTIONS)), max_size=3, unique=True).flatmap(
    lambda flags: st.tuples(*[st.tuples(st.just(f), st.sampled_from(OPTIONS[f])) for f in flags]))


def _outcome(argv: list[str], out: Path, capsys, kinds: collections.Counter) -> str:
    """The outcome of one run of ``argv`` (see the module docstring); its error kinds are counted in ``kinds``."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if "error:" in x]
        assert exit_.code == 2 and len(lines) == 1, err
        kinds["argparse: " + error_kind(lines[0].split("error: ", 1)[1])] += 1
        return "refused by argparse"
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if code == 2:
        lines = [x for x in err.splitlines() if "error:" in x]
        assert len(lines) == 1, err
        kinds["refused: " + error_kind(lines[0].split("error: ", 1)[1])] += 1
        return "refused"
    assert code in (0, 1), (code, err)
    (table,) = [p for p in out.glob("attribution_examples.*")]
    examples = (pd.read_csv(table, keep_default_na=False, na_values=[""], dtype={"error": str})
                if table.suffix == ".csv" else pd.read_parquet(table))
    errors = examples["error"].dropna().tolist()
    assert (code == 1) == bool(errors), (code, errors)
    for error in errors:  # one line each, and a MechitError's message, not a bug's
        assert "\n" not in error and not UNEXPECTED.search(error), error
        kinds["example failed: " + error_kind(error)] += 1
    return "examples failed" if errors else "ok"


def test_fuzz_attribute_door(tiny_llama, tiny_llama_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("mechit.models.load_model", lambda spec, **kwargs: tiny_llama)
    monkeypatch.setattr(mechit.cli, "build_parser", functools.cache(mechit.cli.build_parser))
    # the session's model is never released, so the run's gc.collect() (0.8 s in a test process) frees nothing
    monkeypatch.setattr("mechit.attribution.dataset.gc.collect", lambda: 0)
    counts: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(prompt_file(), options)
    def one(file, chosen):
        suffix, data = file
        root = Path(tempfile.mkdtemp(prefix="mechit-fuzz-"))
        try:
            path, out = root / f"prompts{suffix}", root / "out"
            path.write_bytes(data)
            argv = ["attribute", "--model", str(tiny_llama_dir), "--prompts", str(path), "--out", str(out),
                    "--max-new-tokens", "1", *[x for pair in chosen for x in pair]]
            counts[_outcome(argv, out, capsys, kinds)] += 1
        finally:
            shutil.rmtree(root)

    one()
    report = {"examples": sum(counts.values()), "outcomes": dict(sorted(counts.items())),
              "error_kinds": dict(kinds.most_common())}
    (tmp_path / "fuzz_outcomes.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    with capsys.disabled():
        print(f"\nfuzz: {report['examples']} examples: " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items())
              + f"; {len(kinds)} distinct error kinds; counts in {tmp_path / 'fuzz_outcomes.json'}")
        for kind, n in kinds.most_common():
            print(f"  {n:5d}  {kind}")
    assert sum(counts.values()) == MAX_EXAMPLES
    assert counts["ok"] and counts["examples failed"] and counts["refused"] and counts["refused by argparse"], counts
