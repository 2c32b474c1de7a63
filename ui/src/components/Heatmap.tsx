import type { CrowdGrid } from '../api';

// people per cell → colour (dark blue → cyan → yellow → red)
const STOPS: [number, [number, number, number]][] = [
  [0, [16, 24, 40]],
  [0.25, [30, 90, 160]],
  [0.5, [40, 190, 200]],
  [0.75, [245, 210, 70]],
  [1, [255, 70, 70]],
];

function colour(t: number): string {
  t = Math.max(0, Math.min(1, t));
  for (let i = 1; i < STOPS.length; i++) {
    const [t1, c1] = STOPS[i];
    const [t0, c0] = STOPS[i - 1];
    if (t <= t1) {
      const f = (t - t0) / (t1 - t0);
      const c = c0.map((v, j) => Math.round(v + (c1[j] - v) * f));
      return `rgb(${c[0]},${c[1]},${c[2]})`;
    }
  }
  return 'rgb(255,70,70)';
}

export function Heatmap({ grid, testid }: { grid: CrowdGrid; testid?: string }) {
  const { cols, rows, cells } = grid;
  if (!cols || !rows || cells.length < cols * rows) return null;
  const max = Math.max(0.5, ...cells.map((v) => (Number.isFinite(v) ? v : 0)));
  const rects = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = cells[r * cols + c];
      rects.push(<rect key={`${r}-${c}`} class="cell" x={c} y={r} width={1.02} height={1.02} fill={colour(v / max)} />);
    }
  }
  return (
    <svg
      class="heatmap"
      viewBox={`0 0 ${cols} ${rows}`}
      preserveAspectRatio="none"
      data-testid={testid}
      data-cols={cols}
      data-rows={rows}
      role="img"
      aria-label={`crowd density heatmap, ${cols}×${rows} cells, up to ${max.toFixed(2)} people per cell`}
    >
      {rects}
    </svg>
  );
}
