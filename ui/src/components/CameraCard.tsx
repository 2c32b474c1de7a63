// A camera's status, fps and latest crowd (per-zone counts, density heatmap): the Cameras page's
// cards and the Overview's compact tiles.

import { useMemo } from 'preact/hooks';
import type { Camera } from '../api';
import { age, num } from '../format';
import { Heatmap } from './Heatmap';
import { statusOf } from './SiteMap';
import { SiteTag } from './Sites';

/** The cameras sorted by site, then id. */
export function useSortedCameras(cameras: Map<string, Camera>): Camera[] {
  return useMemo(
    () => [...cameras.values()].sort((a, b) => a.site.localeCompare(b.site) || a.camera.localeCompare(b.camera)),
    [cameras],
  );
}

/** "3 streaming 1 offline": how many cameras are in each status. */
export function StatusCounts({ cameras }: { cameras: Camera[] }) {
  const counts = cameras.reduce<Record<string, number>>((acc, c) => {
    const st = statusOf(c);
    acc[st] = (acc[st] ?? 0) + 1;
    return acc;
  }, {});
  return (
    <div class="stats">
      {Object.entries(counts).map(([k, n]) => (
        <span key={k} class={`stat status-text-${k}`} data-testid={`camera-count-${k}`}>
          <b>{n}</b> {k}
        </span>
      ))}
    </div>
  );
}

interface Props {
  camera: Camera;
  now: number;
  /** The Overview's tile: fewer details, the heatmap as a thumbnail beside the counts. */
  compact?: boolean;
  /** `camera-card` (default) or `camera-tile`: the element's test id is `<testid>-<camera>`. */
  testid?: string;
}

export function CameraCard({ camera: c, now, compact = false, testid = 'camera-card' }: Props) {
  const st = statusOf(c);
  const crowd = c.latest_crowd;
  const fps = c.status?.fps_analyzed != null ? `${num(c.status.fps_analyzed)} fps` : '—';
  return (
    <article
      class={`camera-card status-${st} ${compact ? 'compact' : ''}`}
      data-testid={`${testid}-${c.camera}`}
      data-camera={c.camera}
      data-site={c.site}
      data-status={st}
    >
      <header>
        <h3>{c.camera}</h3>
        <SiteTag site={c.site} testid="camera-site" />
        <span class={`status-pill pill-${st}`} data-testid="camera-status">
          {st}
        </span>
      </header>
      {compact ? (
        <div class="tile-line">
          <span>
            <span class="muted">analysed </span>
            <b data-testid="camera-fps">{fps}</b>
          </span>
          <span class="muted small" title={c.status?.ts}>
            {age(c.status?.ts, now)}
          </span>
        </div>
      ) : (
        <dl class="kv">
          <dt>Analysed</dt>
          <dd data-testid="camera-fps">{fps}</dd>
          <dt>Input</dt>
          <dd>{c.status?.fps_in != null ? `${num(c.status.fps_in)} fps` : '—'}</dd>
          <dt>Status</dt>
          <dd title={c.status?.ts}>{age(c.status?.ts, now)}</dd>
        </dl>
      )}
      {(c.state_detail ?? c.status?.detail) && (
        <div class="detail small" data-testid="camera-state-detail">
          {c.state_detail ?? c.status?.detail}
        </div>
      )}
      <div class={`crowd-block ${compact && crowd?.grid ? 'with-thumb' : ''}`}>
        {crowd ? (
          <>
            <div class="crowd-counts">
              <div class="crowd-total" data-testid="camera-crowd-total" data-total={Math.round(crowd.total)}>
                <b>{Math.round(crowd.total)}</b> people{' '}
                <span class="muted small">
                  ({compact ? '' : `${crowd.method}, `}
                  {age(crowd.ts, now)})
                </span>
              </div>
              {crowd.zones.length > 0 && (
                <ul class="zones" data-testid="camera-zones" data-zones={crowd.zones.length}>
                  {crowd.zones.map((z) => (
                    <li key={z.zone}>
                      <span>{z.zone}</span>
                      <b>{num(z.count, compact ? 0 : 1)}</b>
                    </li>
                  ))}
                </ul>
              )}
            </div>
            {crowd.grid && <Heatmap grid={crowd.grid} testid={`heatmap-${c.camera}`} />}
          </>
        ) : (
          <div class="muted small">No crowd measurement yet.</div>
        )}
      </div>
    </article>
  );
}
