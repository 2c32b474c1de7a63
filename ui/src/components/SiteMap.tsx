// The site frame (metres, north up) as SVG: cameras with their view radius, coloured by status
// and sized by crowding; links between cameras; optionally a trajectory's ordered sightings.

import type { Camera, Site } from '../api';
import { clock } from '../format';

export interface TrackPoint {
  x: number;
  y: number;
  camera: string;
  ts: string;
  order: number;
}

export const STATUS_COLOURS: Record<string, string> = {
  streaming: '#37d67a',
  connecting: '#f5b942',
  offline: '#ff4d5e',
  disabled: '#7b8794',
  unknown: '#5b6b80',
};

/** The camera's state as the aggregator derives it (`unknown` while its edge agent is offline). */
export function statusOf(c: Camera | undefined): string {
  return c?.state ?? c?.status?.state ?? 'unknown';
}

interface Props {
  site: Site | null;
  /** Any key (the store's are `site/camera`): only the site's cameras are drawn. */
  cameras: Map<string, Camera>;
  track?: TrackPoint[];
  testid?: string;
}

/** The cameras drawn on a site's frame, by camera id: those of that site (all while it is not known). */
function camerasOn(site: Site | null, cameras: Map<string, Camera>): Map<string, Camera> {
  const out = new Map<string, Camera>();
  for (const c of cameras.values()) if (!site || c.site === site.id) out.set(c.camera, c);
  return out;
}

