"""Shared fixtures: tiny random models of three families, built offline in a few seconds.

Each family has a Hugging Face directory (``save_pretrained`` model + fast tokenizer):

- ``tiny_llama_dir``  Llama, GQA (4 query heads, 2 KV heads), SentencePiece-style
  tokenizer ("▁" word marker, byte fallback ``<0xNN>``), BOS added, ChatML chat template.
- ``tiny_gpt2_dir``   GPT-2, LayerNorm, byte-level BPE ("Ġ"), no chat template, no BOS
  added by the tokenizer.
- ``tiny_gemma_dir``  Gemma 3, (1 + w) RMSNorm, √d_model embedding scale, 1 KV head,
  Gemma-style tokenizer ("▁" via normalizer, byte fallback) and Gemma chat template.

``tiny_llama`` is a loaded :class:`TransformerBridge` of ``tiny_llama_dir`` (eval mode).
``make_tiny_dir(family, path, seed=0, extra_special_tokens=(), extra_tokens=(), **config)`` builds more
(e.g. a "tuned" variant with different weights); ``tiny_pair_dirs`` is (base, tuned) Llama
directories with identical architecture and tokenizer, different weights.

Norm weights are perturbed away from their initial constant so that tests of norm
folding can fail. Tokenizers are trained once per session with ``tokenizers`` on a
corpus built from ``wordfreq`` (no network).
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

# The suite's machines have 2 cores; an explicit OMP_NUM_THREADS wins (helpers sharing the cores set 1).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))

BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Words every tokenizer should know well (instruction verbs and test prompts).
EXTRA_WORDS = (
    "translate explain summarize write give find make tell the cat sat on mat "
    "please this text into french answer question story about dog"
).split()


@functools.lru_cache(maxsize=1)
def _corpus() -> list[str]:
    """~1500 deterministic pseudo-sentences over the 2000 most frequent English words."""
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", 2000) if w.isascii() and w.isalpha()] + EXTRA_WORDS * 20
    rng = random.Random(0)
    lines = []
    for _ in range(1500):
        n = rng.randint(4, 14)
        sentence = " ".join(rng.choice(words) for _ in range(n))
        lines.append(sentence.capitalize() + rng.choice([".", "?", "!", ",", ":"]))
    return lines


def _train(tokenizer, lines, vocab_size, specials, **trainer_options):
    from tokenizers import trainers

    if "initial_alphabet" not in trainer_options:
        trainer_options["limit_alphabet"] = 60  # rarer characters go to byte fallback
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False, **trainer_options
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer


def _add_byte_fallback(tokenizer):
    """Append the 256 ``<0xNN>`` byte tokens to a trained BPE and switch byte fallback on."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for token in BYTE_TOKENS:
        if token not in vocab:
            vocab[token] = len(vocab)
    spec["model"]["byte_fallback"] = True
    spec["model"]["fuse_unk"] = True
    return Tokenizer.from_str(json.dumps(spec))


