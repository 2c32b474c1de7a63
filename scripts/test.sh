#!/usr/bin/env bash
# Sets up the machine (idempotent) and runs every test: unit, real-model, and end-to-end
# (camsim RTSP + mosquitto + edge-agent on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sightline/target}
bash scripts/setup.sh
# GPU/NPU execution providers are cargo features: they must keep compiling without the hardware
cargo check --locked -p sightline-edge-agent --features cuda,tensorrt,openvino
# the end-to-end tests run the workspace's binaries
cargo build --locked --bins
cargo test --locked --workspace -- --test-threads=2
