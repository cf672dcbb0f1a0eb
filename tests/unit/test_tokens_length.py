"""Lengths are checked in characters before tokenising, then tokenised with truncation at
the context window (issue 20 §4)."""

from __future__ import annotations

import pytest

from mechit.errors import InputError
from mechit.tokens import encode, longest_token_chars


@pytest.fixture
def tok(tiny_llama):
    return tiny_llama.tokenizer


def test_longest_token_bounds_characters_per_token(tok):
    """Every token of a long mixed text covers at most longest_token_chars characters."""
    text = "The cat sat on the mat, 12345 times; naïve café 😀 ok.\n" * 20
    enc = encode(tok, text)
    assert max(end - start for start, end in enc.offsets) <= longest_token_chars(tok)


def test_too_many_characters_never_reach_the_tokenizer(tok, monkeypatch):
    calls = []
    monkeypatch.setattr(type(tok), "__call__", lambda self, *a, **k: calls.append(k))
    with pytest.raises(InputError, match=r"are 1,000,000 characters, more than a context window of 256 tokens"):
        encode(tok, "x" * 1_000_000, max_tokens=256)
    assert calls == []


def test_truncated_at_the_window(tok, monkeypatch):
    text = "cat " * 150  # under the character bound of 64 tokens, over 64 tokens
    assert len(text) <= 64 * longest_token_chars(tok) and len(encode(tok, text).input_ids) > 64
    seen = []
    real = type(tok).__call__

    def spy(self, *args, **kwargs):
        seen.append((kwargs.get("truncation"), kwargs.get("max_length")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    with pytest.raises(InputError, match="more than 64 tokens, longer than the model's context window of 64"):
        encode(tok, text, max_tokens=64)
    assert seen == [(True, 65)]


def test_within_the_window_unchanged(tok):
    plain = encode(tok, "Translate: the cat", " le chat")
    windowed = encode(tok, "Translate: the cat", " le chat", max_tokens=len(plain.input_ids))
    assert windowed.input_ids.tolist() == plain.input_ids.tolist() and windowed.offsets == plain.offsets
    assert windowed.prompt_offsets == plain.prompt_offsets and windowed.response_offsets == plain.response_offsets
