"""Prompt/response encoding, span -> mask, word grouping and word vectors on tiny tokenizers."""

from __future__ import annotations

import warnings

import pytest
import torch

import mechit.arch.weights as weight_views
from mechit.errors import InputError
from mechit.tokens import encode, group_words, span_mask, word_token_ids, word_vectors

PROMPT = "Translate the cat 🙂 into French: naïve dog"
RESPONSE = " le chat"
# Character positions in PROMPT: "Translate" 0-9, " the" 9-13, " cat" 13-17, " " 17, "🙂" 18,
# " into" 19-24, " French" 24-31, ":" 31, " naïve" 32-38, " dog" 38-42.


@pytest.fixture(scope="session")
def tokenizers(tiny_llama_dir, tiny_gpt2_dir, tiny_gemma_dir):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(path)
            for name, path in (("llama", tiny_llama_dir), ("gpt2", tiny_gpt2_dir), ("gemma", tiny_gemma_dir))}


def _masked(enc, spans):
    return [t for t, m in zip(enc.prompt_tokens, span_mask(enc, spans).tolist()) if m]


# ---------------------------------------------------------------- encode
@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma"])
def test_plain_encoding_covers_prompt_and_response(tokenizers, name):
    tok = tokenizers[name]
    enc = encode(tok, PROMPT, RESPONSE)
    assert enc.text == PROMPT + RESPONSE
    assert enc.input_ids[0].item() == tok.bos_token_id            # BOS first, as TransformerLens does
    assert 0 not in enc.prompt_positions.tolist()
    n, m = len(enc.prompt_positions), len(enc.response_positions)
    assert enc.prompt_positions.tolist() == list(range(1, 1 + n))
    assert enc.response_positions.tolist() == list(range(1 + n, 1 + n + m))
    assert len(enc.input_ids) == 1 + n + m
    # decoding the parts gives the texts back
    assert tok.decode(enc.input_ids[enc.response_positions]).strip() == RESPONSE.strip()
    assert tok.decode(enc.input_ids[enc.prompt_positions]).strip() == PROMPT
    # offsets are in the part's own coordinates and cover every character
    covered = set()
    for start, end in enc.prompt_offsets:
        covered.update(range(start, end))
    assert covered == set(range(len(PROMPT)))
    assert enc.response_offsets[0][0] == 0 and enc.response_offsets[-1][1] == len(RESPONSE)


def test_plain_encoding_equals_transformerlens_tokens(tiny_llama):
    enc = encode(tiny_llama, PROMPT, RESPONSE)  # a model is accepted for its tokenizer
    assert enc.input_ids.tolist() == tiny_llama.to_tokens(PROMPT + RESPONSE)[0].tolist()


def test_prepend_bos_can_be_switched_off(tokenizers):
    enc = encode(tokenizers["llama"], PROMPT, RESPONSE, prepend_bos=False)
    assert enc.input_ids[0].item() != tokenizers["llama"].bos_token_id
    assert enc.prompt_positions[0].item() == 0


@pytest.mark.parametrize("name, before, after", [
    ("llama", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    ("gemma", "<bos><start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"),
])
def test_chat_template_encoding(tokenizers, name, before, after):
    tok = tokenizers[name]
    enc = encode(tok, PROMPT, RESPONSE, chat_template=True)
    assert enc.text.startswith(before + PROMPT + after + RESPONSE)
    assert enc.prompt_start == len(before) and enc.response_start == len(before + PROMPT + after)
    assert enc.input_ids.tolist().count(tok.bos_token_id) == (1 if name == "gemma" else 0)  # no doubled BOS
    assert tok.decode(enc.input_ids[enc.prompt_positions]).strip() == PROMPT
    assert tok.decode(enc.input_ids[enc.response_positions]).strip() == RESPONSE.strip()
    # template tokens sit between prompt and response, and belong to neither
    between = enc.tokens[enc.prompt_positions[-1] + 1: enc.response_positions[0]]
    assert between[0] in ("<|im_end|>", "<end_of_turn>") and between[-1] == "<0x0A>"
    # the prompt tokenises as in the plain encoding, so masks agree
    plain = encode(tok, PROMPT, RESPONSE)
    assert plain.prompt_offsets[1:] == enc.prompt_offsets[-len(plain.prompt_offsets) + 1:]


def test_chat_template_without_response_adds_generation_prompt(tokenizers):
    enc = encode(tokenizers["llama"], PROMPT, chat_template=True)
    assert enc.text.endswith("<|im_start|>assistant\n") and len(enc.response_positions) == 0


def test_chat_template_finds_the_prompt_even_when_a_system_message_repeats_it(tokenizers):
    tok = tokenizers["llama"]
    original = tok.chat_template
    tok.chat_template = "{{ '<|im_start|>system\nSay: cat<|im_end|>\n' }}" + original
    try:
        enc = encode(tok, "cat", " yes", chat_template=True)
    finally:
        tok.chat_template = original
    assert enc.text[enc.prompt_start:enc.prompt_start + 3] == "cat"
    assert enc.prompt_start == enc.text.index("user\ncat") + len("user\n")


def test_chat_template_that_strips_the_content(tokenizers):
    tok = tokenizers["gemma"]
    original = tok.chat_template
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
                         "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}")
    try:
        enc = encode(tok, "  Translate the cat ", " le chat", chat_template=True)
    finally:
        tok.chat_template = original
    assert "user\nTranslate the cat<end_of_turn>" in enc.text
    assert tok.decode(enc.input_ids[enc.prompt_positions]) == "Translate the cat"
    assert enc.prompt_offsets[0] == (2, 4)                       # "Tr" in the unstripped prompt
    assert _masked(enc, [(2, 11)]) == ["Tr", "anslate"]
    assert enc.response_tokens == ["le", "▁ch", "at"] and enc.response_offsets[0] == (1, 3)
    assert "<end_of_turn>" not in enc.prompt_tokens + enc.response_tokens