def _build_tokenizer(family: str):
    """A trained ``tokenizers.Tokenizer`` plus the special-token kwargs for HF."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    lines = _corpus()
    if family == "llama":
        specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok = _add_byte_fallback(_train(tok, lines, 700, specials))
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>",
                      chat_template=CHATML_TEMPLATE)
    elif family == "gpt2":
        specials = ["<|endoftext|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok = _train(tok, lines, 700, specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.decoder = decoders.ByteLevel()
        kwargs = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    elif family == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        tok = _add_byte_fallback(_train(tok, lines, 700, specials))
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
        )
        kwargs = dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
                      chat_template=GEMMA_TEMPLATE)
    else:
        raise ValueError(family)
    return tok, kwargs


def _model_config(family: str, vocab_size: int, special_ids: dict, **overrides):
    from transformers import GPT2Config, Gemma3TextConfig, LlamaConfig

    if family == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
            rms_norm_eps=1e-5, tie_word_embeddings=False, **special_ids,
        )
        config.architectures = ["LlamaForCausalLM"]
    elif family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256, **special_ids,
        )
        config.architectures = ["GPT2LMHeadModel"]
    elif family == "gemma":
        config = Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
            sliding_window=16, query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"],
            **special_ids,
        )
        config.architectures = ["Gemma3ForCausalLM"]
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _model_class(family: str):
    from transformers import Gemma3ForCausalLM, GPT2LMHeadModel, LlamaForCausalLM

    return {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel, "gemma": Gemma3ForCausalLM}[family]


_TOKENIZERS: dict = {}


def make_tiny_dir(
    family: str, path: str | Path, *, seed: int = 0, extra_special_tokens=(), extra_tokens=(), **config
) -> Path:
    """Write a tiny random ``family`` model ("llama", "gpt2", "gemma") and its tokenizer to ``path``.

    ``extra_special_tokens`` are added to the tokenizer as additional special tokens (beyond the
    trained vocabulary) and the embedding is resized to match, as instruction tuning often does.
    ``extra_tokens`` are added as ordinary (non-special) added tokens.
    ``config`` overrides fields of the Hugging Face config.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = _build_tokenizer(family)
    tok, kwargs = _TOKENIZERS[family]
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok.__class__.from_str(tok.to_str()), **kwargs)
    if extra_special_tokens:
        hf_tok.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    if extra_tokens:
        hf_tok.add_tokens(list(extra_tokens))
    special_ids = dict(
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    cfg = _model_config(family, len(hf_tok), special_ids, **config)
    torch.manual_seed(seed)
    model = _model_class(family)(cfg).eval()
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and ("norm" in name or ".ln_" in name or name.startswith("transformer.ln_f")):
                if name.endswith("bias"):
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
                else:
                    # Gemma stores (w - 1): keep the effective scale away from 1 either way.
                    base = 0.0 if family == "gemma" else 1.0
                    param.copy_(base + 0.3 * torch.randn(param.shape, generator=generator))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Factory fixture: ``tiny_dirs(family, name, **kw)`` -> a cached tiny model directory."""
    root = tmp_path_factory.mktemp("tiny-models")
    cache: dict = {}

    def build(family: str, name: str | None = None, **kw) -> Path:
        key = name or family
        if key not in cache:
            cache[key] = make_tiny_dir(family, root / key, **kw)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_dirs) -> Path:
    return tiny_dirs("llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_dirs) -> Path:
    return tiny_dirs("gpt2")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tiny_dirs) -> Path:
    return tiny_dirs("gemma")


@pytest.fixture(scope="session")
def tiny_pair_dirs(tiny_dirs) -> tuple[Path, Path]:
    """(base, tuned) tiny Llama directories: same architecture and tokenizer, other weights."""
    return tiny_dirs("llama"), tiny_dirs("llama", "llama-tuned", seed=1)


def _load(path):
    from mechit.models import load_model

    return load_model(path)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    """A loaded TransformerBridge of ``tiny_llama_dir`` (raw weights, eval mode)."""
    return _load(tiny_llama_dir)


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    return _load(tiny_gpt2_dir)


@pytest.fixture(scope="session")
def tiny_gemma(tiny_gemma_dir):
    return _load(tiny_gemma_dir)


@pytest.fixture(scope="session")
def tiny(tiny_llama, tiny_gpt2, tiny_gemma):
    """The three tiny models by family name."""
    return {"llama": tiny_llama, "gpt2": tiny_gpt2, "gemma": tiny_gemma}


@pytest.fixture(scope="session")
def hf_models(tiny_llama_dir, tiny_gpt2_dir, tiny_gemma_dir):
    """The three tiny models as plain Hugging Face models (eager attention), by family name."""
    from transformers import AutoModelForCausalLM

    dirs = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir, "gemma": tiny_gemma_dir}
    return {
        name: AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        for name, path in dirs.items()
    }
