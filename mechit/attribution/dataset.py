"""Dataset runs of :func:`mechit.attribute`: many examples, several models, resumable.

:func:`attribute_dataset` runs every (model, example) pair once, one model loaded at a
time, and stores each result as its own atomic record (:class:`mechit.store.RecordStore`),
so an interrupted run resumes where it stopped and a rerun never duplicates. An example
that fails (bad spans, too long, ...) is recorded with its error and the run goes on. It
returns two frames, in a deterministic order (models as given, then examples in file
order); :func:`write_dataset_tables` writes them (``mechit attribute`` does;
``mechit compare`` writes them with its other tables):

- ``attribution_examples``: model, id, group, label, n_prompt_tokens,
  n_response_tokens, n_instruction_tokens, instruction_score, response, status, error.
  ``status`` is ``"ok"``, ``"error"`` (the message is in ``error``) or
  ``"empty_response"``: the model's greedy response was empty, so there is nothing to
  attribute; the row is kept with ``n_response_tokens = 0``, no score and no token rows
  (statistics leave it out and count it in ``n_excluded``);
- ``attribution_tokens``: model, id, position, token, char_start, char_end,
  density, density_raw, in_instruction (``position`` indexes ``input_ids``;
  ``density`` is rescaled by its maximum over the prompt, ``density_raw`` is not);
- ``DIR/tensors/<model>/<example>.safetensors``: input_ids, prompt_positions,
  response_positions, raw (readable with ``safetensors.torch.load_file``);
- ``DIR/attribution_run.json``: the run's settings (models in order, ids, options;
  :class:`mechit.store.Manifest`); each record also holds the hashes of the example and
  weights it was computed from (see :func:`attribute_dataset`).

``model`` is the first column of both tables: the spec as given (``mechit compare`` gives
the names "base" and "tuned").

>>> from mechit.data.prompts import PromptRecord
>>> records = [PromptRecord(id="a", prompt="Translate to Zel: the cat", response=" zu kat",
...                         instruction_spans=((0, 16),))]
>>> examples, tokens = attribute_dataset(["tuned"], records, "out", loader={"tuned": model}.get, progress=False)
>>> examples[["model", "id", "status", "n_prompt_tokens"]]
   model id status  n_prompt_tokens
0  tuned  a     ok                6
>>> run_summary(examples)["done"]
1
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from mechit.attribution.example import attribute
from mechit.data.prompts import PromptRecord
from mechit.errors import EmptyResponseError, InputError
from mechit.models import load_model, weights_fingerprint
from mechit.store import Manifest, RecordStore, remove_stale_temporaries, write_table

EXAMPLE_COLUMNS = ["model", "id", "group", "label", "n_prompt_tokens", "n_response_tokens",
                   "n_instruction_tokens", "instruction_score", "response", "status", "error"]
TOKEN_COLUMNS = ["model", "id", "position", "token", "char_start", "char_end", "density",
                 "density_raw", "in_instruction"]
MANIFEST = "attribution_run.json"


def _example_row(record: PromptRecord, model: str, error: str | None, a=None) -> dict:
    text = {k: v if isinstance(v, str) else None  # a wrong type is in ``error``; keep the columns typed
            for k, v in (("group", record.group), ("label", record.label), ("response", record.response))}
    row = dict(id=record.id, group=text["group"], label=text["label"], model=model,
               n_prompt_tokens=None, n_response_tokens=None, n_instruction_tokens=None,
               instruction_score=None, response=text["response"], status="ok" if error is None else "error",
               error=error)
    if a is not None:
        row.update(n_prompt_tokens=len(a.prompt_tokens), n_response_tokens=len(a.response_tokens),
                   n_instruction_tokens=int(a.instruction_mask.sum()) if a.instruction_mask is not None else 0,
                   instruction_score=a.score, response=a.response)
    return row


def _one(model, spec: str, record: PromptRecord, options: dict, response_mode: str):
    """(record dict, tensors or None) for one (model, example)."""
    if record.error:
        return {"example": _example_row(record, spec, record.error), "tokens": []}, None
    response = record.response if response_mode == "reference" else None
    try:
        a = attribute(model, record.prompt, response, instruction_spans=list(record.instruction_spans), **options)
    except EmptyResponseError as empty:  # the model's own answer: kept, flagged, not a failure
        row = _example_row(record, spec, None)
        row.update(status="empty_response", n_prompt_tokens=empty.n_prompt_tokens, n_response_tokens=0,
                   response=empty.response)
        return {"example": row, "tokens": []}, None
    except Exception as error:  # noqa: BLE001 - a failed example is recorded and the run goes on
        message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        return {"example": _example_row(record, spec, f"{record.source}: example {record.id!r}: {message}"),
                "tokens": []}, None
    frame = a.to_frame()
    frame.insert(0, "id", record.id)
    frame.insert(0, "model", spec)
    tensors = {"input_ids": a.input_ids, "prompt_positions": a.prompt_positions,
               "response_positions": a.response_positions, "raw": a.raw}
    return {"example": _example_row(record, spec, None, a), "tokens": frame[TOKEN_COLUMNS].to_dict("records")}, tensors


def collect_tables(store: RecordStore, specs: Sequence[str], records: Sequence[PromptRecord]):
    """(examples, tokens) DataFrames from the stored records, models in ``specs`` order, examples in file order."""
    examples, tokens = [], []
    for spec in specs:
        for record in records:
            stored = store.read(spec, record.id)
            examples.append(stored["example"])
            tokens.extend(stored["tokens"])
    ex = pd.DataFrame(examples, columns=EXAMPLE_COLUMNS)
    for column in ("n_prompt_tokens", "n_response_tokens", "n_instruction_tokens"):
        ex[column] = ex[column].astype("Int64")
    ex["instruction_score"] = ex["instruction_score"].astype("float64")
    unknown = ex["status"].isna()  # records written before the status column
    ex.loc[unknown, "status"] = ex.loc[unknown, "error"].notna().map({True: "error", False: "ok"})
    tok = pd.DataFrame(tokens, columns=TOKEN_COLUMNS)
    return ex, tok


def open_run_manifest(out: str | Path, specs: Sequence[str], records: Sequence[PromptRecord], response: str,
                      options: dict) -> Manifest:
    """Write (or check) ``DIR/attribution_run.json``: the models, example ids, response mode and
    options of a run. Every runner of a dataset (one process, shards, Ray) opens it the same
    way, so a run started by one can be finished by another.

    >>> open_run_manifest("run", ["m"], [], "reference", {"L": 10}).settings
    {'models': ['m'], 'ids': [], 'response': 'reference', 'options': {'L': 10}}
    """
    manifest = Manifest.open(Path(out) / MANIFEST, {"models": list(specs), "ids": [r.id for r in records],
                                                    "response": response,
                                                    "options": {k: options[k] for k in sorted(options)}})
    manifest.save()
    return manifest


def attribute_dataset(
    specs: Sequence[str],
    records: Sequence[PromptRecord],
    out: str | Path,
    *,
    response: str = "reference",
    loader: Callable | None = None,
    fingerprints: dict | None = None,
    progress: bool = True,
    **options,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attribute every example under every model spec, resumably in ``out``; return (examples, tokens).

    ``response="reference"`` uses each record's response (generating one greedily where it
    is null); ``"generate"`` always generates. ``options`` go to :func:`mechit.attribute`
    (chat_template, max_new_tokens, L, b, p, method, memory_budget). ``loader(spec)``
    loads a model (default :func:`mechit.models.load_model`); ``fingerprints`` maps a spec to
    its weights' fingerprint (default :func:`mechit.models.weights_fingerprint` of the spec).

    Every record is keyed by what it was computed from: the example's content
    (:func:`example_fingerprint`) and the model's weights. A rerun skips a record only when
    both match; a record that does not parse, or that came from another prompt text or
    other weights under the same id and spec, is recomputed, with one line on stderr
    saying which and why. The frames are those of the
    module docstring; :func:`run_summary` counts what was done, failed or empty.
    """
    if response not in ("reference", "generate"):
        raise InputError(f"--response must be 'reference' or 'generate', not {response!r}")
    if len(set(specs)) != len(specs):
        raise InputError("the same --model is given twice")
    loader = loader or load_model
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory; choose another --out")
    store = RecordStore(out)
    remove_stale_temporaries(out)  # left by a run killed while writing
    open_run_manifest(out, specs, records, response, options)
    for spec in specs:
        inputs = record_inputs(spec, records, fingerprints)
        states = {r.id: store.state(spec, r.id, inputs[r.id]) for r in records}
        _say_what_is_redone(spec, out, states)
        todo = [r for r in records if states[r.id] != "done"]
        attribute_records(store, spec, todo, inputs, loader, options, response, progress=progress)
    return collect_tables(store, specs, records)


