"""mechit.ffn_rotation: principal angles, neuron cosines, matched components."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from mechit.errors import IncompatiblePairError, InputError
from mechit.ffn.concepts import ffn_concepts, principal_components
from mechit.ffn.rotation import Rotation, ffn_rotation, jaccard, match_components, principal_angles, row_cosines
from mechit.models import ModelPair


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def plane_rotation(d: int, i: int, j: int, theta: float) -> torch.Tensor:
    """Rotation of R^d by ``theta`` in the (e_i, e_j) plane (acts on row vectors: x @ R)."""
    r = torch.eye(d, dtype=torch.float64)
    c, s = math.cos(theta), math.sin(theta)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, s, -s, c
    return r


def spectrum_matrix(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """An [n, d] matrix with centred rows whose principal directions are e_1..e_d, in order."""
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=_gen(seed), dtype=torch.float64))
    u = u - u.mean(0)  # centred columns (still independent for n >> d)
    u, _ = torch.linalg.qr(u)
    s = torch.linspace(10, 1, d, dtype=torch.float64)
    return (u * s) + 5.0  # constant offset: removed by centring


def test_principal_angles_match_scipy():
    a, _ = torch.linalg.qr(torch.randn(20, 6, generator=_gen(1), dtype=torch.float64))
    b, _ = torch.linalg.qr(torch.randn(20, 6, generator=_gen(2), dtype=torch.float64))
    ours = principal_angles(a.T, b.T).numpy()
    ref = np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy()))
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # unequal dimensions: min(k, k2) angles
    assert principal_angles(a.T[:2], b.T).shape == (2,)
    assert principal_angles(a.T, b.T[:3]).shape == (3,)


def test_identical_subspaces_give_exact_zero():
    w = torch.randn(64, 16, generator=_gen(3))
    pc = principal_components(w, 8)
    angles = principal_angles(pc.directions, pc.directions)
    assert float(angles.max()) < 1e-10  # naive arccos(cos) would give ~1e-8 in fp64, ~3e-4 in fp32
    assert torch.allclose(row_cosines(w, w), torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("theta", [0.1, 0.5, 1.2])
def test_known_rotation_of_w_out_gives_that_angle(theta):
    d, k = 12, 4
    w = spectrum_matrix(200, d)
    rotated = w @ plane_rotation(d, 0, k, theta)  # mixes e_1 (in top-k) with e_{k+1} (outside)
    a = principal_components(w.float(), k).directions
    b = principal_components(rotated.float(), k).directions
    angles = principal_angles(a, b).numpy()
    np.testing.assert_allclose(angles, [0, 0, 0, theta], atol=1e-5)
    # per-neuron cosines: a row x goes to x R; its cosine depends on its (e_1, e_k+1) part
    cos = row_cosines(w, rotated).numpy()
    x = w.numpy()
    expected = 1 - (1 - math.cos(theta)) * (x[:, 0] ** 2 + x[:, k] ** 2) / (x**2).sum(1)
    np.testing.assert_allclose(cos, expected, atol=1e-10)


def test_rotation_inside_the_subspace_leaves_angles_zero():
    d, k = 10, 3
    w = spectrum_matrix(100, d, seed=4)
    rotated = w @ plane_rotation(d, 0, 1, 0.7)
    a = principal_components(w.float(), k).directions
    b = principal_components(rotated.float(), k).directions
    assert float(principal_angles(a, b).max()) < 1e-5


def test_match_components_is_optimal_assignment():
    a = torch.eye(4)
    perm = [2, 0, 3, 1]
    b = torch.eye(4)[perm] * torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    rows, cols, abs_cos = match_components(a, b)
    assert rows.tolist() == [0, 1, 2, 3]
    assert [perm[c] for c in cols] == [0, 1, 2, 3]
    np.testing.assert_allclose(abs_cos, 1.0)
    # brute force on a random 5x5: Hungarian total equals the best permutation
    import itertools

    x, y = torch.randn(5, 7, generator=_gen(5)), torch.randn(5, 7, generator=_gen(6))
    _, _, got = match_components(x, y)
    sim = (x.double() @ y.double().T).abs().numpy()
    best = max(sum(sim[i, p[i]] for i in range(5)) for p in itertools.permutations(range(5)))
    assert got.sum() == pytest.approx(best)


def test_jaccard_and_row_cosine_errors():
    assert jaccard("abc", "abd") == pytest.approx(2 / 4)
    assert jaccard([], []) == 1.0
    with pytest.raises(IncompatiblePairError, match="shapes"):
        row_cosines(torch.ones(3, 2), torch.ones(4, 2))
    with pytest.raises(InputError, match="dimensions"):
        principal_angles(torch.ones(1, 3), torch.ones(1, 4))


# ---------------------------------------------------------------- model wrapper

WORDS = "the cat sat on mat dog story about write give find make tell please answer question".split()


@pytest.fixture(scope="module")
def models(tiny_pair_dirs):
    from mechit.models import load_model

    return load_model(tiny_pair_dirs[0]), load_model(tiny_pair_dirs[1])


def concepts_of(pair, layers=None, n_components=5, top_k=4):
    return pair.run(ffn_concepts, layers, n_components=n_components, top_k=top_k, words=WORDS, progress=False)


def test_self_rotation_is_zero(models, tmp_path):
    m = models[0]
    pair = ModelPair(m, m)
    rot = ffn_rotation(pair, concepts_of(pair), k=5, n_changed=3, n_tokens=4, progress=False)
    assert rot.summary["layer"].tolist() == [0, 1]
    assert rot.angles["angle_deg"].abs().max() < 1e-8
    np.testing.assert_allclose(rot.neurons["cos_out"], 1.0, atol=1e-12)
    np.testing.assert_allclose(rot.neurons["cos_in"], 1.0, atol=1e-12)
    assert "cos_gate" in rot.neurons  # Llama MLP is gated
    assert (rot.matches["base_component"] == rot.matches["tuned_component"]).all()
    np.testing.assert_allclose(rot.matches["jaccard"], 1.0)
    assert (rot.changed["base_tokens"].map(list) == rot.changed["tuned_tokens"].map(list)).all()
    paths = rot.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left
    back = Rotation.load(tmp_path)
    assert back.summary.equals(rot.summary)


def test_rotation_reads_the_words_from_the_concept_frames(models):
    pair = ModelPair(*models)
    concepts = concepts_of(pair, [0], n_components=4, top_k=3)
    rot = ffn_rotation(pair, concepts, [0], k=4, progress=False)
    # the Jaccard of each matched pair is that of the two frames' word lists
    words = concepts.groupby(["model", "component"])["word"].agg(set)
    for row in rot.matches.itertuples():
        expected = jaccard(words[("base", row.base_component)], words[("tuned", row.tuned_component)])
        assert row.jaccard == pytest.approx(expected)
    # planted: tuned concepts of words the base never has -> every overlap 0, the geometry unchanged
    planted = concepts.assign(word=np.where(concepts["model"] == "tuned", "zzz" + concepts["rank"].astype(str),
                                            concepts["word"]))
    moved = ffn_rotation(pair, planted, [0], k=4, progress=False)
    assert (moved.matches["jaccard"] == 0).all()
    assert moved.angles.equals(rot.angles) and moved.neurons.equals(rot.neurons)


def test_known_rotation_through_the_model_wrapper(models, monkeypatch):
    import mechit
    import mechit.arch.weights

    base = models[0]
    real = mechit.arch.weights.mlp_out_weights
    d = base.cfg.d_model
    w0 = real(base, 0).double()
    # rotate in the plane of the 1st and 10th principal directions of layer 0
    x = w0 - w0.mean(0)
    vt = torch.linalg.svd(x, full_matrices=False).Vh
    theta = 0.4
    r = torch.eye(d, dtype=torch.float64) + (math.cos(theta) - 1) * (
        torch.outer(vt[0], vt[0]) + torch.outer(vt[9], vt[9])
    ) + math.sin(theta) * (torch.outer(vt[0], vt[9]) - torch.outer(vt[9], vt[0]))

    class Tuned:  # same model, other object: the patched weight view tells them apart
        cfg = base.cfg
        tokenizer = base.tokenizer

    tuned = Tuned()
    monkeypatch.setattr(
        mechit.arch.weights, "mlp_out_weights",
        lambda model, layer: (w0 @ r).float() if model is tuned else real(model, layer),
    )
    for name in ("mlp_in_weights", "unembedding", "input_embedding"):
        fn = getattr(mechit.arch.weights, name)
        monkeypatch.setattr(mechit.arch.weights, name, lambda model, *a, _fn=fn: _fn(base, *a))
    import mechit.tokens

    wv = mechit.tokens.word_vectors
    monkeypatch.setattr(mechit.tokens, "word_vectors", lambda model, *a, **kw: wv(base, *a, **kw))
    pair = ModelPair(base, tuned)
    rot = ffn_rotation(pair, concepts_of(pair, [0]), [0], k=5, progress=False)
    angles = rot.angles["angle_deg"].to_numpy()
    np.testing.assert_allclose(angles, [0, 0, 0, 0, math.degrees(theta)], atol=1e-3)
    # the matched components: all pairs aligned except component 0 (cos theta)
    np.testing.assert_allclose(sorted(rot.matches["abs_cos"]), [math.cos(theta)] + [1.0] * 4, atol=1e-5)


def test_rotation_bad_input(models, tiny_dirs):
    from mechit.models import load_model

    pair = ModelPair(*models)
    concepts = concepts_of(pair, [0], n_components=3, top_k=3)
    with pytest.raises(InputError, match="exceeds the rank"):
        ffn_rotation(pair, concepts, [0], k=500, progress=False)
    wide = load_model(tiny_dirs("llama", "llama-wide", intermediate_size=96))
    with pytest.raises(IncompatiblePairError, match="d_mlp"):
        ffn_rotation(ModelPair(models[0], wide), concepts, [0], k=3, progress=False)
    with pytest.raises(InputError, match="ModelPair"):
        ffn_rotation(models[0], concepts, [0])
    with pytest.raises(InputError, match="holds 3 components of the base model's layer 0; k=4 needs 4"):
        ffn_rotation(pair, concepts, [0], k=4, progress=False)
    with pytest.raises(InputError, match="holds 0 components of the base model's layer 1"):
        ffn_rotation(pair, concepts, [1], k=3, progress=False)
    with pytest.raises(InputError, match="lacks the column"):
        ffn_rotation(pair, concepts.drop(columns="model"), [0], k=3, progress=False)
