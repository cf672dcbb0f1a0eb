"""A (pre-trained, instruction-tuned) pair: loading both, checking they can be compared.

>>> pair = load_pair()                                   # doctest: +SKIP
>>> [name for name, _ in pair]                           # doctest: +SKIP
['base', 'tuned']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pandas as pd

from mechit.arch.stream import StreamedModel
from mechit.arch.weights import describe, n_kv_heads
from mechit.errors import IncompatiblePairError, SpecError
from mechit.models.checkpoint import stored_tensors
from mechit.models.loading import ORGANISM_SPECS, load_model
from mechit.models.stream import checkpoint_dir

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class ModelPair:
    """A pre-trained model and its instruction-tuned version, checked compatible.

    Iterating gives ``("base", base), ("tuned", tuned)``.

    >>> pair = load_pair()                                   # doctest: +SKIP
    >>> [name for name, _ in pair]                           # doctest: +SKIP
    ['base', 'tuned']
    """

    base: "TransformerBridge"
    tuned: "TransformerBridge"
    base_spec: str = ""
    tuned_spec: str = ""

    names = ("base", "tuned")
    residency = {"mode": "both"}  # both models stay loaded (summary.json, "residency")

    def __iter__(self) -> Iterator[tuple[str, "TransformerBridge"]]:
        yield "base", self.base
        yield "tuned", self.tuned

    def member(self, name: str) -> "TransformerBridge":
        """The loaded model ``name`` ("base" or "tuned").

        >>> pair.member("tuned") is pair.tuned
        True
        """
        return getattr(self, name)

    def weights(self, name: str) -> "TransformerBridge | StreamedModel":
        """What a weight-only analysis, a config or a tokenizer question reads of model ``name``:
        here the loaded model; a pair that keeps one model resident gives a
        :class:`~mechit.arch.stream.StreamedModel` that loads nothing.

        >>> pair.weights("base").cfg.n_layers
        6
        """
        return self.member(name)

    def weights_pair(self) -> "ModelPair":
        """The pair the weight-only analyses (head pairs, FFN concepts, rotation) run on: itself.

        >>> pair.weights_pair() is pair
        True
        """
        return self

    def spec(self, name: str) -> str:
        """The spec model ``name`` was loaded from (its ``mechit_spec``; the name when it has none).

        >>> pair.spec("base")
        'organism-base'
        """
        return getattr(self.member(name), "mechit_spec", name)

    def description(self, name: str) -> dict:
        """:func:`mechit.arch.weights.describe` of model ``name`` (what summary.json records).

        >>> pair.description("tuned")["layers"]
        6
        """
        return describe(self.member(name))

    def run(self, analysis: Callable[..., pd.DataFrame], *args, **kwargs) -> pd.DataFrame:
        """``analysis(model, *args, **kwargs)`` on the base model, then on the tuned one, in one
        frame whose first column ``model`` says which ("base" or "tuned"): the one pair loop.

        >>> def n_layers(model):
        ...     return pd.DataFrame({"layers": [model.cfg.n_layers]})
        >>> pair.run(n_layers)
           model  layers
        0   base       6
        1  tuned       6
        """
        # each model is handed over by name and held by no variable here, so a pair that keeps
        # one model resident can drop the first before it loads the second
        frames = [tag_model(analysis(self.member(name), *args, **kwargs), name) for name in self.names]
        return pd.concat(frames, ignore_index=True)


def tag_model(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """``frame`` with a first column ``model`` (the one convention for "which model" in tables).

    >>> tag_model(pd.DataFrame({"x": [1]}), "tuned")
       model  x
    0  tuned  1
    """
    return frame.assign(model=model)[["model"] + [c for c in frame.columns if c != "model"]]


def load_pair(base: "str | Path | None" = None, tuned: "str | Path | None" = None, **kw) -> ModelPair:
    """Load and check a (pre-trained, instruction-tuned) pair; no arguments -> the organism.

    ``kw`` goes to :func:`load_model`. Raises IncompatiblePairError (see :func:`check_pair`).

    >>> pair = load_pair("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    """
    if base is None and tuned is None:
        base, tuned = ORGANISM_SPECS
    elif base is None or tuned is None:
        raise SpecError("load_pair needs both base and tuned specs (or neither, for the embedded organism)")
    base_model = load_model(base, **kw)
    tuned_model = load_model(tuned, **kw)
    check_pair(base_model, tuned_model)
    return ModelPair(base_model, tuned_model, str(base), str(tuned))


class ExtraSpecialTokensWarning(UserWarning):
    """The tuned and base tokenizers differ only by added special tokens (allowed)."""


PAIR_PROBE_TEXT = "Translate the following sentence into French: The quick brown fox, 42 naïve cafés!"


def check_pair(a: "TransformerBridge", b: "TransformerBridge") -> None:
    """Refuse two models that cannot be compared; the error names the first difference.

    ``a`` and ``b`` are loaded models, or both :class:`~mechit.arch.stream.StreamedModel`
    (then the shapes come from the safetensors headers). Checked in order: architecture; the config sizes (layers, heads, KV heads, d_model,
    d_head, d_mlp); every parameter's shape; the tokenizer vocabulary (each shared token
    string must have the same id, and a probe sentence must tokenise identically).

    Allowed with an :class:`ExtraSpecialTokensWarning`: one tokenizer has extra *added
    special* tokens (chat markers such as ``<|im_start|>``) that the other lacks. Then the
    vocabulary axis of the embedding and unembedding may be longer by those rows; all
    other shapes must still match.

    >>> check_pair(load_model("a"), load_model("b"))         # doctest: +SKIP
    """
    arch_a, arch_b = getattr(a.cfg, "architecture", None), getattr(b.cfg, "architecture", None)
    if arch_a != arch_b:
        raise IncompatiblePairError(f"architectures differ: {arch_a} vs {arch_b}")
    for key in ("n_layers", "n_heads", "n_key_value_heads", "d_model", "d_head", "d_mlp"):
        va, vb = (n_kv_heads(a), n_kv_heads(b)) if key == "n_key_value_heads" else (
            getattr(a.cfg, key, None), getattr(b.cfg, key, None))
        if va != vb:
            raise IncompatiblePairError(f"config {key} differs: {va} vs {vb}")
    extra_a, extra_b = _vocabulary_difference(a.tokenizer, b.tokenizer)
    va, vb = a.cfg.d_vocab, b.cfg.d_vocab
    params_a = dict(_named_shapes(a, va))
    params_b = dict(_named_shapes(b, vb))
    for name, shape in params_a.items():
        if name not in params_b:
            raise IncompatiblePairError(f"parameter {name} exists only in the first model")
        if shape != params_b[name]:
            raise IncompatiblePairError(
                f"parameter {name} shape differs: {_show(shape, va)} vs {_show(params_b[name], vb)}"
            )
    for name in params_b:
        if name not in params_a:
            raise IncompatiblePairError(f"parameter {name} exists only in the second model")
    if va != vb and not (extra_a if va > vb else extra_b):
        raise IncompatiblePairError(f"vocabulary size differs: {va} vs {vb}")
    if extra_a or extra_b:
        warnings.warn(
            "tokenizers differ only by added special tokens "
            f"(first model only: {sorted(extra_a)[:8]}, second model only: {sorted(extra_b)[:8]}); "
            "the shared vocabulary is identical, so the pair is compared on it",
            ExtraSpecialTokensWarning,
            stacklevel=2,
        )


def _named_shapes(model, d_vocab: int):
    """(name, shape) of every parameter (a streamed model's: of every stored tensor), with the
    vocabulary axis written as 'V'."""
    if isinstance(model, StreamedModel):
        shapes = stored_tensors(checkpoint_dir(model.mechit_spec)).items()
    else:
        shapes = ((name.replace("._original_component", ""), param.shape)
                  for name, param in model.original_model.named_parameters())
    for name, shape in shapes:
        yield name, tuple("V" if size == d_vocab else size for size in shape)


def _show(shape, d_vocab) -> str:
    return "[" + ", ".join(str(d_vocab if s == "V" else s) for s in shape) + "]"


def _vocabulary_difference(tok_a, tok_b) -> tuple[set[str], set[str]]:
    """Token strings only in a / only in b, after checking these may differ.

    Raises IncompatiblePairError naming the first token whose id differs, or the first
    extra token that is not an added special token, or a probe sentence that splits
    differently.
    """
    vocab_a, vocab_b = tok_a.get_vocab(), tok_b.get_vocab()
    for token, index in sorted(vocab_a.items(), key=lambda item: item[1]):
        other = vocab_b.get(token)
        if other is not None and other != index:
            raise IncompatiblePairError(
                f"tokenizer vocabularies differ: token {token!r} has id {index} vs {other}"
            )
    extra_a = set(vocab_a) - set(vocab_b)
    extra_b = set(vocab_b) - set(vocab_a)
    for extra, tok, which in ((extra_a, tok_a, "first"), (extra_b, tok_b, "second")):
        special = {str(t) for t in getattr(tok, "all_special_tokens", [])}
        added = {str(t.content) for t in tok.added_tokens_decoder.values() if t.special}
        for token in sorted(extra, key=lambda t: tok.convert_tokens_to_ids(t)):
            if token not in special and token not in added:
                raise IncompatiblePairError(
                    f"tokenizer vocabularies differ: token {token!r} (id "
                    f"{tok.convert_tokens_to_ids(token)}) is only in the {which} model's tokenizer "
                    "and is not an added special token"
                )
    ids_a = tok_a(PAIR_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    ids_b = tok_b(PAIR_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if ids_a != ids_b:
        raise IncompatiblePairError(
            f"tokenizers split the same text differently: {PAIR_PROBE_TEXT!r} -> "
            f"{tok_a.convert_ids_to_tokens(ids_a)} vs {tok_b.convert_ids_to_tokens(ids_b)}"
        )
    return extra_a, extra_b

