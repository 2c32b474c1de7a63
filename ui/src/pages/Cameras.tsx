import { useMemo } from 'preact/hooks';
import { useStore } from '../store';
import { age, num, useNow } from '../format';
import { Heatmap } from '../components/Heatmap';
import { statusOf } from '../components/SiteMap';

export function CamerasPage() {
  const s = useStore();
  const now = useNow();
  const cams = useMemo(() => [...s.cameras.values()].sort((a, b) => a.camera.localeCompare(b.camera)), [s.cameras]);
  const counts = cams.reduce<Record<string, number>>((acc, c) => {
    const st = statusOf(c);
    acc[st] = (acc[st] ?? 0) + 1;
    return acc;
  }, {});

  return (
    <section class="panel" data-testid="cameras-page">
      <div class="panel-head">
        <h2>Cameras</h2>
        <div class="stats">
          {Object.entries(counts).map(([k, n]) => (
            <span key={k} class={`stat status-text-${k}`}>
              <b>{n}</b> {k}
            </span>
          ))}
        </div>
      </div>
      {s.camerasError && <p class="error">Cannot load cameras: {s.camerasError}</p>}
      {cams.length === 0 && !s.camerasError && <p class="muted">No camera has reported yet.</p>}
      <div class="camera-grid">
        {cams.map((c) => {
          const st = statusOf(c);
          const crowd = c.latest_crowd;
          return (
            <article key={c.camera} class={`camera-card status-${st}`} data-testid={`camera-card-${c.camera}`} data-status={st}>
              <header>
                <h3>{c.camera}</h3>
                <span class={`status-pill pill-${st}`} data-testid="camera-status">
                  {st}
                </span>
              </header>
              <dl class="kv">
                <dt>Analysed</dt>
                <dd data-testid="camera-fps">{c.status?.fps_analyzed != null ? `${num(c.status.fps_analyzed)} fps` : '—'}</dd>
                <dt>Input</dt>
                <dd>{c.status?.fps_in != null ? `${num(c.status.fps_in)} fps` : '—'}</dd>
                <dt>Status</dt>
                <dd title={c.status?.ts}>{age(c.status?.ts, now)}</dd>
                {c.status?.detail && (
                  <>
                    <dt>Detail</dt>
                    <dd class="detail">{c.status.detail}</dd>
                  </>
                )}
              </dl>
              <div class="crowd-block">
                {crowd ? (
                  <>
                    <div class="crowd-total" data-testid="camera-crowd-total">
                      <b>{Math.round(crowd.total)}</b> people <span class="muted small">({crowd.method}, {age(crowd.ts, now)})</span>
                    </div>
                    {crowd.zones.length > 0 && (
                      <ul class="zones" data-testid="camera-zones">
                        {crowd.zones.map((z) => (
                          <li key={z.zone}>
                            <span>{z.zone}</span>
                            <b>{num(z.count)}</b>
                          </li>
                        ))}
                      </ul>
                    )}
                    {crowd.grid && <Heatmap grid={crowd.grid} testid={`heatmap-${c.camera}`} />}
                  </>
                ) : (
                  <div class="muted small">No crowd measurement yet.</div>
                )}
              </div>
            </article>
          );
        })}
      </div>
    </section>
  );
}
