#!/usr/bin/env bash
# The demo on embedded defaults: camsim serves the face clip as an RTSP camera, a local
# mosquitto runs, and edge-agent publishes sightings. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sightline/target}
bash scripts/setup.sh
cargo build --locked --bins
BIN="$CARGO_TARGET_DIR/debug"
RUN=$(mktemp -d)
MQTT_PORT=${MQTT_PORT:-1883}
RTSP_PORT=${RTSP_PORT:-8554}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT INT TERM

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$RUN/mosquitto.conf"
mosquitto -c "$RUN/mosquitto.conf" > "$RUN/mosquitto.log" 2>&1 & pids+=($!)
"$BIN/camsim" --listen "127.0.0.1:$RTSP_PORT" --loop --mount "stage=$(realpath ../shared/media/short_hamilton_clip.mp4)" \
  --mount "walkway=$(realpath ../shared/media/vtest.avi)" & pids+=($!)
sed -e "s/^port = 1883/port = $MQTT_PORT/" -e "s#127.0.0.1:8554#127.0.0.1:$RTSP_PORT#" configs/demo.toml > "$RUN/demo.toml"
sed -i "s#\"\.\./#\"$(pwd)/#" "$RUN/demo.toml"
cat <<MSG

  sightline demo: cameras rtsp://127.0.0.1:$RTSP_PORT/{stage,walkway} -> edge-agent -> mqtt://127.0.0.1:$MQTT_PORT
  (stage: faces -> sightings; walkway: crowd counts, a fence, alerts)
  watch everything it publishes with:

      mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT -t 'sightline/v1/#' -T 'sightline/v1/+/+/heatmap' -v

MSG
"$BIN/edge-agent" run --config "$RUN/demo.toml" & pids+=($!)
wait "${pids[-1]}"
