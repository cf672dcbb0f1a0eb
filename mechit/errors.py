"""The exceptions mechit raises for problems a user can fix.

Every error the user can act on is a :class:`MechitError`; the ``mechit`` command prints
its message as one line (no traceback unless ``--debug``). The message names the thing
at fault (model spec, file and line, field) and, where there is one, what to do.

>>> from mechit.errors import InputError
>>> str(InputError("prompts.jsonl:3: field 'prompt' is empty"))
"prompts.jsonl:3: field 'prompt' is empty"
"""


class MechitError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in mechit."""


class SpecError(MechitError):
    """A model spec that cannot be resolved or loaded (unknown path, unreachable hub, bad file)."""


class IncompatiblePairError(MechitError):
    """Base and tuned models that cannot be compared (architecture, shapes, vocabulary)."""


class InputError(MechitError):
    """Bad user data: prompts, spans, word lists, corpora, CLI arguments."""
