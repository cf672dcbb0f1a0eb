"""Instruction attention mass and the attention views."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mechit.errors import InputError
from mechit.heads.attention import attention_patterns, instruction_attention, pattern_table
from mechit.tokens import encode

RECORD = {"id": "r1", "group": "translate", "prompt": "Translate this text into french: the cat sat",
          "response": " le chat", "instruction_spans": [[0, 31]]}


def test_instruction_mass_equals_a_direct_sum_over_the_cached_pattern(tiny_llama):
    df = instruction_attention(tiny_llama, [RECORD], progress=False)
    assert len(df) == 2 * 4 and list(df["layer"].unique()) == [0, 1]
    enc = encode(tiny_llama.tokenizer, RECORD["prompt"], RECORD["response"])
    with torch.no_grad():
        _, cache = tiny_llama.run_with_cache(enc.input_ids[None])
    pattern = cache["blocks.1.attn.hook_pattern"][0]
    prompt_pos = enc.prompt_positions.tolist()
    instruction = [p for p, (s, e) in zip(prompt_pos, enc.prompt_offsets) if s < 31]
    queries = enc.response_positions.tolist()
    for head in range(4):
        mass = sum(float(pattern[head, q, instruction].sum()) for q in queries) / len(queries)
        prompt_mass = sum(float(pattern[head, q, prompt_pos].sum()) for q in queries) / len(queries)
        row = df[(df["layer"] == 1) & (df["head"] == head)].iloc[0]
        assert row["instruction_mass"] == pytest.approx(mass, abs=1e-6)
        assert row["prompt_mass"] == pytest.approx(prompt_mass, abs=1e-6)
        assert row["instruction_share"] == pytest.approx(mass / prompt_mass, abs=1e-6)
    assert row["n_instruction_tokens"] == len(instruction) and row["n_response_tokens"] == len(queries)


def test_whole_prompt_instruction_and_no_response(tiny_llama):
    whole = dict(RECORD, id="w", instruction_spans=[[0, len(RECORD["prompt"])]], response=None)
    none = dict(RECORD, id="n", instruction_spans=[])
    df = instruction_attention(tiny_llama, [whole, none], layers=[0], progress=False).set_index("id")
    assert (df.loc["w", "instruction_share"] - 1).abs().max() < 1e-6
    assert (df.loc["w", "n_response_tokens"] == 0).all()  # query: the last prompt position
    assert (df.loc["n", "instruction_mass"] == 0).all() and (df.loc["n", "prompt_mass"] > 0).all()


def test_bad_prompts(tiny_llama):
    with pytest.raises(InputError, match="no prompt records"):
        instruction_attention(tiny_llama, [], progress=False)
    with pytest.raises(InputError, match="'prompt' is missing or empty"):
        instruction_attention(tiny_llama, [{"id": "x", "prompt": ""}], progress=False)
    with pytest.raises(InputError, match="out of range"):
        instruction_attention(tiny_llama, [RECORD], layers=[5], progress=False)


def test_attention_view_shows_both_models(tiny_pair_dirs, tmp_path):
    import mechit.views as viz
    from mechit.models.pair import load_pair

    pair = load_pair(*map(str, tiny_pair_dirs))
    table = pair.run(pattern_table, "Translate this text", layers=[0, 1])
    tokens, base = attention_patterns(pair.base, "Translate this text", layers=[1])
    view = viz.attention(table, tokens, layers=[1], heads=[0, 2])
    page = view.save(tmp_path / "attn.html").read_text(encoding="utf-8")
    assert page.count("CircuitsVis.render(") == 2 and '"L1H0"' in page and '"L1H2"' in page and "L0H" not in page
    _, tuned = attention_patterns(pair.tuned, "Translate this text", layers=[1])
    assert base[1].shape == tuned[1].shape and not torch.allclose(base[1], tuned[1])


def test_pattern_table_is_the_causal_triangle_of_the_patterns(tiny_llama):
    """The table holds every weight on or below the diagonal, and nothing is lost above it
    (causal attention puts exactly zero there), so a view rebuilds the patterns from it."""
    tokens, patterns = attention_patterns(tiny_llama, "Translate this text", layers=[1])
    table = pattern_table(tiny_llama, "Translate this text", layers=[1], heads=[2])
    n = len(tokens)
    assert len(table) == n * (n + 1) // 2 and set(table["head"]) == {2} and set(table["layer"]) == {1}
    dense = torch.zeros(n, n)
    query, key, weight = (torch.tensor(table[c].to_numpy()) for c in ("query", "key", "weight"))
    dense[query, key] = weight
    assert torch.equal(dense, patterns[1][2])


def test_attention_view_refuses_tokens_of_another_prompt(tiny_llama):
    import mechit.views as viz

    table = pattern_table(tiny_llama, "Translate this text", layers=[0]).assign(model="tuned")
    with pytest.raises(InputError, match="only 2 tokens"):
        viz.attention(table, ["a", "b"])
    with pytest.raises(InputError, match="columns model, layer"):
        viz.attention(table.drop(columns="model"), ["a", "b"])


def test_head_pairs_table_aligns_both_models():
    import mechit.views as viz

    base = pd.DataFrame({"layer": 0, "head": 1, "dim": [1, 2, 1], "rank": 0, "word_a": ["a", "a", "c"],
                         "word_b": ["b", "b", "d"], "score": 1.0, "similarity": [0.5, 0.6, 0.9]})
    tuned = base.assign(head=[1, 1, 2])
    view = viz.head_pairs_table(base, tuned, layer=0, head=1)
    frame = view.frame
    assert frame["base_pair"].tolist() == ["a=b", "c=d"] and frame["base_n_dims"].tolist() == [2, 1]
    assert frame["tuned_pair"].iloc[0] == "a=b" and frame["tuned_pair"].isna().iloc[1]
    assert "a=b" in view._repr_html_()


def test_public_names_stay_functions_after_their_modules_are_imported():
    import mechit
    import mechit.heads.attention
    import mechit.views
    import mechit.views.heads

    assert mechit.instruction_attention is mechit.heads.attention.instruction_attention
    assert mechit.views.attention is mechit.views.heads.attention
