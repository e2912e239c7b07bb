#!/usr/bin/env bash
# `make gpu-check`: on a machine with an NVIDIA GPU, set up the CUDA environment from this repository's
# files, build gsplat's CUDA kernels for this GPU, run the GPU tests and bench/train_gpu.py, and print one
# table (bench/gpu_report.py). Minutes, not hours: gsplat is compiled for this GPU's architecture only.
#
#   bash bench/gpu_check.sh             run the check (exit 0: everything passed; 1: something failed;
#                                       2: no usable NVIDIA GPU or environment here, said on stderr)
#   bash bench/gpu_check.sh --prepare   (`make gpu-check-prepare`, on a machine that reaches PyPI) download
#                                       the wheels of bench/gpu-check-requirements.txt for CPython 3.12 on
#                                       x86-64 and reconstruct the demo flight's SfM model into .gpu-check/,
#                                       for a GPU machine without network access: carry .gpu-check there
#
# Python: GPU_CHECK_PYTHON (default python3) if it has a CUDA build of torch that sees the GPU (the lent
# machines' image has one); the packages of bench/gpu-check-requirements.txt then go into
# .gpu-check/site (--no-deps), from .gpu-check/wheels when it exists, else from PyPI. Without a CUDA
# torch, a venv (.venv-gpu) gets the pinned torch from PyPI (its CUDA 13.0 build) and '.[stages,gpu,dev]'.
# Outputs: GPU_CHECK_OUT (default gpu-check-out/): logs, tests.xml, bench.log, report.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
PREP=${GPU_CHECK_PREPARED:-$ROOT/.gpu-check}
OUT=${GPU_CHECK_OUT:-$ROOT/gpu-check-out}
STEPS=${GPU_CHECK_STEPS:-4000}
PY=${GPU_CHECK_PYTHON:-python3}
REQS=$ROOT/bench/gpu-check-requirements.txt

die() {
    echo "gpu-check: $*" >&2
    exit 2
}

