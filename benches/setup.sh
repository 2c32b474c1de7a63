#!/usr/bin/env bash
# Sets up what `sightline-bench` needs besides Rust: a Python venv at $(repo)/.local/bench-venv
# with the exact versions of benches/requirements.txt (faiss-cpu for the search peer, matplotlib
# for the plot, and the Python baseline's packages). Idempotent: run it again whenever
# requirements.txt changes; it does nothing when the venv already matches.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="$repo/.local/bench-venv"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup.sh: $python has no venv/ensurepip; installing python3-venv" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -q && apt-get install -y -q python3-venv
    else
        sudo apt-get update -q && sudo apt-get install -y -q python3-venv
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -m pip check >/dev/null 2>&1; then
    echo "setup.sh: $venv is up to date" >&2
else
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
    echo "$want" >"$stamp"
fi

"$venv/bin/python" - <<'PY'
import faiss, numpy, matplotlib, onnxruntime, cv2, paho.mqtt
print(f"bench venv ready: faiss {faiss.__version__}, numpy {numpy.__version__}, "
      f"matplotlib {matplotlib.__version__}, onnxruntime {onnxruntime.__version__}, "
      f"opencv {cv2.__version__}, paho-mqtt {paho.mqtt.__version__}")
PY
