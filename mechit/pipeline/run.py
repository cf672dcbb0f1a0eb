"""``mechit compare``: every analysis on a base/tuned pair, written as tables, a summary and a report.

Three stages run in order, each on both models with the same inputs (PAPER §1–3):

- ``attribution``: gradient × input attribution of every prompt for both models, the
  instruction scores and the tuned-vs-base statistics (:mod:`mechit.attribution.example`,
  :mod:`mechit.stats`);
- ``heads``: per-head QK word pairs for both models, the instruction-verb shift, the
  instruction attention mass and the attention patterns of the heads that changed most
  (:mod:`mechit.heads.pairs`, :mod:`mechit.heads.shift`, :mod:`mechit.heads.attention`);
- ``ffn``: principal-component concepts of every FFN layer for both models, their labels
  and the rotation between the two (:mod:`mechit.ffn.concepts`, :mod:`mechit.ffn.rotation`,
  :mod:`mechit.ffn.labels`).

Every table is written to ``DIR/<name>.parquet`` (atomic: a temporary file in ``DIR``
renamed into place). A finished stage is recorded in ``DIR/manifest.json`` and skipped on
a rerun; attribution examples resume one by one through :mod:`mechit.store`. At the end
``DIR/summary.json`` (headline numbers, versions, models, seeds) and ``DIR/report.html``
are (re)written from the tables.

>>> from mechit.pipeline.run import compare                      # doctest: +SKIP
>>> compare(out="runs/organism")                            # doctest: +SKIP
PosixPath('runs/organism/report.html')
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


from mechit.errors import InputError, MechitError
from mechit.pipeline.context import SMALL_MODEL_PARAMETERS, Context, Options, sha256
from mechit.store import atomic_path, remove_stale_temporaries, write_table

STAGES = ("attribution", "heads", "ffn")
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
REPORT = "report.html"
MIN_FREE_BYTES = 50 * 2**20  # refuse to start with less free space than this in DIR
ORGANISM_SPECS = ("organism-base", "organism-tuned")


# ---------------------------------------------------------------------------- files


def _disk_full_error(path: Path | str, done: Sequence[str]) -> MechitError:
    """The one-line error for a write that ran out of space."""
    kept = ", ".join(done) if done else "none"
    return MechitError(
        f"disk full while writing {path}: free some space and rerun the same command to resume "
        f"(finished stages kept: {kept})"
    )


def _write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy scalars and paths allowed)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Manifest:
    """``DIR/manifest.json``: what was compared and which stages are finished.

    A run into a directory that holds a different comparison (other models, prompts or
    options) is refused rather than mixed.

    >>> import tempfile                                       # doctest: +SKIP
    >>> m = Manifest.open(Path(tempfile.mkdtemp()), {"base": "a"})   # doctest: +SKIP
    >>> m.finish("heads", ["head_pairs"], 1.5); m.done("heads")      # doctest: +SKIP
    True
    """

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, out: Path, key: dict) -> Manifest:
        path = out / MANIFEST
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise InputError(f"{path}: unreadable manifest ({error}); delete it to start over") from error
            if data.get("key") != key:
                old = data.get("key", {})
                diff = sorted(k for k in set(key) | set(old) if old.get(k) != key.get(k))
                raise InputError(
                    f"{out} holds a comparison with other settings (differs in: {', '.join(diff)}); "
                    "use another --out or delete that directory"
                )
            return cls(path, data)
        return cls(path, {"key": key, "stages": {}})

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def finished(self) -> list[str]:
        return [s for s in STAGES if self.done(s)]

    def finish(self, stage: str, tables: Sequence[str], seconds: float) -> None:
        self.data["stages"][stage] = {"tables": list(tables), "seconds": round(seconds, 2)}
        _write_json(self.data, self.path)


# ---------------------------------------------------------------------------- checks


def _check_out_dir(out: Path) -> Path:
    """Create ``out`` if needed and make sure a file can be written there and space is left."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # named like atomic_path's temporaries, so a kill here leaves nothing the next run keeps
        with tempfile.NamedTemporaryFile(dir=out, prefix=f".write-test.mechit-{os.getpid()}-", suffix=".tmp"):
            pass
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _disk_full_error(out, []) from error
        reason = error.strerror or error
        raise InputError(f"output directory {out} is not writable ({reason}); choose another --out") from error
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise MechitError(
            f"disk full: only {free / 2**20:.1f} MiB free in {out}, mechit compare needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB; free some space or choose another --out"
        )
    return out


