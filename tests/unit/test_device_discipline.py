"""Every analysis stays in its model's dtype and on its model's device (issue 17).

A :class:`torch.utils._python_dispatch.TorchDispatchMode` sees every op an analysis runs
and records the dtype and device of its outputs. Without a GPU the device cannot be
probed, so the dtype is: the tiny models are loaded in float64, and any floating tensor
created in another dtype (a stray ``.float()``, a float32 ``torch.zeros``, a weight view
that downcasts) is a violation. Where CUDA exists the same analyses also run on it, and
any op mixing devices, or computing on the CPU, is one too.

Not violations:

- ops inside the model's own forward (a frame of ``transformers`` or ``transformer_lens``
  on the stack): Hugging Face's RMSNorm, rotary embedding and eager softmax upcast to
  float32 internally, and the rotary frequencies are float32 buffers;
- ops of a backward pass (autograd's graph task): they mirror forward ops, which are
  checked themselves (the model's float32 upcasts have float32 backward ops);
- the documented steps of :data:`ALLOWED`, each with its reason (keyed by the innermost
  mechit frame: file and function);
- ``.cpu()`` (``aten._to_copy`` to the CPU): results leave through it.

Without a GPU the device is checked by simulation (:class:`HostTracker`, a
``TorchFunctionMode``): the model stays on the CPU, which stands for the accelerator, and
every tensor the analysis takes to the host (``.cpu()``, made a copy as on a GPU;
``torch.from_numpy``) is marked, and ``.to(device)`` makes an unmarked copy. A torch op of
mechit code on a marked tensor would run on the CPU on a GPU machine, or crash mixing
devices; ``.numpy()`` of an unmarked one would crash. Exits (``.numpy()``, ``.tolist()``,
``.item()`` after ``.cpu()``) and metadata are not violations, nor the documented host
steps of :data:`CPU_KERNELS` and :data:`HOST_STEPS`. Inputs made on the host (token ids
from a tokenizer, index tensors) and moved with ``.to(device)`` are not marked: the
TorchDispatchMode check above sees those where a GPU exists.
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mechit.arch import weights as weight_views
from mechit.attribution.ablation import ablate
from mechit.attribution.example import attribute
from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.neurons import neuron_tokens
from mechit.ffn.rotation import ffn_rotation
from mechit.heads.pairs import head_pairs
from mechit.models import ModelPair, load_model

MODEL_CODE = ("/transformers/", "/transformer_lens/")
ALLOWED = {
    # qk-dims: similarity vectors on the 2^-11 GRID, whose float32 dot products are exact
    # cosines (heads/similarity.py), and the fast path's bit-packed float32 sort keys
    ("heads/similarity.py", "unit_rows"): "GRID rows are float32 by design (exact cosines)",
    ("heads/similarity.py", "word_thresholds"): "float32 products of GRID rows are exact",
    ("heads/kernels.py", "qk_dim_pairs_group"): "the CPU kernel sorts float32 bit patterns",
    ("heads/kernels.py", "_candidates"): "the CPU kernel sorts float32 bit patterns",
    ("heads/kernels.py", "_group_run"): "the CPU kernel sorts float32 bit patterns",
    ("heads/kernels.py", "_top_k_phase"): "the CPU kernel sorts float32 bit patterns",
    ("heads/kernels.py", "run"): "the CPU kernel sorts float32 bit patterns (_top_k_phase's threads)",
    ("heads/kernels.py", "compact_rows"): "GRID rows, float16 when exact",
}
CPU_KERNELS = {  # steps documented to run on the CPU whatever the model's device
    ("heads/kernels.py", f) for f in ("qk_dim_pairs_group", "_candidates", "_group_run", "_repeated",
                                      "_sorted", "compact_rows", "_top_k_phase", "run")
} | {
    ("heads/kernels.py", "blockwise_topk"),  # the k winners' tie order: np.lexsort on the host, back by .to(device)
    ("heads/pairs.py", "_whole"),  # the qk/ov rows leave through .cpu() into numpy columns
}


def _where(stack) -> "tuple[str, str] | None":
    """(file under mechit/, function) of the innermost mechit frame; None inside model code."""
    if any(any(part in frame.filename for part in MODEL_CODE) for frame in stack):
        return None
    ours = [frame for frame in stack if "/mechit/" in frame.filename]
    return (ours[-1].filename.rsplit("/mechit/", 1)[1], ours[-1].name) if ours else ("?", "?")


class Discipline(TorchDispatchMode):
    """Records ops whose floating outputs are not in ``dtype`` or not on ``device``, and ops
    whose tensor arguments span several devices: ``violations[(file, function, op, what)]``."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.dtype, self.device = dtype, torch.device(device)
        self.violations: Counter = Counter()

    def _record(self, func, what: str) -> None:
        if torch._C._current_graph_task_id() != -1:  # inside a backward pass
            return
        where = _where(traceback.extract_stack()[:-2])
        if where is not None and where not in ALLOWED and not (what.startswith("device") and where in CPU_KERNELS):
            self.violations[(*where, str(func), what)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor) and t.dim() > 0]
        if len({t.device for t in inputs}) > 1:
            self._record(func, f"devices mixed: {sorted(str(t.device) for t in inputs)}")
        leaving = func is torch.ops.aten._to_copy.default and (kwargs or {}).get("device") == torch.device("cpu")
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            if t.is_floating_point() and t.dtype != self.dtype:
                self._record(func, f"dtype {t.dtype}")
            if t.device != self.device and not leaving:
                self._record(func, f"device {t.device}")
        return out