prepare() {
    mkdir -p "$PREP/wheels" || exit 2
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$PREP/wheels" -r "$REQS" || die "could not download the wheels of $REQS"
    if [ ! -f "$PREP/sfm/sparse/points3D.bin" ]; then
        PYTHONPATH="$ROOT/operator:$ROOT" "$PY" - "$PREP" <<'EOF' || die "could not reconstruct the demo flight"
import sys
from pathlib import Path

from spaceport.demo import DEMO_CONFIG
from spaceport.stages.runner import run_stage
from spaceport.synthetic import generate_flight

prep = Path(sys.argv[1])
generate_flight(prep / "photos", preset="demo")
run_stage("sfm", str(prep / "photos"), str(prep / "sfm"), DEMO_CONFIG["sfm"])
EOF
        rm -rf "$PREP/photos"
    fi
    du -sh "$PREP"
    echo "prepared $PREP: carry it to the GPU machine beside the repository, then run 'make gpu-check' there"
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit 0
fi

mkdir -p "$OUT" || exit 2
rm -f "$OUT"/*.log "$OUT"/*.xml "$OUT"/*.json "$OUT"/*.md "$OUT"/*.csv

# 1. an NVIDIA GPU and its driver
command -v nvidia-smi >/dev/null 2>&1 ||
    die "no NVIDIA GPU here: nvidia-smi is not installed. This check needs a machine with an NVIDIA GPU and its" \
        "driver; without one, 'make test' runs everything else (the GPU tests skip)."
if ! nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader \
    >"$OUT/gpu.csv" 2>"$OUT/nvidia-smi.log"; then
    die "nvidia-smi failed (no driver loaded, or no GPU visible): $(head -c 400 "$OUT/nvidia-smi.log")"
fi
[ -s "$OUT/gpu.csv" ] || die "nvidia-smi lists no GPU"
CAP=$(head -n 1 "$OUT/gpu.csv" | awk -F', *' '{print $3}')
[[ $CAP =~ ^[0-9]+\.[0-9]+$ ]] || die "cannot read the GPU's compute capability from nvidia-smi: '$CAP'"
echo "gpu-check: $(head -n 1 "$OUT/gpu.csv")"

# 2. Python with a CUDA torch, and what the tests need beside it
SITE=$PREP/site
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)' \
    >"$OUT/torch.log" 2>&1; then
    mkdir -p "$SITE" || exit 2
    if [ -d "$PREP/wheels" ]; then
        SOURCE=(--no-index "$PREP"/wheels/*.whl)
    else
        SOURCE=(-r "$REQS")
    fi
    "$PY" -m pip install --quiet --no-deps --no-compile --upgrade --target "$SITE" "${SOURCE[@]}" \
        >"$OUT/pip.log" 2>&1 || die "could not install $REQS into $SITE (no wheelhouse and no PyPI?):" \
        "$(tail -n 3 "$OUT/pip.log")"
    export PYTHONPATH="$SITE:$ROOT/operator:$ROOT"
else
    echo "gpu-check: $PY has no CUDA torch ($(tail -n 1 "$OUT/torch.log")); installing one into .venv-gpu"
    TORCH_PIN=$(sed -n 's/.*"\(torch==[^"]*\)".*/\1/p' pyproject.toml | head -n 1)
    { "$PY" -m venv "$ROOT/.venv-gpu" && "$ROOT/.venv-gpu/bin/pip" install --quiet "$TORCH_PIN" &&
        "$ROOT/.venv-gpu/bin/pip" install --quiet -e ".[stages,gpu,dev]"; } >"$OUT/pip.log" 2>&1 ||
        die "could not install $TORCH_PIN and '.[stages,gpu,dev]' from PyPI (offline? use a python3 with a CUDA" \
            "torch: GPU_CHECK_PYTHON): $(tail -n 3 "$OUT/pip.log")"
    PY=$ROOT/.venv-gpu/bin/python
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$OUT/torch.log" 2>&1 ||
        die "torch from PyPI does not see the GPU (driver too old for its CUDA?): see $OUT/torch.log"
    export PYTHONPATH="$ROOT/operator:$ROOT"
fi
export NUMBA_CACHE_DIR=$PREP/numba TORCH_EXTENSIONS_DIR=$PREP/torch_extensions
export TORCH_CUDA_ARCH_LIST=$CAP MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1

# 3. gsplat's CUDA kernels, built here for this GPU (its JIT build, as the image's source build compiles them)
FAILED=0
start=$(date +%s)
if timeout 540 "$PY" -c 'from gsplat.cuda._backend import _C; assert _C is not None, "gsplat found no CUDA toolkit"' \
    >"$OUT/gsplat-build.log" 2>&1; then
    echo "$(($(date +%s) - start))" >"$OUT/gsplat-build-seconds"
else
    FAILED=1
    echo "gpu-check: gsplat's CUDA build failed: $(tail -n 5 "$OUT/gsplat-build.log")" >&2
fi
"$PY" - "$OUT/env.json" <<'EOF'
import json, shutil, subprocess, sys

import torch

nvcc = shutil.which("nvcc")
try:
    import gsplat
    gsplat_version = gsplat.__version__
except Exception as e:  # reported in the table, not fatal here
    gsplat_version = f"not importable ({e})"
env = {"torch": torch.__version__, "torchCuda": torch.version.cuda, "gsplat": gsplat_version,
       "nvcc": subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
       if nvcc else None, "python": sys.version.split()[0]}
json.dump(env, open(sys.argv[1], "w"))
EOF

# 4. the tests (the GPU ones, and the checks they rest on), then 5. the benchmark
if [ "$FAILED" = 0 ]; then
    timeout 420 "$PY" -m pytest -p no:cacheprovider -q -rA --timeout 400 --junitxml="$OUT/tests.xml" \
        tests/train/test_gpu.py tests/train/test_gsplat_reference.py tests/images/test_cuda_pins.py \
        >"$OUT/tests.log" 2>&1 || FAILED=1
    tail -n 15 "$OUT/tests.log"
    SFM=()
    [ -f "$PREP/sfm/sparse/points3D.bin" ] && SFM=(--sfm "$PREP/sfm")
    timeout 480 "$PY" bench/train_gpu.py "${SFM[@]}" --steps "$STEPS" >"$OUT/bench.log" 2>&1 || FAILED=1
    grep -v '^BENCH ' "$OUT/bench.log" | tail -n 6
fi

# 6. one table
"$PY" bench/gpu_report.py "$OUT" | tee "$OUT/report.md"
[ "${PIPESTATUS[0]}" = 0 ] || FAILED=1
exit "$FAILED"
