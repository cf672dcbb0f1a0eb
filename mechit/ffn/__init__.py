"""PAPER §3: feed-forward layers read through the vocabulary.

- :mod:`~mechit.ffn.concepts`: principal components of W_out as concepts, neuron tokens;
- :mod:`~mechit.ffn.rotation`: how far tuning rotated them (the one comparison of two models' weights);
- :mod:`~mechit.ffn.labels`: concept labels (user task, linguistic level) and their proportions.

>>> from mechit.ffn import TASK_LABELS
>>> TASK_LABELS
('writing', 'math', 'coding', 'translation', 'none')
"""

from mechit.ffn.concepts import ffn_concepts, neuron_tokens
from mechit.ffn.labels import LEVEL_LABELS, TASK_LABELS, label_concepts, label_proportions, label_table
from mechit.ffn.rotation import Rotation, ffn_rotation

__all__ = ["LEVEL_LABELS", "Rotation", "TASK_LABELS", "ffn_concepts", "ffn_rotation", "label_concepts",
           "label_proportions", "label_table", "neuron_tokens"]
