"""Prompt sets: read JSONL files and the paper's released TSV files, with validation.

Both readers return a list of :class:`PromptRecord` in file order. Problems with the file
itself (invalid JSON or TSV line, missing ``id``, duplicate ids, bad header) raise
:class:`~mechit.errors.InputError` naming ``file:line``, the example and the field.
Problems with one example's content (empty prompt or response, spans that break the
rule of :mod:`mechit.data.spans`, a field of the wrong type, bytes that are not UTF-8) do not stop the
reading: the record carries the message in ``error`` and a dataset run records it as a
failed example. :func:`read_prompts` with ``strict=True`` raises on those too.

**JSONL**, one object per line (blank lines skipped)::

    {"id": "t1", "prompt": "Translate: the cat", "response": null,
     "instruction_spans": [[0, 9]], "group": "translate", "label": null}

``response`` null means "generate one"; ``label`` is null, "followed" or "not_followed";
spans are ``[start, end)`` offsets into ``prompt`` in code points (Python string indices:
"é" and "😀" count 1 each; not UTF-16 units, not bytes). Offsets in UTF-8 bytes are read
with ``span_units="bytes"`` (``mechit attribute --span-units bytes``).

Every text is checked at the door (:mod:`mechit.data.text`): a lone surrogate escape
(``"\\ud800"``) in ``id`` refuses the file; in another field it fails that example, whose
record keeps the text spelled as ``\\ud800``. ``NaN``/``Infinity``, numbers out of range and
nesting too deep refuse the file with one line.

**Paper TSV** (``ID\\tPrompt\\tResponse\\tInstruct&Context``): inside a field ``/n`` is a
newline and ``/t`` a tab, everywhere, as the authors' loader reads it: so ``yes/no`` or a
URL with ``/n`` in it is changed too. A file whose ids are not the authors' (their groups
:data:`AUTHORS_GROUPS`) gets a warning when that happens; write such texts as JSONL. A
field wrapped in double quotes has ``""`` for a quote. The
last column holds instruction pieces joined by ``|||``, then ``&&&``, then the context.
Two span conventions (``spans=``):

- ``"authors"`` (the default: reproducing the paper is why one reads this file): each
  piece marks the whole prompt sentence that contains it, the rule of the authors' loader
  (:func:`mechit.data.paper.authors_spans`), and the group is the id before its first
  ``_`` (``user``, ``lima``, ``mtbench``), as the authors grouped their results;
- ``"literal"``: each non-empty piece (trimmed of surrounding whitespace) must occur in
  the decoded prompt, and its first occurrence is an instruction span (spans of pieces
  that overlap are merged); the group is the id without a trailing ``_<number>``.

An empty response field means "no reference response".

>>> from mechit.data.prompts import decode_tsv_field, tsv_group
>>> decode_tsv_field('"Say ""hi""/nthen/tstop"')
'Say "hi"\\nthen\\tstop'
>>> tsv_group("lima_author_12")
'lima_author'
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mechit.data.paper import authors_spans, paper_group
from mechit.data.spans import span_problem
from mechit.data.text import byte_spans, lone_surrogate, parse_json, printable
from mechit.errors import InputError

LABELS = (None, "followed", "not_followed")
TSV_HEADER = ["ID", "Prompt", "Response", "Instruct&Context"]
SPAN_CONVENTIONS = ("authors", "literal")
SPAN_UNITS = ("characters", "bytes")
AUTHORS_GROUPS = ("user", "lima", "mtbench")  # the id prefixes of Wu et al.'s released prompt file
TEXT_FIELDS = ("prompt", "response", "group", "label")


@dataclass(frozen=True)
class PromptRecord:
    """One example of a prompt set.

    ``source`` is ``file:line`` (for messages); ``error`` is None for a valid record, else
    a message naming the example and the field.

    >>> PromptRecord("a", "Summarize: text", None, ((0, 9),)).instruction_spans
    ((0, 9),)
    """

    id: str
    prompt: str
    response: str | None
    instruction_spans: tuple[tuple[int, int], ...] = ()
    group: str | None = None
    label: str | None = None
    source: str = ""
    error: str | None = field(default=None, compare=False)


def decode_tsv_field(text: str) -> str:
    """Decode one field of the paper's TSV: outer quotes, ``""`` → ``"``, ``/n`` → newline, ``/t`` → tab.

    >>> decode_tsv_field("line one/nline two")
    'line one\\nline two'
    """
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"')
    return text.replace("/n", "\n").replace("/t", "\t")


def tsv_group(example_id: str) -> str:
    """The group of a paper TSV id: the id without its trailing ``_<number>``.

    >>> tsv_group("selfinstruct_7"), tsv_group("plain")
    ('selfinstruct', 'plain')
    """
    return re.sub(r"_\d+$", "", example_id)


def check_record(record: PromptRecord) -> str | None:
    """The first problem with a record's content, as a message naming example and field; None if valid.

    >>> check_record(PromptRecord("a", "", None, source="p.jsonl:1"))
    "p.jsonl:1: example 'a': field 'prompt' is empty"
    >>> check_record(PromptRecord("b", "Say hi", None, ((0, 3), (2, 5)), source="p.jsonl:2"))
    "p.jsonl:2: example 'b': field 'instruction_spans': spans [0, 3) and [2, 5) overlap"
    """
    where = f"{record.source}: example {record.id!r}"
    if not isinstance(record.prompt, str):
        return f"{where}: field 'prompt' must be a string, not {type(record.prompt).__name__}"
    if not record.prompt.strip():
        return f"{where}: field 'prompt' is empty"
    if record.response is not None:
        if not isinstance(record.response, str):
            return f"{where}: field 'response' must be a string or null, not {type(record.response).__name__}"
        if not record.response.strip():
            return f"{where}: field 'response' is empty (use null to generate one)"
    for name in ("group", "label"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            return f"{where}: field {name!r} must be a string or null, not {type(value).__name__}"
    if record.label not in LABELS:
        return f"{where}: field 'label' is {record.label!r}; use null, 'followed' or 'not_followed'"
    problem = span_problem(record.instruction_spans, len(record.prompt))
    return None if problem is None else f"{where}: field 'instruction_spans': {problem}"


def _with_check(record: PromptRecord) -> PromptRecord:
    if record.error is not None:
        return record
    error = check_record(record)
    return record if error is None else PromptRecord(**{**record.__dict__, "error": error})


def _lines(path: Path):
    """(line number, text, UTF-8 error or None) for each line; undecodable bytes become U+FFFD."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            yield number, raw.decode("utf-8", errors="replace"), (
                f"byte 0x{raw[error.start]:02x} at column {error.start + 1} is not valid UTF-8 (re-save the file as UTF-8)"
            )