def attribute_records(store: RecordStore, spec: str, todo: Sequence[PromptRecord], inputs: dict, loader: Callable,
                      options: dict, response: str, *, progress: bool = True, desc: str | None = None) -> None:
    """Attribute ``todo`` under ``spec`` and write each record keyed by its ``inputs``
    (:func:`record_inputs`): the model loads once, and only when some example can run. The
    one loop of every runner that works in one process (a whole run, a shard).

    >>> from mechit.store import RecordStore
    >>> bad = PromptRecord("bad", "hi", None, error="bad: no response")
    >>> attribute_records(RecordStore("run"), "m", [bad], {"bad": {}}, None, {}, "reference", progress=False)
    >>> RecordStore("run").read("m", "bad")["example"]["status"]
    'error'
    """
    if not todo:
        return
    model = loader(spec) if any(r.error is None for r in todo) else None
    bar = tqdm(todo, desc=desc or f"attribute {spec}", unit="ex", file=sys.stderr, disable=not progress)
    for record in bar:
        stored, tensors = _one(model, spec, record, options, response)
        store.write(spec, record.id, stored, tensors=tensors, inputs=inputs[record.id])
    bar.close()
    del model
    gc.collect()


def record_inputs(spec: str, records: Sequence[PromptRecord], fingerprints: dict | None = None) -> dict:
    """What each record of ``spec`` is computed from, by example id: the example's content and
    the model's weights (``fingerprints[spec]``, else :func:`mechit.models.weights_fingerprint`).
    Every runner (one process, a shard, a Ray actor) keys its records by these.

    >>> record_inputs("m", [PromptRecord("a", "Say hi", " hi")], {"m": "w1"})["a"]["weights"]
    'w1'
    """
    weights = fingerprints[spec] if fingerprints and spec in fingerprints else weights_fingerprint(spec)
    return {r.id: {"example": example_fingerprint(r), "weights": weights} for r in records}


