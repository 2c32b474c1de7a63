#!/usr/bin/env python3
"""The peer baseline: the face-sighting pipeline an integrator would write in Python.

OpenCV `VideoCapture` (file or RTSP) -> frames sampled at `--analysis-fps` by timestamp ->
YuNet face detection (onnxruntime, CPU) -> 5-point similarity alignment to the dlib 150x150
template (`cv2.estimateAffinePartial2D` + `cv2.warpAffine`) -> dlib ResNet embedding
(onnxruntime) -> a greedy IoU tracker -> one `sightline.sighting/1` JSON per closed track with
its best shot's embedding -> paho-mqtt, QoS 1, on `sightline/v1/{site}/{camera}/sighting`.

Same models, same analysis rate, same detection/alignment/embedding parameters and the same
output as the Rust edge agent (see README.md next to this file), single-threaded Python as an
integrator would write it. At exit it writes run statistics (`--stats-json`).

    python baseline.py --source FILE_OR_URL --analysis-fps 5 --models DIR \
        --mqtt-host 127.0.0.1 --mqtt-port 1883 --site s --camera c [--threads 2] \
        [--max-seconds N] --stats-json OUT.json
"""

import argparse
import json
import os
import resource
import secrets
import signal
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import onnxruntime as ort
import paho.mqtt
import paho.mqtt.client as mqtt

# --- parameters (defaults of the edge agent: configs/edge-agent.example.toml, vision/src/) ---
DETECTOR_FILE = "yunet_n_dynamic.onnx"  # [faces] detector
EMBEDDER_FILE = "dlib_face_recognition_resnet_model_v1.onnx"
EMBEDDING_MODEL = "dlib-resnet-v1"  # the `model` field of a sighting
SCORE_THRESHOLD = 0.5  # [faces] score_threshold
NMS_IOU = 0.3  # [faces] nms_iou
MAX_DETECT_WIDTH = 1280  # [faces] max_detect_width
MIN_FACE_PX = 24.0  # [faces] min_face_px
STRIDES = (8, 16, 32)
MAX_BATCH = 16  # embedding batch size cap (vision/src/embed.rs)

NEW_TRACK_SCORE = 0.8  # [tracker] new_track_score
MIN_IOU = 0.2  # [tracker] min_iou
LOST_TIMEOUT_S = 2.0  # [tracker] lost_timeout_s -> frames unseen = this * analysis fps
MAX_DURATION_S = 60.0  # [tracker] max_duration_s
MIN_HITS = 3  # [tracker] min_hits

CHIP = 150
# dlib chip template for YuNet's landmark order (shared/models/MANIFEST.md section 2)
TEMPLATE = np.array(
    [[47.38, 45.50], [101.62, 45.50], [74.50, 77.52], [49.55, 100.03], [99.45, 100.03]], dtype=np.float32
)


# ------------------------------------------------------------------------------------------------
# models


def session(path, threads, tuned):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if tuned:
        # sightline's session settings (vision/src/runtime.rs)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_mem_pattern = False
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


