"""Property tests (issue 8 §5), with hypothesis.

1. Character spans -> token masks, on random text, for each tokenizer style of the fixtures
   (SentencePiece-like Llama "▁" with byte fallback, GPT-2 byte-level "Ġ", Gemma "▁" via a
   normalizer), plain and through the chat template. The documented rule (mechit/tokens.py):
   a prompt token is in the instruction when its characters, *leading whitespace excluded*,
   overlap a span. The reference here works on sets of character positions, not intervals.
2. sparsify / density / score invariants (mechit/attribution/scores.py, PAPER §1.3-1.5).

On "the score is monotone in the mask" (issue 8): false in general. The score is
``S(M) = sum_{i in M} d_i / log2(2 + |M|)``; adding a token of density 0 to a mask with
S > 0 lowers it (``d = [1, 0]``: S({0}) = 1/log2 3 = 0.631 > S({0, 1}) = 1/2). What holds,
and is tested: adding token j to M (|M| = k) never lowers the score **iff**
``d_j >= S(M) * log2((3 + k) / (2 + k))``; in particular adding a token at least as dense
as the mean density of M never lowers it, and the score is monotone in the densities for a
fixed mask.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechit.attribution.scores import density, instruction_score, rescale, sparsify

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MATH_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

# ---------------------------------------------------------------------------- spans -> masks

ALPHABET = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz") + list("TCAE") + [" "] * 6
                           + list(".,:;!?'\"-()") + ["\n", "\t", "  ", "é", "ß", "中", "🙂", "7", "42"])
WORDS = st.sampled_from("translate explain summarize the cat sat on mat please this text into french "
                        "answer question story about dog".split())
TEXT = st.lists(st.one_of(WORDS.map(lambda w: w + " "), ALPHABET), min_size=1, max_size=40).map("".join) \
    .filter(lambda s: s.strip() != "")


@st.composite
def text_and_spans(draw):
    text = draw(TEXT)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6, unique=True)))
    pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    spans = [(a, b) for a, b in pairs if draw(st.booleans()) or a < b]
    return text, spans


@pytest.fixture(scope="module")
def tokenizers(tiny_dirs):
    from transformers import AutoTokenizer

    return {family: AutoTokenizer.from_pretrained(tiny_dirs(family)) for family in ("llama", "gpt2", "gemma")}


def reference_mask(prompt: str, offsets, spans) -> list[bool]:
    """Token in <=> one of its characters, leading whitespace excluded, is a span character."""
    inside = {c for a, b in spans for c in range(a, b)}
    mask = []
    for start, end in offsets:
        piece = prompt[start:end]
        lead = len(piece) - len(piece.lstrip()) if piece.strip() else 0
        mask.append(any(c in inside for c in range(start + lead, end)))
    return mask


CASES = [("llama", False), ("llama", True), ("gpt2", False), ("gemma", False), ("gemma", True)]


@pytest.mark.parametrize("family, chat", CASES, ids=[f"{f}{'-chat' if c else ''}" for f, c in CASES])
@SETTINGS
@given(data=text_and_spans())
def test_span_mask_matches_rule(tokenizers, family, chat, data):
    from mechit.tokens import encode, span_mask

    prompt, spans = data
    enc = encode(tokenizers[family], prompt, "", chat_template=chat)
    n = len(enc.prompt_positions)
    assert len(enc.prompt_offsets) == n > 0
    # offsets lie in the prompt, in order, and together cover every non-space character
    covered = set()
    for (start, end), (next_start, _) in zip(enc.prompt_offsets, enc.prompt_offsets[1:] + [(len(prompt), 0)]):
        assert 0 <= start <= end <= len(prompt) and start <= next_start
        covered.update(range(start, end))
    missing = [i for i, ch in enumerate(prompt) if not ch.isspace() and i not in covered]
    assert not missing, (prompt, enc.prompt_offsets)
    mask = span_mask(enc, spans)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert mask.tolist() == reference_mask(prompt, enc.prompt_offsets, spans)
    # every non-space span character lies in a masked token
    for a, b in spans:
        for c in range(a, b):
            if not prompt[c].isspace():
                assert any(m and s <= c < e for m, (s, e) in zip(mask.tolist(), enc.prompt_offsets))
    # union of spans -> union of masks; the whole prompt -> every token with a visible character
    if len(spans) >= 2:
        parts = [span_mask(enc, [s]) for s in spans]
        assert torch.equal(mask, torch.stack(parts).any(0))
    everything = span_mask(enc, [(0, len(prompt))])
    assert all(everything[i] for i, (s, e) in enumerate(enc.prompt_offsets) if prompt[s:e].strip())
    assert not span_mask(enc, []).any()
    check_against_token_text(tokenizers[family], enc, spans)


def visible(text: str) -> str:
    return "".join(text.split())


def check_against_token_text(tokenizer, enc, spans) -> None:
    """Checks that read the token ids themselves (decoded), not the offsets that span_mask and
    the reference share: a mask that sits on the wrong tokens (shifted by one, or missing
    the last instruction token) while its offsets look right fails here."""
    ids = enc.input_ids.tolist()
    positions = enc.prompt_positions.tolist()
    special = set(tokenizer.all_special_ids)
    decode = lambda chosen: tokenizer.decode([ids[i] for i in chosen], skip_special_tokens=False)  # noqa: E731
    # the prompt positions hold exactly the prompt: no template token, nothing missing
    assert not special & {ids[i] for i in positions}, [enc.tokens[i] for i in positions]
    assert visible(decode(positions)) == visible(enc.prompt), (decode(positions), enc.prompt)
    # each whole token decodes to the prompt text at its offsets
    for i, (s, e) in zip(positions, enc.prompt_offsets):
        piece = decode([i])
        # skipped: a byte-fallback piece of a character (decodes only with its neighbours), and
        # a whitespace-only piece (Llama's "▁" dummy prefix carries the offsets of the next character)
        if "\ufffd" not in piece and visible(piece):
            assert visible(piece) == visible(enc.prompt[s:e]), (enc.tokens[i], piece, enc.prompt[s:e])
    # the tokens a span masks, decoded, hold the span's visible text, and no token before or after the run is masked
    for span in spans:
        mask = span_mask_of(enc, span)
        chosen = [i for i, m in zip(positions, mask) if m]
        wanted = visible(enc.prompt[span[0]:span[1]])
        if wanted:
            assert wanted in visible(decode(chosen)), (span, wanted, [enc.tokens[i] for i in chosen])
        if chosen:
            assert chosen == list(range(chosen[0], chosen[-1] + 1))  # one contiguous run


def span_mask_of(enc, span) -> list[bool]:
    from mechit.tokens import span_mask

    return span_mask(enc, [span]).tolist()


# ---------------------------------------------------------------- sparsify / density / score

def matrices(max_n=6, max_m=8):
    return st.tuples(st.integers(1, max_n), st.integers(1, max_m), st.integers(0, 2**31 - 1)).map(_matrix)


def _matrix(args):
    n, m, seed = args
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, m, generator=g) * 10 ** torch.randint(-3, 3, (1,), generator=g).float()
    raw[torch.rand(n, m, generator=g) < 0.2] = 0.0  # exact zeros and zero columns happen
    return raw


LB = st.tuples(st.integers(1, 20), st.integers(0, 19)).filter(lambda t: t[1] < t[0])


@MATH_SETTINGS
@given(raw=matrices(), lb=LB)
def test_sparsify_levels(raw, lb):
    L, b = lb
    levels = sparsify(raw, L=L, b=b)
    assert levels.shape == raw.shape
    values = set(levels.unique().tolist())
    assert values <= {0.0} | {float(v) for v in range(b + 1, L + 1)}
    for j in range(raw.shape[1]):
        column = raw[:, j]
        if column.max() > 0:  # the largest positive entry gets the top level
            assert levels[column.argmax(), j] == L
        else:
            assert not levels[:, j].any()
    assert not levels[raw <= 0].any()  # negative or zero attributions never count
    # the level of an entry only grows with the entry within its column
    for j in range(raw.shape[1]):
        order = raw[:, j].argsort()
        assert (levels[order, j].diff() >= 0).all()


@MATH_SETTINGS
@given(raw=matrices(), k=st.integers(-20, 20))
def test_sparsify_exactly_scale_invariant_for_powers_of_two(raw, k):
    c = 2.0 ** k
    assert torch.equal(sparsify(raw * c), sparsify(raw))


@MATH_SETTINGS
@given(raw=matrices(), c=st.floats(1e-3, 1e3))
def test_sparsify_scale_invariant_away_from_level_edges(raw, c):
    """A -> cA gives the same levels, except where x * L sits on an integer within rounding."""
    L = 10
    positive = raw.clamp(min=0).double()
    ratio = positive / positive.amax(0, keepdim=True).clamp(min=1e-300)
    near_edge = ((ratio * L - (ratio * L).round()).abs() < 1e-4) & (ratio > 0)
    same = sparsify(raw * c, L=L) == sparsify(raw, L=L)
    assert same[~near_edge].all()


@MATH_SETTINGS
@given(raw=matrices(max_m=12), p=st.sampled_from([2.0, 3.0, 4.0, 8.0]))
def test_density_bounds(raw, p):
    """Nonzero rows: 1 <= d_i <= k_i^(1 - 1/p) <= m^(1 - 1/p) (m^(3/4) for p = 4); zero rows: 0."""
    levels = sparsify(raw)
    d = density(levels, p=p)
    m = levels.shape[1]
    for i in range(levels.shape[0]):
        k = int((levels[i] > 0).sum())
        if k == 0:
            assert d[i] == 0
        else:
            # eps = 1e-7 in the denominator, levels >= 8: at most 2e-8 relative below 1
            assert 1 - 1e-6 <= float(d[i]) <= k ** (1 - 1 / p) * (1 + 1e-6) <= m ** (1 - 1 / p) * (1 + 1e-6)


@MATH_SETTINGS
@given(raw=matrices(), c=st.floats(1e-3, 1e3))
def test_density_and_rescale_scale_invariant(raw, c):
    levels = sparsify(raw)
    d = density(levels)
    assert torch.allclose(density(levels * c, eps=0.0), density(levels, eps=0.0), rtol=1e-5, equal_nan=True)
    assert torch.allclose(rescale(d * c), rescale(d), rtol=1e-5, atol=1e-7)
    r = rescale(d)
    assert r.numel() == 0 or r.max() in (0.0, 1.0)


DENSITIES = st.lists(st.floats(0, 1), min_size=1, max_size=12).map(lambda v: torch.tensor(v, dtype=torch.float64))


@st.composite
def density_and_mask(draw, spare=False):
    """(densities, mask); with ``spare``, also an index outside the mask."""
    d = draw(DENSITIES)
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=len(d), max_size=len(d))))
    if not spare:
        return d, mask
    j = draw(st.integers(0, len(d) - 1))
    mask[j] = False
    return d, mask, j


def test_score_not_monotone_in_mask_in_general():
    """The counterexample to issue 8's wording (see the module docstring)."""
    d = torch.tensor([1.0, 0.0])
    assert instruction_score(d, torch.tensor([True, False])) == pytest.approx(1 / math.log2(3))
    assert instruction_score(d, torch.tensor([True, True])) == pytest.approx(0.5)


