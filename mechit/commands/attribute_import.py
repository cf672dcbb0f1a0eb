"""``mechit attribute-import``: attribution results computed elsewhere, as the tables of ``mechit attribute``.

    mechit attribute-import --results DIR/ifa_llama_7b  --model llama-7b  --prompts FinalDataset.tsv --out OUT
    mechit attribute-import --results DIR/ifa_vicuna_7b --model vicuna-7b --prompts FinalDataset.tsv \\
        --ratings AnnotatedDataset.tsv --ratings-model vicuna_7B --out OUT
    mechit attribute-stats OUT --base llama-7b --tuned vicuna-7b

Run it once per model into the same OUT. Each result file (:mod:`mechit.data.imported`:
the authors' ``<id>.pkl`` or a plain ``<id>.safetensors``) is scored as ``mechit attribute``
scores a fresh run: a matrix that already holds integer levels 0..L (its minimum 0, its
maximum L) is only thresholded at ``b``, as the authors' ``compute_density`` does; any
other matrix is sparsified first. Instruction spans come from the prompt file (``--spans``)
and are mapped onto the stored token strings by character offsets. OUT then holds the
tables of ``mechit attribute`` (``attribution_examples``, ``attribution_tokens``,
``tensors/<model>/<id>.safetensors`` with the ``levels``) and an ``attribution_run.json``
whose ``imported`` entry records where each model's results came from.
"""

from __future__ import annotations

import sys

from mechit.commands.args import (
    MAX_LEVELS,
    check_levels,
    finite_float,
    int_in,
    non_negative_int,
)
from mechit.data.prompts import SPAN_CONVENTIONS


def register(subparsers) -> None:
    """Add the ``attribute-import`` subcommand."""
    p = subparsers.add_parser(
        "attribute-import", help="read attribution results computed elsewhere (the paper's release) into an "
                                 "attribute run's tables",
        description="Score one model's per-example attribution matrices (<id>.pkl of the authors' release, or "
                    "<id>.safetensors with 'levels' or 'raw' and the token strings in metadata) against a prompt "
                    "set, and write the tables of `mechit attribute` into OUT; run once per model.",
    )
    p.add_argument("--results", required=True, metavar="DIR", help="folder of <id>.pkl or <id>.safetensors files")
    p.add_argument("--model", required=True, metavar="NAME", help="the name this model gets in the tables")
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompt set: .tsv (paper format) or .jsonl")
    p.add_argument("--prompt-format", choices=["auto", "jsonl", "tsv"], default="auto")
    p.add_argument("--spans", choices=list(SPAN_CONVENTIONS), default="authors",
                   help="paper TSV: widen each instruction piece to its prompt sentence and group by the id's "
                        "first part, as the authors did (default), or mark the literal pieces")
    p.add_argument("--ratings", metavar="FILE", help="the paper's ratings file (AnnotatedDataset.tsv): labels "
                                                     "followed / not followed")
    p.add_argument("--ratings-model", metavar="NAME", help="the ratings file's Model name for this model "
                                                           "(default: --model)")
    p.add_argument("--drop-ratings-at-most", type=finite_float(), default=0.0, metavar="R",
                   help="ratings <= R give no label (authors: 0)")
    p.add_argument("--followed-from", type=finite_float(), default=2.0, metavar="R",
                   help="ratings >= R are 'followed', lower ones 'not_followed' (authors: 2)")
    p.add_argument("--min-response-tokens", type=non_negative_int, default=5, metavar="N",
                   help="responses of fewer than N tokens get no label (authors: 5)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory, shared by the models")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="table format")
    p.add_argument("-L", type=int_in(1, MAX_LEVELS), default=10, help="number of levels (paper: 10)")
    p.add_argument("-b", type=non_negative_int, default=7, help="levels <= b are dropped (paper: 7)")
    p.add_argument("-p", type=finite_float(min=1), default=4, help="density norm, at least 1 (paper: 4)")
    p.set_defaults(run=run_import)


