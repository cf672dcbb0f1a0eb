"""Attribution results computed elsewhere: the authors' released pickles and a plain safetensors layout.

Each result is one example: the prompt's token strings, the response's token strings and
a matrix with one row per prompt token and one column per response token
(:class:`ImportedResult`). Two formats, one file per example named ``<id>.<suffix>``:

- **The authors' release** (``<id>.pkl``): a pickled dict with ``ID``, ``Input`` (the
  prompt's SentencePiece tokens, ``▁`` for a space, ``<0x0A>`` byte pieces), ``Reference``,
  ``Output`` (the response's tokens) and ``Explain`` (float32 array, len(Input) x
  len(Output), levels 0..10). It is read by :class:`ArrayUnpickler`, which admits numpy's
  array reconstruction and nothing else: any other global is refused with a one-line
  :class:`~mechit.errors.InputError` naming it, before anything of it runs. This is the one
  place mechit reads pickle bytes; it never writes any.
- **Plain safetensors** (``<id>.safetensors``): one 2-D tensor ``levels`` (integer levels)
  or ``raw`` (attributions before sparsifying), prompt tokens x response tokens, and the
  metadata keys ``prompt_tokens`` and ``response_tokens``, each a JSON list of strings.

:func:`token_offsets` maps token strings back onto the prompt by character offsets.

>>> import numpy as np, pickle
>>> _ = Path("ex_1.pkl").write_bytes(pickle.dumps({"ID": "ex_1", "Input": ["▁Say", "▁hi"],
...     "Output": ["▁hello"], "Reference": "hello", "Explain": np.array([[10.0], [0.0]], np.float32)}))
>>> result = read_result("ex_1.pkl")
>>> result.prompt_tokens, result.matrix.shape, result.kind
(['▁Say', '▁hi'], torch.Size([2, 1]), 'levels')
"""

from __future__ import annotations

import codecs
import io
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from torch import Tensor

from mechit.errors import InputError, first_line

# what numpy's own pickles of an ndarray (protocols 2-5, numpy 1.x and 2.x) refer to
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})
RESULT_SUFFIXES = (".pkl", ".safetensors")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPECIAL = re.compile(r"^<[^<>\s]+>$")  # <s>, </s>, <unk>: zero width


