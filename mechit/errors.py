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


class EmptyResponseError(InputError):
    """The model's greedy response is empty (it ended at once): there is nothing to attribute.

    ``response`` is what was generated ("" or whitespace), ``n_prompt_tokens`` the length of
    the prompt as encoded. Dataset runs keep such an example with status
    ``"empty_response"`` instead of counting it as a failure.
    """

    def __init__(self, message: str, *, response: str = "", n_prompt_tokens: int | None = None):
        super().__init__(message)
        self.response = response
        self.n_prompt_tokens = n_prompt_tokens


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors that wrap it.

    >>> first_line(ValueError("bad header\\nsecond line"))
    'bad header'
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