def test_chat_template_missing(tokenizers):
    with pytest.raises(InputError, match="no chat template"):
        encode(tokenizers["gpt2"], PROMPT, RESPONSE, chat_template=True)


def test_token_straddling_prompt_and_response_counts_as_prompt(tokenizers):
    tok = tokenizers["gpt2"]
    with pytest.warns(UserWarning, match="straddles the prompt/response boundary"):
        enc = encode(tok, "the ca", "t sat")
    assert "Ġcat" in enc.prompt_tokens and enc.response_tokens == ["Ġsat"]
    assert enc.prompt_offsets[-1] == (3, 6)  # clipped to the prompt


def test_encode_rejects_bad_input(tokenizers):
    with pytest.raises(InputError, match="prompt is empty"):
        encode(tokenizers["llama"], "")
    with pytest.raises(InputError, match="must be strings"):
        encode(tokenizers["llama"], "hi", None)


# ---------------------------------------------------------------- span_mask
BYTES = ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]


@pytest.mark.parametrize("name, chat, translate_tokens, emoji_tokens", [
    ("llama", False, ["▁T", "r", "anslate"], BYTES),
    ("llama", True, ["T", "r", "anslate"], BYTES),  # no "▁" after the template's newline
    ("gpt2", False, ["T", "r", "anslate"], ["ð", "Ł", "Ļ", "Ĥ"]),
    ("gemma", False, ["Tr", "anslate"], BYTES),
    ("gemma", True, ["Tr", "anslate"], BYTES),
])
def test_span_mask_by_hand(tokenizers, name, chat, translate_tokens, emoji_tokens):
    tok = tokenizers[name]
    enc = encode(tok, PROMPT, RESPONSE, chat_template=chat)
    assert _masked(enc, [(0, 9)]) == translate_tokens
    # a span that ends with the space before "the" does not take "▁the"/"Ġthe"
    assert _masked(enc, [(0, 10)]) == translate_tokens
    # byte-fallback / byte-level pieces of one character are in or out together
    assert _masked(enc, [(18, 19)]) == emoji_tokens
    # straddlers: a span inside "anslate" takes the whole token; one ending inside "cat" takes it
    assert _masked(enc, [(3, 5)]) == ["anslate"]
    assert _masked(enc, [(10, 15)])[-1].endswith("cat")
    space = {"llama": "▁", "gpt2": "Ġ", "gemma": "▁"}[name]
    assert _masked(enc, [(10, 15)]) == [space + "the", space + "cat"]
    # several spans; everything; nothing
    assert _masked(enc, [(0, 9), (38, 42)]) == translate_tokens + [space + "dog"]
    assert span_mask(enc, [(0, len(PROMPT))]).all()
    assert not span_mask(enc, []).any()
    assert len(span_mask(enc, [])) == len(enc.prompt_positions)


@pytest.mark.parametrize("spans, message", [
    ([(5, 2)], r"span 0 \[5, 2\) is empty or reversed"),
    ([(5, 5)], r"span 0 \[5, 5\) is empty or reversed"),
    ([(0, 3), (-1, 4)], r"span 1 \[-1, 4\) lies outside the prompt \(characters 0..42\)"),
    ([(0, 9), (20, 30), (8, 12)], r"spans \[0, 9\) and \[8, 12\) overlap"),
    ([(40, 43)], "outside the prompt"),
    ([(1, 2, 3)], "expected a pair"),
    ([("a", 3)], "must be integers"),
    ([(True, 3)], "must be integers"),
])
def test_bad_spans(tokenizers, spans, message):
    enc = encode(tokenizers["llama"], PROMPT, RESPONSE)
    with pytest.raises(InputError, match=message):
        span_mask(enc, spans)