@MATH_SETTINGS
@given(data=density_and_mask(spare=True))
def test_score_adding_a_token(data):
    """S(M + j) >= S(M)  <=>  d_j >= S(M) * log2((3 + k) / (2 + k)); a token as dense as M's mean never lowers S."""
    d, mask, j = data
    k = int(mask.sum())
    before = instruction_score(d, mask)
    added = mask.clone()
    added[j] = True
    after = instruction_score(d, added)
    threshold = before * math.log2((3 + k) / (2 + k))
    if abs(float(d[j]) - threshold) > 1e-9:
        assert (after >= before) == (float(d[j]) >= threshold), (before, after, threshold)
    if k and float(d[j]) >= float(d[mask].mean()):
        assert after >= before - 1e-12
    assert before == pytest.approx(float(d[mask].sum()) / math.log2(2 + k))


@MATH_SETTINGS
@given(data=density_and_mask(), bump=st.lists(st.floats(0, 1), min_size=12, max_size=12),
       c=st.floats(1e-3, 1e3))
def test_score_monotone_in_density_and_homogeneous(data, bump, c):
    d, mask = data
    higher = d + torch.tensor(bump[: len(d)], dtype=d.dtype)
    assert instruction_score(higher, mask) >= instruction_score(d, mask) - 1e-12
    assert instruction_score(d * c, mask) == pytest.approx(c * instruction_score(d, mask), rel=1e-9, abs=1e-12)
    assert instruction_score(rescale(d * c), mask) == pytest.approx(instruction_score(rescale(d), mask), rel=1e-9, abs=1e-12)
