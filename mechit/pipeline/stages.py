"""The stages of ``mechit compare``: each calls the analyses on both models and returns its tables.

A stage is a function ``run(ctx) -> dict[name, DataFrame]`` of a
:class:`mechit.pipeline.context.Context`; :func:`mechit.pipeline.run.compare` writes every
returned table once to ``DIR/<name>.parquet`` and records the stage as finished. Stages
hold no analysis logic: they choose inputs and options and call each analysis on both
models through ``ctx.pair.run`` (:meth:`mechit.models.ModelPair.run`), which tags the rows
``model="base"|"tuned"``; weight-only analyses run on ``ctx.pair.weights_pair()``, and a
stage asks for one model by name (``ctx.pair.member(name)``, ``ctx.pair.weights(name)`` for
its config, tokenizer or weights), so a pair that keeps one model resident
(:class:`mechit.models.OneAtATimePair`) loads each model once per pass and holds no other.
``ctx.tick(label)`` advances the overall progress bar by one
step; :func:`stage_plan` gives each stage's steps and their expected costs (for the ETA).

>>> from mechit.organism import held_out_prompts
>>> from pathlib import Path
>>> from mechit.pipeline.context import Options
>>> ctx = Context(pair=pair, records=held_out_prompts()[:1], options=Options(), out=Path("run"), organism=True)
>>> patterns, tokens = _attention_patterns(ctx, [(0, 1), (2, 5)])
>>> patterns.groupby("model").size().tolist() == [2 * len(tokens) * (len(tokens) + 1) // 2] * 2
True
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechit.attribution.agreement import agreement, gradient_vs_ablation
from mechit.attribution.dataset import attribute_dataset, run_summary
from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.labeller_check import labeller_accuracy
from mechit.ffn.labellers import label_concepts, make_labeller
from mechit.ffn.labels import label_proportions, label_table, user_task_shares
from mechit.ffn.rotation import ffn_rotation
from mechit.heads.attention import attention_patterns
from mechit.heads.pairs import head_pairs
from mechit.heads.shift import head_change_scores, head_shift
from mechit.heads.similarity import (
    EmbeddingSimilarity,
    SimilaritySource,
    default_similarity,
    get_similarity,
    similarity_identity,
)
from mechit.models import tag_model, weights_fingerprint
from mechit.pipeline.context import Context
from mechit.pipeline.prompt_work import (
    ablate_example,
    ablation_frame,
    ablation_store,
    attend,
    attention_store,
    attention_table,
    chat_of,
    prompt_records,
)
from mechit.stats import compare_labels, compare_models
from mechit.store import RecordStore
from mechit.vocab import default_top_k, default_words


def _words(ctx: Context) -> list[str]:
    """The word list for heads and FFN: given, else the one default rule (:func:`mechit.vocab.default_words`)."""
    if ctx.options.words is not None:
        return list(ctx.options.words)
    return default_words(ctx.pair.weights("base"), ctx.options.n_words)


def _top_k(ctx: Context, words: list[str]) -> int:
    """K words per head dimension: given, else the paper's ratio (:func:`mechit.vocab.default_top_k`)."""
    return ctx.options.head_top_k or default_top_k(ctx.pair.weights("base"), len(words))


def _similarity(ctx: Context) -> SimilaritySource:
    """One relatedness source for both models: the option, else MiniLM when installed, else the
    base model's embeddings (one yardstick either way: never each model its own)."""
    spec, base = ctx.options.similarity or default_similarity(), ctx.pair.weights("base")
    return EmbeddingSimilarity(base) if spec == "embedding" else get_similarity(spec, base)