class Detector:
    """YuNet: BGR 0..255 NCHW, padded to multiples of 32; 12 outputs decoded on the anchor grid."""

    def __init__(self, path, threads, tuned):
        self.sess = session(path, threads, tuned)
        self.outputs = [f"{k}_{s}" for s in STRIDES for k in ("cls", "obj", "bbox", "kps")]

    def detect(self, frame_bgr):
        """Faces in `frame_bgr` as (boxes [n,4] x,y,w,h, landmarks [n,5,2], scores [n]), frame pixels."""
        h, w = frame_bgr.shape[:2]
        img = frame_bgr
        if w > MAX_DETECT_WIDTH:
            s = MAX_DETECT_WIDTH / w
            dw, dh = max(round(w * s), 32), max(round(h * s), 32)
            img = cv2.resize(frame_bgr, (dw, dh), interpolation=cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
        sx, sy = w / iw, h / ih
        pw, ph = -(-iw // 32) * 32, -(-ih // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :ih, :iw] = img.transpose(2, 0, 1)
        outs = dict(zip(self.outputs, self.sess.run(self.outputs, {"input": blob})))

        boxes, lms, scores = [], [], []
        for s in STRIDES:
            cols = pw // s
            cls = outs[f"cls_{s}"][0, :, 0]
            obj = outs[f"obj_{s}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            idx = np.nonzero(score > SCORE_THRESHOLD)[0]
            if idx.size == 0:
                continue
            row, col = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            b = outs[f"bbox_{s}"][0, idx]
            k = outs[f"kps_{s}"][0, idx].reshape(-1, 5, 2)
            cx, cy = (b[:, 0] + col) * s, (b[:, 1] + row) * s
            bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
            lms.append(np.stack([(k[:, :, 0] + col[:, None]) * s, (k[:, :, 1] + row[:, None]) * s], axis=2))
            scores.append(score[idx])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
        boxes, lms, scores = np.concatenate(boxes), np.concatenate(lms), np.concatenate(scores)
        keep = nms(boxes, scores, NMS_IOU)
        boxes, lms, scores = boxes[keep], lms[keep], scores[keep]
        boxes *= np.array([sx, sy, sx, sy], dtype=np.float32)
        lms *= np.array([sx, sy], dtype=np.float32)
        return boxes, lms, scores


def iou(a, b):
    """IoU of two [x, y, w, h] boxes."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def nms(boxes, scores, thr):
    """Greedy NMS, best score first: keeps a box overlapping every kept one by at most `thr`."""
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou(boxes[i], boxes[j]) <= thr for j in kept):
            kept.append(i)
    return np.array(kept, dtype=np.int64)


class Embedder:
    """dlib ResNet: aligned 150x150 RGB chips, 0..255, NCHW -> 128-d, Euclidean metric."""

    def __init__(self, path, threads, tuned):
        self.sess = session(path, threads, tuned)

    def embed(self, chips_rgb):
        out = []
        for i in range(0, len(chips_rgb), MAX_BATCH):
            batch = np.stack(chips_rgb[i : i + MAX_BATCH]).astype(np.float32).transpose(0, 3, 1, 2)
            out.append(self.sess.run(["embedding"], {"input": np.ascontiguousarray(batch)})[0])
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def align(frame_bgr, landmarks):
    """150x150 RGB chip: similarity transform of the 5 landmarks onto the template, bilinear warp."""
    m, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), TEMPLATE, method=cv2.LMEDS)
    if m is None:
        return np.zeros((CHIP, CHIP, 3), np.uint8)
    chip = cv2.warpAffine(frame_bgr, m, (CHIP, CHIP), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return cv2.cvtColor(chip, cv2.COLOR_BGR2RGB)


# --- best-shot quality (vision/src/quality.rs): geometric mean of score, size, frontality, sharpness


def frontality(lm):
    re, le, nose = lm[0], lm[1], lm[2]
    eye_dist = max(float(np.hypot(le[0] - re[0], le[1] - re[1])), 1e-3)
    yaw = abs((nose[0] - (re[0] + le[0]) / 2) / eye_dist)
    roll = abs((le[1] - re[1]) / eye_dist)
    return float(np.clip(1 - 1.6 * yaw - 0.5 * max(roll - 0.35, 0), 0.05, 1))


def laplacian_variance(chip_rgb):
    c = chip_rgb.astype(np.float32)
    g = 0.299 * c[:, :, 0] + 0.587 * c[:, :, 1] + 0.114 * c[:, :, 2]
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.astype(np.float64).var())


def shot_quality(box, lm, score, chip_rgb):
    cues = [
        min(max(float(score), 0.0), 1.0),
        min(max(float(box[2]) / 112.0, 0.05), 1.0),
        frontality(lm),
        min(max(laplacian_variance(chip_rgb) / 400.0, 0.05), 1.0),
    ]
    return float(np.prod(cues) ** 0.25)


def analyse(detector, embedder, frame_bgr):
    """Every face of a frame at least MIN_FACE_PX wide: box, landmarks, score, quality, embedding."""
    boxes, lms, scores = detector.detect(frame_bgr)
    keep = boxes[:, 2] >= MIN_FACE_PX
    boxes, lms, scores = boxes[keep], lms[keep], scores[keep]
    chips = [align(frame_bgr, lm) for lm in lms]
    embs = embedder.embed(chips)
    return [
        {
            "bbox": boxes[i],
            "landmarks": lms[i],
            "det_score": float(scores[i]),
            "quality": shot_quality(boxes[i], lms[i], scores[i], chips[i]),
            "embedding": embs[i],
        }
        for i in range(len(chips))
    ]


# ------------------------------------------------------------------------------------------------
# tracking


class Tracker:
    """Greedy IoU tracker: highest-IoU pairs first (IoU >= MIN_IOU against the track's last box);
    unmatched faces scoring >= NEW_TRACK_SCORE start tracks; a track unseen for `lost_frames`
    analysed frames (or older than MAX_DURATION_S) closes; tracks with < MIN_HITS hits are dropped."""

    def __init__(self, lost_frames):
        self.lost_frames = lost_frames
        self.tracks = []
        self.next_id = 1

    def update(self, ts, faces):
        closed = []
        pairs = sorted(
            ((iou(t["box"], f["bbox"]), ti, fi) for ti, t in enumerate(self.tracks) for fi, f in enumerate(faces)),
            reverse=True,
        )
        used_t, used_f = set(), set()
        for v, ti, fi in pairs:
            if v < MIN_IOU:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            t, f = self.tracks[ti], faces[fi]
            t["box"], t["last_seen"], t["hits"], t["missed"] = f["bbox"], ts, t["hits"] + 1, 0
            if (f["quality"], f["det_score"]) > (t["best"]["quality"], t["best"]["det_score"]):
                t["best"], t["best_ts"] = f, ts
        alive = []
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t["missed"] += 1
            if t["missed"] >= self.lost_frames or (ts - t["first_seen"]).total_seconds() >= MAX_DURATION_S:
                closed.append(t)
            else:
                alive.append(t)
        self.tracks = alive
        for fi, f in enumerate(faces):
            if fi not in used_f and f["det_score"] >= NEW_TRACK_SCORE:
                self.tracks.append(
                    {"id": self.next_id, "box": f["bbox"], "first_seen": ts, "last_seen": ts, "hits": 1,
                     "missed": 0, "best": f, "best_ts": ts}
                )
                self.next_id += 1
        return [t for t in closed if t["hits"] >= MIN_HITS]

    def flush(self):
        closed, self.tracks = self.tracks, []
        return [t for t in closed if t["hits"] >= MIN_HITS]


# ------------------------------------------------------------------------------------------------
# output


def uuid7():
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    v = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=v))


def rfc3339_ms(ts):
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def sighting_json(site, camera, frame_size, t):
    b = t["best"]
    msg = {
        "schema": "sightline.sighting/1",
        "id": uuid7(),
        "site": site,
        "camera": camera,
        "track": t["id"],
        "first_seen": rfc3339_ms(t["first_seen"]),
        "last_seen": rfc3339_ms(t["last_seen"]),
        "best": {
            "ts": rfc3339_ms(t["best_ts"]),
            "bbox": [float(v) for v in b["bbox"]],
            "landmarks": [[float(x), float(y)] for x, y in b["landmarks"]],
            "det_score": b["det_score"],
            "quality": b["quality"],
        },
        "frame_size": list(frame_size),
        "model": EMBEDDING_MODEL,
        "embedding": [float(v) for v in b["embedding"]],
    }
    return json.dumps(msg, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------
# main loop


def open_source(source):
    if "://" in source:
        # RTSP over TCP, as the edge agent's default `transport = "tcp"`
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        sys.exit(f"baseline: cannot open {source}")
    return cap


def reference_embedding(detector, embedder, path):
    """The embedding of the best-scoring face of a still image, computed the same way."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"baseline: cannot read {path}")
    faces = analyse(detector, embedder, img)
    if not faces:
        sys.exit(f"baseline: no face in {path}")
    return max(faces, key=lambda f: f["det_score"])["embedding"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="video file path or rtsp:// URL")
    ap.add_argument("--analysis-fps", type=float, default=5.0)
    ap.add_argument("--models", required=True, help="directory with the ONNX files")
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--site", required=True)
    ap.add_argument("--camera", required=True)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per session")
    ap.add_argument("--tuned", action="store_true",
                    help="sightline's onnxruntime session settings: idle intra-op threads sleep instead of "
                         "busy-waiting, no memory pattern")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop after this many wall seconds")
    ap.add_argument("--repeat", type=int, default=1, help="play a file this many times (timeline continues)")
    ap.add_argument("--lost-frames", type=int, default=None,
                    help=f"analysed frames unseen before a track closes (default {LOST_TIMEOUT_S} s x fps)")
    ap.add_argument("--reference", action="append", default=[],
                    help="image whose face embedding is compared with every sighting (repeatable)")
    ap.add_argument("--stats-json", required=True)
    args = ap.parse_args()

    t_start = time.monotonic()
    stop = {"flag": False}

    def on_signal(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    detector = Detector(os.path.join(args.models, DETECTOR_FILE), args.threads, args.tuned)
    embedder = Embedder(os.path.join(args.models, EMBEDDER_FILE), args.threads, args.tuned)
    refs = {p: reference_embedding(detector, embedder, p) for p in args.reference}

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"baseline-{args.site}-{args.camera}")
    client.max_inflight_messages_set(100)
    client.connect(args.mqtt_host, args.mqtt_port, keepalive=15)
    client.loop_start()
    topic = f"sightline/v1/{args.site}/{args.camera}/sighting"

    lost_frames = args.lost_frames or max(1, round(LOST_TIMEOUT_S * args.analysis_fps))
    tracker = Tracker(lost_frames)
    interval_ms = 1000.0 / args.analysis_fps
    epoch = datetime.now(timezone.utc)  # frame time = start of the run + the frame's timestamp
    stats = {"frames_read": 0, "frames_analysed": 0, "faces": 0, "sightings": 0}
    pending, sightings = [], []
    frame_size = (0, 0)

    def publish(closed):
        for t in closed:
            pending.append(client.publish(topic, sighting_json(args.site, args.camera, frame_size, t), qos=1))
            stats["sightings"] += 1
            sightings.append(
                {
                    "track": t["id"],
                    "first_seen": rfc3339_ms(t["first_seen"]),
                    "last_seen": rfc3339_ms(t["last_seen"]),
                    "hits": t["hits"],
                    "best_quality": t["best"]["quality"],
                    "best_bbox": [round(float(v), 1) for v in t["best"]["bbox"]],
                    "distance_to": {
                        os.path.basename(p): round(float(np.linalg.norm(t["best"]["embedding"] - e)), 4)
                        for p, e in refs.items()
                    },
                }
            )

    load_start = os.getloadavg()[0]
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    offset_ms, last_ms = 0.0, 0.0
    is_file = "://" not in args.source
    for rep in range(args.repeat if is_file else 1):
        cap = open_source(args.source)
        next_due = None  # each pass starts a new sampling schedule (as the agent's new decoder)
        while not stop["flag"]:
            if args.max_seconds is not None and time.monotonic() - t0 >= args.max_seconds:
                stop["flag"] = True
                break
            if not cap.grab():  # decodes; colour conversion only for the frames we analyse
                break
            stats["frames_read"] += 1
            pos = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not is_file and (pos is None or pos <= 0) and stats["frames_read"] > 1:
                pos = (time.monotonic() - t0) * 1000.0  # stream without usable timestamps
            ts_ms = offset_ms + pos
            last_ms = ts_ms
            # sample by timestamp: due every interval; a frame early by < 1/4 interval counts
            if next_due is not None and ts_ms + interval_ms / 4 < next_due and next_due - ts_ms <= 2 * interval_ms:
                continue
            on_schedule = next_due is not None and next_due - 2 * interval_ms <= ts_ms < next_due + interval_ms
            next_due = (next_due if on_schedule else ts_ms) + interval_ms
            ok, frame = cap.retrieve()
            if not ok:
                continue
            frame_size = (frame.shape[1], frame.shape[0])
            faces = analyse(detector, embedder, frame)
            stats["frames_analysed"] += 1
            stats["faces"] += len(faces)
            publish(tracker.update(epoch + timedelta(milliseconds=ts_ms), faces))
        cap.release()
        if stop["flag"]:
            break
        offset_ms = last_ms + 40.0  # the next pass continues the timeline (as the agent: + 40 ms)
    publish(tracker.flush())
    t1 = time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)

    for info in pending:  # QoS 1: wait for every PUBACK
        info.wait_for_publish(timeout=30)
    acked = sum(1 for info in pending if info.is_published())
    client.loop_stop()
    client.disconnect()

    cpu = lambda r: r.ru_utime + r.ru_stime  # noqa: E731
    wall = t1 - t0
    n = stats["frames_analysed"]
    stats.update(
        {
            "sightings_acked": acked,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu(ru1) - cpu(ru0), 3),
            "analysed_fps": round(n / wall, 3) if wall > 0 else None,
            "cpu_seconds_per_analysed_frame": round((cpu(ru1) - cpu(ru0)) / n, 5) if n else None,
            "process_wall_seconds": round(time.monotonic() - t_start, 3),
            "process_cpu_seconds": round(cpu(ru1), 3),
            "peak_rss_kib": ru1.ru_maxrss,
            "peak_rss_mib": round(ru1.ru_maxrss / 1024, 1),
            # the machine's 1-minute load average: a busy machine invalidates the timings
            "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "cpu_count": os.cpu_count(),
            "config": {
                "source": args.source,
                "analysis_fps": args.analysis_fps,
                "threads": args.threads,
                "tuned": args.tuned,
                "repeat": args.repeat,
                "max_seconds": args.max_seconds,
                "lost_frames": lost_frames,
                "score_threshold": SCORE_THRESHOLD,
                "nms_iou": NMS_IOU,
                "max_detect_width": MAX_DETECT_WIDTH,
                "min_face_px": MIN_FACE_PX,
                "new_track_score": NEW_TRACK_SCORE,
                "min_iou": MIN_IOU,
                "min_hits": MIN_HITS,
            },
            "versions": {
                "python": sys.version.split()[0],
                "numpy": np.__version__,
                "opencv": cv2.__version__,
                "onnxruntime": ort.__version__,
                "paho-mqtt": paho.mqtt.__version__,
            },
            "sighting_list": sightings,
        }
    )
    with open(args.stats_json, "w") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    summary = {k: v for k, v in stats.items() if k not in ("sighting_list", "config", "versions")}
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
