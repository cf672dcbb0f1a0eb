"""Streamed checkpoints (mechit/arch/stream.py, mechit/models/stream.py): the weight-only
analyses give exactly the loaded model's tables, weights are read lazily, one layer at a
time, and the commands stream on request or when the plan says the model does not fit."""

from __future__ import annotations

from dataclasses import fields

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import mechit.arch.stream as stream_module
from mechit.arch import weights as views
from mechit.arch.stream import StreamedModel
from mechit.cli import main
from mechit.errors import InputError, SpecError
from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.neurons import neuron_tokens
from mechit.ffn.rotation import ffn_rotation
from mechit.heads.pairs import head_pairs
from mechit.models import ModelPair, fits_in_memory, load_model, load_pair, open_for_weights, open_streamed
from weight_views import assert_weight_views_equal

LAYERS = [0, 5]


@pytest.fixture(scope="module")
def organism():
    """(loaded pair, streamed base, streamed tuned) of the embedded organism."""
    return load_pair(device="cpu"), open_streamed("organism-base", device="cpu"), open_streamed("organism-tuned", device="cpu")


@pytest.mark.parametrize("method", ["qk-dims", "qk", "ov"])
def test_head_pairs_streamed_equal_loaded(organism, method):
    pair, _, streamed = organism
    options = dict(method=method, layers=LAYERS, top_k=20, similarity="embedding", progress=False)
    loaded = head_pairs(pair.tuned, **options)
    assert len(loaded) > 0
    assert_frame_equal(head_pairs(streamed, **options), loaded)


def test_ffn_analyses_streamed_equal_loaded(organism):
    pair, base, tuned = organism
    options = dict(n_components=20, top_k=10, progress=False)
    assert_frame_equal(ffn_concepts(tuned, LAYERS, **options), ffn_concepts(pair.tuned, LAYERS, **options))
    assert_frame_equal(neuron_tokens(tuned, LAYERS, list(range(12)), k=5),
                       neuron_tokens(pair.tuned, LAYERS, list(range(12)), k=5))
    streamed_pair = ModelPair(base, tuned)
    assert_frame_equal(streamed_pair.run(neuron_tokens, 3, None, k=5), pair.run(neuron_tokens, 3, None, k=5))
    streamed = ffn_rotation(streamed_pair, streamed_pair.run(ffn_concepts, LAYERS, **options), LAYERS, k=10,
                            progress=False)
    loaded = ffn_rotation(pair, pair.run(ffn_concepts, LAYERS, **options), LAYERS, k=10, progress=False)
    for field in fields(loaded):
        assert_frame_equal(getattr(streamed, field.name), getattr(loaded, field.name))


def test_gemma3_views_equal_loaded(tiny_gemma_dir, tiny_gemma):
    """Gemma 3: sandwich norms, QK norms, the 1 + w scale and tied embeddings, read by name."""
    streamed = open_streamed(tiny_gemma_dir, device="cpu")
    assert not streamed.has("W_U")  # tied: the unembedding is the input embedding
    assert_weight_views_equal(streamed, tiny_gemma, range(tiny_gemma.cfg.n_layers))


def test_reads_are_lazy_and_per_layer(monkeypatch):
    read: list[str] = []
    real = stream_module.safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.handle.get_tensor(key)

    monkeypatch.setattr(stream_module, "safe_open", Recording)
    streamed = open_streamed("organism-tuned", device="cpu")
    assert read == []  # opening reads headers only
    views.mlp_out_weights(streamed, 3)
    assert read == ["model.layers.3.mlp.down_proj.weight"]
    views.unembedding(streamed)
    views.unembedding(streamed)  # the embeddings and final norm stay resident: read once
    assert read[1:] == ["lm_head.weight", "model.norm.weight"]


def test_errors(tiny_gpt2_dir, organism, tmp_path):
    _, _, streamed = organism
    with pytest.raises(InputError, match="layer 6 out of range: the model has 6 layers"):
        views.qk_weights(streamed, 6)
    with pytest.raises(SpecError, match="streaming is not available for GPT2LMHeadModel"):
        open_streamed(tiny_gpt2_dir)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # GGUF files stream (tests/real/test_stream_real.py); a truncated one is refused
    with pytest.raises(SpecError, match="cannot read GGUF file .*model.gguf"):
        open_streamed(gguf)


def test_stream_when_the_plan_says_it_does_not_fit(capsys):
    assert fits_in_memory("organism-tuned", device="cpu")
    assert not fits_in_memory("organism-tuned", device="cpu", max_memory=2**10)
    assert isinstance(open_for_weights("organism-tuned", device="cpu", max_memory=2**10), StreamedModel)
    assert "does not fit in memory; streaming" in capsys.readouterr().err
    assert not isinstance(open_for_weights("organism-tuned", device="cpu"), StreamedModel)


def _no_loading(*args, **kwargs):
    raise AssertionError("load_model called")


def test_commands_stream(tmp_path, capsys, monkeypatch):
    common = ["--model", "organism-tuned", "--layers", "1", "--device", "cpu"]
    for streamed in (False, True):
        out = tmp_path / ("streamed" if streamed else "loaded")
        extra = ["--stream"] if streamed else []
        if streamed:  # --stream must never build the model
            monkeypatch.setattr("mechit.models.stream.load_model", _no_loading)
        assert main(["heads", *common, "--method", "qk", "--top-k", "5", "--out", str(out / "heads"), *extra]) == 0
        assert main(["ffn", *common, "--n-components", "5", "--top-k", "5", "--neurons", "4",
                     "--out", str(out / "ffn"), *extra]) == 0
    for table in ("heads/head_pairs.parquet", "ffn/concepts.parquet", "ffn/neurons.parquet"):
        loaded = pd.read_parquet(tmp_path / "loaded" / table)
        assert len(loaded) > 0
        assert_frame_equal(pd.read_parquet(tmp_path / "streamed" / table), loaded)

