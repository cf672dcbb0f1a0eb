"""The figures of the comparison report, each a function of frames returning an HTML fragment.

Every ``figure_*`` takes the tables that ``mechit compare`` makes (None when their stage
has not run, which gives a "not run" note) and never runs a model. Plots are matplotlib
figures inlined as base64 PNGs; the attention view is circuitsvis, rendered from the
bundle that :func:`circuitsvis_bundle` inlines once per page. :func:`figures` makes all of
them from a ``{name: DataFrame}`` dict, keyed by the ids of :data:`FIGURES`.

>>> examples = pd.DataFrame({"id": ["a", "a", "b", "b"], "group": "g", "model": ["base", "tuned"] * 2,
...                          "instruction_score": [0.2, 0.5, 0.3, 0.6]})
>>> figure_scores(examples).startswith('<img alt="instruction score distributions')
True
>>> figure_shift(None)
'<p class="missing">The heads stage has not run.</p>'
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import circuitsvis
import numpy as np
import pandas as pd
from circuitsvis.utils.convert_props import convert_props
from matplotlib.figure import Figure

from mechit.ffn.labels import QUESTIONS
from mechit.views.ffn import plot_label_proportions, plot_principal_angles

MODEL_COLOURS = {"base": "#4c72b0", "tuned": "#dd8452"}
FIGURES = ("fig-scores", "fig-density", "fig-shift", "fig-angles", "fig-labels", "fig-attention")


def _png_data_uri(fig) -> str:
    """A matplotlib figure as an inline ``data:image/png;base64,…`` URI (a pyplot figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    if fig.canvas.manager is not None:  # made through pyplot (mechit.views.ffn): release it
        import matplotlib.pyplot as plt  # only here: a pyplot figure already imported it

        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">'


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)}</p>'


def circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle from the installed package, safe to inline in a ``<script>``.

    Defines the global ``CircuitsVis`` (classic script). The source-map comment is dropped
    so that no other file is ever requested.

    >>> "CircuitsVis" in circuitsvis_bundle() and "sourceMappingURL" not in circuitsvis_bundle()
    True
    """
    js = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")
    js = re.sub(r"//# sourceMappingURL=\S+", "", js)
    return js.replace("</script>", "<\\/script>")


def _circuitsvis_element(component: str, element_id: str, **props) -> str:
    """A ``<div>`` plus a script rendering circuitsvis ``component`` into it from the inlined bundle.

    ``props`` are converted exactly as circuitsvis does it (:func:`convert_props`).
    """
    return (
        f'<div id="{element_id}" class="cv"></div>\n'
        f"<script>CircuitsVis.render({json.dumps(element_id)}, CircuitsVis.{component}, "
        f"{convert_props(props)});</script>"
    )


def figure_scores(examples: pd.DataFrame | None) -> str:
    """Box plots (with points) of instruction scores per group, base next to tuned."""
    if examples is None or "instruction_score" not in examples:
        return _missing("The attribution stage has not run.")
    data = examples.dropna(subset=["instruction_score"])
    if data.empty:
        return _missing("No example has an instruction score.")
    groups = sorted(data["group"].fillna("all").unique())
    fig = Figure(figsize=(max(5.0, 1.3 * len(groups) + 2), 3.6))
    ax = fig.subplots()
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
    """One prompt's tokens, shown as their own characters of the prompt (offsets), gaps kept.

    A character split over several tokens (an emoji as four byte pieces, which share its
    range) is drawn once, by the first of them; the others draw nothing.

    >>> part = pd.DataFrame({"token": ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "▁hi"], "char_start": [0, 0, 0, 0, 1],
    ...                      "char_end": [1, 1, 1, 1, 4], "density": 0.5, "in_instruction": False})
    >>> line = _tokens_line(part, "😀 hi")
    >>> line.count("😀"), line.count("<span")
    (1, 2)
    >>> overlapping = part.iloc[3:].assign(char_start=[0, 1], char_end=[2, 3])
    >>> [piece.split(">")[1] for piece in _tokens_line(overlapping, "abc").split("</span>")[:2]]
    ['ab', 'c']
    """
    pieces, previous_end = [], None
    for row in part.itertuples():
        start, end = row.char_start, row.char_end
        if prompt is not None and pd.notna(start) and pd.notna(end):
            start, end = int(start), int(end)
            if previous_end is not None and start > previous_end:
                pieces.append(html.escape(prompt[previous_end:start].replace("\n", "⏎")))
            if previous_end is not None and end <= previous_end:
                continue  # its characters are drawn already
            start = start if previous_end is None else max(start, previous_end)
            text, previous_end = prompt[start:end], end
        else:
            text = str(row.token)
        pieces.append(_token_html(text, float(row.density), bool(row.in_instruction)))
    return "".join(pieces)


def figure_density(tokens: pd.DataFrame | None, examples: pd.DataFrame | None, prompts: pd.DataFrame | None = None,
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


def figure_shift(shift: pd.DataFrame | None) -> str:
    """The instruction-verb shift table per layer group, and a bar chart of its two means."""
    if shift is None or shift.empty:
        return _missing("The heads stage has not run.")
    parts = [_frame_html(shift)]
    cols = {"instruction_mean", "general_mean", "layer_group"}
    if cols <= set(shift.columns):
        fig = Figure(figsize=(5.5, 3.0))
        ax = fig.subplots()
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


def figure_angles(angles: pd.DataFrame | None) -> str:
    """Principal angles between base and tuned top-k FFN subspaces per layer
    (:func:`mechit.views.ffn.plot_principal_angles`)."""
    if angles is None or angles.empty:
        return _missing("The FFN stage has not run.")
    return _img(_png_data_uri(plot_principal_angles(angles)), "principal angles per layer")


def figure_labels(proportions: pd.DataFrame | None) -> str:
    """Concept label proportions per layer group, base vs tuned, task then linguistic level, mean
    ± std over labelling seeds (:func:`mechit.views.ffn.plot_label_proportions`, the paper's Figure 3 layout)."""
    if proportions is None or proportions.empty:
        return _missing("The FFN stage has not run.")
    n_seeds = int(proportions["n_seeds"].max())
    return f"<p>Bars: mean over {n_seeds} labelling seed(s); whiskers: std across seeds.</p>" + "".join(
        _img(_png_data_uri(plot_label_proportions(proportions, question, labels=list(QUESTIONS[question]))),
             f"{question} label proportions per layer group")
        for question in ("task", "level") if question in set(proportions["question"])
    )


def figure_attention(patterns: pd.DataFrame | None, tokens: pd.DataFrame | None) -> str:
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


def figures(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The HTML body of every figure of :data:`FIGURES` from the tables of a comparison.

    >>> sorted(figures({})) == sorted(FIGURES)
    True
    """
    get = tables.get
    examples = get("attribution_examples")
    return {
        "fig-scores": figure_scores(examples),
        "fig-density": figure_density(get("attribution_tokens"), examples, get("attribution_prompts")),
        "fig-shift": figure_shift(get("head_shift")),
        "fig-angles": figure_angles(get("ffn_angles")),
        "fig-labels": figure_labels(get("ffn_label_proportions")),
        "fig-attention": figure_attention(get("attention_patterns"), get("attention_tokens")),
    }
