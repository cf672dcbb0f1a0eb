"""The HTML report of a comparison: one self-contained, offline file built from ``DIR``'s tables.

:func:`write_report` reads ``DIR/summary.json`` and ``DIR/*.parquet`` (written by
:func:`mechit.pipeline.run.compare`) and writes ``DIR/report.html``. The page opens with the
three findings of the paper as measured on this pair (numbers and a plain verdict), then
the figures:

- ``fig-scores``: instruction-score distributions per prompt group, base vs tuned;
- ``fig-density``: example prompts coloured by importance density, both models;
- ``fig-shift``: the instruction-verb shift per layer group (table and chart);
- ``fig-angles``: principal angles between base and tuned FFN subspaces per layer;
- ``fig-labels``: concept label proportions per layer group, base vs tuned;
- ``fig-attention``: attention patterns of the heads that changed most (circuitsvis).

Nothing is fetched when the page opens: figures are base64 PNGs, the circuitsvis bundle is
inlined once from the installed package (its CDN import is never used), and no element
references an external URL.

>>> from mechit.views.report import write_report              # doctest: +SKIP
>>> write_report("runs/organism")                       # doctest: +SKIP
PosixPath('runs/organism/report.html')
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

MODEL_COLOURS = {"base": "#4c72b0", "tuned": "#dd8452"}
FIGURES = ("fig-scores", "fig-density", "fig-shift", "fig-angles", "fig-labels", "fig-attention")
# any src/href/import/url() that would make the browser fetch from the network
EXTERNAL_REF = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//)"""    # <img src="https://…">, <link href="//…">
    r"""|(?:\bimport\b[^;\n]*?["'](?:https?:)?//)"""          # import … from "https://unpkg.com/…"
    r"""|(?:url\(\s*["']?(?:https?:)?//)""",                    # CSS url(https://…)
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------- helpers


def _read_table(out: Path, name: str) -> pd.DataFrame | None:
    """``DIR/name.parquet`` or None when that stage did not run."""
    path = Path(out) / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _png_data_uri(fig) -> str:
    """A matplotlib figure as an inline ``data:image/png;base64,…`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _img(uri: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">'


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)}</p>'


def _circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle from the installed package, safe to inline in a ``<script>``.

    Defines the global ``CircuitsVis`` (classic script). The source-map comment is dropped
    so that no other file is ever requested.
    """
    import circuitsvis

    js = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")
    js = re.sub(r"//# sourceMappingURL=\S+", "", js)
    return js.replace("</script>", "<\\/script>")


def _circuitsvis_element(component: str, element_id: str, **props) -> str:
    """A ``<div>`` plus a script rendering circuitsvis ``component`` into it from the inlined bundle.

    ``props`` are converted exactly as circuitsvis does it (:func:`convert_props`).
    """
    from circuitsvis.utils.convert_props import convert_props

    return (
        f'<div id="{element_id}" class="cv"></div>\n'
        f"<script>CircuitsVis.render({json.dumps(element_id)}, CircuitsVis.{component}, "
        f"{convert_props(props)});</script>"
    )


# ---------------------------------------------------------------------------- figures


def _figure_scores(examples: pd.DataFrame | None) -> str:
    """Box plots (with points) of instruction scores per group, base next to tuned."""
    if examples is None or "instruction_score" not in examples:
        return _missing("The attribution stage has not run.")
    data = examples.dropna(subset=["instruction_score"])
    if data.empty:
        return _missing("No example has an instruction score.")
    plt = _plt()
    groups = sorted(data["group"].fillna("all").unique())
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 2), 3.6))
    rng = np.random.default_rng(0)
    for offset, model in ((-0.18, "base"), (0.18, "tuned")):
        values = [data[(data["group"].fillna("all") == g) & (data["model"] == model)]["instruction_score"].to_numpy()
                  for g in groups]
        positions = np.arange(len(groups)) + offset
        kept = [(p, v) for p, v in zip(positions, values) if len(v)]
        if not kept:
            continue
        box = ax.boxplot([v for _, v in kept], positions=[p for p, _ in kept], widths=0.3, patch_artist=True,
                         showfliers=False, manage_ticks=False)
        for patch in box["boxes"]:
            patch.set_facecolor(MODEL_COLOURS[model])
            patch.set_alpha(0.45)
        for p, v in kept:
            ax.scatter(p + rng.uniform(-0.07, 0.07, len(v)), v, s=7, color=MODEL_COLOURS[model], alpha=0.8, lw=0)
        ax.plot([], [], "s", color=MODEL_COLOURS[model], label=model)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel("instruction score")
    ax.legend(frameon=False)
    ax.set_title("Instruction score per prompt group")
    return _img(_png_data_uri(fig), "instruction score distributions per group, base vs tuned")


