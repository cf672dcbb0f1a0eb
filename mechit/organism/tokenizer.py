"""The organism's byte-level BPE tokenizer, trained with ``tokenizers``.

Byte-level BPE like GPT-2's (a word and its leading space form one token), trained on
pre-training documents plus instruction prompts, so the world's words and the
instructions' verbs are whole tokens. Special tokens: ``<pad>`` (id 0), ``<s>`` (BOS),
``</s>`` (EOS), ``<|user|>``, ``<|assistant|>``. The tokenizer adds no BOS by itself.

>>> from mechit.organism.tokenizer import train_tokenizer
>>> tok = train_tokenizer(["Mira lives in Tova."] * 50, vocab_size=300)
>>> tok.decode(tok("Mira lives")["input_ids"])
'Mira lives'
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mechit.organism.chat import BOS, CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS

VOCAB_SIZE = 2048


def tokenizer_texts(examples: list[dict]) -> list[str]:
    """Instruction examples as the tokenizer sees them in the chat format (leading spaces).

    >>> tokenizer_texts([{"prompt": "Solve: one plus one", "answer": "two"}])
    [' Solve: one plus one two']
    """
    return [f" {e['prompt']} {e['answer']}" for e in examples]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    >>> tok = train_tokenizer(["one plus one is two."] * 20, vocab_size=280)
    >>> tok.convert_ids_to_tokens([0, 1, 2])
    ['<pad>', '<s>', '</s>']
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[3:], clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