def _utf8_error(where: str, fields: dict, problem: str) -> str:
    bad = [name for name, value in fields.items() if isinstance(value, str) and "\ufffd" in value]
    return f"{where}: field {bad[0] if bad else 'unknown'!r}: {problem}"


def _spans(value, where: str):
    """Parse ``instruction_spans``; returns (spans, error)."""
    if value is None:
        return (), None
    try:
        spans = tuple((int(s), int(e)) for s, e in value)
        if any(isinstance(x, bool) or not isinstance(x, int) for pair in value for x in pair):
            raise TypeError
        return spans, None
    except (TypeError, ValueError):
        return (), f"{where}: field 'instruction_spans' must be a list of [start, end) integer pairs, not {value!r}"


def _surrogate_error(where: str, obj: dict) -> str | None:
    for name in TEXT_FIELDS:
        value = obj.get(name)
        at = lone_surrogate(value) if isinstance(value, str) else None
        if at is not None:
            return (f"{where}: field {name!r} holds a lone surrogate {printable(value[at])} at character {at}, "
                    "which is not Unicode text (a JSON \\ud800-\\udfff escape without its pair); fix the file")
    return None


def _byte_spans(spans, prompt, where: str):
    """(spans in code points, error) of spans given in UTF-8 bytes."""
    try:
        return byte_spans(prompt, spans), None
    except InputError as problem:
        return spans, f"{where}: field 'instruction_spans': {problem}"


