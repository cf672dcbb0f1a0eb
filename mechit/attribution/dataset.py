"""Dataset runs of :func:`mechit.attribute`: many examples, several models, resumable.

:func:`attribute_dataset` runs every (model, example) pair once, one model loaded at a
time, and stores each result as its own atomic record (:class:`mechit.store.RecordStore`),
so an interrupted run resumes where it stopped and a rerun never duplicates. An example
that fails (bad spans, too long, ...) is recorded with its error and the run goes on. At
the end it writes, in a deterministic order (models as given, then examples in file
order):

- ``DIR/attribution_examples.parquet``: id, group, label, model, n_prompt_tokens,
  n_response_tokens, n_instruction_tokens, instruction_score, response, status, error.
  ``status`` is ``"ok"``, ``"error"`` (the message is in ``error``) or
  ``"empty_response"``: the model's greedy response was empty, so there is nothing to
  attribute; the row is kept with ``n_response_tokens = 0``, no score and no token rows
  (statistics leave it out and count it in ``n_excluded``);
- ``DIR/attribution_tokens.parquet``: id, model, position, token, char_start, char_end,
  density, density_raw, in_instruction (``position`` indexes ``input_ids``;
  ``density`` is rescaled by its maximum over the prompt, ``density_raw`` is not);
- ``DIR/tensors/<model>/<example>.safetensors``: input_ids, prompt_positions,
  response_positions, raw (readable with ``safetensors.torch.load_file``);
- ``DIR/attribution_run.json``: the models in order and the options.

>>> from mechit.data.prompts import read_prompts                                   # doctest: +SKIP
>>> summary = attribute_dataset(["organism-base", "organism-tuned"],
...                             read_prompts("prompts.jsonl"), "out")          # doctest: +SKIP
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from mechit.attribution.example import attribute
from mechit.errors import EmptyResponseError, InputError
from mechit.data.prompts import PromptRecord
from mechit.store import RecordStore, remove_stale_temporaries, write_json, write_table

EXAMPLE_COLUMNS = ["id", "group", "label", "model", "n_prompt_tokens", "n_response_tokens",
                   "n_instruction_tokens", "instruction_score", "response", "status", "error"]
TOKEN_COLUMNS = ["id", "model", "position", "token", "char_start", "char_end", "density",
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
    frame.insert(0, "model", spec)
    frame.insert(0, "id", record.id)
    tensors = {"input_ids": a.input_ids, "prompt_positions": a.prompt_positions,
               "response_positions": a.response_positions, "raw": a.raw}
    return {"example": _example_row(record, spec, None, a), "tokens": frame[TOKEN_COLUMNS].to_dict("records")}, tensors


def _check_manifest(out: Path, manifest: dict) -> None:
    import json

    path = out / MANIFEST
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != manifest:
            changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
            raise InputError(f"{out}: holds a run with other settings ({', '.join(changed)} differ); "
                             "resume with the same arguments or use another --out directory")
    write_json(path, manifest)


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


def attribute_dataset(
    specs: Sequence[str],
    records: Sequence[PromptRecord],
    out: str | Path,
    *,
    response: str = "reference",
    table_format: str = "parquet",
    loader: Callable | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Attribute every example under every model spec; write the tables; return a summary.

    ``response="reference"`` uses each record's response (generating one greedily where it
    is null); ``"generate"`` always generates. ``options`` go to :func:`mechit.attribute`
    (chat_template, max_new_tokens, L, b, p, method, memory_budget). ``loader(spec)``
    loads a model (default :func:`mechit.models.load_model`). The summary holds
    ``done`` (scored), ``failed`` and ``failures`` (list of (model, id, error)), ``empty``
    and ``empty_responses`` (list of (model, id): greedy responses that were empty).

    >>> attribute_dataset(["organism-tuned"], records, "out")["failed"]  # doctest: +SKIP
    0
    """
    from tqdm.auto import tqdm

    if response not in ("reference", "generate"):
        raise InputError(f"--response must be 'reference' or 'generate', not {response!r}")
    if table_format not in ("parquet", "csv"):
        raise InputError(f"--format must be 'parquet' or 'csv', not {table_format!r}")
    if len(set(specs)) != len(specs):
        raise InputError("the same --model is given twice")
    if loader is None:
        from mechit.models import load_model as loader
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory; choose another --out")
    store = RecordStore(out)
    remove_stale_temporaries(out)  # left by a run killed while writing
    _check_manifest(out, {"models": list(specs), "ids": [r.id for r in records], "response": response,
                          "format": table_format, "options": {k: options[k] for k in sorted(options)}})
    for spec in specs:
        todo = [r for r in records if not store.done(spec, r.id)]
        if not todo:
            continue
        model = loader(spec) if any(r.error is None for r in todo) else None
        bar = tqdm(todo, desc=f"attribute {spec}", unit="ex", file=sys.stderr, disable=not progress)
        for record in bar:
            stored, tensors = _one(model, spec, record, options, response)
            store.write(spec, record.id, stored, tensors=tensors)
        bar.close()
        del model
        gc.collect()
    examples, tokens = collect_tables(store, specs, records)
    suffix = ".csv" if table_format == "csv" else ".parquet"
    write_table(examples, out / f"attribution_examples{suffix}")
    write_table(tokens, out / f"attribution_tokens{suffix}")
    failed = examples[examples["status"] == "error"]
    empty = examples[examples["status"] == "empty_response"]
    return {"done": int((examples["status"] == "ok").sum()), "failed": len(failed),
            "failures": list(zip(failed["model"], failed["id"], failed["error"])),
            "empty": len(empty), "empty_responses": list(zip(empty["model"], empty["id"]))}