def _manifest(out, model: str, ids: list[str], table_format: str, settings: dict) -> dict:
    """The run manifest with this model's import added; refuses an OUT that holds another kind of run."""
    import json

    from mechit.errors import InputError

    path = out / "attribution_run.json"
    other = "csv" if table_format == "parquet" else "parquet"
    if (out / f"attribution_examples.{other}").exists():
        raise InputError(f"{out}: holds imports with another --format; use the same one or another --out directory")
    run = {"models": [], "ids": ids, "imported": {}}
    if path.is_file():
        try:
            run = json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path}: unreadable run settings ({error}); delete it to import again") from error
        if "imported" not in run:
            raise InputError(f"{out}: holds a `mechit attribute` run; import into another --out directory")
        if run["ids"] != ids:
            raise InputError(f"{out}: holds imports with another prompt set; use the same one or another --out directory")
    if model not in run["models"]:
        run["models"].append(model)
    run["imported"][model] = settings
    return {"settings": run, "finished": {}}  # the layout of mechit.store.Manifest, as `mechit attribute` writes


def score_result(record, result, *, model: str, L: int = 10, b: int = 7, p: float = 4):
    """(stored record, tensors) of one imported result, in the layout of ``mechit attribute``'s records."""
    import torch

    from mechit.attribution.scores import density, instruction_score, rescale, sparsify
    from mechit.data.imported import spell, token_offsets
    from mechit.tokens import Encoded, span_mask

    n, m = len(result.prompt_tokens), len(result.response_tokens)
    row = dict(id=record.id, group=record.group, label=record.label, model=model, n_prompt_tokens=n,
               n_response_tokens=m, n_instruction_tokens=None, instruction_score=None,
               response=spell(result.response_tokens).strip(), status="ok", error=None)
    if m == 0:
        row.update(status="empty_response")
        return {"example": row, "tokens": []}, None
    offsets = token_offsets(record.prompt, result.prompt_tokens)
    # imported results carry token strings, not ids: the encoding holds what span_mask reads
    encoded = Encoded(input_ids=torch.empty(0, dtype=torch.long), prompt_positions=torch.arange(n),
                      response_positions=torch.arange(n, n + m), tokens=result.prompt_tokens + result.response_tokens,
                      prompt_offsets=offsets, response_offsets=[], prompt=record.prompt, response="")
    mask = span_mask(encoded, record.instruction_spans)
    matrix = result.matrix
    already_levels = (result.kind == "levels" and float(matrix.min()) == 0 and float(matrix.max()) == L
                      and bool((matrix == matrix.round()).all()))
    levels = torch.where(matrix <= b, 0.0, matrix) if already_levels else sparsify(matrix, L, b)
    density_raw = density(levels, p)
    density_rescaled = rescale(density_raw)
    row.update(n_instruction_tokens=int(mask.sum()), instruction_score=instruction_score(density_rescaled, mask))
    tokens = [dict(id=record.id, model=model, position=i, token=token, char_start=start, char_end=end,
                   density=float(density_rescaled[i]), density_raw=float(density_raw[i]), in_instruction=bool(mask[i]))
              for i, (token, (start, end)) in enumerate(zip(result.prompt_tokens, offsets))]
    tensors = {"levels": levels} | ({"raw": matrix} if result.kind == "raw" else {})
    return {"example": row, "tokens": tokens}, tensors


def _error(record, model: str, error: str) -> dict:
    from mechit.attribution.dataset import EXAMPLE_COLUMNS

    row = dict.fromkeys(EXAMPLE_COLUMNS)
    row.update(id=record.id, group=record.group, label=record.label, model=model, status="error", error=error)
    return {"example": row, "tokens": []}