# ---------------------------------------------------------------- group_words
@pytest.mark.parametrize("tokens, groups", [
    (["<s>", "▁T", "r", "anslate", "▁the", "▁cat"], [[0], [1, 2, 3], [4], [5]]),
    (["T", "r", "anslate", "Ġthe", "Ġ", "ð", "Ł", "Ļ", "Ĥ", "Ġdog"], [[0, 1, 2], [3], [4, 5, 6, 7, 8], [9]]),
    (["<|im_start|>", "us", "er", "<0x0A>", "T", "r", "▁x"], [[0], [1, 2], [3], [4, 5], [6]]),
    (["Hello", "Ċ", "world", "!", "Ġok"], [[0], [1], [2, 3], [4]]),
    (["▁n", "a", "<0xC3>", "<0xAF>", "ve"], [[0, 1, 2, 3, 4]]),
    ([], []),
])
def test_group_words(tokens, groups):
    assert group_words(tokens) == groups


def test_group_words_on_an_encoding(tokenizers):
    enc = encode(tokenizers["gemma"], PROMPT, RESPONSE)
    words = ["".join(enc.tokens[i] for i in g) for g in group_words(enc.tokens)]
    assert words[:4] == ["<bos>", "Translate", "▁the", "▁cat"]
    assert words[-2:] == ["▁le", "▁chat"]


# ---------------------------------------------------------------- word vectors
def test_word_vectors_by_hand(tiny_llama):
    tok = tiny_llama.tokenizer
    words = ["cat", "translate", "zebra", "cat"]
    wv = word_vectors(tiny_llama, words)
    assert wv.words == ["cat", "translate", "zebra"] and wv.dropped == []
    W_E = tiny_llama.W_E.detach()
    # " zebra" -> ["▁", "z", "e", "b", "ra"]: the bare marker is dropped, the rest averaged
    pieces = [["▁cat"], ["▁translate"], ["z", "e", "b", "ra"]]
    for word, ids, vector, expected in zip(wv.words, wv.token_ids, wv.vectors, pieces):
        assert tok.convert_ids_to_tokens(ids) == expected
        torch.testing.assert_close(vector, W_E[ids].mean(0))
    out = word_vectors(tiny_llama, words, side="output")
    U = weight_views.unembedding(tiny_llama)
    torch.testing.assert_close(out.vectors[2], U[:, wv.token_ids[2]].mean(1))


@pytest.mark.parametrize("name, word, marker", [("llama", "42", "▁"), ("gpt2", "🙂", "Ġ")])
def test_bare_leading_space_marker_is_dropped(tokenizers, name, word, marker):
    tok = tokenizers[name]
    pieces = tok.convert_ids_to_tokens(tok(" " + word, add_special_tokens=False)["input_ids"])
    assert pieces[0] == marker  # the convention produces a bare marker here ...
    kept, ids, dropped = word_token_ids(tok, [word])
    assert kept == [word] and tok.convert_ids_to_tokens(ids[0]) == pieces[1:]  # ... which is dropped


def test_gpt2_leading_space_convention(tokenizers):
    tok = tokenizers["gpt2"]
    _, ids, _ = word_token_ids(tok, ["cat"])
    assert tok.convert_ids_to_tokens(ids[0]) == ["Ġcat"]


class _StubTokenizer:
    """Maps each character to an id; "?" is unknown; a space is a bare marker."""

    unk_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1 if c == " " else (0 if c == "?" else ord(c)) for c in t] for t in texts]}

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return "▁" if ids == 1 else chr(ids)
        return [self.convert_ids_to_tokens(i) for i in ids]


def test_degenerate_words_are_dropped_and_counted():
    kept, ids, dropped = word_token_ids(_StubTokenizer(), ["ab", "a?", "b"])
    assert kept == ["ab", "b"] and ids == [[97, 98], [98]] and dropped == ["a?"]


def test_word_vectors_warns_about_dropped_words(tiny_llama, monkeypatch):
    from mechit import tokens

    monkeypatch.setattr(tokens, "word_token_ids", lambda tok, words: (["cat"], [[5]], ["x", "y"]))
    with pytest.warns(UserWarning, match="2 of 3 words have no usable sub-tokens"):
        wv = word_vectors(tiny_llama, ["cat", "x", "y"])
    assert wv.dropped == ["x", "y"] and wv.vectors.shape == (1, 64)


@pytest.mark.parametrize("words, message", [
    ([], "the list is empty"),
    (["cat", ""], "entry 1 is empty"),
    (["cat", "  "], "entry 1 is empty"),
    (["cat", 3], "entry 1 is int 3, not a string"),
    ("cat", "single string"),
])
def test_word_vectors_rejects_bad_word_lists(tiny_llama, words, message):
    with pytest.raises(InputError, match=message):
        word_vectors(tiny_llama, words)


def test_word_vectors_bad_side(tiny_llama):
    with pytest.raises(InputError, match="side must be"):
        word_vectors(tiny_llama, ["cat"], side="middle")


def test_no_warning_for_clean_words(tiny_llama):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        word_vectors(tiny_llama, ["cat", "dog"])
