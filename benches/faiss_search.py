"""The faiss side of `sightline-bench search`: faiss-cpu `IndexFlatL2` (exact, float32) and
`IndexScalarQuantizer` with `QT_8bit` (SQ8: 8 bits per value, approximate) on the vectors and
queries the Rust side wrote, queries one at a time, on each thread count asked for.

    faiss_search.py META_JSON OUT_JSON THREADS KINDS   (THREADS: e.g. "2,1"; KINDS: e.g. "flat,sq8")

META_JSON names raw little-endian float32 files (`vectors`, `queries`) next to it, with `n`,
`nq`, `dim`, `k`, `warmup`. The vectors are memory-mapped and added in blocks, so a 10M-vector
run holds one index at a time, not a copy of the file. OUT_JSON gets, per kind: per-query
latencies (ms) per thread count, the top-k ids and squared distances (from the first thread
count), the build time and a batched search.
"""

import json
import os
import sys
import time

import faiss
import numpy as np

BLOCK = 1_000_000
TRAIN = 200_000


def build(kind: str, xb: np.ndarray, d: int):
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "sq8":
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        index.train(np.ascontiguousarray(xb[:TRAIN]))
    else:
        raise SystemExit(f"unknown kind {kind!r}: flat or sq8")
    for start in range(0, xb.shape[0], BLOCK):
        index.add(np.ascontiguousarray(xb[start : start + BLOCK]))
    return index


def main() -> None:
    meta_path, out_path = sys.argv[1], sys.argv[2]
    threads = [int(t) for t in sys.argv[3].split(",")]
    kinds = sys.argv[4].split(",") if len(sys.argv) > 4 else ["flat"]
    meta = json.load(open(meta_path))
    base = os.path.dirname(os.path.abspath(meta_path))
    d, n, nq, k, warmup = meta["dim"], meta["n"], meta["nq"], meta["k"], meta["warmup"]
    xb = np.memmap(os.path.join(base, meta["vectors"]), dtype="<f4", mode="r", shape=(n, d))
    xq = np.fromfile(os.path.join(base, meta["queries"]), dtype="<f4").reshape(nq, d)

    out = {"faiss_version": faiss.__version__, "numpy_version": np.__version__, "kinds": {}}
    for kind in kinds:
        t = time.perf_counter()
        index = build(kind, xb, d)
        add_s = time.perf_counter() - t
        runs, batch = [], []
        ids = d2 = None
        for th in threads:
            faiss.omp_set_num_threads(th)
            for q in xq[:warmup]:
                index.search(q[None], k)
            lat, run_ids, run_d2 = [], [], []
            for q in xq:
                q1 = q[None]
                t = time.perf_counter()
                D, I = index.search(q1, k)
                lat.append((time.perf_counter() - t) * 1e3)
                run_ids.append(I[0].tolist())
                run_d2.append(D[0].tolist())
            runs.append({"threads": th, "latencies_ms": lat})
            if ids is None:
                ids, d2 = run_ids, run_d2
            t = time.perf_counter()
            index.search(xq, k)
            batch.append({"threads": th, "seconds": time.perf_counter() - t})
            print(f"faiss {kind}: {th} thread(s): p50 {sorted(lat)[len(lat) // 2]:.2f} ms", file=sys.stderr)
        out["kinds"][kind] = {"add_s": add_s, "runs": runs, "batch": batch, "ids": ids, "d2": d2}
        del index
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
