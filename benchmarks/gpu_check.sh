#!/usr/bin/env bash
# The GPU check in one command (issue 15): installs the wheels carried beside the checkout (no network is
# needed), then runs benchmarks/gpu_check.py (CUDA tests, influence_speed in fp32 and bf16 with kronfluence,
# a one-GPU torchrun) and writes one JSON.
#
#   benchmarks/gpu_check.sh [OUT_JSON] [gpu_check.py options]
#
# OUT_JSON defaults to $OUT/gpu_check.json when OUT is set, else benchmarks/results/gpu_check.json.
# WHEELS (default .whl) is a folder of wheels to install first (kronfluence, einconv, dattri, pandas<3: see
# benchmarks/gpu_wheels.sh, which downloads them on a machine with a registry). PYTHON picks the interpreter.
# Exit status: 0 every stage passed, 1 a stage failed, 2 no CUDA device (nothing run) or the wheels failed.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:+$OUT/gpu_check.json}
out=${out:-benchmarks/results/gpu_check.json}
if [[ $# -gt 0 && $1 != -* ]]; then out=$1; shift; fi

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False, or $python has no torch); nothing was run." >&2
  exit 2
fi
wheels=${WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
  if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl; then
    echo "gpu_check: installing the wheels in $wheels failed" >&2
    exit 2
  fi
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  if ! "$python" -c 'import pandas, pyarrow' 2>/dev/null; then  # a carried pandas built for another numpy
    echo "gpu_check: the carried pandas does not import here; using the machine's own" >&2
    rm -rf "$site"/pandas "$site"/pandas-*
  fi
fi
exec "$python" benchmarks/gpu_check.py --out "$out" "$@"
