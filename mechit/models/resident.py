"""A pair that keeps at most one model resident, for a device that cannot hold both.

:func:`open_pair` reads both memory plans (:mod:`mechit.models.plan`: config and file headers,
no weights) and compares the two models' weights together with what the device has free (or
``max_memory``). When they fit, it is :func:`~mechit.models.load_pair`, unchanged. When they
do not, it returns a :class:`OneAtATimePair`: each model loads when an analysis first asks for
it and is dropped (``gc.collect()``, the CUDA cache emptied) before the other loads. Weight-only
analyses, configs and tokenizers read :class:`~mechit.arch.stream.StreamedModel` views of the
checkpoints (one layer's tensors at a time), so they load nothing. ``mechit compare`` runs
every analysis on the base model, then on the tuned one, so each model loads once per stage
that runs the models forward (docs/loading.md, "One model at a time").

>>> pair = OneAtATimePair("organism-base", "organism-tuned", device="cpu")
>>> pair.resident, pair.weights("base").cfg.n_layers, pair.resident
(None, 6, None)
>>> pair.tuned.cfg.d_model, pair.resident
(160, 'tuned')
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from mechit.arch.stream import StreamedModel
from mechit.arch.weights import describe
from mechit.errors import InputError, SpecError
from mechit.models.loading import ORGANISM_SPECS, load_model, read_plan
from mechit.models.pair import ModelPair, check_pair, load_pair
from mechit.models.plan import GIB, available_memory, check_fits
from mechit.models.stream import open_streamed
from mechit.runtime import choose_device, choose_dtype, device_of, release_free_memory

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class PairBudget:
    """The weights of both models together (``need`` bytes, each in the dtype it loads in)
    against what the device has (``have`` bytes; ``where`` says whose number it is)."""

    need: int
    have: int
    where: str

    @property
    def fits(self) -> bool:
        """Whether both models can be resident at once.

        >>> PairBudget(need=3, have=2, where="cpu has").fits
        False
        """
        return self.need <= self.have

    def note(self) -> str:
        """The line ``mechit compare`` prints when it runs one model at a time.

        >>> PairBudget(need=3 * GIB, have=2 * GIB, where="--max-memory allows").note()
        'mechit: compare runs one model at a time: base and tuned need 3.00 GiB together for their weights, --max-memory allows 2.00 GiB'
        """
        return (f"mechit: compare runs one model at a time: base and tuned need {self.need / GIB:.2f} GiB together "
                f"for their weights, {self.where} {self.have / GIB:.2f} GiB")


def pair_budget(base: "str | Path", tuned: "str | Path", *, device=None, dtype=None, device_map=None,
                max_memory: int | None = None, **_ignored) -> "PairBudget | None":
    """Both models' weights against the device's free memory (or ``max_memory``), from their
    plans; None when a plan cannot be read (an uncached hub id) or with ``device_map``: then the
    pair loads as usual and :func:`~mechit.models.load_model` decides.

    >>> budget = pair_budget("organism-base", "organism-tuned", device="cpu", max_memory=2**24)
    >>> budget.fits, budget.need == 2 * 4 * read_plan("organism-tuned").parameters
    (False, True)
    """
    if device_map is not None:
        return None
    try:
        plans = [read_plan(spec) for spec in (base, tuned)]
        target = choose_device(device)
        need = sum(plan.weight_bytes(choose_dtype(dtype, target, plan.own_dtype)) for plan in plans)
    except (SpecError, ValueError):  # no plan, or a device/dtype name load_model refuses in one line
        return None
    have, where = available_memory(target, max_memory)
    return PairBudget(need, have, where)


class OneAtATimePair(ModelPair):
    """A :class:`~mechit.models.ModelPair` with at most one loaded model resident.

    ``base``/``tuned`` (and :meth:`member`) load the model asked for on first use and drop
    the other first; :meth:`weights` gives streamed views for weight-only reads, which load
    nothing. Hold a loaded model no longer than an analysis runs (``pair.run`` and
    ``pair.member(name)`` passed straight to a function do that): a model still referenced
    elsewhere stays in memory after the pair drops it.

    Args:
        base, tuned: model specs with safetensors checkpoints (streamable).
        load: the loader (default :func:`~mechit.models.load_model`), called as
            ``load(spec, **loading)``.
        **loading: device, dtype, max_memory, trust_remote_code, as for ``load_model``.

    >>> pair = OneAtATimePair("organism-base", "organism-tuned", device="cpu")
    >>> frame = pair.run(lambda model: pd.DataFrame({"d": [model.cfg.d_model]}))
    >>> frame["model"].tolist(), pair.resident
    (['base', 'tuned'], 'tuned')
    """

    def __init__(self, base: "str | Path", tuned: "str | Path", *,
                 load: "Callable[..., TransformerBridge] | None" = None, **loading):
        self.base_spec, self.tuned_spec = str(base), str(tuned)
        self._load, self._loading = load or load_model, loading
        self._resident: "tuple[str, TransformerBridge] | None" = None
        self._streamed: dict[str, StreamedModel] = {}
        self._described: dict[str, dict] = {}
        self.residency = {"mode": "one at a time"}

    base = property(lambda self: self.member("base"), doc="The base model, loaded (the tuned one dropped first).")
    tuned = property(lambda self: self.member("tuned"), doc="The tuned model, loaded (the base one dropped first).")

    def __repr__(self) -> str:
        return f"OneAtATimePair({self.base_spec!r}, {self.tuned_spec!r}, resident={self.resident!r})"

    @property
    def resident(self) -> "str | None":
        """The name of the loaded model ("base", "tuned"), None before the first load."""
        return None if self._resident is None else self._resident[0]

    def member(self, name: str) -> "TransformerBridge":
        """The loaded model ``name``: the resident one, or loaded now after the other is dropped.

        >>> pair = OneAtATimePair("organism-base", "organism-tuned", device="cpu")
        >>> pair.member("base").mechit_spec, pair.resident
        ('organism-base', 'base')
        """
        if name not in self.names:
            raise InputError(f"a pair has the models base and tuned, not {name!r}")
        if self._resident is not None and self._resident[0] == name:
            return self._resident[1]
        self.evict()
        model = self._load(self.spec(name), **self._loading)
        self._described[name] = describe(model)
        self._resident = (name, model)
        return model

    def evict(self) -> None:
        """Drop the resident model and give its memory back (the CUDA cache too).

        >>> pair = OneAtATimePair("organism-base", "organism-tuned", device="cpu")
        >>> _ = pair.member("base"); pair.evict(); pair.resident is None
        True
        """
        if self._resident is None:
            return
        on_cuda = device_of(self._resident[1]).type == "cuda"
        self._resident = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        release_free_memory()

    def weights(self, name: str) -> StreamedModel:
        """A :class:`~mechit.arch.stream.StreamedModel` of model ``name`` read in the device and
        dtype the model loads in (so its weights are the loaded model's): config, tokenizer and
        weights one layer at a time, nothing loaded.

        >>> pair = OneAtATimePair("organism-base", "organism-tuned", device="cpu")
        >>> pair.weights("tuned")
        StreamedModel('organism-tuned', LlamaForCausalLM, 6 layers)
        """
        if name not in self._streamed:
            options = {key: self._loading[key] for key in ("device", "dtype", "trust_remote_code") if key in self._loading}
            options["dtype"] = options.get("dtype") or "auto"  # what load_model chooses, not the stored dtype
            self._streamed[name] = open_streamed(self.spec(name), **options)
        return self._streamed[name]

    def weights_pair(self) -> ModelPair:
        """Both streamed views as a plain :class:`~mechit.models.ModelPair` (for head pairs, FFN
        concepts and the rotation, which reads both models layer by layer).

        >>> OneAtATimePair("organism-base", "organism-tuned", device="cpu").weights_pair().tuned
        StreamedModel('organism-tuned', LlamaForCausalLM, 6 layers)
        """
        return ModelPair(self.weights("base"), self.weights("tuned"), self.base_spec, self.tuned_spec)

    def spec(self, name: str) -> str:
        """The spec of model ``name``.

        >>> OneAtATimePair("organism-base", "organism-tuned").spec("tuned")
        'organism-tuned'
        """
        return self.base_spec if name == "base" else self.tuned_spec

    def description(self, name: str) -> dict:
        """:func:`~mechit.arch.weights.describe` of model ``name`` as it was loaded; from its plan
        (:meth:`mechit.models.ModelPlan.summary`) when it has not been loaded.

        >>> OneAtATimePair("organism-base", "organism-tuned").description("base")["read_from"]
        'safetensors headers'
        """
        return self._described.get(name) or read_plan(self.spec(name)).summary()


def open_pair(base: "str | Path | None" = None, tuned: "str | Path | None" = None, *, forward: bool = True,
              **loading) -> ModelPair:
    """The pair ``mechit compare`` runs on: :func:`~mechit.models.load_pair` when both models'
    weights fit on the device together, else a checked :class:`OneAtATimePair` (a line on
    stderr says so, with the numbers; ``pair.residency`` records it for summary.json).

    ``forward``: some analysis will run the models (not only read weights); then each model
    alone must fit, else the one-line refusal of :func:`~mechit.models.plan.check_fits` comes
    now, before anything loads. With ``forward=False`` nothing is ever loaded.

    Raises:
        SpecError: one model alone does not fit (``forward``), or a checkpoint cannot be
            streamed (a GGUF file, a family without tensor names), which this mode needs.

    >>> pair = open_pair("organism-base", "organism-tuned", device="cpu", max_memory=2**24)
    >>> type(pair).__name__, pair.residency["mode"]
    ('OneAtATimePair', 'one at a time')
    """
    if base is None and tuned is None:
        base, tuned = ORGANISM_SPECS
    elif base is None or tuned is None:
        return load_pair(base, tuned, **loading)  # refuses in one line
    budget = pair_budget(base, tuned, **loading)
    if budget is None or budget.fits:
        return load_pair(base, tuned, **loading)
    if forward:
        target = choose_device(loading.get("device"))
        for spec in (base, tuned):
            plan = read_plan(spec)
            check_fits(plan, choose_dtype(loading.get("dtype"), target, plan.own_dtype), target,
                       loading.get("max_memory"))
    pair = OneAtATimePair(base, tuned, **loading)
    try:
        views = pair.weights("base"), pair.weights("tuned")
    except SpecError as error:
        raise SpecError(f"{budget.note().removeprefix('mechit: compare runs one model at a time: ')}, and running "
                        f"them one at a time needs streamable checkpoints: {error}") from None
    check_pair(*views)
    print(budget.note(), file=sys.stderr)
    pair.residency = {"mode": "one at a time", "need_bytes": budget.need, "available_bytes": budget.have,
                      "available": budget.where}
    return pair
