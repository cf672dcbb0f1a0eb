"""``mechit compare``: every analysis on a base/tuned pair, written as tables, a summary and a report.

Four stages run in order, each on both models with the same inputs (PAPER §1–3):

- ``attribution``: gradient × input attribution of every prompt for both models, the
  instruction scores and the tuned-vs-base statistics (:mod:`mechit.attribution.dataset`,
  :mod:`mechit.stats`);
- ``faithfulness``: causal ablation of each prompt's instruction and context on the
  attributed responses, and its agreement with the gradient view
  (:mod:`mechit.attribution.ablation`, :mod:`mechit.attribution.agreement`; it needs the
  attribution stage's tables);
- ``heads``: per-head QK word pairs for both models, the instruction-verb shift, the
  instruction attention mass and the attention patterns of the heads that changed most
  (:mod:`mechit.heads.pairs`, :mod:`mechit.heads.shift`, :mod:`mechit.heads.attention`);
- ``ffn``: principal-component concepts of every FFN layer for both models, their labels
  and the rotation between the two (:mod:`mechit.ffn.concepts`, :mod:`mechit.ffn.rotation`,
  :mod:`mechit.ffn.labels`).

Each stage returns its frames (:mod:`mechit.pipeline.stages`); :func:`compare` writes every
table once to ``DIR/<name>.parquet`` (atomic, :func:`mechit.store.write_table`) and hands
the same frames to the findings and the report. A finished stage is recorded in
``DIR/manifest.json`` (:class:`mechit.store.Manifest`, keyed by the specs, the prompts'
hash, the options and the fingerprints of both models' weights, so a rerun over replaced
weights is refused) and skipped on a rerun, whose
report then reads that stage's tables back once; attribution examples resume one by one
through :mod:`mechit.store`. At the end ``DIR/summary.json`` (headline numbers, versions,
models, seeds) and ``DIR/report.html`` are (re)written.

>>> compare(out="runs/organism")                            # doctest: +SKIP
PosixPath('runs/organism/report.html')
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch

from mechit.attribution.ablation import HOWS
from mechit.attribution.run_stats import read_run, run_stats
from mechit.errors import InputError
from mechit.models import ModelPair, open_pair, weights_fingerprint
from mechit.outdir import check_out_dir, disk_full_error
from mechit.pipeline.checks import check_specs, load_records, parse_only
from mechit.pipeline.context import (
    STAGES,
    Context,
    Options,
    run_threads,
    sha256,
)
from mechit.pipeline.progress import Progress
from mechit.pipeline.prompt_work import PromptJob, save_arguments
from mechit.pipeline.stages import STAGE_RUNNERS, stage_plan
from mechit.pipeline.summary import build_summary
from mechit.store import (
    Manifest,
    read_tables,
    remove_stale_temporaries,
    write_json,
    write_table,
)
from mechit.views.paper import TABLE as PAPER_TABLE
from mechit.views.report import write_report

MANIFEST = "manifest.json"
SUMMARY = "summary.json"

__all__ = ["STAGES", "Options", "compare"]


def compare(
    base: str | Path | None = None,
    tuned: str | Path | None = None,
    *,
    prompts: str | Path | None = None,
    out: str | Path = "mechit-compare",
    only: str | Sequence[str] | None = None,
    options: Options | None = None,
    progress: bool = True,
    report: bool = True,
    trust_remote_code: bool = False,
    paper_results: str | Path | None = None,
    per_prompt: Callable[[PromptJob], int] | None = None,
    **loading,
) -> Path:
    """Run the stages on a base/tuned pair and write tables, ``summary.json`` and ``report.html``.

    ``base``/``tuned``: model specs (see :func:`mechit.models.load_model`, which also takes
    ``loading``: device, dtype, device_map, max_memory); both None is the
    embedded organism pair. ``prompts``: a JSONL prompt file with instruction spans
    (default: the organism's held-out prompts, or the built-in English set for other
    pairs). ``paper_results``: an attribution run made from the authors' released results
    (``mechit attribute-import``); its statistics become the table ``paper_attribution_stats``
    and the report's section on the paper's Tables 1–2 (:mod:`mechit.views.paper`). Cheap
    checks (specs, prompt file, output directory, free space, the ``paper_results`` run) run
    before any model is loaded. Returns the path of the report (or of ``DIR`` with ``report=False``).

    ``per_prompt``: a runner of the per-prompt work elsewhere (``--shard I/N``, ``--ray``:
    :mod:`mechit.distributed.jobs`), called with a :class:`mechit.pipeline.prompt_work.PromptJob`
    first; it returns how many examples still miss records (in other shards), and while any
    do, ``compare`` returns ``DIR`` at once; else the comparison goes on and finds every record.

    >>> compare(out="runs/organism", only="heads")                  # doctest: +SKIP
    PosixPath('runs/organism/report.html')
    """
    options = options or Options()
    stages = parse_only(only)
    base_spec, tuned_spec, organism = check_specs(base, tuned)
    records, source = load_records(prompts, organism)
    if paper_results is not None:
        read_run(paper_results)  # refuse a folder that is not an attribution run before anything loads
    out = check_out_dir(Path(out))
    remove_stale_temporaries(out)  # left by a run killed while writing
    settings = {
        "base": base_spec,
        "tuned": tuned_spec,
        "base_weights": weights_fingerprint(base_spec),  # None until a hub model is cached: matches any
        "tuned_weights": weights_fingerprint(tuned_spec),
        "prompts_sha256": sha256(json.dumps(records, sort_keys=True, default=str)),
        "options": options.fingerprint(),
    }
    manifest = Manifest.open(out / MANIFEST, settings)
    todo = [s for s in stages if not manifest.done(s)]
    check_stage_inputs(todo, manifest, options)
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    bar = Progress(enabled=progress)
    try:
        torch.manual_seed(options.seed)
        arguments = {"base": base, "tuned": tuned, "prompts": prompts, "only": stages, "options": options,
                     "report": report, "trust_remote_code": trust_remote_code, **loading}
        if per_prompt is not None and _pending_elsewhere(per_prompt, manifest, records, todo, arguments):
            return out
        bar.stage("load")
        pair = _open_pair(base_spec, tuned_spec, todo, trust_remote_code=trust_remote_code, **loading)
        torch.set_num_threads(run_threads(pair.description("base")["parameters"], options.threads, threads_before))
        cfg = pair.weights("base").cfg
        bar.start([w for stage in todo for w in stage_plan(stage, len(records), cfg.n_layers, cfg.n_heads)] + [1])
        # the tables of stages an earlier run finished, read once for later stages, the summary and the report
        tables = read_tables(out, [t for s in STAGES if manifest.done(s) and s not in todo
                                   for t in manifest.finished[s]["tables"]])
        ctx = Context(pair=pair, records=records, options=options, out=out, organism=organism, tick=bar.tick,
                      advance=bar.advance, progress=progress, tables=tables)
        for stage in todo:
            bar.stage(stage)
            tables.update(_run_stage(stage, ctx, manifest))
        if paper_results is not None:
            tables.update(_paper_tables(paper_results, out, options.seed))
        bar.stage("report")
        elapsed = time.perf_counter() - started
        try:
            summary = {**build_summary(tables, manifest, pair, source=source, n_records=len(records),
                                       options=options, run_seconds=elapsed,
                                       paper_source=None if paper_results is None else str(paper_results)),
                       "residency": pair.residency}
            write_json(out / SUMMARY, summary)
            if report:
                path = write_report(out, tables, summary)
                bar.tick("report written")
                return path
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise disk_full_error(out, list(manifest.finished)) from error
            raise
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    return out


def _pending_elsewhere(per_prompt: Callable[[PromptJob], int], manifest: Manifest, records: list[dict],
                       todo: Sequence[str], arguments: dict) -> int:
    """Hand the per-prompt work of the stages ``todo`` to ``per_prompt``; return how many
    examples still miss records. The manifest is saved first, so every shard or worker checks
    the same settings, and the arguments (:func:`mechit.pipeline.prompt_work.save_arguments`),
    so ``mechit merge DIR`` can finish the run."""
    manifest.save()
    out = manifest.path.parent
    save_arguments(out, arguments)
    specs = {"base": manifest.settings["base"], "tuned": manifest.settings["tuned"]}
    loading = {k: v for k, v in arguments.items() if k not in ("base", "tuned", "prompts", "only", "options", "report")}
    return per_prompt(PromptJob(out, specs, loading, records, list(todo), arguments["options"]))


def check_stage_inputs(todo: Sequence[str], manifest: Manifest, options: Options) -> None:
    """Refuse, before any model loads, a run whose stages lack their inputs: the faithfulness
    stage needs the attribution stage (run now or finished in DIR) and a known ablation mode.

    >>> check_stage_inputs(["faithfulness"], Manifest("m.json", {}, {}), Options())
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --only faithfulness needs the attribution stage's tables: add attribution to --only
    """
    if "faithfulness" not in todo:
        return
    if "attribution" not in todo and not manifest.done("attribution"):
        raise InputError("--only faithfulness needs the attribution stage's tables: add attribution to --only")
    if options.ablation not in HOWS:
        raise InputError(f"ablation must be one of {', '.join(HOWS)}, not {options.ablation!r}")


def _run_stage(stage: str, ctx: Context, manifest: Manifest) -> dict[str, pd.DataFrame]:
    """Run ``stage``, write each of its tables once, record it as finished; return its tables."""
    t0 = time.perf_counter()
    try:
        tables = STAGE_RUNNERS[stage](ctx)
        for name, frame in tables.items():
            write_table(frame, ctx.out / f"{name}.parquet")
        manifest.finish(stage, tables=list(tables), seconds=round(time.perf_counter() - t0, 2))
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full_error(getattr(error, "filename", None) or ctx.out, list(manifest.finished)) from error
        raise
    return tables


def _paper_tables(run: str | Path, out: Path, seed: int) -> dict[str, pd.DataFrame]:
    """The statistics of the attribution run ``run`` (:func:`mechit.attribution.run_stats.run_stats`,
    the rows of ``mechit attribute-stats``), written to ``out/paper_attribution_stats.parquet``."""
    table = run_stats(run, seed=seed)
    write_table(table, out / f"{PAPER_TABLE}.parquet")
    return {PAPER_TABLE: table}


def _open_pair(base: str, tuned: str, todo: Sequence[str], **loading) -> ModelPair:
    """Both models loaded, or, when the device cannot hold both, a pair that keeps one
    resident (:func:`mechit.models.open_pair`); the ffn stage alone never runs a model forward.

    >>> _open_pair("organism-base", "organism-tuned", ["ffn"], device="cpu", max_memory=2**20).residency["mode"]
    'one at a time'
    """
    return open_pair(base, tuned, forward=any(stage != "ffn" for stage in todo), **loading)

