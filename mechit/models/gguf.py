"""GGUF files: the header's architecture, and loading weights and tokenizer through transformers.

>>> gguf_architecture("SmolLM2-135M-Instruct.Q4_1.gguf")          # doctest: +SKIP
'llama'
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from mechit.arch.families import GGUF_ARCHITECTURES
from mechit.errors import SpecError, first_line

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_architecture(path: "str | Path") -> str:
    """The ``general.architecture`` field of a GGUF file, read from the header only.

    Raises SpecError when the file is not a readable GGUF file.

    >>> gguf_architecture("SmolLM2-135M-Instruct.Q4_1.gguf")          # doctest: +SKIP
    'llama'
    """
    import struct

    def fail(why: str) -> SpecError:
        return SpecError(f"cannot read GGUF file {path}: {why} (corrupt or truncated file?)")

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise fail("no GGUF magic number")
            (version,) = struct.unpack("<I", f.read(4))
            order = "<" if version < 0x10000 else ">"  # big-endian files read as a huge version

            def read(fmt: str):
                size = struct.calcsize(order + fmt)
                data = f.read(size)
                if len(data) != size:
                    raise fail("file ends inside the header")
                return struct.unpack(order + fmt, data)[0]

            def string() -> str:
                length = read("Q")
                if length > 1 << 20:
                    raise fail(f"implausible string length {length}")
                return f.read(length).decode("utf-8")

            def skip(kind: int) -> None:
                if kind == _GGUF_STRING:
                    string()
                elif kind == _GGUF_ARRAY:
                    inner, count = read("I"), read("Q")
                    for _ in range(count):
                        skip(inner)
                elif kind in _GGUF_SCALARS:
                    read(_GGUF_SCALARS[kind])
                else:
                    raise fail(f"unknown metadata type {kind}")

            read("Q")  # tensor count
            for _ in range(read("Q")):
                key, kind = string(), read("I")
                if key == "general.architecture" and kind == _GGUF_STRING:
                    return string()
                skip(kind)
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"{type(error).__name__}: {first_line(error)}") from error
    raise fail("no general.architecture field")


@contextlib.contextmanager
def _gguf_parsed_once():
    """While loading, parse each GGUF file once and build each tensor-name map once.

    transformers parses the file three times (tokenizer, config, weights) and rebuilds
    gguf's tensor-name map for every tensor; on two CPU cores that is most of the load
    time. Both are pure functions of their arguments, so they are memoised for the
    duration of one load (the gguf module's names are restored afterwards).
    """
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def load_gguf(path: Path, *, device, dtype, trust_remote_code: bool, **bridge_options):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = gguf_architecture(path)
    if arch not in GGUF_ARCHITECTURES:
        raise SpecError(
            f"GGUF file {path}: architecture {arch!r} is not supported; mechit loads "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))}"
        )
    try:
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      trust_remote_code=trust_remote_code)
            hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype,
                                                            trust_remote_code=trust_remote_code)
    except Exception as error:
        raise SpecError(
            f"cannot load GGUF file {path}: {type(error).__name__}: {first_line(error)} "
            "(corrupt or truncated file?)"
        ) from error
    hf_model.config.architectures = [GGUF_ARCHITECTURES[arch]]
    hf_model.to(dtype)  # transformers dequantises to float32 whatever dtype says; the bridge ignores dtype here
    return TransformerBridge.boot_transformers(
        str(path), hf_model=hf_model, tokenizer=tokenizer, device=device, trust_remote_code=trust_remote_code,
        **bridge_options,
    )