def check_specs(base: str | Path | None, tuned: str | Path | None) -> tuple[str, str, bool]:
    """Resolve the two specs (None, None = the organism pair); refuse the same model twice.

    Returns (base, tuned, is_organism).

    >>> check_specs(None, None)
    ('organism-base', 'organism-tuned', True)
    >>> check_specs("a/model", "a/model")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --base and --tuned are the same model (a/model); give a pre-trained model and its tuned version
    """
    if (base is None) != (tuned is None):
        raise InputError("give both --base and --tuned, or neither (the embedded organism pair)")
    if base is None:
        return ORGANISM_SPECS[0], ORGANISM_SPECS[1], True
    base, tuned = str(base), str(tuned)
    same = base == tuned
    if not same and Path(base).exists() and Path(tuned).exists():
        same = Path(base).resolve() == Path(tuned).resolve()
    if same:
        raise InputError(
            f"--base and --tuned are the same model ({base}); give a pre-trained model and its tuned version"
        )
    return base, tuned, (base, tuned) == ORGANISM_SPECS


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """Stage names from ``--only`` ("attribution,heads"), in run order; None = all.

    >>> parse_only("ffn, attribution")
    ['attribution', 'ffn']
    """
    if only is None:
        return list(STAGES)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if not names or unknown:
        what = f"unknown stage {unknown[0]!r}" if unknown else "no stage given"
        raise InputError(f"--only: {what}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def default_prompts_path() -> Path:
    """The built-in English instruction prompts (56 prompts, 8 task types, spans annotated).

    >>> default_prompts_path().name
    'english_prompts.jsonl'
    """
    return Path(__file__).parents[1] / "data" / "english_prompts.jsonl"


def _load_records(prompts: str | Path | None, organism: bool) -> tuple[list[dict], str]:
    """Prompt records (the JSONL schema) and where they came from; validated before any model loads."""
    if prompts is None and organism:
        from mechit.organism import held_out_prompts

        return [dict(r) for r in held_out_prompts()], "organism held-out prompts"
    path = default_prompts_path() if prompts is None else Path(prompts)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist")
    from mechit.data.prompts import read_prompts

    records = [asdict(r) for r in read_prompts(path, strict=True)]
    if not records:
        raise InputError(f"{path}: no prompts")
    return records, str(path)


# ---------------------------------------------------------------------------- running


class Progress:
    """One overall bar over the steps of all stages, with the stage name and an ETA.

    Each step has a weight (its expected cost, :func:`mechit.pipeline.stages.stage_plan`),
    so the ETA is not skewed by cheap steps; a long step can report partial progress with
    :meth:`advance`. Each analysis shows its own inner bar as well.
    """

    def __init__(self, enabled: bool = True):
        from tqdm.auto import tqdm

        self.weights: list[float] = []
        self.partial = 0.0  # progress already shown inside the current step
        self.lock = threading.Lock()
        self.bar = tqdm(total=0, desc="compare", unit="step", disable=not enabled, position=0,
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]")

    def start(self, weights: Sequence[float]) -> None:
        """Begin timing the planned steps (their weights in tick order); the ETA starts here."""
        self.weights = list(weights)
        self.bar.reset(total=sum(self.weights))

    def stage(self, name: str) -> None:
        self.bar.set_description(f"compare [{name}]")

    def advance(self, units: float) -> None:
        """Partial progress inside the current step, capped at the step's weight."""
        with self.lock:
            room = (self.weights[0] if self.weights else 0.0) - self.partial
            units = min(units, room)
            if units > 0:
                self.partial += units
                self.bar.update(units)

    def tick(self, label: str) -> None:
        """The current step is finished."""
        with self.lock:
            weight = self.weights.pop(0) if self.weights else 0.0
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(max(0.0, weight - self.partial))
            self.partial = 0.0

    def close(self) -> None:
        self.bar.close()


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
    **loading,
) -> Path:
    """Run the stages on a base/tuned pair and write tables, ``summary.json`` and ``report.html``.

    ``base``/``tuned``: model specs (see :func:`mechit.models.load_model`, which also takes
    ``loading``: device, dtype, device_map, max_memory); both None is the
    embedded organism pair. ``prompts``: a JSONL prompt file with instruction spans
    (default: the organism's held-out prompts, or the built-in English set for other
    pairs). Cheap checks (specs, prompt file, output directory, free space) run before any
    model is loaded. Returns the path of the report (or of ``DIR`` with ``report=False``).

    >>> compare(out="runs/organism", only="heads")                  # doctest: +SKIP
    PosixPath('runs/organism/report.html')
    """
    from mechit.pipeline.stages import STAGE_RUNNERS, stage_plan

    options = options or Options()
    stages = parse_only(only)
    base_spec, tuned_spec, organism = check_specs(base, tuned)
    records, source = _load_records(prompts, organism)
    out = _check_out_dir(Path(out))
    remove_stale_temporaries(out)  # left by a run killed while writing
    key = {
        "base": base_spec,
        "tuned": tuned_spec,
        "prompts_sha256": sha256(json.dumps(records, sort_keys=True, default=str)),
        "options": options.fingerprint(),
    }
    manifest = Manifest.open(out, key)
    todo = [s for s in stages if not manifest.done(s)]
    started = time.perf_counter()
    import torch

    from mechit.models.pair import load_pair

    threads_before = torch.get_num_threads()
    bar = Progress(enabled=progress)
    try:
        torch.manual_seed(options.seed)
        bar.stage("load")
        pair = load_pair(None if organism else base_spec, None if organism else tuned_spec,
                         trust_remote_code=trust_remote_code, **loading)
        torch.set_num_threads(_run_threads(pair.base, options.threads, threads_before))
        cfg = pair.base.cfg
        bar.start([w for stage in todo for w in stage_plan(stage, len(records), cfg.n_layers, cfg.n_heads)] + [1])
        ctx = Context(pair=pair, records=records, options=options, out=out, organism=organism, tick=bar.tick,
                      advance=bar.advance, progress=progress)
        for stage in todo:
            bar.stage(stage)
            t0 = time.perf_counter()
            try:
                tables = STAGE_RUNNERS[stage](ctx)
                for name, frame in tables.items():
                    write_table(frame, out / f"{name}.parquet")
                manifest.finish(stage, list(tables), time.perf_counter() - t0)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise _disk_full_error(getattr(error, "filename", None) or out, manifest.finished()) from error
                raise
        bar.stage("report")
        elapsed = time.perf_counter() - started
        try:
            summary = _build_summary(out, manifest, pair, source=source, n_records=len(records),
                                    options=options, run_seconds=elapsed)
            _write_json(summary, out / SUMMARY)
            if report:
                from mechit.views.report import write_report

                path = write_report(out)
                bar.tick("report written")
                return path
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise _disk_full_error(out, manifest.finished()) from error
            raise
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    return out


