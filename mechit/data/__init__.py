"""Inputs mechit reads: prompt sets (JSONL, the paper's TSV), word lists, bundled prompts.

>>> from mechit.data import INSTRUCTION_VERBS
>>> "translate" in INSTRUCTION_VERBS
True
"""

from mechit.data.prompts import PromptRecord, read_prompts
from mechit.data.wordlists import INSTRUCTION_VERBS, frequent_words, general_verbs

__all__ = ["INSTRUCTION_VERBS", "PromptRecord", "frequent_words", "general_verbs", "read_prompts"]
