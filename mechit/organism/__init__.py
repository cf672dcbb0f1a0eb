"""The embedded model organism: a tiny LLaMA pre-trained on a synthetic world, and its
instruction-tuned version (see docs/organism.md).

>>> from mechit.organism import format_prompt
>>> format_prompt("Repeat this: red fox")
'<s><|user|> Repeat this: red fox<|assistant|>'
"""

from mechit.organism.api import corpus_text, held_out_prompts, vocabulary
from mechit.organism.chat import format_prompt, format_response

__all__ = ["corpus_text", "format_prompt", "format_response", "held_out_prompts", "vocabulary"]