EXITS = {"numpy", "tolist", "item", "__bool__", "__int__", "__float__", "__index__", "__len__", "__format__",
         "__repr__", "__hash__", "__array__"}  # a tensor's values leaving torch
METADATA = {"__get__", "__set__", "dim", "size", "numel", "stride", "is_contiguous", "is_floating_point",
            "element_size", "data_ptr", "requires_grad_", "detach"}  # no computation (detach: a view)
HOST_STEPS = {  # host work after .cpu() by design, each with its reason
    ("attribution/ablation.py", "ablate"): "effects of m response tokens subtracted in float64 on the host",
}


class HostTracker(TorchFunctionMode):
    """Simulates a model on an accelerator while all runs on the CPU (see the module docstring):
    ``violations[(file, function, op, what)]`` for torch ops of mechit code that would
    compute on the host, and ``.numpy()`` on tensors that never left the device."""

    def __init__(self):
        super().__init__()
        self.host: dict[int, weakref.ref] = {}
        self.violations: Counter = Counter()

    def _is_host(self, t) -> bool:
        ref = self.host.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, out) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not self._is_host(t):
                self.host[id(t)] = weakref.ref(t, lambda _, key=id(t): self.host.pop(key, None))

    def _record(self, name: str, what: str) -> None:
        where = _where(traceback.extract_stack()[:-2])
        if where is not None and where not in CPU_KERNELS and where not in HOST_STEPS:
            self.violations[(*where, name, what)] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        host = [self._is_host(t) for t in tensors]
        out = func(*args, **kwargs)
        if name in ("cpu", "to") and out is args[0]:  # on a GPU each is a copy (to the host, to the device)
            out = out.clone()
        if name in ("cpu", "from_numpy"):
            self._mark(out)
        elif name in EXITS:
            if name == "numpy" and not all(host):
                self._record(name, "numpy() of a device tensor")
        elif name == "to" or name in METADATA:
            pass
        elif any(h and t.dim() > 0 for h, t in zip(host, tensors)):  # CUDA takes 0-dim CPU tensors
            self._mark(out)
            self._record(name, "computes on the host" if all(host) else "mixes host and device tensors")
        return out


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PROMPT, RESPONSE, SPANS = "Translate the cat into French, please.", " le chat", [(0, 9)]
WORDS = ["cat", "dog", "translate", "French", "the", "house", "red", "blue", "sun", "moon", "water", "fire"]


@pytest.fixture(scope="module", params=DEVICES)
def pair64(request, tiny_pair_dirs) -> ModelPair:
    base, tuned = (load_model(d, device=request.param, dtype="float64") for d in tiny_pair_dirs)
    assert base.W_E.dtype == torch.float64 and base.W_E.device.type == request.param
    return ModelPair(base=base, tuned=tuned)


def _concepts(pair: ModelPair):
    return pair.run(ffn_concepts, 0, n_components=3, top_k=3, words=WORDS, progress=False)


ANALYSES = {
    "attribute": lambda pair: attribute(pair.tuned, PROMPT, RESPONSE, instruction_spans=SPANS),
    "head_pairs qk-dims": lambda pair: head_pairs(pair.tuned, WORDS, method="qk-dims", similarity="embedding",
                                                  top_k=4, progress=False),
    "head_pairs qk": lambda pair: head_pairs(pair.tuned, WORDS, method="qk", top_k=4, progress=False),
    "head_pairs ov": lambda pair: head_pairs(pair.tuned, WORDS, method="ov", top_k=4, progress=False),
    "ffn_concepts": _concepts,
    "neuron_tokens": lambda pair: neuron_tokens(pair.tuned, [0, 1], [0, 3], k=3),
    "ffn_rotation": lambda pair: ffn_rotation(pair, _concepts(pair), 0, k=3, n_changed=2, n_tokens=2,
                                              progress=False),
    "ablate": lambda pair: ablate(pair.tuned, PROMPT, RESPONSE, instruction_spans=SPANS, per_span=True),
}


def _violations(pair: ModelPair, run) -> Counter:
    device = pair.tuned.W_E.device
    with Discipline(torch.float64, device) as discipline:
        run(pair)
    return discipline.violations


@pytest.mark.parametrize("name", list(ANALYSES))
def test_analysis_keeps_the_models_dtype_and_device(pair64, name):
    violations = _violations(pair64, ANALYSES[name])
    assert not violations, "\n".join(f"{n:4d} x {where}" for where, n in violations.most_common(20))


@pytest.mark.parametrize("name", list(ANALYSES))
def test_analysis_computes_on_the_models_device_simulated(tiny_pair_dirs, name):
    """On a CPU stand-in for the accelerator (:class:`HostTracker`), results leave through one
    ``.cpu()`` and nothing is computed on the host after it, outside the documented kernels."""
    pair = ModelPair(*(load_model(d, device="cpu") for d in tiny_pair_dirs))
    with HostTracker() as tracker:
        ANALYSES[name](pair)
    assert not tracker.violations, "\n".join(f"{n:4d} x {where}" for where, n in tracker.violations.most_common(20))


def test_discipline_catches_a_downcast(pair64, monkeypatch):
    """The recorder itself: weight views that downcast to float32 are violations."""
    out, unembed = weight_views.mlp_out_weights, weight_views.unembedding
    monkeypatch.setattr(weight_views, "mlp_out_weights", lambda model, layer: out(model, layer).float())
    monkeypatch.setattr(weight_views, "unembedding", lambda model: unembed(model).float())
    violations = _violations(pair64, ANALYSES["neuron_tokens"])
    assert any(where[3] == "dtype torch.float32" for where in violations)
