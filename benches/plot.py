"""Draws plot.png of a sightline-bench report.json: edge throughput per configuration (floors,
pipeline, Python peer), edge latency per RTSP configuration (p50 and p99), search latency per
configuration (sightline vs faiss, p50 and p99) and aggregator ingest rate against its floor.

    plot.py REPORT_JSON OUT_PNG
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    report = json.load(open(sys.argv[1]))
    sections = report["sections"]
    panels = [k for k in ("edge", "latency", "search", "ingest") if k in sections or (k == "latency" and "edge" in sections)]
    cols = 2 if len(panels) > 2 else max(len(panels), 1)
    rows = -(-max(len(panels), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 5.2 * rows), squeeze=False)
    axes = axes.flatten()
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax, key in zip(axes, panels):
        data = sections["edge" if key == "latency" else key]["data"]
        if key == "latency":
            runs = [r for r in data.get("rtsp", []) if r["frame_latency"]["n"] > 0]
            labels = [f"{r['cameras']} × {r['analysis_fps']:g} fps" + ("\nfence" if r.get("scene") else "") for r in runs]
            x = range(len(runs))
            w = 0.27
            for off, field, name, color, dark in (
                (-w, "frame_latency", "frame → analysed", "#2a7ab9", "#174a70"),
                (0, "sighting_latency", "frame → sighting PUBACK", "#5aa05a", "#2f5e2f"),
                (w, "alert_latency", "frame → alert PUBACK", "#c0504d", "#7a2e2c"),
            ):
                p50 = [1e3 * (r.get(field, {}).get("p50_s") or 0) for r in runs]
                p99 = [1e3 * (r.get(field, {}).get("p99_s") or 0) for r in runs]
                ax.bar([i + off for i in x], p50, w, label=f"{name} p50", color=color)
                ax.scatter([i + off for i in x], p99, marker="_", s=300, color=dark, label=f"{name} p99", zorder=3)
            ax.set_xticks(list(x), labels)
            ax.set_yscale("log")
            ax.set_ylabel("ms (log; lower is better)")
            ax.set_title("Edge latency, RTSP cameras (camsim)\nfrom the frame's arrival at the agent")
            ax.legend(fontsize=8)
        elif key == "edge":
            names, rates = [], []
            for name, r in data["throughput"].items():
                if r is not None:
                    names.append(name.replace(" (", "\n(").replace(", ", ",\n").replace("python ", "python\n"))
                    rates.append(r)
            colors = ["#2a7ab9" if n.startswith("pipeline") else "#e0892b" if n.startswith("python") else "#999999" for n in names]
            bars = ax.bar(names, rates, color=colors)
            for b, r in zip(bars, rates):
                ax.annotate(f"{r:.1f}/s", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
            floor = data["floor"] * data["inference_only"]["fps"]
            ax.axhline(floor, color="#b33", linestyle="--", linewidth=1, label=f"{data['floor']} × inference only")
            ax.set_yscale("log")
            ax.set_ylabel("analysed frames per second (log; higher is better)")
            ax.set_title(
                f"Edge, {data['clip'].rsplit('/', 1)[-1]} at {data['analysis_fps']:g} fps, {data['threads']} threads\n"
                f"pipeline / inference only = {data['ratios']['pipeline_over_inference_fps']:.2f}"
            )
            ax.legend(fontsize=8)
        elif key == "search":
            size = data["sizes"][-1]
            labels, s50, f50, q50 = [], [], [], []
            for r in size["rows"]:
                labels.append(("k-NN" if r["variant"] == "knn" else f"≤ {data['threshold']:.2g}") + f"\n{r['threads']} thr")
                s50.append(r["sightline"]["p50_ms"])
                f50.append((r.get("faiss_flat") or {}).get("p50_ms", 0) or 0)
                q50.append((r.get("faiss_sq8") or {}).get("p50_ms", 0) or 0)
            x = range(len(labels))
            w = 0.27
            ax.bar([i - w for i in x], s50, w, label="sightline (exact) p50", color="#2a7ab9")
            ax.bar(list(x), q50, w, label="faiss SQ8 (approximate) p50", color="#999999")
            ax.bar([i + w for i in x], f50, w, label="faiss IndexFlatL2 (exact) p50", color="#e0892b")
            ax.set_xticks(list(x), labels)
            ax.set_ylabel("ms per query (lower is better)")
            ax.set_title(f"Search, {size['n']:,} × {data['dim']}-d, one query at a time")
            ax.legend(fontsize=8)
        else:
            names = ["ingest\n(full path)", "floor:\nstore insert only"]
            rates = [data["ingest"]["per_s"], data["floor_store_only"]["per_s"]]
            bars = ax.bar(names, rates, color=["#2a7ab9", "#999999"])
            for b, r in zip(bars, rates):
                ax.annotate(f"{r:,.0f}/s", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
            ax.set_ylabel("sightings per second (higher is better)")
            ax.set_title(
                f"Aggregator ingest, {data['live_trajectories']:,} live trajectories\n"
                f"p50 {data['ingest']['p50_ms']:.2f} ms, p99 {data['ingest']['p99_ms']:.2f} ms; "
                f"correlation {100 * data['correlate_share']:.0f} % of time"
            )
    fig.suptitle(f"sightline-bench {'(quick) ' if report['quick'] else ''}{report['started_utc']} — {report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