def _token_html(text: str, density: float, instruction: bool) -> str:
    alpha = 0.0 if not np.isfinite(density) else float(np.clip(density, 0.0, 1.0))
    shown = html.escape(text.replace("\n", "⏎")) or "&nbsp;"
    cls = ' class="instr"' if instruction else ""
    return f'<span{cls} style="background: rgba(214, 39, 40, {alpha:.3f})" title="density {density:.3f}">{shown}</span>'


def _tokens_line(part: pd.DataFrame, prompt: str | None) -> str:
    """One prompt's tokens, shown as their own characters of the prompt (offsets), gaps kept."""
    pieces, previous_end = [], None
    for row in part.itertuples():
        start, end = row.char_start, row.char_end
        if prompt is not None and pd.notna(start) and pd.notna(end):
            start, end = int(start), int(end)
            if previous_end is not None and start > previous_end:
                pieces.append(html.escape(prompt[previous_end:start].replace("\n", "⏎")))
            text, previous_end = prompt[start:end], end
        else:
            text = str(row.token)
        pieces.append(_token_html(text, float(row.density), bool(row.in_instruction)))
    return "".join(pieces)


def _figure_density(tokens: pd.DataFrame | None, examples: pd.DataFrame | None, prompts: pd.DataFrame | None = None,
                   n_examples: int = 3) -> str:
    """Prompt tokens coloured by importance density (red = high), one row per model, a few examples.

    The examples shown are those with the largest tuned-minus-base instruction score (ties by
    id). Instruction tokens are underlined. Tokens are shown as the prompt characters they
    cover (``prompts`` gives the texts; without it, the raw token strings).
    """
    if tokens is None or tokens.empty:
        return _missing("The attribution stage has not run.")
    texts = dict(zip(prompts["id"], prompts["prompt"])) if prompts is not None else {}
    ids = list(dict.fromkeys(tokens["id"]))
    if examples is not None and "instruction_score" in examples:
        wide = examples.pivot_table(index="id", columns="model", values="instruction_score", aggfunc="first")
        if {"base", "tuned"} <= set(wide.columns):
            gain = (wide["tuned"] - wide["base"]).dropna().sort_values(ascending=False, kind="stable")
            ids = [i for i in gain.index if i in set(ids)] or ids
    blocks = []
    for example_id in ids[:n_examples]:
        rows = []
        for model in ("base", "tuned"):
            part = tokens[(tokens["id"] == example_id) & (tokens["model"] == model)].sort_values("position")
            if part.empty:
                continue
            rows.append(f'<div class="tokens"><span class="model-tag {model}">{model}</span>'
                        f"{_tokens_line(part, texts.get(example_id))}</div>")
        label = f'<div class="example-id">{html.escape(str(example_id))}</div>'
        blocks.append(f'<div class="example">{label}{"".join(rows)}</div>')
    return "".join(blocks)


def _frame_html(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(index=False, border=0, classes="table", float_format=lambda x: f"{x:.{digits}g}", na_rep="–")


def _figure_shift(shift: pd.DataFrame | None) -> str:
    """The instruction-verb shift table per layer group, and a bar chart of its two means."""
    if shift is None or shift.empty:
        return _missing("The heads stage has not run.")
    parts = [_frame_html(shift)]
    cols = {"instruction_mean", "general_mean", "layer_group"}
    if cols <= set(shift.columns):
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 3.0))
        x = np.arange(len(shift))
        ax.bar(x - 0.2, shift["instruction_mean"], 0.4, label="instruction verbs", color="#c44e52")
        ax.bar(x + 0.2, shift["general_mean"], 0.4, label="general verbs", color="#8c8c8c")
        ax.set_xticks(x, [str(g) for g in shift["layer_group"]])
        ax.set_xlabel("layer group")
        ax.set_ylabel("fraction of heads tuned > base")
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.legend(frameon=False, fontsize=8)
        parts.insert(0, _img(_png_data_uri(fig), "instruction-verb shift per layer group"))
    return "".join(parts)


def _figure_angles(angles: pd.DataFrame | None) -> str:
    """Principal angles between base and tuned top-k FFN subspaces per layer
    (:func:`mechit.views.ffn.plot_principal_angles`)."""
    if angles is None or angles.empty:
        return _missing("The FFN stage has not run.")
    from mechit.views.ffn import plot_principal_angles

    return _img(_png_data_uri(plot_principal_angles(angles)), "principal angles per layer")


