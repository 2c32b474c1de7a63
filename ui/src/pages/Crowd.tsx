import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, qs, type CrowdSeries } from '../api';
import { isMultiSite, showSiteIds, useStore } from '../store';

const RANGES: { label: string; seconds: number; step: number }[] = [
  { label: 'Last 15 min', seconds: 900, step: 10 },
  { label: 'Last 1 h', seconds: 3600, step: 30 },
  { label: 'Last 6 h', seconds: 6 * 3600, step: 180 },
  { label: 'Last 24 h', seconds: 24 * 3600, step: 600 },
];

function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  return ([1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) ?? raw) || 1;
}

function hhmm(t: number, withSeconds: boolean): string {
  return new Date(t).toLocaleTimeString(undefined, {
    hour12: false,
    hour: '2-digit',
    minute: '2-digit',
    second: withSeconds ? '2-digit' : undefined,
  });
}

export function CrowdChart({ series, since, until }: { series: CrowdSeries; since: number; until: number }) {
  const W = 1000,
    H = 340,
    L = 56,
    R = 16,
    T = 16,
    B = 36;
  const items = series.items;
  const maxV = Math.max(1, ...items.map((b) => b.max));
  const yStep = niceStep(maxV, 5);
  const yMax = Math.ceil(maxV / yStep) * yStep;
  const x = (t: number) => L + ((t - since) / (until - since)) * (W - L - R);
  const y = (v: number) => T + (1 - v / yMax) * (H - T - B);
  const half = (series.step_s * 1000) / 2;
  const pts = items.map((b) => ({ t: Date.parse(b.start) + half, ...b }));
  // split the line where buckets are missing (no measurement: a gap, not zero)
  // (measurements sparser than the buckets are not gaps: compare with the usual spacing)
  const gaps = pts.slice(1).map((p, i) => p.t - pts[i].t).sort((a, b) => a - b);
  const usual = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0;
  const maxGap = Math.max(series.step_s * 1000 * 1.5, usual * 2.5);
  const segments: (typeof pts)[] = [];
  for (const p of pts) {
    const last = segments[segments.length - 1];
    if (last && p.t - last[last.length - 1].t <= maxGap) last.push(p);
    else segments.push([p]);
  }
  const xTicks: number[] = [];
  const span = until - since;
  const tickMs = [60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3].find((v) => span / v <= 8) ?? 21600e3;
  for (let t = Math.ceil(since / tickMs) * tickMs; t <= until; t += tickMs) xTicks.push(t);
  const yTicks: number[] = [];
  for (let v = 0; v <= yMax + 1e-9; v += yStep) yTicks.push(v);

  return (
    <svg
      class="chart"
      viewBox={`0 0 ${W} ${H}`}
      data-testid="crowd-chart"
      data-camera={series.camera}
      data-zone={series.zone ?? ''}
      data-points={pts.length}
      role="img" aria-label={`people over time, ${series.camera} ${series.zone ?? 'total'}`}>
      {yTicks.map((v) => (
        <g key={`y${v}`}>
          <line x1={L} x2={W - R} y1={y(v)} y2={y(v)} class="grid" />
          <text x={L - 8} y={y(v) + 4} text-anchor="end" class="axis-label">
            {Number.isInteger(v) ? v : v.toFixed(1)}
          </text>
        </g>
      ))}
      {xTicks.map((t) => (
        <g key={`x${t}`}>
          <line x1={x(t)} x2={x(t)} y1={T} y2={H - B} class="grid" />
          <text x={x(t)} y={H - B + 20} text-anchor="middle" class="axis-label">
            {hhmm(t, tickMs < 60e3)}
          </text>
        </g>
      ))}
      <line x1={L} x2={L} y1={T} y2={H - B} class="axis" />
      <line x1={L} x2={W - R} y1={H - B} y2={H - B} class="axis" />
      <text x={14} y={T + (H - T - B) / 2} class="axis-title" transform={`rotate(-90 14 ${T + (H - T - B) / 2})`} text-anchor="middle">
        people
      </text>
      {segments.map((seg, i) => {
        const band =
          seg.map((p) => `${x(p.t)},${y(p.max)}`).join(' ') +
          ' ' +
          [...seg]
            .reverse()
            .map((p) => `${x(p.t)},${y(p.min)}`)
            .join(' ');
        const area = `${x(seg[0].t)},${y(0)} ` + seg.map((p) => `${x(p.t)},${y(p.mean)}`).join(' ') + ` ${x(seg[seg.length - 1].t)},${y(0)}`;
        return (
          <g key={i}>
            <polygon points={area} class="area" />
            <polygon points={band} class="band" />
            <polyline points={seg.map((p) => `${x(p.t)},${y(p.mean)}`).join(' ')} class="line" />
            {seg.map((p) => (
              <circle key={p.t} cx={x(p.t)} cy={y(p.mean)} r={seg.length === 1 ? 4 : 3} class="dot" data-testid="crowd-point">
                <title>
                  {hhmm(p.t, true)}: mean {p.mean.toFixed(1)}, {p.min.toFixed(1)}–{p.max.toFixed(1)} ({p.samples} measurements)
                </title>
              </circle>
            ))}
          </g>
        );
      })}
    </svg>
  );
}