export function SiteMap({ site, cameras: all, track, testid = 'site-map' }: Props) {
  // another site's cameras are in another frame
  const cameras = camerasOn(site, all);
  // positions: the site's, else the cameras' own
  const placed: { id: string; x: number; y: number; r: number; wgs84?: [number, number] | null }[] = [];
  if (site) {
    for (const c of site.cameras) placed.push({ id: c.id, x: c.position[0], y: c.position[1], r: c.view_radius_m ?? 0, wgs84: c.wgs84 });
  }
  for (const c of cameras.values()) {
    if (c.position && !placed.some((p) => p.id === c.camera)) {
      placed.push({ id: c.camera, x: c.position[0], y: c.position[1], r: 0, wgs84: c.wgs84 });
    }
  }
  const pts = [...placed.map((p) => [p.x, p.y, p.r] as const), ...(track ?? []).map((t) => [t.x, t.y, 0] as const)];
  if (pts.length === 0) {
    return (
      <div class="map-empty muted" data-testid={testid}>
        No camera has a position on the site frame.
      </div>
    );
  }
  let minX = Infinity,
    minY = Infinity,
    maxX = -Infinity,
    maxY = -Infinity;
  for (const [x, y, r] of pts) {
    minX = Math.min(minX, x - r);
    maxX = Math.max(maxX, x + r);
    minY = Math.min(minY, y - r);
    maxY = Math.max(maxY, y + r);
  }
  const span = Math.max(maxX - minX, maxY - minY, 10);
  const pad = span * 0.08;
  minX -= pad;
  maxX += pad;
  minY -= pad;
  maxY += pad;
  const w = maxX - minX;
  const h = Math.max(maxY - minY, w * 0.45);
  const cy = (minY + maxY) / 2;
  const vbY = -(cy + h / 2);
  const unit = Math.max(w, h) / 100; // one hundredth of the view
  const pos = new Map(placed.map((p) => [p.id, p]));

  // a scale bar of a round length
  const raw = w / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const bar = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) ?? raw;

  return (
    <svg
      class="site-map"
      viewBox={`${minX} ${vbY} ${w} ${h}`}
      preserveAspectRatio="xMidYMid meet"
      data-testid={testid}
      role="img"
      aria-label={`Site ${site?.id ?? ''}: cameras on the site frame, metres`}
    >
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse">
          <path d="M0,0 L10,5 L0,10 z" fill="#8fd3ff" />
        </marker>
      </defs>
      {/* view radii */}
      {placed.map((p) =>
        p.r > 0 ? (
          <circle
            key={`r-${p.id}`}
            cx={p.x}
            cy={-p.y}
            r={p.r}
            class="view-radius"
            style={{ fill: STATUS_COLOURS[statusOf(cameras.get(p.id))], stroke: STATUS_COLOURS[statusOf(cameras.get(p.id))] }}
          />
        ) : null,
      )}
      {/* links */}
      {site?.links.map((l) => {
        const a = pos.get(l.from);
        const b = pos.get(l.to);
        if (!a || !b) return null;
        return (
          <line
            key={`l-${l.from}-${l.to}`}
            x1={a.x}
            y1={-a.y}
            x2={b.x}
            y2={-b.y}
            class={`link ${l.one_way ? 'one-way' : ''}`}
            vector-effect="non-scaling-stroke"
          >
            <title>
              {l.from} → {l.to}
              {l.min_s !== undefined ? ` · ${l.min_s}–${l.max_s} s` : ''}
              {l.one_way ? ' · one way' : ''}
            </title>
          </line>
        );
      })}
      {/* trajectory */}
      {track && track.length > 0 && (
        <g class="track" data-testid="map-track">
          <polyline
            points={track.map((t) => `${t.x},${-t.y}`).join(' ')}
            class="track-line"
            vector-effect="non-scaling-stroke"
            marker-end={track.length > 1 ? 'url(#arrow)' : undefined}
          />
          {track.map((t) => (
            <circle key={`t-${t.order}`} cx={t.x} cy={-t.y} r={unit * 1.6} class="track-point">
              <title>
                {t.order}. {t.camera} {clock(t.ts)}
              </title>
            </circle>
          ))}
          {labelGroups(track).map((g) => (
            <text
              key={`tl-${g[0].order}`}
              x={g[0].x + unit * 2}
              y={-g[0].y - unit * 2}
              class="track-label"
              style={{ fontSize: `${unit * 3}px` }}
            >
              {g.length === 1 ? `${g[0].order}. ${clock(g[0].ts)}` : `${g[0].order}–${g[g.length - 1].order}. ${clock(g[0].ts)}`}
            </text>
          ))}
        </g>
      )}
      {/* cameras */}
      {placed.map((p) => {
        const cam = cameras.get(p.id);
        const status = statusOf(cam);
        const total = cam?.latest_crowd?.total;
        const size = unit * (2 + Math.min(total ?? 0, 60) / 8);
        const ll = p.wgs84 ?? cam?.wgs84;
        return (
          <g key={`c-${p.id}`} class={`cam-marker status-${status}`} data-testid={`map-marker-${p.id}`} data-status={status}>
            <title>
              {p.id} · {status}
              {total !== undefined && total !== null ? ` · ${total.toFixed(1)} people` : ''} · x {p.x.toFixed(1)} m, y {p.y.toFixed(1)} m
              {ll ? ` · lat ${ll[1].toFixed(6)}, lon ${ll[0].toFixed(6)}` : ''}
            </title>
            {total !== undefined && total !== null && total > 0 && (
              <circle cx={p.x} cy={-p.y} r={size} class="crowd-halo" />
            )}
            <circle cx={p.x} cy={-p.y} r={unit * 1.8} style={{ fill: STATUS_COLOURS[status] }} class="cam-dot" />
            <text x={p.x} y={-p.y + unit * 5} class="cam-label" text-anchor="middle" style={{ fontSize: `${unit * 2.8}px` }}>
              {p.id}
              {total !== undefined && total !== null ? ` (${Math.round(total)})` : ''}
            </text>
          </g>
        );
      })}
      {/* scale bar */}
      <g class="scale">
        <line x1={minX + pad * 0.5} y1={vbY + h - unit * 3} x2={minX + pad * 0.5 + bar} y2={vbY + h - unit * 3} vector-effect="non-scaling-stroke" />
        <text x={minX + pad * 0.5} y={vbY + h - unit * 4.5} style={{ fontSize: `${unit * 2.5}px` }}>
          {bar} m
        </text>
      </g>
    </svg>
  );
}

/** Consecutive points at (nearly) the same place share one label. */
function labelGroups(track: TrackPoint[]): TrackPoint[][] {
  const groups: TrackPoint[][] = [];
  for (const t of track) {
    const g = groups[groups.length - 1];
    const last = g?.[g.length - 1];
    if (last && Math.hypot(last.x - t.x, last.y - t.y) < 0.5) g.push(t);
    else groups.push([t]);
  }
  return groups;
}

export function Legend() {
  return (
    <div class="legend">
      {Object.entries(STATUS_COLOURS).map(([k, c]) => (
        <span key={k}>
          <span class="swatch" style={{ background: c }} /> {k}
        </span>
      ))}
      <span>
        <span class="swatch halo" /> crowd (size: people)
      </span>
    </div>
  );
}
