"""Memory guard (issue 8 §6): a long example under a small memory budget is processed in
chunks that each fit the budget (with the same values as one big chunk), or, when even
one gradient product needs more than the budget, refused with a clear message naming the
example; the run goes on with the other examples instead of being killed by the OOM killer.

The budget is ``--max-memory MB`` (alias of ``--memory-budget-mb``) on ``mechit attribute``
and ``memory_budget`` (bytes) on :func:`mechit.attribute`.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

LONG_PROMPT = "Summarize this text: " + "the cat sat on the mat and the dog sat on the cat " * 7
RESPONSE = "the cat and the dog sat on the mat " * 3
MEDIUM_PROMPT = "Summarize this text: " + "the cat sat on the mat " * 4


@pytest.fixture
def chunks(monkeypatch):
    """The chunk sizes :func:`chunk_size` hands out during a call."""
    import mechit.attribution_grad as grad

    seen = []
    original = grad.chunk_size

    def spy(model, seq_len, count, memory_budget=grad.DEFAULT_MEMORY_BUDGET):
        size = original(model, seq_len, count, memory_budget)
        seen.append((seq_len, count, size, memory_budget))
        return size

    monkeypatch.setattr(grad, "chunk_size", spy)
    return seen


@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_small_budget_is_chunked_with_the_same_values(tiny_llama, chunks, method):
    from mechit import attribute
    from mechit.attribution_grad import product_bytes

    big = attribute(tiny_llama, MEDIUM_PROMPT, RESPONSE, instruction_spans=[(0, 19)], method=method,
                    memory_budget=2**34)
    seq = len(big.input_ids)
    count = len(big.response_tokens) if method == "reverse" else len(big.prompt_tokens)
    assert chunks[-1][2] == count  # one chunk
    budget = 3 * product_bytes(tiny_llama, seq)
    small = attribute(tiny_llama, MEDIUM_PROMPT, RESPONSE, instruction_spans=[(0, 19)], method=method,
                      memory_budget=budget)
    _, _, size, _ = chunks[-1]
    assert size <= 3 and size * product_bytes(tiny_llama, seq) <= budget
    assert torch.allclose(small.raw, big.raw, rtol=1e-5, atol=1e-7 * float(big.raw.abs().max()))
    assert small.score == pytest.approx(big.score, rel=1e-5)


def test_budget_below_one_product_refuses_the_example(tiny_llama):
    from mechit import attribute
    from mechit.attribution_grad import product_bytes
    from mechit.errors import InputError

    seq = len(attribute(tiny_llama, "Say hi to the cat", "hi cat").input_ids)
    tight = product_bytes(tiny_llama, seq) + 1  # enough for the short example
    attribute(tiny_llama, "Say hi to the cat", "hi cat", memory_budget=tight)
    with pytest.raises(InputError, match="(?i)memory"):
        attribute(tiny_llama, LONG_PROMPT, RESPONSE, memory_budget=tight)


def test_cli_max_memory_refuses_long_example_and_processes_the_rest(tiny_llama_dir, tmp_path, capsys):
    from mechit.cli import main

    prompts = tmp_path / "p.jsonl"
    records = [{"id": "short", "prompt": "Say hi to the cat", "response": "hi cat", "instruction_spans": [[0, 6]]},
               {"id": "long", "prompt": LONG_PROMPT, "response": RESPONSE, "instruction_spans": [[0, 19]]}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    # 1 MB: one product of the ~130-token example needs ~1.7 MB on the tiny model, the short one ~0.2 MB
    code = main(["attribute", "--model", str(tiny_llama_dir), "--prompts", str(prompts), "--out", str(out),
                 "--max-memory", "1"])
    stderr = capsys.readouterr().err
    examples = pd.read_parquet(out / "attribution_examples.parquet").set_index("id")
    assert pd.isna(examples.loc["short", "error"]) and examples.loc["short", "instruction_score"] > 0
    message = examples.loc["long", "error"]
    assert isinstance(message, str) and "p.jsonl:2" in message and "'long'" in message
    assert "memory" in message.lower() and "--max-memory" in message
    assert code != 0 and "Traceback" not in stderr
