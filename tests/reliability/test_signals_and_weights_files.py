"""Issue 20 family 9 (SIGTERM, ``pytorch_model.bin``) and family 1 at the API: a checkpoint is
checked against its config before loading, whatever file format holds it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mechit.cli
from mechit.errors import SpecError
from mechit.models import load_model, read_plan
from mechit.models.checkpoint import check_checkpoint, stored_tensors


def test_sigterm_ends_a_run_with_143_and_one_line(monkeypatch, capsys):
    def run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        return 0

    parser = mechit.cli.build_parser()
    original = parser.parse_args
    monkeypatch.setattr(mechit.cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: original(argv).__class__(**{**vars(original(argv)),
                                                                                         "run": run}))
    before = signal.getsignal(signal.SIGTERM)
    started = time.perf_counter()
    assert mechit.cli.main(["info", "organism-tuned"]) == 143
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mechit: terminated (SIGTERM); finished work is kept, rerun the command to resume"]
    assert signal.getsignal(signal.SIGTERM) == before  # the caller's handler is back


@pytest.fixture
def bin_dir(tiny_llama_dir, tmp_path) -> Path:
    """The tiny Llama with its weights as ``pytorch_model.bin`` instead of safetensors."""
    path = Path(shutil.copytree(tiny_llama_dir, tmp_path / "bin-model"))
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return path


def test_pytorch_bin_weights_load_through_the_safe_reader(bin_dir, tiny_llama, monkeypatch):
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (calls.append(k.get("weights_only")), real_load(*a, **k))[1])
    model = load_model(bin_dir)
    assert calls and all(flag is True for flag in calls)  # mechit's header read and transformers' load
    tokens = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), tiny_llama(tokens), rtol=0, atol=0)


def test_a_pytorch_bin_missing_a_tensor_is_refused(bin_dir):
    state = torch.load(bin_dir / "pytorch_model.bin", weights_only=True)
    del state["model.norm.weight"]
    torch.save(state, bin_dir / "pytorch_model.bin")
    assert "model.norm.weight" not in stored_tensors(bin_dir)
    with pytest.raises(SpecError, match=r"1 missing: model\.norm\.weight"):
        load_model(bin_dir)


def test_tied_embeddings_need_no_unembedding(tiny_gemma_dir, tiny_gpt2_dir):
    for directory in (tiny_gemma_dir, tiny_gpt2_dir):
        assert "lm_head.weight" not in stored_tensors(directory)
        check_checkpoint("tied", directory, read_plan(directory))  # passes


def test_many_layers_are_refused_before_anything_is_built(tiny_llama_dir, tmp_path, monkeypatch):
    import json

    path = Path(shutil.copytree(tiny_llama_dir, tmp_path / "big"))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100000}))
    import transformers

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda *a, **k: pytest.fail("the config was built before the layer count was checked"))
    with pytest.raises(SpecError, match=r"config.json says 100000 layers, the weights hold 2 \(model.layers.0-1\)"):
        check_checkpoint("big", path, read_plan(path))
