"""Do the gradient view and the causal view agree on a pair? ``summary.json``'s ``faithfulness``
object and the report's section, from the faithfulness stage's tables.

The faithfulness stage of ``mechit compare`` (:func:`mechit.pipeline.stages.run_faithfulness`)
ablates each prompt's instruction and context (:func:`mechit.attribution.ablation.ablate`)
and sets the result beside gradient × input (:mod:`mechit.attribution.agreement`).
:func:`faithfulness_headline` turns its ``faithfulness_summary`` table into one object per
model; :func:`faithfulness_verdict` says whether the two views agree, from that object and
the attribution headline (Finding 1's instruction scores); :func:`faithfulness_section` is
the report's section. The views agree on a pair when

- **between the models**, both rank them the same way: the sign of the tuned − base
  difference in mean instruction score (gradient) equals the sign of the tuned − base
  difference in mean instruction ablation effect (causal);
- **within each model**, example by example: the Spearman correlation between instruction
  score and instruction effect is positive with p < :data:`~mechit.views.findings.ALPHA`,
  and both views name the same part (instruction or context) as the one that matters more
  in at least half of the examples.

>>> table = pd.DataFrame({"model": ["base", "tuned"], "how": "remove", "n": 18, "instruction_effect": [-1.27, 4.66],
...                       "context_effect": [-0.55, 11.1], "rank_correlation": [0.1, 0.62],
...                       "rank_p_value": [0.7, 0.006], "same_part_share": [0.4, 0.8]})
>>> faith = faithfulness_headline({"faithfulness_summary": table})
>>> faith["tuned"]["instruction_effect"], sorted(faith["tuned"])
(4.66, ['context_effect', 'how', 'instruction_effect', 'n', 'rank_correlation', 'rank_p_value', 'same_part_share'])
>>> agree, verdict = faithfulness_verdict(faith, {"base_mean": 0.385, "tuned_mean": 0.226})
>>> agree, verdict.split(":")[0]
(False, 'The gradient view and the causal view disagree on this pair')
"""

from __future__ import annotations

import html
import math

import pandas as pd

from mechit.views.findings import ALPHA, fmt, plain

KEYS = ("how", "n", "instruction_effect", "context_effect", "rank_correlation", "rank_p_value", "same_part_share")
MODELS = ("base", "tuned")


def faithfulness_headline(tables: dict[str, pd.DataFrame]) -> dict:
    """``{model: {how, n, instruction_effect, context_effect, rank_correlation, rank_p_value,
    same_part_share}}`` from the ``faithfulness_summary`` table ({} when the stage has not
    run; a number that is undefined is None). The module docstring has an example."""
    table = tables.get("faithfulness_summary")
    if table is None:
        return {}
    return {str(row["model"]): {key: plain(row[key]) for key in KEYS} for _, row in table.iterrows()}


def _sign(x: float | None) -> int | None:
    return None if x is None or not math.isfinite(x) else (x > 0) - (x < 0)


def _within_model_agrees(numbers: dict) -> bool:
    rho, p, share = numbers.get("rank_correlation"), numbers.get("rank_p_value"), numbers.get("same_part_share")
    return (rho is not None and p is not None and share is not None
            and rho > 0 and p < ALPHA and share >= 0.5)


