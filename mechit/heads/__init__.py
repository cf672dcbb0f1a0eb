"""PAPER §2: attention heads read as word-word relations.

- :mod:`~mechit.heads.pairs`: :func:`head_pairs` (qk-dims, qk, ov), :func:`head_knowledge`;
- :mod:`~mechit.heads.kernels`: the fast exact top-k and pair search behind ``qk-dims``;
- :mod:`~mechit.heads.reference`: the paper's loops, the reference the kernels are tested against;
- :mod:`~mechit.heads.similarity`: the word-similarity sources of the context constraint;
- :mod:`~mechit.heads.shift`: the instruction-verb shift (the paper's Table 3);
- :mod:`~mechit.heads.attention`: instruction attention mass and attention patterns
  (:func:`attention_patterns`, :func:`pattern_table`; the views in :mod:`mechit.views.heads`).

>>> from mechit.heads import METHODS
>>> METHODS
('qk-dims', 'qk', 'ov')
"""

from mechit.heads.attention import (
           attention_patterns,
           instruction_attention,
           pattern_table,
)
from mechit.heads.pairs import METHODS, head_knowledge, head_pairs
from mechit.heads.shift import head_change_scores, head_shift, verb_fractions
from mechit.heads.similarity import get_similarity

__all__ = ["METHODS", "attention_patterns", "get_similarity", "head_change_scores", "head_knowledge", "head_pairs",
           "head_shift", "instruction_attention", "pattern_table", "verb_fractions"]
