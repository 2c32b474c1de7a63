"""The faiss side of `sightline-bench search`: faiss-cpu IndexFlatL2 on the vectors and queries
the Rust side wrote, queries one at a time, on each thread count asked for.

    faiss_search.py META_JSON OUT_JSON THREADS   (THREADS: comma-separated, e.g. "2,1")

META_JSON names raw little-endian float32 files (`vectors`, `queries`) next to it, with `n`,
`nq`, `dim`, `k`, `warmup`. OUT_JSON gets per-query latencies (ms) per thread count, the top-k
ids and squared distances (from the first thread count), the add time and a batched search.
"""

import json
import os
import sys
import time

import faiss
import numpy as np


def main() -> None:
    meta_path, out_path, threads = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
    meta = json.load(open(meta_path))
    base = os.path.dirname(os.path.abspath(meta_path))
    d, n, nq, k, warmup = meta["dim"], meta["n"], meta["nq"], meta["k"], meta["warmup"]
    xb = np.fromfile(os.path.join(base, meta["vectors"]), dtype="<f4").reshape(n, d)
    xq = np.fromfile(os.path.join(base, meta["queries"]), dtype="<f4").reshape(nq, d)

    t = time.perf_counter()
    index = faiss.IndexFlatL2(d)
    index.add(xb)
    add_s = time.perf_counter() - t
    del xb

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
        index.search(xq[:warmup], k)
        t = time.perf_counter()
        index.search(xq, k)
        batch.append({"threads": th, "seconds": time.perf_counter() - t})
        print(f"faiss: {th} thread(s): p50 {sorted(lat)[len(lat) // 2]:.2f} ms", file=sys.stderr)

    json.dump(
        {
            "faiss_version": faiss.__version__,
            "numpy_version": np.__version__,
            "add_s": add_s,
            "runs": runs,
            "batch": batch,
            "ids": ids,
            "d2": d2,
        },
        open(out_path, "w"),
    )


if __name__ == "__main__":
    main()
