"""The FFN analyses on a model pair, printed as the Markdown shown in docs/ffn.md.

    python experiments/ffn_organism.py --out runs/ffn-organism [--base SPEC --tuned SPEC] [--figures docs/ffn]

Runs neuron tokens, concepts (both models), the rotation and the lexicon labels, writes
every frame under ``--out`` and the figures (PNG + SVG) under ``--figures``, and prints
Markdown tables to stdout. Without ``--base/--tuned``: the embedded organism pair.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def md(frame, floatfmt: str = ".3f") -> str:
    """A DataFrame as a Markdown table (no tabulate dependency)."""
    def cell(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        if isinstance(v, (list, tuple)) or hasattr(v, "tolist") and not isinstance(v, str):
            return ", ".join(map(str, list(v)))
        return str(v).replace("|", "\\|")

    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base")
    parser.add_argument("--tuned")
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    import pandas as pd

    import mechit
    from mechit.arch.weights import mlp_out_weights
    from mechit.ffn.labellers import label_concepts
    from mechit.ffn.labels import label_proportions, label_table
    from mechit.store import write_table
    from mechit.views.ffn import plot_label_proportions, plot_neuron_cosines, plot_principal_angles, save_figure

    t0 = time.perf_counter()
    pair = mechit.load_pair(args.base, args.tuned)
    base = pair.base
    cfg = base.cfg
    n_comp = min(300, cfg.d_mlp - 1, cfg.d_model)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = args.figures or args.out

    print(f"Pair: `{pair.base_spec}` vs `{pair.tuned_spec}`: {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"d_mlp {cfg.d_mlp}, {n_comp} components per layer.\n")

    concepts = pair.run(mechit.ffn_concepts, n_components=n_comp, top_k=args.top_k, progress=False)
    for name, frame in concepts.groupby("model", sort=False):
        write_table(frame.drop(columns="model").reset_index(drop=True), args.out / name / "concepts.parquet")

    # neurons: the two most changed neurons of the middle layer, base and tuned side by side
    rotation = mechit.ffn_rotation(pair, concepts, k=args.k, progress=False)
    rotation.save(args.out)
    layer = cfg.n_layers // 2
    changed = rotation.changed[rotation.changed.layer == layer]["neuron"].head(2).tolist()
    strongest = int(mlp_out_weights(pair.tuned, layer).norm(dim=1).argmax())
    neurons = pair.run(mechit.neuron_tokens, layer, sorted(set(changed + [strongest])), k=6)
    write_table(neurons, args.out / "neurons.parquet")
    print(f"### Neuron tokens (layer {layer}; neurons {strongest} (largest tuned W_out norm) and "
          f"{', '.join(map(str, changed))} (most changed))\n")
    keys = ["layer", "neuron", "rank"]
    top = neurons[neurons.direction == "top"]
    show = (top[top.model == "base"][keys + ["word", "score"]]
            .merge(top[top.model == "tuned"][keys + ["word", "score"]], on=keys, suffixes=("_base", "_tuned")))
    print(md(show) + "\n")

    print(f"### Concepts (first 3 components of layers 0 and {cfg.n_layers - 1}, top 8 words)\n")
    rows = []
    for name, frame in concepts.groupby("model", sort=False):
        for lay in (0, cfg.n_layers - 1):
            sub = frame[(frame.layer == lay) & (frame.component < 3) & (frame["rank"] < 8)]
            for comp, g in sub.groupby("component"):
                rows.append(dict(model=name, layer=lay, component=comp,
                                 explained=g["explained_variance"].iloc[0], words=" ".join(g["word"])))
    print(md(pd.DataFrame(rows)) + "\n")

    print(f"### Rotation (k = {args.k} components)\n")
    print(md(rotation.summary.drop(columns=["k"])) + "\n")
    print("Most-changed neurons (lowest W_out cosine), top words before and after:\n")
    top_changed = rotation.changed.nsmallest(5, "cos_out")[["layer", "neuron", "cos_out", "base_tokens", "tuned_tokens"]]
    print(md(top_changed.assign(base_tokens=top_changed["base_tokens"].map(lambda t: list(t)[:6]),
                                tuned_tokens=top_changed["tuned_tokens"].map(lambda t: list(t)[:6]))) + "\n")

    labels = label_concepts(concepts, progress=False)
    write_table(labels, args.out / "labels.parquet")
    group_size = 4 if cfg.n_layers >= 8 else 1  # the paper's layer // 4; per layer for small models
    props = label_proportions(labels, group_size=group_size)
    table = label_table(labels)
    print("### Lexicon labels: share of concepts per label (Table 5 format; 1 seed, so no t-test)\n")
    print(md(table[["question", "label", "base", "tuned", "diff"]]) + "\n")

    for name, fig in (("principal_angles", plot_principal_angles(rotation)),
                      ("neuron_cosines", plot_neuron_cosines(rotation)),
                      ("label_proportions_task", plot_label_proportions(props, "task", group_size=group_size)),
                      ("label_proportions_level", plot_label_proportions(props, "level", group_size=group_size))):
        save_figure(fig, figures / name)
    print(f"_Computed in {time.perf_counter() - t0:.0f} s; figures in `{figures}`._")


if __name__ == "__main__":
    main()
