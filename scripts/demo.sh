#!/usr/bin/env bash
# The demo on embedded defaults: the aggregator (with its embedded MQTT broker), camsim serving
# the face clip and a street scene as RTSP cameras, and an edge agent publishing sightings,
# crowd counts and alerts that the aggregator turns into trajectories. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sightline/target}
bash scripts/setup.sh
cargo build --locked --bins
BIN="$CARGO_TARGET_DIR/debug"
RUN=$(mktemp -d)
MQTT_PORT=${MQTT_PORT:-1883}
RTSP_PORT=${RTSP_PORT:-8554}
HTTP_PORT=${HTTP_PORT:-8080}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT INT TERM

sed -e "s/127.0.0.1:1883/127.0.0.1:$MQTT_PORT/" -e "s/127.0.0.1:8080/127.0.0.1:$HTTP_PORT/" -e "s#\"\.\./#\"$(pwd)/#" configs/demo-aggregator.toml > "$RUN/aggregator.toml"
"$BIN/aggregator" run --config "$RUN/aggregator.toml" 2> >(tee "$RUN/aggregator.log" >&2) & pids+=($!)
for _ in $(seq 100); do grep -q "subscribed: ingesting" "$RUN/aggregator.log" 2>/dev/null && break; sleep 0.1; done
TOKEN=$("$BIN/aggregator" token create --config "$RUN/aggregator.toml" --name "demo-$(date +%s)-$$" --role integrator 2>/dev/null)
"$BIN/camsim" --listen "127.0.0.1:$RTSP_PORT" --loop --mount "stage=$(realpath ../shared/media/short_hamilton_clip.mp4)" \
  --mount "walkway=$(realpath ../shared/media/vtest.avi)" & pids+=($!)
sed -e "s/^port = 1883/port = $MQTT_PORT/" -e "s#127.0.0.1:8554#127.0.0.1:$RTSP_PORT#" configs/demo.toml > "$RUN/demo.toml"
sed -i "s#\"\.\./#\"$(pwd)/#" "$RUN/demo.toml"
cat <<MSG

  sightline demo: cameras rtsp://127.0.0.1:$RTSP_PORT/{stage,walkway} -> edge-agent
                  -> aggregator (embedded broker mqtt://127.0.0.1:$MQTT_PORT, store .local/state/)
  (stage: faces -> sightings -> trajectories; walkway: crowd counts, a fence, alerts)
  watch everything on the broker, trajectory updates included, with:

      mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT -t 'sightline/v1/#' -T 'sightline/v1/+/+/heatmap' -v

  operator dashboard: http://127.0.0.1:$HTTP_PORT/ (sign in with the token below: an integrator's,
  so it also opens Investigations)

  integrator API: http://127.0.0.1:$HTTP_PORT/api/v1 (OpenAPI: /api/v1/openapi.json); a demo token:

      curl -s -H "Authorization: Bearer $TOKEN" 'http://127.0.0.1:$HTTP_PORT/api/v1/trajectories?purpose=demo'

  find the performer by his photo (audited):

      (printf '{"purpose":"demo","image":"'; base64 -w0 $(realpath ../shared/media/lin-manuel-miranda.png); printf '"}') |
        curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data-binary @- \
        http://127.0.0.1:$HTTP_PORT/api/v1/search

MSG
"$BIN/edge-agent" run --config "$RUN/demo.toml" & pids+=($!)
wait "${pids[-1]}"