class ArrayUnpickler(pickle.Unpickler):
    """A pickle reader that rebuilds numpy arrays and refuses every other global.

    >>> import os, pickle
    >>> class Hostile:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo hostile",))
    >>> ArrayUnpickler(io.BytesIO(pickle.dumps(Hostile()))).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: the pickle refers to ...system; only numpy arrays are read from pickles
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise InputError(f"the pickle refers to {module}.{name}; only numpy arrays are read from pickles")
        return super().find_class(module, name)


@dataclass(frozen=True)
class ImportedResult:
    """One example's attribution from elsewhere.

    ``matrix``: Float[Tensor, "n_prompt n_response"]; ``kind`` is "levels" (integer levels,
    as the authors' ``Explain``) or "raw" (to be sparsified). ``source`` is the file.
    """

    id: str
    prompt_tokens: list[str]
    response_tokens: list[str]
    matrix: Float[Tensor, "n_prompt n_response"]
    kind: str
    source: str


def _strings(value, where: str, field: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise InputError(f"{where}: field {field!r} must be a list of token strings")
    return list(value)


def _checked(where: str, example_id: str, prompt, response, matrix: Tensor, kind: str) -> ImportedResult:
    prompt, response = _strings(prompt, where, "prompt tokens"), _strings(response, where, "response tokens")
    expected = (len(prompt), len(response))
    if not response and matrix.numel() == 0:  # an empty response: the authors store an empty array
        matrix = matrix.new_zeros(expected)
    if tuple(matrix.shape) != expected:
        raise InputError(f"{where}: the matrix has shape {tuple(matrix.shape)}; expected {expected} "
                         "(prompt tokens x response tokens)")
    matrix = matrix.float()
    bad = int((~torch.isfinite(matrix)).sum())
    if bad:  # NaN or inf would give a NaN or 0 score with status ok
        raise InputError(f"{where}: the matrix holds {bad} NaN or infinite value(s); attributions must be finite")
    return ImportedResult(example_id, prompt, response, matrix, kind, where)


def _read_pickle(path: Path) -> ImportedResult:
    try:
        obj = ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except InputError as refused:
        raise InputError(f"{path}: {refused}") from None
    except Exception as error:  # noqa: BLE001 - any damage to the file is the user's to fix
        raise InputError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    missing = [k for k in ("Input", "Output", "Explain") if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise InputError(f"{path}: the pickled dict lacks {', '.join(missing)} (expected ID, Input, Reference, "
                         "Output, Explain)")
    explain = obj["Explain"]
    try:
        matrix = torch.as_tensor(explain.astype("float32") if hasattr(explain, "astype") else explain)
    except (TypeError, ValueError, RuntimeError) as error:  # text, None, ragged lists
        raise InputError(f"{path}: field 'Explain' is not a matrix of numbers ({type(error).__name__}: "
                         f"{first_line(error)})") from None
    return _checked(str(path), str(obj.get("ID", path.stem)), obj["Input"], obj["Output"], matrix, "levels")


def _read_safetensors(path: Path) -> ImportedResult:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata, keys = handle.metadata() or {}, set(handle.keys())
            kinds = sorted(keys & {"levels", "raw"})
            if len(kinds) != 1:
                raise InputError(f"{path}: holds {sorted(keys)}; expected exactly one of 'levels' or 'raw'")
            matrix = handle.get_tensor(kinds[0])
    except (SafetensorError, OSError) as error:  # garbage, cut short, a folder
        raise InputError(f"{path}: not a readable safetensors file ({first_line(error)}; corrupt or truncated?)") from None
    try:
        prompt, response = (json.loads(metadata[k]) for k in ("prompt_tokens", "response_tokens"))
    except (KeyError, json.JSONDecodeError):
        raise InputError(f"{path}: metadata must hold 'prompt_tokens' and 'response_tokens' as JSON lists "
                         "of strings") from None
    return _checked(str(path), metadata.get("id", path.stem), prompt, response, matrix, kinds[0])


def read_result(path: str | Path) -> ImportedResult:
    """Read one result file: ``.pkl`` (the authors' release) or ``.safetensors`` (the plain layout).

    >>> from safetensors.torch import save_file
    >>> save_file({"raw": torch.tensor([[0.5], [2.0]])}, "ex_2.safetensors",
    ...           metadata={"prompt_tokens": '["▁Say", "▁hi"]', "response_tokens": '["▁hello"]'})
    >>> read_result("ex_2.safetensors").kind
    'raw'
    """
    path = Path(path)
    if path.suffix == ".pkl":
        return _read_pickle(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    raise InputError(f"{path}: unknown result format; use .pkl (the authors' release) or .safetensors")


def result_files(directory: str | Path) -> dict[str, Path]:
    """``{example id: file}`` of the result files in ``directory`` (id = file name without suffix).

    >>> result_files("missing")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --results missing: no such directory
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--results {directory}: no such directory")
    files = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in RESULT_SUFFIXES:
            if path.stem in files:
                raise InputError(f"{directory}: example {path.stem!r} has two result files "
                                 f"({files[path.stem].name}, {path.name}); keep one")
            files[path.stem] = path
    if not files:
        raise InputError(f"--results {directory}: no .pkl or .safetensors result files")
    return files


def _piece_texts(tokens: list[str]) -> list[str]:
    """The text of each token: ``▁`` is a space, special tokens are empty, byte pieces are decoded as
    UTF-8 in a run: a piece that completes a character spells it, the pieces before it spell ""."""
    texts, decoder = [], codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        byte = _BYTE_PIECE.match(token)
        if byte:
            texts.append(decoder.decode(bytes([int(byte.group(1), 16)])))
            continue
        texts[-1:] = [texts[-1] + decoder.decode(b"", final=True)] if texts else []
        decoder.reset()
        texts.append("" if _SPECIAL.match(token) else token.replace("▁", " "))
    if texts:
        texts[-1] += decoder.decode(b"", final=True)
    return texts


def spell(tokens: list[str]) -> str:
    """The text that token strings spell (``▁`` a space, byte pieces decoded, special tokens empty).

    >>> spell(["<s>", "▁Bon", "jour", "<0x0A>", "<0xC3>", "<0xA9>"])
    ' Bonjour\\né'
    """
    return "".join(_piece_texts(tokens))


def token_offsets(prompt: str, tokens: list[str]) -> list[tuple[int, int]]:
    """``[start, end)`` in ``prompt`` of each token string; raises InputError when they do not spell it.

    The tokens must spell the prompt with its edge whitespace stripped, with or without
    the leading space SentencePiece adds. A run of byte pieces shares the range of the
    characters it spells.

    >>> token_offsets("Say hi!\\n", ["▁Say", "▁hi", "!"])
    [(0, 3), (3, 6), (6, 7)]
    >>> token_offsets("a\\nb", ["▁a", "<0x0A>", "b"])
    [(0, 1), (1, 2), (2, 3)]
    """
    texts = _piece_texts(tokens)
    spelled = "".join(texts)  # as spell(tokens)
    core_start = len(prompt) - len(prompt.lstrip())
    core = prompt.strip()
    if spelled == core:
        start = core_start
    elif spelled[:1] == " " and spelled[1:] == core:
        start = core_start - 1
    else:
        raise InputError(f"the token strings spell {spelled[:40]!r}..., not the prompt {core[:40]!r}...")
    offsets = []
    for text in texts:  # the leading space SentencePiece adds lies before the prompt: clipped
        offsets.append((max(start, core_start), max(start + len(text), core_start)))
        start += len(text)
    for i in reversed(range(len(tokens) - 1)):  # a byte piece that starts a character takes its range
        if _BYTE_PIECE.match(tokens[i]) and not texts[i] and _BYTE_PIECE.match(tokens[i + 1]):
            offsets[i] = offsets[i + 1]
    return offsets