def faithfulness_verdict(faithfulness: dict, attribution: dict) -> tuple[bool | None, str]:
    """(agree, plain verdict): whether the gradient view and the causal view agree on the pair
    (module docstring), from :func:`faithfulness_headline`'s object and the attribution
    headline (``base_mean``, ``tuned_mean``: mean instruction scores). ``agree`` is None when
    a view is missing. The module docstring has an example.

    >>> numbers = {"n": 9, "rank_correlation": 0.8, "rank_p_value": 0.01, "same_part_share": 0.9}
    >>> faithfulness_verdict({"base": {**numbers, "instruction_effect": 1.0},
    ...                       "tuned": {**numbers, "instruction_effect": 3.0}}, {"base_mean": 0.2, "tuned_mean": 0.5})
    (True, 'The gradient view and the causal view agree on this pair.')
    """
    if not all(m in faithfulness for m in MODELS) or not {"base_mean", "tuned_mean"} <= set(attribution):
        return None, "Not measured."
    effects = [faithfulness[m]["instruction_effect"] for m in MODELS]
    causal = _sign(None if None in effects else effects[1] - effects[0])
    gradient = _sign(attribution["tuned_mean"] - attribution["base_mean"])
    same_direction = causal is not None and causal == gradient and causal != 0
    weak = [m for m in MODELS if not _within_model_agrees(faithfulness[m])]
    if same_direction and not weak:
        return True, "The gradient view and the causal view agree on this pair."
    if not same_direction:
        reason = ("they rank the two models differently" if causal and gradient
                  else "one of them sees no difference between the two models")
        if weak:
            reason += f", and they do not agree example by example in the {' and '.join(weak)} model"
        return False, f"The gradient view and the causal view disagree on this pair: {reason}."
    return False, ("The gradient view and the causal view agree on which model depends more on the instruction, "
                   f"but not example by example in the {' and '.join(weak)} model.")


def _measured(faithfulness: dict, attribution: dict) -> str:
    """The figures of the section, in one paragraph of plain text."""
    base, tuned = (faithfulness[m] for m in MODELS)
    how = base.get("how") or tuned.get("how")
    def nats(x) -> str:
        return "n/a" if x is None else f"{x:+.3g}"

    text = (f"Ablating the instruction (how = {how}) changes log p(response) by {nats(base['instruction_effect'])} "
            f"nats for base and {nats(tuned['instruction_effect'])} for tuned (mean drop over examples; positive: the "
            f"model needs the part); ablating the context by {nats(base['context_effect'])} and "
            f"{nats(tuned['context_effect'])}. ")
    if {"base_mean", "tuned_mean"} <= set(attribution) and None not in (base["instruction_effect"],
                                                                        tuned["instruction_effect"]):
        text += (f"Tuned − base: instruction effect {nats(tuned['instruction_effect'] - base['instruction_effect'])} "
                 f"nats (causal view), instruction score {attribution['tuned_mean'] - attribution['base_mean']:+.3g} "
                 "(gradient view). ")
    for name, numbers in zip(MODELS, (base, tuned)):
        share = numbers["same_part_share"]
        text += (f"{name.capitalize()}: Spearman ρ between instruction score and instruction effect "
                 f"{fmt(numbers['rank_correlation'])} (p = {fmt(numbers['rank_p_value'])}, n = {numbers['n']}); "
                 f"both views name the same part as the one that matters more in "
                 f"{'n/a' if share is None else f'{share:.0%}'} of examples. ")
    return text.strip()


def faithfulness_section(summary: dict) -> str:
    """The report's section: the figures and whether the two views agree (HTML).

    >>> "has not run" in faithfulness_section({})
    True
    """
    faithfulness = summary.get("faithfulness") or {}
    attribution = (summary.get("headline") or {}).get("attribution") or {}
    if not all(m in faithfulness for m in MODELS):
        body = '<p class="missing">The faithfulness stage has not run.</p>'
    else:
        agree, verdict = faithfulness_verdict(faithfulness, attribution)
        cls = {True: "holds-yes", False: "holds-no"}.get(agree, "holds-na")
        body = (f'<p class="{cls}">{html.escape(_measured(faithfulness, attribution))} '
                f'<span class="verdict">{html.escape(verdict)}</span></p>')
    return ('<section id="faithfulness"><h2>Does gradient × input see what the model does?</h2>'
            '<p class="caption">Causal check of Finding 1: each part of the prompt is ablated and the drop in the '
            "log-probability of the same response is set beside the gradient view's instruction score.</p>"
            f"{body}</section>")
