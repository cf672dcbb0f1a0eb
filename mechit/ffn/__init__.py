"""PAPER §3: feed-forward layers read through the vocabulary.

- :mod:`~mechit.ffn.neurons`: the words each neuron promotes and suppresses (Geva et al.);
- :mod:`~mechit.ffn.concepts`: principal components of W_out as concepts;
- :mod:`~mechit.ffn.rotation`: how far tuning rotated them (the one comparison of two models' weights);
- :mod:`~mechit.ffn.labels`: label sets, label proportions, the base-vs-tuned table;
- :mod:`~mechit.ffn.embedding_labeller`, :mod:`~mechit.ffn.lexicon`, :mod:`~mechit.ffn.labellers`:
  the labellers (offline default, offline baseline; endpoint, local model);
- :mod:`~mechit.ffn.checkset`, :mod:`~mechit.ffn.labeller_check`: a labeller's accuracy on concepts of known labels.

>>> from mechit.ffn import TASK_LABELS
>>> TASK_LABELS
('writing', 'math', 'coding', 'translation', 'none')
"""

from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.labellers import label_concepts
from mechit.ffn.labels import LEVEL_LABELS, TASK_LABELS, label_proportions, label_table
from mechit.ffn.neurons import neuron_tokens
from mechit.ffn.rotation import Rotation, ffn_rotation

__all__ = ["LEVEL_LABELS", "Rotation", "TASK_LABELS", "ffn_concepts", "ffn_rotation", "label_concepts",
           "label_proportions", "label_table", "neuron_tokens"]