export function CrowdPage() {
  const s = useStore();
  // keys of `s.cameras` (`site/camera`)
  const cams = useMemo(() => [...s.cameras.keys()].sort(), [s.cameras]);
  const [camera, setCamera] = useState('');
  const [zone, setZone] = useState('');
  const [range, setRange] = useState(1);
  const [series, setSeries] = useState<CrowdSeries | null>(null);
  const [window, setWindow] = useState<[number, number]>([0, 0]);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);

  // by default the first camera that measures crowds
  const cam = (s.cameras.has(camera) ? camera : '') || cams.find((c) => s.cameras.get(c)?.latest_crowd) || cams[0] || '';
  const chosen = s.cameras.get(cam);
  const zones = chosen?.latest_crowd?.zones.map((z) => z.zone) ?? [];
  // camera ids are unique within a site: with several sites, ask for the camera's own site
  const camSite = chosen && isMultiSite(s) ? chosen.site : null;
  const camId = chosen?.camera ?? '';
  // a zone of the camera chosen before (another site chosen meanwhile) is not asked for
  const zoneId = zones.includes(zone) ? zone : '';

  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), 30_000);
    return () => clearInterval(t);
  }, []);

  useEffect(() => {
    const auth = s.auth;
    if (!auth || !camId) return;
    const ctl = new AbortController();
    const r = RANGES[range];
    const until = Date.now();
    const since = until - r.seconds * 1000;
    setLoading(true);
    api<CrowdSeries>(
      auth.token,
      '/api/v1/crowd' +
        qs({ site: camSite, camera: camId, zone: zoneId || null, since: new Date(since).toISOString(), until: new Date(until).toISOString(), step: r.step }),
      { signal: ctl.signal },
    )
      .then((data) => {
        setSeries(data);
        setWindow([since, until]);
        setError(null);
      })
      .catch((e) => {
        if ((e as Error).name !== 'AbortError') setError((e as Error).message);
      })
      .finally(() => setLoading(false));
    return () => ctl.abort();
  }, [s.auth, camSite, camId, zoneId, range, tick]);

  const items = series?.items ?? [];
  const last = items[items.length - 1];
  const peak = items.reduce((m, b) => Math.max(m, b.max), 0);

  return (
    <section class="panel" data-testid="crowd-page" data-site={chosen?.site ?? ''}>
      <div class="panel-head">
        <h2>Crowd</h2>
        <div class="filters">
          <label>
            Camera{' '}
            <select
              value={cam}
              onChange={(e) => {
                setCamera((e.target as HTMLSelectElement).value);
                setZone('');
              }}
              data-testid="crowd-camera"
            >
              {cams.map((c) => {
                const x = s.cameras.get(c);
                return (
                  <option key={c} value={c}>
                    {x ? (showSiteIds(s) ? `${x.site} / ${x.camera}` : x.camera) : c}
                  </option>
                );
              })}
            </select>
          </label>
          <label>
            Zone{' '}
            <select value={zoneId} onChange={(e) => setZone((e.target as HTMLSelectElement).value)} data-testid="crowd-zone">
              <option value="">Camera total</option>
              {zones.map((z) => (
                <option key={z} value={z}>
                  {z}
                </option>
              ))}
            </select>
          </label>
          <div class="seg" role="group" aria-label="Range">
            {RANGES.map((r, i) => (
              <button
                key={r.label}
                type="button"
                class={`btn small ${i === range ? 'primary' : 'ghost'}`}
                onClick={() => setRange(i)}
                data-testid={`crowd-range-${r.seconds}`}
              >
                {r.label}
              </button>
            ))}
          </div>
        </div>
      </div>
      {!cam && <p class="muted">No camera yet.</p>}
      {error && <p class="error">Cannot load the crowd series: {error}</p>}
      {series && (
        <>
          <div class="stats">
            <span class="stat">
              latest <b>{last ? last.mean.toFixed(1) : '—'}</b>
            </span>
            <span class="stat">
              peak <b>{peak.toFixed(1)}</b>
            </span>
            <span class="stat muted">
              {items.length} buckets of {series.step_s} s{loading ? ' · updating…' : ''}
            </span>
          </div>
          {items.length === 0 ? (
            <p class="muted" data-testid="crowd-empty">
              No crowd measurement for {series.camera}
              {series.zone ? ` / ${series.zone}` : ''} in this range.
            </p>
          ) : (
            <CrowdChart series={series} since={window[0]} until={window[1]} />
          )}
          <p class="muted small">Line: mean per bucket; band: min to max; gaps: no measurement.</p>
        </>
      )}
    </section>
  );
}