def example_fingerprint(record: PromptRecord) -> str:
    """A hash of everything an example's record is computed from (its text, response, spans,
    group, label and the error found when it was read; not its line number).

    >>> a = PromptRecord(id="a", prompt="Say hi", response=" hi")
    >>> example_fingerprint(a) == example_fingerprint(PromptRecord(id="a", prompt="Say hi", response=" hi", source="f:9"))
    True
    >>> example_fingerprint(a) == example_fingerprint(PromptRecord(id="a", prompt="Say hi!", response=" hi"))
    False
    """
    content = [record.id, record.prompt, record.response, record.instruction_spans, record.group, record.label,
               record.error]
    return hashlib.sha256(json.dumps(content, default=repr).encode()).hexdigest()[:16]


_REDONE = {"corrupt": "did not parse (a write cut short?)", "changed: example": "were computed from other example "
           "content (same id)", "changed: weights": "were computed from other weights (the model files changed)"}


def _say_what_is_redone(spec: str, out: Path, states: dict) -> None:
    """One line on stderr per reason a stored record of ``spec`` is recomputed, with a few ids."""
    for state, why in _REDONE.items():
        ids = [i for i, s in states.items() if s == state]
        if ids:
            shown = ", ".join(map(repr, ids[:3])) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            print(f"mechit: {len(ids)} record(s) of {spec} in {out} {why}; recomputing them: {shown}", file=sys.stderr)


def run_summary(examples: pd.DataFrame) -> dict:
    """What a run did: ``done`` (scored), ``failed`` and ``failures`` (list of (model, id, error)),
    ``empty`` and ``empty_responses`` (list of (model, id): greedy responses that were empty).

    >>> run_summary(pd.DataFrame({"model": ["m", "m"], "id": ["a", "b"], "status": ["ok", "error"],
    ...                           "error": [None, "too long"]}))
    {'done': 1, 'failed': 1, 'failures': [('m', 'b', 'too long')], 'empty': 0, 'empty_responses': []}
    """
    failed = examples[examples["status"] == "error"]
    empty = examples[examples["status"] == "empty_response"]
    return {"done": int((examples["status"] == "ok").sum()), "failed": len(failed),
            "failures": list(zip(failed["model"], failed["id"], failed["error"])),
            "empty": len(empty), "empty_responses": list(zip(empty["model"], empty["id"]))}


def write_dataset_tables(examples: pd.DataFrame, tokens: pd.DataFrame, out: str | Path,
                         table_format: str = "parquet") -> list[Path]:
    """Write ``DIR/attribution_examples`` and ``DIR/attribution_tokens`` as parquet or CSV (atomically).

    >>> write_dataset_tables(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [2]}), "out", "csv")
    [PosixPath('out/attribution_examples.csv'), PosixPath('out/attribution_tokens.csv')]
    """
    if table_format not in ("parquet", "csv"):
        raise InputError(f"--format must be 'parquet' or 'csv', not {table_format!r}")
    return [write_table(frame, Path(out) / f"{name}.{table_format}")
            for name, frame in (("attribution_examples", examples), ("attribution_tokens", tokens))]
