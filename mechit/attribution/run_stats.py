"""The statistics of a dataset attribution run: tuned vs base and followed vs not followed, per group.

A run directory is what ``mechit attribute`` or ``mechit attribute-import`` writes
(``attribution_run.json`` and ``attribution_examples.parquet|csv``). :func:`run_stats`
computes the rows ``mechit attribute-stats`` writes to ``attribution_stats`` and that
``mechit compare --paper-results DIR`` shows as the paper's Tables 1–2
(:mod:`mechit.stats`: the paper's Welch test and the paired test, per group).

>>> from mechit.attribution.dataset import MANIFEST
>>> from mechit.store import write_json
>>> _ = write_json(f"run/{MANIFEST}", {"settings": {"models": ["b", "t"]}, "finished": {}})
>>> pd.DataFrame({"id": ["x", "y"] * 2, "group": "g", "model": ["b", "b", "t", "t"],
...               "instruction_score": [0.1, 0.2, 0.4, 0.6]}).to_parquet("run/attribution_examples.parquet")
>>> run_stats("run", n_boot=100)[["comparison", "group", "n", "mean_a", "mean_b"]]
      comparison  group  n  mean_a  mean_b
0  tuned_vs_base  (all)  2     0.5    0.15
1  tuned_vs_base      g  2     0.5    0.15
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mechit.attribution.dataset import MANIFEST
from mechit.errors import InputError, first_line
from mechit.stats import COLUMNS, N_BOOT, compare_labels, compare_models
from mechit.store import Manifest

CSV_TEXT_COLUMNS = dict.fromkeys(["id", "group", "label", "model", "response", "status", "error"], str)
STATS_COLUMNS = ("id", "model", "group", "instruction_score")  # what the statistics read of attribution_examples


def read_run(out: str | Path) -> tuple[dict, pd.DataFrame, str]:
    """(settings, examples, table suffix) of the attribution run in ``out``; one-line InputError
    when ``out`` is not a finished run.

    >>> read_run("nowhere")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: nowhere: no attribution_run.json; run `mechit attribute --out nowhere` first
    """
    out = Path(out)
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise InputError(f"{out}: no {MANIFEST}; run `mechit attribute --out {out}` first")
    settings = Manifest.load(manifest).settings
    models = settings.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise InputError(f"{manifest}: its settings name no models (list of specs); not a `mechit attribute` "
                         "run, or a damaged one: rerun `mechit attribute` with the same arguments")
    suffix = ".csv" if (out / "attribution_examples.csv").is_file() else ".parquet"
    table = out / f"attribution_examples{suffix}"
    if not table.is_file():
        raise InputError(f"{table}: missing; rerun `mechit attribute` with the same arguments to finish the run")
    try:  # text columns stay text: an id or group named "NA" or "null" is not missing
        examples = (pd.read_csv(table, keep_default_na=False, na_values=[""], dtype=CSV_TEXT_COLUMNS)
                    if suffix == ".csv" else pd.read_parquet(table))
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{table}: unreadable table ({type(error).__name__}: {first_line(error)}); rerun "
                         "`mechit attribute` (or `mechit merge`) with the same arguments to write it again") from None
    lacking = [c for c in STATS_COLUMNS if c not in examples]
    if lacking:
        raise InputError(f"{table}: lacks the column(s) {', '.join(lacking)}; rerun `mechit attribute` (or "
                         "`mechit merge`) with the same arguments to write it again")
    return settings, examples, suffix


def run_stats(out: str | Path, base: str | None = None, tuned: str | None = None, *, n_boot: int = N_BOOT,
              seed: int = 0) -> pd.DataFrame:
    """The statistics rows (:data:`mechit.stats.COLUMNS`) of the run in ``out``
    (:func:`read_run`, then :func:`stats_of_run`).

    >>> run_stats("run", "b", "x")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --tuned 'x' is not a model of this run (b, t)
    """
    settings, examples, _ = read_run(out)
    return stats_of_run(settings, examples, base, tuned, n_boot=n_boot, seed=seed)


def stats_of_run(settings: dict, examples: pd.DataFrame, base: str | None = None, tuned: str | None = None, *,
                 n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """The statistics rows of a run read by :func:`read_run`: ``tuned`` vs ``base`` per group
    (default: the run's second model vs its first), then followed vs not followed per model
    and group where examples carry labels. Empty (with the columns) when there is nothing to
    compare. The module docstring has an example.
    """
    models = settings["models"]
    base = base or (models[0] if len(models) >= 2 else None)
    tuned = tuned or (models[1] if len(models) >= 2 else None)
    for name, spec in (("--base", base), ("--tuned", tuned)):
        if spec is not None and spec not in models:
            raise InputError(f"{name} {spec!r} is not a model of this run ({', '.join(models)})")
    frames = [compare_labels(examples, n_boot=n_boot, seed=seed)]
    if base and tuned:
        frames.insert(0, compare_models(examples, base, tuned, n_boot=n_boot, seed=seed))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
