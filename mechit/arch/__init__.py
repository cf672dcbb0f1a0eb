"""Everything that knows a model family: the family table, folded weight views, and the
hand-written block products a family offers. Hugging Face parameter names and block
calling conventions live only here.

>>> from mechit.arch import FAMILIES
>>> FAMILIES["GPT2LMHeadModel"].norm
'LayerNorm'
"""

from mechit.arch.families import FAMILIES, Family, family

__all__ = ["FAMILIES", "Family", "family"]
