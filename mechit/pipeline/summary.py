"""``DIR/summary.json`` of ``mechit compare``: headline numbers, versions, models, seeds, timings.

>>> package_versions()["pandas"] == pd.__version__
True
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import pandas as pd

from mechit.models import ModelPair
from mechit.pipeline.context import STAGES, Options
from mechit.store import Manifest
from mechit.views.faithfulness import faithfulness_headline
from mechit.views.findings import head_settings, headline
from mechit.views.paper import paper_headline

PACKAGES = ("mechit", "torch", "transformer-lens", "transformers", "pandas", "numpy", "scipy")


def package_versions() -> dict[str, str | None]:
    """Python's and the installed versions of :data:`PACKAGES` (None where one is missing)."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def _describe(pair: ModelPair, name: str) -> dict:
    try:
        return pair.description(name)
    except Exception:  # noqa: BLE001 - describe is informative only
        return {}


def build_summary(tables: dict[str, pd.DataFrame], manifest: Manifest, pair: ModelPair, *, source: str,
                  n_records: int, options: Options, run_seconds: float, paper_source: str | None = None) -> dict:
    """The summary of a comparison from its tables (``{name: frame}``) and manifest;
    ``paper_source``: the ``--paper-results`` run whose rows are ``paper_tables``.

    >>> m = Manifest("m.json", {"base": "b", "tuned": "t", "prompts_sha256": "0"}, {})
    >>> s = build_summary({}, m, pair, source="none", n_records=0, options=Options(), run_seconds=1.0)
    >>> s["models"]["tuned"]["layers"], [f["holds"] for f in s["findings"]]
    (6, [None, None, None])
    """
    models = {name: {"spec": str(getattr(pair, f"{name}_spec")), **_describe(pair, name)} for name in pair.names}
    finished = {s: manifest.finished[s] for s in STAGES if manifest.done(s)}
    return {
        "models": models,
        "prompts": {"source": source, "n": n_records, "sha256": manifest.settings["prompts_sha256"]},
        "options": {**options.fingerprint(), **head_settings(tables)},
        "seeds": {"torch": options.seed, "generation": "greedy (deterministic)"},
        "versions": package_versions(),
        "stages": finished,
        "run_seconds": round(run_seconds, 1),
        "stage_seconds_total": round(sum(stage["seconds"] for stage in finished.values()), 1),
        **headline(tables),
        "faithfulness": faithfulness_headline(tables),
        "paper_tables": paper_headline(tables, paper_source),
    }