def _run_threads(model, threads: int | None, default: int) -> int:
    """Torch threads for the run: ``threads`` if given, 1 for a small model, else ``default``."""
    if threads is not None:
        return threads
    n_parameters = sum(p.numel() for p in model.parameters())
    return 1 if n_parameters < SMALL_MODEL_PARAMETERS else default


def _build_summary(
    out: Path, manifest: Manifest, pair: Any, *, source: str, n_records: int, options: Options, run_seconds: float
) -> dict:
    """``summary.json``: headline numbers from the tables, versions, models, seeds, timings."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from mechit.views.findings import headline

    versions = {"python": platform.python_version()}
    for package in ("mechit", "torch", "transformer-lens", "transformers", "pandas", "numpy", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    models = {}
    for name in ("base", "tuned"):
        model = getattr(pair, name)
        try:
            from mechit.arch.weights import describe

            info = describe(model)
        except Exception:  # describe is informative only
            info = {}
        models[name] = {"spec": str(getattr(pair, f"{name}_spec", manifest.data["key"][name])), **info}
    return {
        "models": models,
        "prompts": {"source": source, "n": n_records, "sha256": manifest.data["key"]["prompts_sha256"]},
        "options": options.fingerprint(),
        "seeds": {"torch": options.seed, "generation": "greedy (deterministic)"},
        "versions": versions,
        "stages": {s: manifest.data["stages"][s] for s in manifest.finished()},
        "run_seconds": round(run_seconds, 1),
        "stage_seconds_total": round(sum(manifest.data["stages"][s]["seconds"] for s in manifest.finished()), 1),
        **headline(out),
    }
