"""summary.json's faithfulness object and the report's verdict on whether the two views agree."""

import json
import math

import pandas as pd

from mechit.views.faithfulness import faithfulness_headline, faithfulness_section, faithfulness_verdict

AGREE = {"n": 20, "rank_correlation": 0.6, "rank_p_value": 0.005, "same_part_share": 0.75, "how": "remove",
         "context_effect": 1.0}


def _models(base_effect, tuned_effect, **tuned):
    return {"base": {**AGREE, "instruction_effect": base_effect},
            "tuned": {**AGREE, "instruction_effect": tuned_effect, **tuned}}


def test_headline_is_one_json_object_per_model_with_undefined_numbers_as_null():
    table = pd.DataFrame({"model": ["base", "tuned"], "how": "mean", "n": [2, 9], "instruction_effect": [0.5, 2.0],
                          "context_effect": [1.0, 3.0], "rank_correlation": [math.nan, 0.4],
                          "rank_p_value": [math.nan, 0.2], "same_part_share": [1.0, 0.5]})
    head = faithfulness_headline({"faithfulness_summary": table})
    assert json.loads(json.dumps(head, allow_nan=False)) == head
    assert head["base"]["rank_correlation"] is None and head["base"]["n"] == 2
    assert head["tuned"] == {"how": "mean", "n": 9, "instruction_effect": 2.0, "context_effect": 3.0,
                             "rank_correlation": 0.4, "rank_p_value": 0.2, "same_part_share": 0.5}
    assert faithfulness_headline({}) == {}


def test_verdict_agree_disagree_and_partly():
    scores = {"base_mean": 0.3, "tuned_mean": 0.5}
    assert faithfulness_verdict(_models(1.0, 4.0), scores)[0] is True
    agree, text = faithfulness_verdict(_models(4.0, 1.0), scores)  # causal: tuned depends less
    assert agree is False and "rank the two models differently" in text and "example by example" not in text
    agree, text = faithfulness_verdict(_models(1.0, 4.0, rank_p_value=0.2), scores)
    assert agree is False and text.endswith("but not example by example in the tuned model.")
    agree, text = faithfulness_verdict(_models(1.0, 4.0, same_part_share=0.25), scores)
    assert agree is False and "tuned model" in text
    agree, text = faithfulness_verdict(_models(1.0, 4.0, rank_correlation=-0.6), {"base_mean": 0.5, "tuned_mean": 0.3})
    assert agree is False and "rank the two models differently, and they do not agree example by example" in text
    agree, text = faithfulness_verdict(_models(1.0, 1.0), scores)
    assert agree is False and "one of them sees no difference between the two models" in text
    assert faithfulness_verdict({}, scores) == (None, "Not measured.")


def test_section_states_the_figures():
    summary = {"faithfulness": _models(-1.27, 4.66), "headline": {"attribution": {"base_mean": 0.385,
                                                                                 "tuned_mean": 0.226}}}
    section = faithfulness_section(summary)
    assert "by -1.27 nats for base and +4.66 for tuned" in section
    assert "instruction effect +5.93 nats (causal view), instruction score -0.159 (gradient view)" in section
    assert "ρ between instruction score and instruction effect 0.6 (p = 0.005, n = 20)" in section
    assert "in 75% of examples" in section and "disagree on this pair" in section and "holds-no" in section
