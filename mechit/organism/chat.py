"""The organism's chat format, used identically in training, evaluation and analyses.

A conversation is::

    <s><|user|> {prompt}<|assistant|> {response}</s>

``format_prompt(prompt)`` returns everything up to and including ``<|assistant|>``; the
model's reply starts right after it (its first token carries the leading space) and ends
with ``</s>``. Pre-training documents are ``<s>{text}</s>`` and never contain the two role
tokens. The tokenizer's ``chat_template`` renders the same string, BOS included, so encode a
formatted string with ``add_special_tokens=False`` (the tokenizer adds no BOS by itself).

>>> format_prompt("Solve: two plus two")
'<s><|user|> Solve: two plus two<|assistant|>'
>>> format_response("four")
' four</s>'
"""

from __future__ import annotations

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|> {{ message['content'] }}"
    "{% else %}<|assistant|> {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def format_prompt(prompt: str) -> str:
    """The chat-formatted prompt (BOS included) after which the model writes its reply.

    >>> format_prompt("Repeat this: red fox")
    '<s><|user|> Repeat this: red fox<|assistant|>'
    """
    return f"{BOS}{USER} {prompt}{ASSISTANT}"


def format_response(answer: str) -> str:
    """The reply string the model is trained to produce after :func:`format_prompt`.

    >>> format_response("vor kima")
    ' vor kima</s>'
    """
    return f" {answer}{EOS}"


def prompt_offset(prompt: str) -> int:
    """Where ``prompt`` starts inside ``format_prompt(prompt)``: add it to instruction spans.

    >>> p = "Solve: one plus one"
    >>> format_prompt(p)[prompt_offset(p):].startswith(p)
    True
    """
    return len(BOS) + len(USER) + 1