def read_jsonl(path: str | Path, *, span_units: str = "characters") -> list[PromptRecord]:
    """Read a JSONL prompt set (see the module docstring for the schema).

    ``span_units``: "characters" (code points, the default) or "bytes" (UTF-8 byte
    offsets of the prompt, converted to code points).

    >>> _ = Path("p.jsonl").write_text('{"id": "a", "prompt": "café: x", "instruction_spans": [[0, 6]]}\\n')
    >>> read_jsonl("p.jsonl", span_units="bytes")[0].instruction_spans
    ((0, 5),)
    """
    if span_units not in SPAN_UNITS:
        raise InputError(f"span units {span_units!r} are unknown; use 'characters' or 'bytes'")
    path = Path(path)
    records, seen = [], {}
    for number, text, utf8_problem in _lines(path):
        if not text.strip():
            continue
        source = f"{path}:{number}"
        try:
            obj = parse_json(text.lstrip("\ufeff") if number == 1 else text)
        except json.JSONDecodeError as error:
            raise InputError(f"{source}: invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno}); "
                             "each line must be one JSON object") from None
        except InputError as problem:
            raise InputError(f"{source}: {problem}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{source}: each line must be a JSON object, not {type(obj).__name__}")
        example_id = obj.get("id")
        if not isinstance(example_id, str) or not example_id:
            raise InputError(f"{source}: field 'id' must be a non-empty string, not {example_id!r}")
        if lone_surrogate(example_id) is not None:
            raise InputError(f"{source}: field 'id' {example_id!r} holds a lone surrogate, which is not Unicode "
                             "text (a JSON \\ud800-\\udfff escape without its pair); fix the id")
        if example_id in seen:
            raise InputError(f"{source}: example {example_id!r}: field 'id' duplicates line {seen[example_id]}; ids must be unique")
        seen[example_id] = number
        where = f"{source}: example {example_id!r}"
        if obj.get("group") == "":  # a CSV table reads "" back as missing: the group would differ between formats
            raise InputError(f"{where}: field 'group' is empty; use null for no group")
        unknown = sorted(set(obj) - {"id", "prompt", "response", "instruction_spans", "group", "label"})
        spans, error = _spans(obj.get("instruction_spans"), where)
        if unknown:
            error = error or f"{where}: field {unknown[0]!r} is unknown (allowed: id, prompt, response, instruction_spans, group, label)"
        if "prompt" not in obj:
            error = error or f"{where}: field 'prompt' is missing"
        if utf8_problem:
            error = _utf8_error(where, obj, utf8_problem)
        error = error or _surrogate_error(where, obj)
        if error is None and span_units == "bytes" and isinstance(obj.get("prompt"), str):
            spans, error = _byte_spans(spans, obj["prompt"], where)
        texts = {name: obj.get(name, "" if name == "prompt" else None) for name in TEXT_FIELDS}
        texts = {name: printable(value) if isinstance(value, str) else value for name, value in texts.items()}
        record = PromptRecord(id=example_id, instruction_spans=spans, source=source, error=error, **texts)
        records.append(_with_check(record))
    return records


def _first_occurrence_spans(prompt: str, pieces: list[str], where: str):
    spans = []
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        start = prompt.find(piece)
        if start < 0:
            return (), f"{where}: field 'Instruct&Context': instruction piece {piece[:40]!r} does not occur in the prompt"
        spans.append([start, start + len(piece)])
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged), None