def import_results(model: str, records, results_dir, out, *, ratings: dict[str, float] | None = None,
                   rules=None, table_format: str = "parquet", L: int = 10, b: int = 7, p: float = 4,
                   settings: dict | None = None) -> dict:
    """Score every record's result file under ``model`` into OUT; rewrite OUT's tables; return a summary.

    ``ratings``: ``{example id: rating}`` of this model (labels by ``rules``, a
    :class:`mechit.data.ratings.RatingRules`). The summary holds ``done``, ``failed``,
    ``failures`` (list of (id, error)), ``empty``, ``labelled`` and ``unused`` (result files
    of no example of the prompt set).

    >>> import_results("llama-7b", records, "ifa_llama_7b", "out")["failed"]  # doctest: +SKIP
    0
    """
    from pathlib import Path

    from mechit.attribution.dataset import collect_tables, write_dataset_tables
    from mechit.data.imported import read_result, result_files
    from mechit.data.ratings import RatingRules, label
    from mechit.errors import InputError
    from mechit.store import RecordStore, remove_stale_temporaries, write_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory; choose another --out")
    files = result_files(results_dir)
    manifest = _manifest(out, model, [r.id for r in records], table_format,
                         settings or {"results": str(results_dir)})
    store = RecordStore(out)
    remove_stale_temporaries(out)
    rules = rules or RatingRules()
    for record in records:
        where, tensors = f"{record.source}: example {record.id!r}", None
        if record.error:
            stored = _error(record, model, record.error)
        elif record.id not in files:
            stored = _error(record, model, f"{where}: no result file {record.id}.pkl or .safetensors in {results_dir}")
        else:
            try:
                stored, tensors = score_result(record, read_result(files[record.id]), model=model, L=L, b=b, p=p)
            except InputError as problem:
                stored = _error(record, model, f"{where}: {problem}")
        if ratings is not None:  # the ratings replace the prompt set's labels; the length rule needs the tokens
            example = stored["example"]
            example["label"] = label(ratings.get(record.id), example["n_response_tokens"], rules)
        store.write(model, record.id, stored, tensors=tensors)
    write_json(out / "attribution_run.json", manifest)
    examples, tokens = collect_tables(store, manifest["settings"]["models"], records)
    write_dataset_tables(examples, tokens, out, table_format)
    mine = examples[examples["model"] == model]
    failed = mine[mine["status"] == "error"]
    return {"done": int((mine["status"] == "ok").sum()), "failed": len(failed),
            "failures": list(zip(failed["id"], failed["error"])), "empty": int((mine["status"] == "empty_response").sum()),
            "labelled": int(mine["label"].notna().sum()), "unused": sorted(set(files) - {r.id for r in records})}


def run_import(args) -> int:
    """Read the prompt set and ratings, import one model's results, print a summary."""
    import dataclasses

    from mechit.data.prompts import read_prompts
    from mechit.data.ratings import RatingRules, ratings_of, read_ratings
    from mechit.errors import InputError
    from mechit.outdir import check_out_dir

    check_levels(args.L, args.b, args.p)
    if args.ratings_model and not args.ratings:
        raise InputError("--ratings-model needs --ratings FILE")
    records = read_prompts(args.prompts, format=args.prompt_format, spans=args.spans)
    ratings = ratings_of(read_ratings(args.ratings), args.ratings_model or args.model) if args.ratings else None
    check_out_dir(args.out, create=False)
    rules = RatingRules(args.drop_ratings_at_most, args.followed_from, args.min_response_tokens)
    settings = {"results": str(args.results), "prompts": str(args.prompts), "spans": args.spans,
                "ratings": args.ratings, "ratings_model": args.ratings_model or (args.model if args.ratings else None),
                "rules": dataclasses.asdict(rules), "L": args.L, "b": args.b, "p": args.p}
    summary = import_results(args.model, records, args.results, args.out, ratings=ratings, rules=rules,
                             table_format=args.format, L=args.L, b=args.b, p=args.p, settings=settings)
    print(f"attribute-import: {len(records)} examples for {args.model}: {summary['done']} done, "
          f"{summary['failed']} failed, {summary['empty']} empty responses, {summary['labelled']} labelled; "
          f"tables in {args.out}", file=sys.stderr)
    if summary["unused"]:
        print(f"  {len(summary['unused'])} result files match no example of {args.prompts}: "
              f"{', '.join(summary['unused'][:5])}{' ...' if len(summary['unused']) > 5 else ''}", file=sys.stderr)
    for example_id, error in summary["failures"][:20]:
        print(f"  failed {example_id}: {error}", file=sys.stderr)
    return 1 if summary["failed"] else 0
