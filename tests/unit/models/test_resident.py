"""OneAtATimePair and open_pair: which model is loaded when, and when compare keeps one resident."""

from __future__ import annotations

import pandas as pd
import pytest

import mechit.models.resident as resident
from mechit.errors import SpecError
from mechit.models import ModelPair, OneAtATimePair, open_pair, read_plan
from mechit.models.resident import pair_budget

SPECS = ("organism-base", "organism-tuned")
ONE_MODEL = 4 * read_plan("organism-tuned").parameters  # bytes of one organism model in float32 (the CPU dtype)


@pytest.fixture
def loads(monkeypatch):
    """Every load_model call of the pair, in order (spec names)."""
    calls: list[str] = []
    real = resident.load_model

    def load(spec, **kw):
        calls.append(spec)
        return real(spec, **kw)

    return calls, load


def test_members_load_on_first_use_and_evict_the_other(loads):
    calls, load = loads
    pair = OneAtATimePair(*SPECS, load=load, device="cpu")
    assert pair.weights("base").cfg.n_layers == 6 and pair.weights_pair().tuned.cfg.d_mlp == 448
    assert calls == [] and pair.resident is None  # configs, tokenizers and weights load nothing
    order = ["base", "base", "tuned", "tuned", "base"]
    seen = [pair.member(name).mechit_spec for name in order]
    assert seen == [f"organism-{name}" for name in order]
    assert calls == ["organism-base", "organism-tuned", "organism-base"]  # a load only when the other was resident
    assert pair.resident == "base"
    frame = pair.run(lambda model: pd.DataFrame({"spec": [model.mechit_spec]}))
    assert frame["model"].tolist() == ["base", "tuned"] and frame["spec"].tolist() == list(SPECS)
    assert calls[3:] == ["organism-tuned"] and pair.resident == "tuned"  # base was resident: one load
    pair.evict()
    assert pair.resident is None and pair.description("base")["layers"] == 6


def test_open_pair_loads_both_when_they_fit_together(capsys):
    pair = open_pair(*SPECS, device="cpu", max_memory=2 * ONE_MODEL)
    assert type(pair) is ModelPair and pair.residency == {"mode": "both"}
    assert "one model at a time" not in capsys.readouterr().err


def test_open_pair_keeps_one_resident_when_only_one_fits(capsys):
    budget = pair_budget(*SPECS, device="cpu", max_memory=ONE_MODEL + ONE_MODEL // 2)
    assert budget.need == 2 * ONE_MODEL and not budget.fits
    pair = open_pair(*SPECS, device="cpu", max_memory=ONE_MODEL + ONE_MODEL // 2)
    assert isinstance(pair, OneAtATimePair) and pair.resident is None
    assert pair.residency == {"mode": "one at a time", "need_bytes": 2 * ONE_MODEL,
                              "available_bytes": ONE_MODEL + ONE_MODEL // 2, "available": "--max-memory allows"}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mechit: compare runs one model at a time: base and tuned need {2 * ONE_MODEL / 2**30:.2f} GiB "
                   f"together for their weights, --max-memory allows {1.5 * ONE_MODEL / 2**30:.2f} GiB"]


def test_open_pair_refuses_a_model_that_does_not_fit_alone_unless_only_weights_are_read():
    with pytest.raises(SpecError, match=r"^model 'organism-base' needs .* --max-memory allows") as error:
        open_pair(*SPECS, device="cpu", max_memory=ONE_MODEL // 2)
    assert "\n" not in str(error.value)
    assert isinstance(open_pair(*SPECS, device="cpu", max_memory=ONE_MODEL // 2, forward=False), OneAtATimePair)
