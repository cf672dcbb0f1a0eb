"""Peak memory of the weight-only commands on a checkpoint larger than memory likes:
``mechit heads`` and ``mechit ffn`` streamed (``--stream``) vs loaded.

    .venv/bin/python benchmarks/streaming.py [--checkpoint DIR] [--loaded-dtype float32]

Writes a synthetic Llama-architecture checkpoint (random bf16 weights, d_model 2048, 24
layers, 16 heads and 8 KV heads of 128, d_mlp 8192, vocabulary 32,000 rows: 1.64 B
parameters, 3.3 GB; one safetensors shard per layer plus an index, so writing it never
holds more than one layer) into a temporary directory, with the organism's tokenizer
(its 2,032 tokens; the rows beyond are padding, as in many real vocabularies), or reuses
``--checkpoint DIR`` (written there when it is empty). Then, each in a fresh process,
runs ``mechit heads`` (qk-dims, embedding similarity) and ``mechit ffn`` on one layer and on
every layer, streamed and loaded (``--dtype``: ``--loaded-dtype``, float32 by default as
on any CPU), over 2,000 frequent words, and reads the process's peak RSS
(``getrusage``, which counts the pages of memory-mapped files too). The streamed and loaded
tables must be equal.

The last line printed is one JSON object: ``stream_peak_rss_mb`` and ``loaded_peak_rss_mb``
(the largest over the runs), ``identical``, ``params``, and every run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHAPE = dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
             intermediate_size=8192, vocab_size=32000)


def write_checkpoint(directory: Path) -> int:
    """The synthetic checkpoint, layer by layer; returns its parameter count."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from mechit.models import organism_dir

    organism = organism_dir("tuned")
    source = json.loads((organism / "config.json").read_text())
    config = LlamaConfig(**SHAPE, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=source["bos_token_id"], eos_token_id=source["eos_token_id"],
                         pad_token_id=source["pad_token_id"], dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    directory.mkdir(parents=True, exist_ok=True)
    config.to_json_file(directory / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(organism / name, directory / name)
    d, d_mlp, vocab = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    q, kv = SHAPE["num_attention_heads"] * SHAPE["head_dim"], SHAPE["num_key_value_heads"] * SHAPE["head_dim"]
    generator = torch.Generator().manual_seed(0)

    def matrix(*shape):
        return (0.02 * torch.randn(*shape, generator=generator)).to(torch.bfloat16)

    def norm():
        return (1 + 0.1 * torch.randn(d, generator=generator)).to(torch.bfloat16)

    weight_map, total = {}, 0

    def save(file: str, tensors: dict) -> None:
        nonlocal total
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        total += sum(t.numel() for t in tensors.values())

    save("model-embeddings.safetensors", {"model.embed_tokens.weight": matrix(vocab, d),
                                          "lm_head.weight": matrix(vocab, d), "model.norm.weight": norm()})
    for layer in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        save(f"model-layer-{layer:03d}.safetensors", {
            p + "self_attn.q_proj.weight": matrix(q, d), p + "self_attn.k_proj.weight": matrix(kv, d),
            p + "self_attn.v_proj.weight": matrix(kv, d), p + "self_attn.o_proj.weight": matrix(d, q),
            p + "mlp.gate_proj.weight": matrix(d_mlp, d), p + "mlp.up_proj.weight": matrix(d_mlp, d),
            p + "mlp.down_proj.weight": matrix(d, d_mlp),
            p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
        })
    index = {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return total


def measure(argv: list[str]) -> None:
    """Child process: run one mechit command, print its peak RSS (MB) and wall time as JSON."""
    from mechit.cli import main

    start = time.perf_counter()
    code = main(argv)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"rc": code, "peak_rss_mb": round(peak_mb), "seconds": round(time.perf_counter() - start, 1)}))


def run_child(argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", json.dumps(argv)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tables_equal(a: Path, b: Path) -> bool:
    import pandas as pd
    from pandas.testing import assert_frame_equal

    for path in sorted(a.glob("*.parquet")):
        try:
            assert_frame_equal(pd.read_parquet(path), pd.read_parquet(b / path.name))
        except AssertionError:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="reuse (or write) the synthetic checkpoint here")
    parser.add_argument("--loaded-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="--dtype of the loaded runs (float32: mechit's default on the CPU)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(json.loads(args.measure))

    from mechit.data.wordlists import frequent_words
    from mechit.models import read_plan

    work = Path(tempfile.mkdtemp(prefix="mechit-streaming-"))
    checkpoint = args.checkpoint or work / "checkpoint"
    try:
        if not (checkpoint / "config.json").is_file():
            start = time.perf_counter()
            write_checkpoint(checkpoint)
            print(f"wrote {checkpoint} in {time.perf_counter() - start:.0f} s", flush=True)
        params = read_plan(checkpoint).parameters
        words = work / "words.txt"
        words.write_text("\n".join(frequent_words(2000)) + "\n")
        options = {
            "heads": ["--method", "qk-dims", "--similarity", "embedding", "--top-k", "20"],
            "ffn": ["--n-components", "50", "--top-k", "20"],
        }
        n_layers = SHAPE["num_hidden_layers"] if args.checkpoint is None else read_plan(checkpoint).n_layers
        runs, identical = [], True
        for command, extra in options.items():
            for layers in ("0", f"0-{n_layers - 1}"):
                outs = {}
                for mode in ("stream", "loaded"):
                    out = work / f"{command}-{layers}-{mode}"
                    flags = ["--stream"] if mode == "stream" else ["--dtype", args.loaded_dtype]
                    figures = run_child([command, "--model", str(checkpoint), "--layers", layers, "--device", "cpu",
                                         "--words", str(words), *extra, *flags, "--out", str(out)])
                    runs.append({"command": command, "layers": layers, "mode": mode, **figures})
                    print(json.dumps(runs[-1]), flush=True)
                    outs[mode] = out
                identical &= tables_equal(outs["stream"], outs["loaded"])
        peak = {mode: max(r["peak_rss_mb"] for r in runs if r["mode"] == mode) for mode in ("stream", "loaded")}
        print(json.dumps({"stream_peak_rss_mb": peak["stream"], "loaded_peak_rss_mb": peak["loaded"],
                          "identical": identical, "params": params, "loaded_dtype": args.loaded_dtype, "runs": runs}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
