"""Feed-forward layers read through the vocabulary: neuron tokens and principal-component concepts.

Two views of the MLP output matrix ``W_out`` of a layer (one row per neuron, the vectors
the MLP writes into the residual stream):

- **Neuron tokens** (Geva et al. 2022; PAPER §3.4): neuron ``n`` promotes the tokens with
  the largest ``W_out[n] · W_U`` and suppresses those with the smallest.
- **Concepts** (PAPER §3.1–3.2): centre the rows of ``W_out``, take the SVD; component
  ``k`` has explained-variance ratio ``S_k² / Σ S²`` and a direction ``v_k`` in d_model
  space. Its *concept* is the ``top_k`` words whose L2-normalised unembedding vector has
  the largest ``|<v_k, e_word>|``.

The maths lives in pure tensor functions (:func:`principal_components`,
:func:`concept_words`, :func:`top_tokens`), the model-reading wrappers
(:func:`neuron_tokens`, :func:`ffn_concepts`) only fetch weights through
:mod:`mechit.arch.weights` and :mod:`mechit.tokens`.

>>> import mechit                                             # doctest: +SKIP
>>> model = mechit.load_model("organism-tuned")               # doctest: +SKIP
>>> mechit.neuron_tokens(model, 0, [3], k=5)                  # doctest: +SKIP
>>> mechit.ffn_concepts(model, [0], n_components=10, top_k=5) # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechit.errors import InputError
from mechit.runtime import single_thread

# singular values below S_max * max(shape) * FP32_EPS count as zero (weights are fp32)
FP32_EPS = float(torch.finfo(torch.float32).eps)


class Components(NamedTuple):
    """The principal components of one centred ``W_out``.

    ``directions`` [k, d_model] (float64 rows ``v_k``, unit norm, sign arbitrary),
    ``explained`` [k] (ratio ``S_k² / Σ S²``), ``singular_values`` [k], ``rank`` (numerical
    rank of the centred matrix).
    """

    directions: Float[Tensor, "k d_model"]
    explained: Float[Tensor, " k"]
    singular_values: Float[Tensor, " k"]
    rank: int


# ---------------------------------------------------------------------------- pure maths


def principal_components(
    w_out: Float[Tensor, "d_mlp d_model"], n_components: int, *, name: str = "W_out"
) -> Components:
    """Centre the rows of ``w_out`` and return its top ``n_components`` right singular vectors.

    Computed in float64 from the eigendecomposition of the Gram matrix; directions stay
    float64, the ratios and singular values are float32. Raises :class:`InputError` when
    ``n_components`` exceeds the numerical rank of the centred matrix (at most
    ``min(d_mlp - 1, d_model)``).

    >>> w = torch.tensor([[1., 0.], [-1., 0.], [3., 1.], [-3., -1.]])
    >>> pc = principal_components(w, 1)
    >>> round(float(pc.explained[0]), 3), pc.rank
    (0.992, 2)
    """
    if w_out.ndim != 2:
        raise InputError(f"{name}: expected a [d_mlp, d_model] matrix, got shape {tuple(w_out.shape)}")
    if n_components < 1:
        raise InputError(f"{name}: n_components must be at least 1, got {n_components}")
    with single_thread():
        x = w_out.detach().to(torch.float64)
        x = x - x.mean(dim=0, keepdim=True)
        s, vh = _svd_via_gram(x)
    rank = int((s > s[0] * max(x.shape) * FP32_EPS).sum()) if s.numel() and s[0] > 0 else 0
    if n_components > rank:
        raise InputError(
            f"{name}: n_components={n_components} exceeds the rank {rank} of the centred "
            f"matrix (shape {tuple(w_out.shape)}); pass n_components <= {rank}"
        )
    total = (s**2).sum()
    return Components(
        directions=vh[:n_components],
        explained=((s[:n_components] ** 2) / total).float(),
        singular_values=s[:n_components].float(),
        rank=rank,
    )


def _svd_via_gram(x: Float[Tensor, "n d"]) -> tuple[Float[Tensor, " m"], Float[Tensor, "m d"]]:
    """Singular values (descending) and right singular vectors of a float64 matrix.

    Eigen-decomposes the smaller Gram matrix (``XᵀX`` [d, d] or ``XXᵀ`` [n, n]): several
    times faster than a thin SVD of ``X`` on CPU and, in float64, accurate far below the
    fp32 rank tolerance used here. Left vectors are never needed.
    """
    n, d = x.shape
    if d <= n:
        evals, evecs = torch.linalg.eigh(x.T @ x)  # ascending
        s = evals.flip(0).clamp_min(0).sqrt()
        return s, evecs.flip(1).T
    evals, u = torch.linalg.eigh(x @ x.T)
    s = evals.flip(0).clamp_min(0).sqrt()
    vh = (u.flip(1).T @ x) / s.clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    return s, vh


def normalise_rows(x: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """Rows scaled to unit L2 norm (zero rows stay zero).

    >>> normalise_rows(torch.tensor([[3., 4.], [0., 0.]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    norms = x.norm(dim=-1, keepdim=True)
    return x / norms.clamp_min(torch.finfo(x.dtype).tiny)


def concept_words(
    directions: Float[Tensor, "k d_model"],
    unit_words: Float[Tensor, "n_words d_model"],
    top_k: int,
    *,
    chunk: int = 64,
) -> tuple[Float[Tensor, "k top_k"], Int[Tensor, "k top_k"]]:
    """For each direction, the ``top_k`` word rows with the largest ``|<v, e_word>|``.

    ``unit_words`` are L2-normalised word vectors. Returns the signed scores (sign of
    ``v`` is arbitrary) and word indices, both ordered by decreasing ``|score|``.

    >>> v = torch.tensor([[1., 0.]])
    >>> e = torch.tensor([[0., 1.], [-1., 0.], [0.6, 0.8]])
    >>> concept_words(v, e, 2)
    (tensor([[-1.0000,  0.6000]]), tensor([[1, 2]]))
    """
    if top_k > unit_words.shape[0]:
        raise InputError(f"top_k={top_k} exceeds the number of words ({unit_words.shape[0]})")
    scores, indices = [], []
    directions = directions.to(unit_words.dtype)
    for start in range(0, directions.shape[0], chunk):
        proj = directions[start : start + chunk] @ unit_words.T  # [c, n_words]
        idx = proj.abs().topk(top_k, dim=-1).indices  # [c, top_k], sorted
        scores.append(proj.gather(-1, idx))
        indices.append(idx)
    return torch.cat(scores), torch.cat(indices)


def top_tokens(
    vectors: Float[Tensor, "n d_model"],
    w_u: Float[Tensor, "d_model vocab"],
    m: int,
    *,
    largest: bool = True,
    chunk: int = 256,
) -> tuple[Float[Tensor, "n m"], Int[Tensor, "n m"]]:
    """The ``m`` tokens with the largest (or smallest) ``vectors[i] · W_U``, sorted.

    >>> w_u = torch.tensor([[1., -1., 0.5]])
    >>> top_tokens(torch.tensor([[2.]]), w_u, 2)
    (tensor([[2., 1.]]), tensor([[0, 2]]))
    """
    m = min(m, w_u.shape[1])
    vals, idx = [], []
    for start in range(0, vectors.shape[0], chunk):
        logits = vectors[start : start + chunk] @ w_u  # [c, vocab]
        top = logits.topk(m, dim=-1, largest=largest)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals), torch.cat(idx)


def word_key(text: str) -> str:
    """The word a decoded token stands for: surrounding whitespace stripped.

    Tokens that decode to the same key (``" the"``, ``"the"``) are one word. A token that
    is only whitespace keeps a visible form.

    >>> word_key(" the"), word_key("\\n"), word_key("  ")
    ('the', '\\\\n', '␣␣')
    """
    stripped = text.strip()
    return stripped if stripped else text.encode("unicode_escape").decode("ascii").replace(" ", "␣")


def group_ranked_tokens(
    token_ids: Sequence[int], scores: Sequence[float], vocab: Sequence[str], k: int
) -> list[tuple[str, float, list[int]]]:
    """Merge a ranked token list into at most ``k`` words, keeping the first (best) score.

    >>> group_ranked_tokens([5, 1, 2], [3.0, 2.0, 1.0], {5: " cat", 1: "cat", 2: "dog"}, 2)
    [('cat', 3.0, [5, 1]), ('dog', 1.0, [2])]
    """
    words: dict[str, tuple[float, list[int]]] = {}
    for tok, score in zip(token_ids, scores):
        key = word_key(vocab[tok])
        if key in words:
            words[key][1].append(int(tok))
        elif len(words) < k:
            words[key] = (float(score), [int(tok)])
    return [(w, s, toks) for w, (s, toks) in words.items()]


def neuron_token_table(
    w_out: Float[Tensor, "d_mlp d_model"],
    w_u: Float[Tensor, "d_model vocab"],
    vocab: Sequence[str],
    neurons: Sequence[int],
    k: int,
    *,
    layer: int = 0,
) -> pd.DataFrame:
    """Top and bottom ``k`` words of ``w_out[n] · w_u`` for each neuron (pure tensors).

    Tokens decoding to the same word are merged; the word keeps its best score. Columns:
    layer, neuron, direction ("top"/"bottom"), rank (0 = strongest), word, score,
    token_ids.

    >>> w_out = torch.tensor([[1., 0.]])
    >>> w_u = torch.tensor([[2., -1., 0.], [0., 0., 1.]])
    >>> neuron_token_table(w_out, w_u, ["a", "b", "c"], [0], 1)[["direction", "word", "score"]]
      direction word  score
    0       top    a    2.0
    1    bottom    b   -1.0
    """
    rows: list[dict[str, Any]] = []
    vecs = w_out[list(neurons)]
    for direction, largest in (("top", True), ("bottom", False)):
        m = min(4 * k, w_u.shape[1])
        while True:
            vals, idx = top_tokens(vecs, w_u, m, largest=largest)
            grouped = [
                group_ranked_tokens(i.tolist(), v.tolist(), vocab, k) for i, v in zip(idx, vals)
            ]
            if m >= w_u.shape[1] or all(len(g) >= k for g in grouped):
                break
            m = min(4 * m, w_u.shape[1])
        for neuron, words in zip(neurons, grouped):
            for rank, (word, score, toks) in enumerate(words):
                rows.append(
                    dict(layer=layer, neuron=int(neuron), direction=direction, rank=rank,
                         word=word, score=score, token_ids=toks)
                )
    frame = pd.DataFrame(rows, columns=["layer", "neuron", "direction", "rank", "word", "score", "token_ids"])
    return frame.sort_values(["layer", "neuron", "direction", "rank"], ascending=[True, True, False, True],
                             ignore_index=True)


# ---------------------------------------------------------------------------- model wrappers


def is_pair(obj: Any) -> bool:
    """True for a :class:`~mechit.models.ModelPair` (``.base``, ``.tuned``) or a 2-tuple of models."""
    return (hasattr(obj, "base") and hasattr(obj, "tuned")) or (isinstance(obj, (tuple, list)) and len(obj) == 2)


def pair_models(pair: Any) -> tuple[Any, Any]:
    """``(base, tuned)`` from a ModelPair or a 2-tuple."""
    if hasattr(pair, "base") and hasattr(pair, "tuned"):
        return pair.base, pair.tuned
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return pair[0], pair[1]
    raise InputError(f"expected a ModelPair or a (base, tuned) tuple, got {type(pair).__name__}")


@functools.lru_cache(maxsize=4)
def vocab_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every token id decoded on its own (cached per tokenizer).

    A token that does not decode to text alone (a byte fragment, shown as U+FFFD) keeps
    its raw token string (``<0xE2>``, ``âĢ``), so distinct fragments stay distinct words.
    """
    n = len(tokenizer)
    decoded = tokenizer.batch_decode([[i] for i in range(n)])
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    return tuple(r if "\ufffd" in d and r is not None else d for d, r in zip(decoded, raw))


def resolve_layers(model: Any, layers: int | Iterable[int] | None) -> list[int]:
    """``layers`` as a checked list (None = every layer; negative indices count from the end)."""
    n = int(model.cfg.n_layers)
    chosen = range(n) if layers is None else [layers] if isinstance(layers, int) else list(layers)
    out = []
    for layer in chosen:
        if not -n <= layer < n:
            raise InputError(f"layer {layer} is out of range: the model has {n} layers (0..{n - 1})")
        out.append(layer % n)
    return out


def _neuron_tokens_one(model: Any, layers: list[int], neurons: Sequence[int] | None, k: int) -> pd.DataFrame:
    from mechit.arch.weights import mlp_out_weights, unembedding

    w_u = unembedding(model)
    vocab = vocab_strings(model.tokenizer)
    if len(vocab) < w_u.shape[1]:  # padded unembedding rows beyond the tokenizer
        vocab = vocab + tuple(f"<pad{i}>" for i in range(len(vocab), w_u.shape[1]))
    frames = []
    for layer in layers:
        w_out = mlp_out_weights(model, layer)
        chosen = range(w_out.shape[0]) if neurons is None else list(neurons)
        bad = [n for n in chosen if not 0 <= n < w_out.shape[0]]
        if bad:
            raise InputError(f"neuron {bad[0]} is out of range: layer {layer} has {w_out.shape[0]} neurons")
        frames.append(neuron_token_table(w_out, w_u, vocab, chosen, k, layer=layer))
    return pd.concat(frames, ignore_index=True)


def neuron_tokens(
    model_or_pair: Any,
    layer: int | Iterable[int],
    neurons: Sequence[int] | None = None,
    *,
    k: int = 20,
) -> pd.DataFrame:
    """The tokens each MLP neuron promotes (top) and suppresses (bottom), grouped into words.

    Scores are ``W_out[n] · W_U`` (final-norm scale folded into ``W_U``). Tokens decoding
    to the same word (``" the"``, ``"the"``) are merged and the word keeps its best score.
    ``neurons=None`` means every neuron of the layer.

    Returns columns layer, neuron, direction ("top"/"bottom"), rank, word, score,
    token_ids. For a :class:`~mechit.models.ModelPair` the two models sit side by side:
    layer, neuron, direction, rank, base_word, base_score, tuned_word, tuned_score
    (neuron indices are shared, so row ``n`` is the same neuron before and after tuning).

    >>> mechit.neuron_tokens(model, 5, [10, 11], k=10)             # doctest: +SKIP
    >>> mechit.neuron_tokens(mechit.load_pair(), 5, [10], k=10)    # doctest: +SKIP
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if neurons is not None and len(neurons) == 0:
        raise InputError("neurons is empty: pass neuron indices, or None for every neuron")
    if not is_pair(model_or_pair):
        return _neuron_tokens_one(model_or_pair, resolve_layers(model_or_pair, layer), neurons, k)
    base, tuned = pair_models(model_or_pair)
    check_same_mlp(base, tuned)
    layers = resolve_layers(base, layer)
    keys = ["layer", "neuron", "direction", "rank"]
    sides = []
    for name, model in (("base", base), ("tuned", tuned)):
        frame = _neuron_tokens_one(model, layers, neurons, k)[keys + ["word", "score"]]
        sides.append(frame.rename(columns={"word": f"{name}_word", "score": f"{name}_score"}))
    merged = sides[0].merge(sides[1], on=keys, how="outer")
    return merged.sort_values(keys[:3] + ["rank"], ascending=[True, True, False, True], ignore_index=True)


def check_same_mlp(base: Any, tuned: Any) -> None:
    """Raise :class:`IncompatiblePairError` unless both models have the same layers and MLP shapes."""
    from mechit.errors import IncompatiblePairError

    for field in ("n_layers", "d_model", "d_mlp"):
        a, b = getattr(base.cfg, field), getattr(tuned.cfg, field)
        if a != b:
            raise IncompatiblePairError(
                f"base and tuned differ in {field} ({a} vs {b}): neuron-level comparison needs "
                "the same architecture"
            )


def unit_word_vectors(model: Any, words: Sequence[str] | None) -> tuple[list[str], Float[Tensor, "n d_model"]]:
    """Output-side word vectors (mean of sub-token unembeddings), L2-normalised.

    ``words=None`` uses :func:`mechit.tokens.default_words`: 20,000 frequent English words
    (:func:`mechit.data.wordlists.frequent_words`), or the organism's vocabulary for the organism.
    """
    from mechit.tokens import default_words
    from mechit.tokens import word_vectors

    chosen = default_words(model) if words is None else list(words)
    if not chosen:
        raise InputError("the word list is empty")
    wv = word_vectors(model, chosen, side="output")
    if len(wv.words) == 0:
        raise InputError(f"none of the {len(chosen)} words could be encoded by the model's tokenizer")
    return list(wv.words), normalise_rows(wv.vectors.float())


def concept_frame(
    comps: Components, words: Sequence[str], scores: Tensor, indices: Tensor, *, layer: int
) -> pd.DataFrame:
    """Tidy frame of concepts: one row per (component, word rank)."""
    n_comp, top_k = indices.shape
    comp = torch.arange(n_comp).repeat_interleave(top_k)
    words_arr = pd.Series(list(words), dtype=object).to_numpy()
    return pd.DataFrame(
        {
            "layer": layer,
            "component": comp.numpy(),
            "explained_variance": comps.explained[comp].numpy(),
            "rank": torch.arange(top_k).repeat(n_comp).numpy(),
            "word": words_arr[indices.reshape(-1).numpy()],
            "score": scores.reshape(-1).numpy(),
        }
    )


def ffn_concepts(
    model: Any,
    layers: int | Iterable[int] | None = None,
    *,
    n_components: int = 300,
    top_k: int = 50,
    words: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Principal-component concepts of each layer's ``W_out`` (PAPER §3.1–3.2).

    Per layer: centre the rows of ``W_out`` [d_mlp, d_model], SVD, keep the first
    ``n_components`` directions ``v_k``; the concept of ``v_k`` is the ``top_k`` words
    whose L2-normalised output word vector ``e`` (mean of its sub-token unembedding
    columns) has the largest ``|<v_k, e>|``. ``words=None``: 20,000 frequent English words
    (the organism's vocabulary for the organism).

    Returns columns layer, component, explained_variance (``S_k² / Σ S²``), rank (0 =
    strongest word), word, score (signed ``<v_k, e>``; the sign of ``v_k`` is arbitrary).
    Raises :class:`InputError` if ``n_components`` exceeds the rank of the centred matrix.

    >>> mechit.ffn_concepts(model, [0, 1], n_components=20, top_k=10)   # doctest: +SKIP
    """
    from mechit.arch.weights import mlp_out_weights

    layer_list = resolve_layers(model, layers)
    kept, unit = unit_word_vectors(model, words)
    if top_k > len(kept):
        raise InputError(f"top_k={top_k} exceeds the number of usable words ({len(kept)})")
    frames = []
    for layer in tqdm(layer_list, desc="concepts", unit="layer", disable=not progress):
        comps = principal_components(mlp_out_weights(model, layer), n_components, name=f"layer {layer} W_out")
        scores, idx = concept_words(comps.directions, unit, top_k)
        frames.append(concept_frame(comps, kept, scores, idx, layer=layer))
    return pd.concat(frames, ignore_index=True)