def _layer_group(ctx: Context, given: int | None) -> int:
    return given or max(1, ctx.pair.weights("base").cfg.n_layers // 4)


def _chat(ctx: Context) -> bool:
    """Wrap prompts in the chat template when both tokenizers have one (:func:`mechit.pipeline.prompt_work.chat_of`)."""
    return chat_of(ctx.pair)


def _ticking(ctx: Context, label: str, analysis: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """``analysis`` that ticks the overall bar after each model (``label base``, ``label tuned``)."""
    names = iter(ctx.pair.names)

    def run(model, *args, **kwargs) -> pd.DataFrame:
        frame = analysis(model, *args, **kwargs)
        ctx.tick(f"{label} {next(names)}")
        return frame

    return run


def _one_model(pairs: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of model ``name`` of a frame of both, without the ``model`` column (as the analysis returned them)."""
    return pairs[pairs["model"] == name].drop(columns="model").reset_index(drop=True)


# ---------------------------------------------------------------------------- attribution


def run_attribution(ctx: Context) -> dict[str, pd.DataFrame]:
    """Attribution of every prompt under both models, resumable per example, plus statistics.

    Runs :func:`mechit.attribution.dataset.attribute_dataset` in ``DIR`` (records under
    ``DIR/records``, raw matrices under ``DIR/tensors``; a rerun skips finished examples)
    with the model names "base" and "tuned". Tables: attribution_prompts,
    attribution_examples, attribution_tokens and attribution_stats
    (:func:`mechit.stats.compare_models` tuned vs base, and followed vs not followed when
    prompts carry labels).
    """
    o = ctx.options
    names = list(ctx.pair.names)
    with _count_finished_examples(ctx, names):
        examples, tokens = attribute_dataset(
            names, prompt_records(ctx.records), ctx.out, response=o.response, loader=ctx.pair.member,
            fingerprints={name: weights_fingerprint(ctx.pair.spec(name)) for name in names},
            max_new_tokens=o.max_new_tokens, chat_template=_chat(ctx), progress=ctx.progress,
        )
    summary = run_summary(examples)
    ctx.tick(f"attribution ({summary['done']} done, {summary['failed']} failed, {summary['empty']} empty)")
    stats = pd.concat([compare_models(examples, "base", "tuned", seed=o.seed),
                       compare_labels(examples, seed=o.seed)], ignore_index=True)
    ctx.tick("statistics")
    prompts = pd.DataFrame({
        "id": [r["id"] for r in ctx.records], "group": [r.get("group") for r in ctx.records],
        "prompt": [r["prompt"] for r in ctx.records], "reference": [r.get("response") for r in ctx.records],
        "instruction_spans": [[list(s) for s in r.get("instruction_spans") or ()] for r in ctx.records],
    })
    return {"attribution_prompts": prompts, "attribution_examples": examples, "attribution_tokens": tokens,
            "attribution_stats": stats}


@contextmanager
def _count_finished_examples(ctx: Context, names: list[str], every: float = 1.0):
    """While the block runs, advance the overall bar by each (model, example) record the
    store holds (checked every ``every`` seconds from a background thread)."""
    store = RecordStore(ctx.out)
    stop = threading.Event()

    def watch() -> None:
        shown = 0
        while not stop.wait(every):
            done = sum(store.done(name, r["id"]) for name in names for r in ctx.records)
            ctx.advance(done - shown)
            shown = done

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------- faithfulness


def run_faithfulness(ctx: Context) -> dict[str, pd.DataFrame]:
    """Causal ablation beside the gradient: does each model's response depend on the part of
    the prompt that gradient × input says it does?

    Reads the attribution stage's tables (``ctx.tables``). For each model and each example
    it scored, :func:`mechit.attribution.ablation.ablate_prompts` ablates the instruction
    and the context (``Options.ablation``: "remove", "mask" or "mean") on the same response
    the attribution used (the model's own greedy response by default), resumable per
    example (records under ``DIR/ablation``). Tables (:mod:`mechit.attribution.agreement`):
    faithfulness_examples (both views per example) and faithfulness_summary (per model:
    mean instruction and context effects, Spearman rank correlation of instruction score
    and instruction effect, share of examples where both views name the same part).
    """
    examples = ctx.tables["attribution_examples"]
    ablation = pd.concat([tag_model(_ablate_resumably(ctx, name, ctx.pair.member(name), examples), name)
                          for name in ctx.pair.names], ignore_index=True)
    per_example = gradient_vs_ablation(examples, ctx.tables["attribution_tokens"], ablation)
    summary = agreement(per_example)
    ctx.tick("agreement")
    return {"faithfulness_examples": per_example, "faithfulness_summary": summary}


def _ablate_resumably(ctx: Context, name: str, model, examples: pd.DataFrame) -> pd.DataFrame:
    """:func:`ablate_prompts` of model ``name`` on the examples its attribution scored, each
    on the attributed response; one stored record per example (a rerun skips finished ones,
    :func:`mechit.pipeline.prompt_work.ablate_example`)."""
    store = ablation_store(ctx.out)
    scored = examples[(examples["model"] == name) & (examples["status"] == "ok")]
    responses = dict(zip(scored["id"], scored["response"]))
    records = [dataclasses.replace(r, response=responses[r.id]) for r in prompt_records(ctx.records)
               if r.id in responses]
    for record in tqdm(records, desc=f"ablate {name}", unit="ex", file=sys.stderr, disable=not ctx.progress):
        ablate_example(store, name, model, record, how=ctx.options.ablation, chat=_chat(ctx))
        ctx.advance(1)
    ctx.tick(f"ablation {name}")
    return ablation_frame(store, name, records)


# ---------------------------------------------------------------------------- heads


def run_heads(ctx: Context) -> dict[str, pd.DataFrame]:
    """QK word pairs of every head of both models, the instruction-verb shift, the instruction
    attention mass, and the attention patterns of the heads that changed most.

    Both models are judged with one word list, one K and one relatedness source; the
    one-row table ``head_settings`` records them (words, n_words, top_k, similarity,
    similarity_id) for ``summary.json`` and the report."""
    o = ctx.options
    words, source = _words(ctx), _similarity(ctx)
    top_k = _top_k(ctx, words)
    pairs = ctx.pair.weights_pair().run(_ticking(ctx, "head pairs", head_pairs), words, method=o.head_method,
                                        top_k=top_k, similarity=source, progress=ctx.progress)
    settings = pd.DataFrame([{"words": "given" if o.words is not None else "default", "n_words": len(words),
                              "top_k": top_k, "similarity": source.name,
                              "similarity_id": similarity_identity(source)}])
    base, tuned = _one_model(pairs, "base"), _one_model(pairs, "tuned")
    n_layers = ctx.pair.weights("base").cfg.n_layers
    shift = head_shift(base, tuned, layer_group=_layer_group(ctx, o.head_layer_group))
    overall = head_shift(base, tuned, layer_group=n_layers)
    changes = head_change_scores(base, tuned)
    ctx.tick("verb shift")
    mass = _instruction_attention(ctx)
    ctx.tick("instruction attention")
    changed = top_changed_heads(changes, o.n_attention_heads)
    patterns, tokens = _attention_patterns(ctx, changed)
    ctx.tick("attention patterns")
    return {
        "head_pairs": pairs,
        "head_settings": settings,
        "head_shift": shift,
        "head_shift_overall": overall,
        "head_changes": changes,
        "instruction_attention": mass,
        "attention_patterns": patterns,
        "attention_tokens": tokens,
    }


def _instruction_attention(ctx: Context) -> pd.DataFrame:
    """:func:`mechit.heads.attention.instruction_attention` of every prompt under both models,
    one stored record per (model, example) under ``DIR/attention`` (a rerun skips finished ones)."""
    store = attention_store(ctx.out)
    for name in ctx.pair.names:
        for record in tqdm(ctx.records, desc=f"instruction attention {name}", unit="prompt", file=sys.stderr,
                           disable=not ctx.progress):
            attend(store, name, ctx.pair.member(name), record, chat=_chat(ctx))
    return attention_table(store, list(ctx.pair.names), ctx.records)


def top_changed_heads(changes: pd.DataFrame, n: int) -> list[tuple[int, int]]:
    """The ``n`` (layer, head) that changed most: largest ``|shift|``, then largest total count change.

    >>> changes = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "shift": [0.0, -0.5, 0.0],
    ...                         "instruction_change": [0, -2, 3], "general_change": [1, 0, 0]})
    >>> top_changed_heads(changes, 2)
    [(0, 1), (1, 0)]
    """
    order = changes.assign(
        _shift=changes["shift"].abs(),
        _total=changes["instruction_change"].abs() + changes["general_change"].abs(),
    ).sort_values(["_shift", "_total", "layer", "head"], ascending=[False, False, True, True], kind="stable")
    return [(int(r.layer), int(r.head)) for r in order.head(n).itertuples()]


def _pattern_prompt(ctx: Context) -> tuple[str, list]:
    """The prompt whose attention is shown: the first record (its text and spans)."""
    record = ctx.records[0]
    return record["prompt"], [tuple(s) for s in record.get("instruction_spans") or []]


def _attention_patterns(ctx: Context, heads: list[tuple[int, int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attention patterns of ``heads`` on one prompt, both models (:func:`mechit.heads.attention.attention_patterns`), tidy.

    Returns (patterns: model, layer, head, query, key, weight over the causal triangle;
    tokens: position, token, text — the token as the tokenizer writes it back, e.g. " white").
    """
    prompt, _ = _pattern_prompt(ctx)
    layers = sorted({layer for layer, _ in heads})
    shown = {}  # the prompt's tokens, as the last model's tokenizer splits and writes them

    def patterns_of(model) -> pd.DataFrame:
        tokens, patterns = attention_patterns(model, prompt, layers=layers, chat_template=_chat(ctx))
        shown.update(token=tokens, text=[model.tokenizer.convert_tokens_to_string([t]) for t in tokens])
        rows = []
        for layer, head in heads:
            pattern = patterns[layer][head]  # (query, key)
            q, k = torch.tril_indices(pattern.shape[0], pattern.shape[1], device=pattern.device)
            rows.append(pd.DataFrame({"layer": layer, "head": head, "query": q.cpu().numpy(), "key": k.cpu().numpy(),
                                      "weight": pattern[q, k].cpu().numpy()}))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PATTERN_COLUMNS[1:])

    patterns = ctx.pair.run(patterns_of)
    return patterns, pd.DataFrame({"position": range(len(shown["token"])), **shown})


PATTERN_COLUMNS = ["model", "layer", "head", "query", "key", "weight"]


# ---------------------------------------------------------------------------- ffn


def _n_components(ctx: Context) -> int:
    """Components per layer: the option, else min(300, d_model, d_mlp - 1) (the centred rank bound)."""
    cfg = ctx.pair.weights("base").cfg
    return ctx.options.n_components or min(300, cfg.d_model, cfg.d_mlp - 1)


def _labeller_row(labeller, n_seeds: int) -> pd.DataFrame:
    """One row: the labeller, its seeds and its accuracy on the check set's test split (computed once, cached)."""
    check = labeller_accuracy(labeller)
    seeds = "resampled word lists" if getattr(labeller, "deterministic", False) else "sampling seeds"
    return pd.DataFrame([{"labeller": labeller.name, "n_seeds": n_seeds, "seeds": seeds,
                          **{k: check[k] for k in ("task_accuracy", "task_macro_f1", "level_accuracy",
                                                   "level_macro_f1", "n_task", "n_level")}}])


def run_ffn(ctx: Context) -> dict[str, pd.DataFrame]:
    """Concepts of every FFN layer of both models, their labels (the offline default labeller,
    the organism's second language counted as translation for the organism pair only, over
    ``label_seeds`` seeds), Finding 3's per-group test, and the rotation between the models."""
    o = ctx.options
    words = _words(ctx)
    k = _n_components(ctx)
    concepts = ctx.pair.weights_pair().run(_ticking(ctx, "concepts", ffn_concepts), n_components=k,
                                           top_k=o.concept_top_k, words=words, progress=ctx.progress)
    labeller = make_labeller(o.labeller, foreign_words="organism" if ctx.organism else ())
    labels = label_concepts(concepts, labeller, seeds=range(o.label_seeds), progress=ctx.progress)
    proportions = label_proportions(labels, group_size=o.ffn_layer_group)
    ctx.tick("labels")
    rotation = ffn_rotation(ctx.pair.weights_pair(), concepts, k=o.rotation_k or min(50, k), progress=ctx.progress)
    ctx.tick("rotation")
    return {
        "ffn_concepts": concepts,
        "ffn_labels": labels,
        "ffn_label_proportions": proportions,
        "ffn_label_table": label_table(labels),
        "ffn_label_table_groups": label_table(labels, group_size=o.ffn_layer_group),
        "ffn_user_tasks": user_task_shares(labels, group_size=o.ffn_layer_group),
        "ffn_labeller": _labeller_row(labeller, o.label_seeds),
        "ffn_rotation": rotation.summary,
        "ffn_angles": rotation.angles,
        "ffn_neurons": rotation.neurons,
        "ffn_matches": rotation.matches,
        "ffn_changed": rotation.changed,
    }


STAGE_RUNNERS: dict[str, Callable[[Context], dict[str, pd.DataFrame]]] = {
    "attribution": run_attribution,
    "faithfulness": run_faithfulness,
    "heads": run_heads,
    "ffn": run_ffn,
}


def stage_plan(stage: str, n_records: int, n_layers: int, n_heads: int) -> list[float]:
    """The expected cost of each progress step of ``stage``, in the order the stage ticks.

    The unit is roughly one attributed example; the weights only shape the ETA of the
    overall bar (measured on the organism: an example, one head's pairs and 1/3 of a
    prompt's attention pass cost about the same; ablating an example's two parts costs
    0.4 of attributing it with a generated response).

    >>> stage_plan("attribution", n_records=10, n_layers=4, n_heads=8)
    [20, 1]
    """
    heads = n_layers * n_heads
    plans = {
        "attribution": [2 * n_records, 1],
        "faithfulness": [0.4 * n_records, 0.4 * n_records, 1],
        "heads": [heads, heads, 1, 0.3 * n_records, 1],
        "ffn": [2 * n_layers, 2 * n_layers, 1, 2 * n_layers],
    }
    return plans[stage]
