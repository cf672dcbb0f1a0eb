"""The head analyses on the organism pair, printed as the Markdown shown in docs/heads.md.

    python experiments/heads_organism.py --out runs/heads-organism [--top-k 100] [--prompts 60]

Runs ``head_pairs`` (method "qk-dims", PPMI similarity on the organism's training corpus,
the organism's vocabulary) on both models, the instruction-verb shift per layer and over
all layers, the heads that shifted most with their top pairs, and the instruction
attention mass on every sixth held-out prompt (with its reference response). Writes the
frames under ``--out`` (parquet) and prints Markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=60, help="held-out prompts for the attention mass")
    args = parser.parse_args()

    import torch

    import mechit
    import mechit.organism as organism
    from mechit.organism.weights import weights_dir
    from ffn_organism import md
    from mechit.heads.similarity import get_similarity
    from mechit.views import head_pairs_table

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.out / "organism.txt"
    corpus.write_text(organism.corpus_text())
    pair = mechit.load_pair()
    meta = json.loads((weights_dir() / "organism.json").read_text())
    meta = {k: meta[k] for k in ("seed", "vocab_size", "n_parameters", "final_loss")}
    similarity = get_similarity(f"ppmi:{corpus}")

    pairs, rows = {}, []
    for name, model in pair:
        t0 = time.perf_counter()
        frame = mechit.head_pairs(model, top_k=args.top_k, similarity=similarity, progress=False)
        seconds = time.perf_counter() - t0
        frame.to_parquet(args.out / f"head_pairs_{name}.parquet")
        pairs[name] = frame
        knowledge = mechit.head_knowledge(frame)
        rows.append({"model": name, "pairs kept": len(frame), "head-knowledge pairs": len(knowledge),
                     f"seconds ({model.cfg.n_layers * model.cfg.n_heads} heads)": round(seconds, 1)})
    import pandas as pd

    print(f"organism: {meta}\nwords: {pairs['base'].attrs['n_words']}, K = {args.top_k}\n")
    print(md(pd.DataFrame(rows)), "\n")

    per_layer = mechit.head_shift(pairs["base"], pairs["tuned"], layer_group=1)
    overall = mechit.head_shift(pairs["base"], pairs["tuned"], layer_group=pair.base.cfg.n_layers)
    print("Instruction-verb shift per layer, then over all layers:\n")
    print(md(pd.concat([per_layer, overall], ignore_index=True)), "\n")

    from mechit.heads.shift import head_change_scores

    changes = head_change_scores(pairs["base"], pairs["tuned"]).head(3)
    table = []
    for row in changes.itertuples(index=False):
        frame = head_pairs_table(pairs["base"], pairs["tuned"], row.layer, row.head, top=6).frame
        table.append({
            "head": f"L{row.layer}H{row.head}",
            "instruction verbs base → tuned": f"{row.instruction_base} → {row.instruction_tuned}",
            "general verbs base → tuned": f"{row.general_base} → {row.general_tuned}",
            "base top pairs": ", ".join(frame["base_pair"].dropna()),
            "tuned top pairs": ", ".join(frame["tuned_pair"].dropna()),
        })
    print("Heads with the largest shift:\n")
    print(md(pd.DataFrame(table)), "\n")

    prompts = organism.held_out_prompts()[:: max(1, len(organism.held_out_prompts()) // args.prompts)][: args.prompts]
    shares = {}
    for name, model in pair:
        mass = mechit.instruction_attention(model, prompts, progress=False)
        mass.to_parquet(args.out / f"instruction_attention_{name}.parquet")
        shares[name] = mass.groupby("layer")["instruction_share"].mean()
    print(f"Instruction attention, mean instruction_share per layer ({len(prompts)} held-out prompts):\n")
    print(md(pd.DataFrame(shares).reset_index()))


if __name__ == "__main__":
    main()