def read_paper_tsv(path: str | Path, *, spans: str = "authors") -> list[PromptRecord]:
    """Read the paper's released TSV format; ``spans`` is "authors" or "literal" (see the module docstring).

    >>> path = Path("p.tsv")
    >>> _ = path.write_text("ID\\tPrompt\\tResponse\\tInstruct&Context\\n"
    ...                     "user_task_1\\tSay hi. Be brief./nInput: Bob\\thi\\tSay hi|||Input: Bob&&&\\n")
    >>> [(r.group, [r.prompt[s:e] for s, e in r.instruction_spans]) for r in read_paper_tsv(path)]
    [('user', ['Say hi.', 'Bob'])]
    >>> [(r.group, [r.prompt[s:e] for s, e in r.instruction_spans]) for r in read_paper_tsv(path, spans="literal")]
    [('user_task', ['Say hi', 'Input: Bob'])]
    """
    if spans not in SPAN_CONVENTIONS:
        raise InputError(f"span convention {spans!r} is unknown; use 'authors' or 'literal'")
    path = Path(path)
    lines = iter(_lines(path))
    try:
        _, header, _ = next(lines)
    except StopIteration:
        raise InputError(f"{path}:1: the file is empty; expected the header {chr(9).join(TSV_HEADER)!r}") from None
    if header.lstrip("\ufeff").split("\t") != TSV_HEADER:
        raise InputError(f"{path}:1: header is {header[:80]!r}; expected {chr(9).join(TSV_HEADER)!r}")
    records, seen, decoded = [], {}, []
    for number, text, utf8_problem in lines:
        if not text.strip():
            continue
        source = f"{path}:{number}"
        fields = text.split("\t")
        decoded.extend((number, f[max(m.start() - 12, 0):m.end() + 12]) for f in fields[1:]
                       for m in _ESCAPE.finditer(f))
        if len(fields) != 4:
            raise InputError(f"{source}: example {fields[0][:40]!r}: invalid TSV line with {len(fields)} fields; "
                             "expected 4 (ID, Prompt, Response, Instruct&Context); write tabs inside fields as /t")
        example_id = decode_tsv_field(fields[0]).strip()
        if not example_id:
            raise InputError(f"{source}: field 'ID' is empty")
        if example_id in seen:
            raise InputError(f"{source}: example {example_id!r}: field 'ID' duplicates line {seen[example_id]}; ids must be unique")
        seen[example_id] = number
        where = f"{source}: example {example_id!r}"
        prompt, response, annotation = (decode_tsv_field(f) for f in fields[1:])
        if spans == "authors":
            try:
                marked, error = authors_spans(prompt, annotation), None
            except InputError as problem:
                marked, error = (), f"{where}: field 'Instruct&Context': {problem}"
        else:
            marked, error = _first_occurrence_spans(prompt, annotation.split("&&&", 1)[0].split("|||"), where)
        if utf8_problem:
            named = {"Prompt": prompt, "Response": response, "Instruct&Context": annotation, "ID": example_id}
            error = _utf8_error(where, named, utf8_problem)
        record = PromptRecord(
            id=example_id, prompt=prompt, response=response if response.strip() else None,
            instruction_spans=marked,  # an id such as "_1" has no group: None, as "" would read back from CSV
            group=(paper_group(example_id) if spans == "authors" else tsv_group(example_id)) or None,
            label=None, source=source, error=error,
        )
        records.append(_with_check(record))
    _warn_decoded(path, records, decoded)
    return records


_ESCAPE = re.compile(r"/[nt]")


def _warn_decoded(path: Path, records: list[PromptRecord], decoded: list[tuple[int, str]]) -> None:
    """Warn when ``/n``/``/t`` were decoded in a file that is not the authors' (see the module docstring)."""
    foreign = [r.id for r in records if paper_group(r.id) not in AUTHORS_GROUPS]
    if decoded and foreign:
        line, context = decoded[0]
        warnings.warn(f"{path}: /n and /t were read as newline and tab (the paper's TSV convention) in {len(decoded)} "
                      f"places, first at line {line} in {context!r}; ids such as {foreign[0]!r} are not the authors' "
                      "(user_, lima_, mtbench_), so check no '/n' or '/t' was meant as text (yes/no, a URL), "
                      "or write the prompts as JSONL", stacklevel=3)


def read_prompts(path: str | Path, *, format: str = "auto", strict: bool = False,
                 spans: str = "authors", span_units: str = "characters") -> list[PromptRecord]:
    """Read a prompt set: ``format`` is "jsonl", "tsv" or "auto" (by suffix: ``.tsv`` is the paper TSV).

    ``spans`` is the paper TSV's span convention, "authors" or "literal" (a JSONL file
    gives its spans as offsets and ignores it); ``span_units`` says what those offsets
    count, "characters" (code points) or "bytes" (UTF-8), and only a JSONL file reads it.
    A file that cannot be read (permissions, a name too long) is refused with one line.

    With ``strict=True`` the first invalid record raises :class:`InputError`; otherwise
    invalid records are returned with ``error`` set.

    >>> records = read_prompts("prompts.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise InputError(f"{path}: no such prompt file")
        if format == "auto":
            format = "tsv" if path.suffix.lower() == ".tsv" else "jsonl"
        if format not in ("jsonl", "tsv"):
            raise InputError(f"prompt format {format!r} is unknown; use 'jsonl' or 'tsv'")
        records = read_paper_tsv(path, spans=spans) if format == "tsv" else read_jsonl(path, span_units=span_units)
    except OSError as error:
        raise InputError(f"{str(path)[:200]}: cannot read the prompt file ({error.strerror or error})") from None
    if not records:
        raise InputError(f"{path}: no examples (the file is empty or has only blank lines)")
    if strict:
        for record in records:
            if record.error:
                raise InputError(record.error)
    return records
