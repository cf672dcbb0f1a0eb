"""--device, --dtype and --device-map reach load_model from every command that loads a model,
and load_model honours device and dtype."""

from __future__ import annotations

import pytest
import torch

from mechit.models import load_model
from mechit.runtime import choose_dtype

COMMANDS = ["info", "attribute", "compare", "heads", "ffn", "ffn-rotation", "ffn-labels"]


def _subparsers():
    from mechit.cli import build_parser

    (action,) = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_loading_command_has_device_dtype_and_device_map(command):
    options = _subparsers()[command]._option_string_actions
    assert {"--device", "--dtype", "--device-map", "--max-memory"} <= set(options)
    assert options["--dtype"].choices == ["auto", "float32", "bfloat16", "float16"]
    assert options["--device"].default == "auto" and options["--dtype"].default == "auto"


def test_heads_command_passes_device_and_dtype_to_load_model(monkeypatch, tmp_path):
    from mechit import cli
    import mechit.models

    seen = {}

    class Stop(Exception):
        pass

    def fake_open_for_weights(spec, **kw):  # heads opens its model through open_for_weights (streaming)
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(mechit.models, "open_for_weights", fake_open_for_weights)
    with pytest.raises(Stop):
        cli.main(["heads", "--model", "organism-tuned", "--out", str(tmp_path), "--device", "cpu", "--dtype",
                  "bfloat16", "--max-memory", "3"])
    assert seen == {"device": "cpu", "dtype": "bfloat16", "device_map": None, "max_memory": 3 * 2**20,
                    "trust_remote_code": False, "stream": False}


def test_defaults_float32_on_cpu_own_dtype_on_gpu():
    assert choose_dtype("auto", "cpu", "bfloat16") == torch.float32
    assert choose_dtype("auto", "cuda", "bfloat16") == torch.bfloat16
    assert choose_dtype("auto", "cuda", None) == torch.float32
    assert choose_dtype("float16", "cpu", "bfloat16") == torch.float16


def test_load_model_dtype_and_device(tiny_llama_dir, tiny_llama):
    model = load_model(tiny_llama_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.original_model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.original_model.parameters()} == {"cpu"}
    reference = {n: p for n, p in tiny_llama.original_model.named_parameters()}
    for name, param in model.original_model.named_parameters():
        assert torch.equal(param, reference[name].to(torch.bfloat16)), name
    auto = load_model(tiny_llama_dir, device="cpu")
    assert {p.dtype for p in auto.original_model.parameters()} == {torch.float32}


def test_device_and_device_map_exclude_each_other(tiny_llama_dir):
    from mechit.errors import SpecError

    with pytest.raises(SpecError, match="either --device or --device-map"):
        load_model(tiny_llama_dir, device="cpu", device_map="auto")
