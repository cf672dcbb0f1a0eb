"""The HTML report of a comparison: one self-contained, offline file built from its tables.

:func:`write_report` takes the tables of a comparison (``{name: DataFrame}``) and its
summary (``summary.json``, :mod:`mechit.pipeline.summary`), as
:func:`mechit.pipeline.compare` makes them, and writes ``DIR/report.html``; it never runs
a model. The page opens with the three findings of the paper as measured on this pair
(numbers and a plain verdict), then whether gradient × input agrees with causal ablation
(:mod:`mechit.views.faithfulness`), then the paper's Tables 1–2 from the authors' released
results when given (:mod:`mechit.views.paper`), then the figures (:mod:`mechit.views.figures`):

- ``fig-scores``: instruction-score distributions per prompt group, base vs tuned;
- ``fig-density``: example prompts coloured by importance density, both models;
- ``fig-shift``: the instruction-verb shift per layer group (table and chart);
- ``fig-angles``: principal angles between base and tuned FFN subspaces per layer;
- ``fig-labels``: concept label proportions per layer group, base vs tuned;
- ``fig-attention``: attention patterns of the heads that changed most (circuitsvis).

Nothing is fetched when the page opens: figures are base64 PNGs, the circuitsvis bundle is
inlined once from the installed package (its CDN import is never used), and no element
references an external URL.

>>> from mechit.views.findings import headline
>>> tables = {"head_shift": pd.DataFrame({"layer_group": [0], "instruction_mean": [0.6], "general_mean": [0.4]})}
>>> write_report("runs", tables, headline(tables))
PosixPath('runs/report.html')
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from mechit.store import atomic_path
from mechit.views.faithfulness import faithfulness_section
from mechit.views.figures import FIGURES, circuitsvis_bundle, figures
from mechit.views.paper import paper_section

# any src/href/import/url() that would make the browser fetch from the network
EXTERNAL_REF = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//)"""    # <img src="https://…">, <link href="//…">
    r"""|(?:\bimport\b[^;\n]*?["'](?:https?:)?//)"""          # import … from "https://unpkg.com/…"
    r"""|(?:url\(\s*["']?(?:https?:)?//)""",                    # CSS url(https://…)
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------- page

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.9em; }
#findings li { margin-bottom: 0.8em; } .verdict { font-weight: 600; }
.holds-yes .verdict { color: #1a7f37; } .holds-no .verdict { color: #b3261e; } .holds-na .verdict { color: #666; }
section.figure { margin: 1.5em 0; min-height: 40px; } section.figure img { max-width: 100%; }
.missing { color: #777; font-style: italic; border: 1px dashed #bbb; padding: 0.6em; }
table.table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.table td, table.table th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; }
.example { margin: 0.8em 0; } .example-id { font-size: 0.8em; color: #666; }
.tokens { font-family: ui-monospace, monospace; font-size: 0.85em; margin: 2px 0; white-space: pre-wrap;
          overflow-wrap: anywhere; }
.tokens span.instr { text-decoration: underline; text-decoration-color: #1f77b4; text-decoration-thickness: 2px; }
.model-tag { display: inline-block; width: 4.5em; font-weight: 600; font-family: system-ui, sans-serif; }
.model-tag.base { color: #4c72b0; } .model-tag.tuned { color: #dd8452; }
.cv-pair { display: flex; flex-wrap: wrap; gap: 1em; } .cv-model { flex: 1 1 480px; min-width: 0; }
.caption { color: #444; font-size: 0.9em; }
"""

CAPTIONS = {
    "fig-scores": ("Instruction scores per group",
                   "Each point is one prompt; the score is the importance density on instruction tokens "
                   "(PAPER §1.5). Higher means the response depends more on the instruction."),
    "fig-density": ("Importance density on example prompts",
                    "Prompt tokens coloured by importance density (red = high) for the examples whose score rose "
                    "most; instruction tokens are underlined."),
    "fig-shift": ("Instruction-verb shift per layer group",
                  "Per verb, the fraction of heads whose knowledge mentions it more often after tuning (ties "
                  "ignored); instruction verbs vs general verbs, Welch t-test (PAPER §2.6)."),
    "fig-angles": ("Principal angles per layer",
                   "Angles between the top-k principal subspaces of base and tuned W_out: 0° = same concepts, "
                   "90° = orthogonal."),
    "fig-labels": ("Concept label proportions per layer group",
                   "Share of FFN concepts labelled with each task and linguistic level (offline labeller)."),
    "fig-attention": ("Attention of the heads that changed most",
                      "Attention patterns on one prompt for the heads with the largest change score; click a head "
                      "to enlarge it."),
}


def _findings_html(summary: dict) -> str:
    items = []
    for finding in summary.get("findings", []):
        holds = finding.get("holds")
        cls = {True: "holds-yes", False: "holds-no"}.get(holds, "holds-na")
        items.append(
            f'<li class="finding {cls}" data-finding="{html.escape(finding["key"])}">'
            f'<b>{html.escape(finding["title"])}.</b> '
            f'{html.escape(finding["measured"])} <span class="verdict">{html.escape(finding["verdict"])}</span></li>'
        )
    if not items:
        items.append("<li>No stage has run yet.</li>")
    return "<ol>" + "".join(items) + "</ol>"


def _meta_html(summary: dict) -> str:
    models = summary.get("models", {})
    base = models.get("base", {}).get("spec", "?")
    tuned = models.get("tuned", {}).get("spec", "?")
    prompts = summary.get("prompts", {})
    versions = summary.get("versions", {})
    return (
        f'<p class="meta">base <code>{html.escape(str(base))}</code> · '
        f'tuned <code>{html.escape(str(tuned))}</code> · '
        f'{prompts.get("n", "?")} prompts ({html.escape(str(prompts.get("source", "?")))}) · '
        + (html.escape("head words: {n_words}, K = {top_k} ({top_k_rule}), similarity {similarity_id} · ".format(**summary["options"]["heads"])) if "heads" in summary.get("options", {}) else "") +
        f'stages run: {html.escape(", ".join(summary.get("stages", {})) or "none")} · '
        f'mechit {html.escape(str(versions.get("mechit")))}, torch {html.escape(str(versions.get("torch")))}, '
        f'transformer-lens {html.escape(str(versions.get("transformer-lens")))}</p>'
    )


def render_report(tables: dict[str, pd.DataFrame], summary: dict) -> str:
    """The report page of a comparison as one HTML string (see the module docstring).

    >>> page = render_report({}, {"findings": []})
    >>> "No stage has run yet." in page, external_references(page)
    (True, [])
    """
    bodies = figures(tables)
    sections = []
    for fig_id in FIGURES:
        title, caption = CAPTIONS[fig_id]
        sections.append(
            f'<section class="figure" id="{fig_id}"><h3>{html.escape(title)}</h3>'
            f'<p class="caption">{html.escape(caption)}</p><div class="figure-body">{bodies[fig_id]}</div></section>'
        )
    names = sorted(f"{name}.parquet" for name in tables)
    uses_cv = "CircuitsVis.render(" in bodies["fig-attention"]
    bundle = f"<script>{circuitsvis_bundle()}</script>" if uses_cv else ""
    models = summary.get("models", {})
    base, tuned = (models.get(name, {}).get("spec", name) for name in ("base", "tuned"))
    title = f"mechit compare: {base} → {tuned}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>{bundle}</head><body>"
        f"<h1>{html.escape(title)}</h1>{_meta_html(summary)}"
        f'<section id="findings"><h2>What instruction tuning changed</h2>{_findings_html(summary)}</section>'
        f"{faithfulness_section(summary)}"
        f"{paper_section(summary)}"
        f'<h2>Figures</h2>{"".join(sections)}'
        f'<h2>Tables</h2><p class="meta">In this directory: {html.escape(", ".join(names) or "none")}, '
        "summary.json.</p></body></html>\n"
    )


def external_references(page: str) -> list[str]:
    """Places in ``page`` that would make a browser fetch something from the network.

    >>> external_references('<img src="https://x/y.png"> <a>https://ok-text</a>')
    ['src="https://']
    """
    return [m.group(0) for m in EXTERNAL_REF.finditer(page)]


def write_report(out: str | Path, tables: dict[str, pd.DataFrame], summary: dict) -> Path:
    """Write ``DIR/report.html`` (atomically) from a comparison's tables and summary; return its path.

    The module docstring has an example.
    """
    path = Path(out) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(tables, summary), encoding="utf-8")
    return path
