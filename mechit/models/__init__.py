"""Loading models and pairs: specs, GGUF files, pair checks, streamed checkpoints.

>>> from mechit.models import resolve_spec
>>> resolve_spec("organism-tuned").kind
'dir'
"""

from mechit.models.checkpoint import check_checkpoint
from mechit.models.identity import weights_fingerprint
from mechit.models.loading import (
           ORGANISM_SPECS,
           load_model,
           organism_dir,
           read_plan,
           resolve_spec,
)
from mechit.models.pair import ModelPair, check_pair, load_pair, tag_model
from mechit.models.plan import ModelPlan, check_fits
from mechit.models.resident import OneAtATimePair, open_pair
from mechit.models.stream import fits_in_memory, open_for_weights, open_streamed

__all__ = ["ORGANISM_SPECS", "ModelPair", "ModelPlan", "OneAtATimePair", "check_checkpoint", "check_fits", "check_pair", "fits_in_memory",
           "load_model", "load_pair", "open_for_weights", "open_pair", "open_streamed", "organism_dir", "read_plan", "resolve_spec",
           "tag_model", "weights_fingerprint"]