def _figure_labels(proportions: pd.DataFrame | None) -> str:
    """Concept label proportions per layer group, base vs tuned, task then linguistic level
    (:func:`mechit.views.ffn.plot_label_proportions`, the paper's Fig. 3 style)."""
    if proportions is None or proportions.empty:
        return _missing("The FFN stage has not run.")
    from mechit.ffn.labels import QUESTIONS
    from mechit.views.ffn import plot_label_proportions

    return "".join(
        _img(_png_data_uri(plot_label_proportions(proportions, question, labels=list(QUESTIONS[question]))),
             f"{question} label proportions per layer group")
        for question in ("task", "level") if question in set(proportions["question"])
    )


def _figure_attention(patterns: pd.DataFrame | None, tokens: pd.DataFrame | None) -> str:
    """circuitsvis attention views (base and tuned) of the heads that changed most."""
    if patterns is None or patterns.empty or tokens is None:
        return _missing("The heads stage has not run.")
    ordered = tokens.sort_values("position")
    token_list = [str(t) for t in ordered["text" if "text" in ordered else "token"]]
    n = len(token_list)
    heads = list(dict.fromkeys(zip(patterns["layer"], patterns["head"])))
    parts = []
    for model in ("base", "tuned"):
        part = patterns[patterns["model"] == model]
        stack, names = [], []
        for layer, head in heads:
            cell = part[(part["layer"] == layer) & (part["head"] == head)]
            matrix = np.zeros((n, n))
            matrix[cell["query"].to_numpy(), cell["key"].to_numpy()] = cell["weight"].to_numpy()
            stack.append(matrix.round(4))
            names.append(f"L{layer}H{head}")
        parts.append(
            f'<div class="cv-model"><h4>{model}</h4>'
            + _circuitsvis_element("AttentionHeads", f"cv-attention-{model}", attention=np.stack(stack),
                                  tokens=token_list, attentionHeadNames=names, maskUpperTri=True)
            + "</div>"
        )
    return '<div class="cv-pair">' + "".join(parts) + "</div>"


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
        f'stages run: {html.escape(", ".join(summary.get("stages", {})) or "none")} · '
        f'mechit {html.escape(str(versions.get("mechit")))}, torch {html.escape(str(versions.get("torch")))}, '
        f'transformer-lens {html.escape(str(versions.get("transformer-lens")))}</p>'
    )


def render_report(out: str | Path) -> str:
    """The report page for ``DIR`` as one HTML string (see the module docstring).

    >>> page = render_report("runs/organism")                # doctest: +SKIP
    >>> external_references(page)                            # doctest: +SKIP
    []
    """
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    examples = _read_table(out, "attribution_examples")
    bodies = {
        "fig-scores": _figure_scores(examples),
        "fig-density": _figure_density(_read_table(out, "attribution_tokens"), examples,
                                      _read_table(out, "attribution_prompts")),
        "fig-shift": _figure_shift(_read_table(out, "head_shift")),
        "fig-angles": _figure_angles(_read_table(out, "ffn_angles")),
        "fig-labels": _figure_labels(_read_table(out, "ffn_label_proportions")),
        "fig-attention": _figure_attention(_read_table(out, "attention_patterns"), _read_table(out, "attention_tokens")),
    }
    sections = []
    for fig_id in FIGURES:
        title, caption = CAPTIONS[fig_id]
        sections.append(
            f'<section class="figure" id="{fig_id}"><h3>{html.escape(title)}</h3>'
            f'<p class="caption">{html.escape(caption)}</p><div class="figure-body">{bodies[fig_id]}</div></section>'
        )
    tables = sorted(p.name for p in out.glob("*.parquet"))
    uses_cv = "CircuitsVis.render(" in bodies["fig-attention"]
    bundle = f"<script>{_circuitsvis_bundle()}</script>" if uses_cv else ""
    models = summary.get("models", {})
    base, tuned = (models.get(name, {}).get("spec", name) for name in ("base", "tuned"))
    title = f"mechit compare: {base} → {tuned}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>{bundle}</head><body>"
        f"<h1>{html.escape(title)}</h1>{_meta_html(summary)}"
        f'<section id="findings"><h2>What instruction tuning changed</h2>{_findings_html(summary)}</section>'
        f'<h2>Figures</h2>{"".join(sections)}'
        f'<h2>Tables</h2><p class="meta">In this directory: {html.escape(", ".join(tables) or "none")}, '
        "summary.json.</p></body></html>\n"
    )


def external_references(page: str) -> list[str]:
    """Places in ``page`` that would make a browser fetch something from the network.

    >>> external_references('<img src="https://x/y.png"> <a>https://ok-text</a>')
    ['src="https://']
    """
    return [m.group(0) for m in EXTERNAL_REF.finditer(page)]


def write_report(out: str | Path) -> Path:
    """Write ``DIR/report.html`` (atomically) and return its path.

    >>> write_report("runs/organism")                        # doctest: +SKIP
    PosixPath('runs/organism/report.html')
    """
    from mechit.store import atomic_path

    out = Path(out)
    page = render_report(out)
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
