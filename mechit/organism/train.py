"""Train the organism pair from nothing: tokenizer, ``base`` (pre-training), ``tuned``.

Recipe (see docs/organism.md): a LLaMA model (RMSNorm, rotary, SwiGLU, grouped-query
attention) is pre-trained on the corpus with next-token loss, then fine-tuned on the
instruction set with loss on response tokens only, plus a share of pre-training rows
(weighted ``lm_weight``) that keeps its language-model loss close to base's. Plain torch
loop: AdamW, linear warm-up then cosine decay, gradient clipping; fixed thread count and
deterministic algorithms, so a seed gives the same losses on the same machine.

Output directory layout::

    OUT/base/, OUT/tuned/       Hugging Face dirs (config.json, model.safetensors, tokenizer)
    OUT/organism.json           seed, config, final losses, training seconds
    OUT/checkpoints/            during training only: state.json, model and optimizer

A run interrupted after a checkpoint resumes from it when started again with the same
settings; any other non-empty directory is refused unless ``force=True`` (which deletes it).

>>> from mechit.organism.train import TrainConfig
>>> TrainConfig.preset("tiny").base_steps
6
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mechit.errors import InputError
from mechit.organism import corpus, tasks
from mechit.organism.data import instruction_rows, lm_rows
from mechit.organism.tokenizer import tokenizer_texts, train_tokenizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (its fingerprint)."""

    seed: int = 0
    d_model: int = 160
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 2
    d_mlp: int = 448
    seq_len: int = 128
    batch_size: int = 16
    base_steps: int = 800
    base_lr: float = 3e-3
    tuned_steps: int = 600
    tuned_lr: float = 1.5e-3
    lm_rows_per_batch: int = 4
    lm_weight: float = 0.5
    warmup: int = 50
    weight_decay: float = 0.1
    vocab_size: int = 2048
    tokenizer_docs: int = 30_000
    threads: int = 1
    checkpoint_every: int = 100

    @classmethod
    def preset(cls, name: str, **overrides) -> TrainConfig:
        """``"full"`` (the shipped pair) or ``"tiny"`` (seconds; for tests), with overrides.

        >>> TrainConfig.preset("full", seed=3).seed
        3
        """
        presets = {
            "full": {},
            "tiny": dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_mlp=64, seq_len=192,
                         batch_size=4, base_steps=6, tuned_steps=4, lm_rows_per_batch=1,
                         warmup=2, vocab_size=400, tokenizer_docs=500, checkpoint_every=3),
        }
        if name not in presets:
            raise InputError(f"unknown training preset {name!r}; use one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def fingerprint(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is a non-negative int, else raise :class:`InputError`.

    >>> check_seed(3)
    3
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r} ({type(seed).__name__})")
    return seed


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _atomic_save(tensors: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _masked_loss(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    target, keep = ids[:, 1:], mask[:, 1:]
    return F.cross_entropy(logits[keep], target[keep])


def model_config(cfg: TrainConfig, tok: PreTrainedTokenizerFast) -> LlamaConfig:
    """The LLaMA config of the organism for a training config and tokenizer."""
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=2 * cfg.seq_len,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def save_hf_dir(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, path: Path) -> None:
    """Write a Hugging Face directory: fp16 safetensors (half the size), fp32 config dtype.

    ``from_pretrained`` and ``TransformerBridge.boot_transformers`` load it back as fp32.
    """
    path.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.dtype = torch.float32
    config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    _atomic_save({k: v.detach().half() for k, v in model.state_dict().items()}, path / "model.safetensors")
    tok.save_pretrained(path)


class _Run:
    """One training run in ``out``: owns the checkpoint files and the state record."""

    def __init__(self, out: Path, cfg: TrainConfig, progress: bool):
        self.out, self.cfg, self.progress = out, cfg, progress
        self.ckpt = out / "checkpoints"
        self.state_path = self.ckpt / "state.json"
        self.started = time.time()
        self.elapsed_before = self.state().get("elapsed", 0.0)

    def elapsed(self) -> float:
        """Training seconds so far, including those of interrupted earlier attempts."""
        return self.elapsed_before + time.time() - self.started

    def state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def save(self, stage: str, step: int, model, opt, losses: list[float]) -> None:
        """Write a checkpoint; the state file, written last, is the commit point.

        Model and optimizer files carry the stage and step in their names, so a crash
        before the state file is replaced leaves the previous checkpoint intact.
        """
        tag = f"{stage}-{step}"
        _atomic_save(model.state_dict(), self.ckpt / f"model-{tag}.safetensors")
        tmp = self.ckpt / f"optimizer-{tag}.pt.tmp"
        torch.save(opt.state_dict(), tmp)
        os.replace(tmp, self.ckpt / f"optimizer-{tag}.pt")
        _atomic_json(self.state_path, {"fingerprint": self.cfg.fingerprint(), "stage": stage,
                                       "step": step, "tag": tag, "losses": losses,
                                       "elapsed": self.elapsed()})
        for old in list(self.ckpt.glob("model-*.safetensors")) + list(self.ckpt.glob("optimizer-*.pt")):
            if tag not in old.name:
                old.unlink()

    def stage(self, name: str, model, total: int, peak_lr: float, loss_fn) -> list[float]:
        """Train ``model`` for ``total`` steps (resuming if the checkpoint is of this stage)."""
        cfg = self.cfg
        decay = [p for p in model.parameters() if p.dim() >= 2]
        other = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": other, "weight_decay": 0.0}],
                                lr=peak_lr, betas=(0.9, 0.95))
        state = self.state()
        start, losses = 0, []
        if state.get("stage") == name:
            tag = state["tag"]
            model.load_state_dict(load_file(str(self.ckpt / f"model-{tag}.safetensors")))
            opt.load_state_dict(torch.load(self.ckpt / f"optimizer-{tag}.pt", weights_only=True))
            start, losses = state["step"], state["losses"]
        model.train()
        bar = tqdm(range(start, total), desc=name, initial=start, total=total,
                   disable=not self.progress, dynamic_ncols=True)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr(step, total, peak_lr, cfg.warmup)
            loss = loss_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(round(loss.item(), 6))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
                self.save(name, step + 1, model, opt, losses)
        model.eval()
        return losses


def _prepare_out(out: Path, cfg: TrainConfig, force: bool) -> bool:
    """Check ``out``; return True when resuming an interrupted run of the same settings."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return False
    state_path = out / "checkpoints" / "state.json"
    if [p.name for p in out.iterdir()] == ["checkpoints"] and not state_path.exists():
        shutil.rmtree(out)  # interrupted before its first checkpoint: nothing to resume
        return False
    if not force and state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") == cfg.fingerprint():
            return True
        raise InputError(
            f"{out} holds an interrupted run with other settings (seed or sizes differ); "
            "rerun with the same settings to resume, or pass --force to delete it and restart"
        )
    if not force:
        raise InputError(f"output directory {out} is not empty; pass --force to overwrite it")
    shutil.rmtree(out)
    return False


def train(out: str | Path, cfg: TrainConfig | None = None, *, force: bool = False,
          progress: bool = True) -> dict:
    """Train base and tuned into ``out``; return the summary also written to organism.json.

    >>> summary = train("/tmp/org-doc", TrainConfig.preset("tiny"), force=True, progress=False)  # doctest: +SKIP
    >>> sorted(summary["final_loss"])                                                              # doctest: +SKIP
    ['base', 'tuned']
    """
    cfg = cfg or TrainConfig()
    check_seed(cfg.seed)
    out = Path(out)
    resuming = _prepare_out(out, cfg, force)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    run = _Run(out, cfg, progress)
    if resuming:
        s = run.state()
        print(f"resuming the interrupted run in {out} ({s['stage']}, step {s.get('step', 0)})")

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    docs = corpus.documents(cfg.seed, cfg.tokenizer_docs)
    n_examples = cfg.tuned_steps * (cfg.batch_size - cfg.lm_rows_per_batch) * 5
    examples = tasks.training_examples(cfg.seed, max(n_examples, 100))
    tok = train_tokenizer(docs + tokenizer_texts(examples), cfg.vocab_size)

    # pre-training rows: enough documents for base_steps batches, plus LM rows for stage 2
    need = (cfg.base_steps * cfg.batch_size + cfg.tuned_steps * cfg.lm_rows_per_batch) * cfg.seq_len
    n_docs = int(need / 25) + 100
    ids, _ = lm_rows(tok, corpus.documents(cfg.seed, n_docs), cfg.seq_len)
    while ids.numel() < need:
        n_docs = int(n_docs * 1.3)
        ids, _ = lm_rows(tok, corpus.documents(cfg.seed, n_docs), cfg.seq_len)
    n_base = cfg.base_steps * cfg.batch_size
    base_rows, extra_rows = ids[:n_base], ids[n_base:]
    sft_ids, sft_mask = instruction_rows(tok, examples, cfg.seq_len)
    n_sft = cfg.batch_size - cfg.lm_rows_per_batch

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(cfg, tok))
    state = run.state()

    def base_loss(step: int) -> torch.Tensor:
        rows = base_rows[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        return _masked_loss(model, rows, torch.ones_like(rows, dtype=torch.bool))

    def tuned_loss(step: int) -> torch.Tensor:
        i = (step * n_sft) % (len(sft_ids) - n_sft + 1)
        sft = _masked_loss(model, sft_ids[i : i + n_sft], sft_mask[i : i + n_sft])
        if cfg.lm_rows_per_batch == 0:
            return sft
        j = step * cfg.lm_rows_per_batch
        rows = extra_rows[j : j + cfg.lm_rows_per_batch]
        return sft + cfg.lm_weight * _masked_loss(model, rows, torch.ones_like(rows, dtype=torch.bool))

    if state.get("stage") in (None, "base"):
        base_losses = run.stage("base", model, cfg.base_steps, cfg.base_lr, base_loss)
        _atomic_save(model.state_dict(), run.ckpt / "base_final.safetensors")
        _atomic_json(run.ckpt / "base_losses.json", {"losses": base_losses})
        _atomic_json(run.state_path, {"fingerprint": cfg.fingerprint(), "stage": "base_done",
                                      "elapsed": run.elapsed()})
    base_losses = json.loads((run.ckpt / "base_losses.json").read_text())["losses"]
    model.load_state_dict(load_file(str(run.ckpt / "base_final.safetensors")))
    save_hf_dir(model, tok, out / "base")
    tuned_losses = run.stage("tuned", model, cfg.tuned_steps, cfg.tuned_lr, tuned_loss)
    save_hf_dir(model, tok, out / "tuned")

    tail = 20
    summary = {
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "vocab_size": len(tok),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": {"base": round(sum(base_losses[-tail:]) / min(tail, len(base_losses)), 4),
                       "tuned": round(sum(tuned_losses[-tail:]) / min(tail, len(tuned_losses)), 4)},
        "train_seconds": round(run.elapsed(), 1),
    }
    _atomic_json(out / "organism.json", summary)
    shutil.rmtree(run.ckpt)
    return summary
