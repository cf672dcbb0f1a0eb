"""``mechit compare`` orchestration: stages call the analyses on both models and return frames;
:func:`compare` writes each table once, then the summary and the report.

>>> from mechit.pipeline import STAGES
>>> STAGES
('attribution', 'faithfulness', 'heads', 'ffn')
"""

from mechit.pipeline.run import STAGES, Options, compare

__all__ = ["STAGES", "Options", "compare"]
