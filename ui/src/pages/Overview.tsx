// The wall screen: active alerts, camera tiles and the site map on one 1920×1080 screen (stacked
// on a laptop). Everything here is the other pages' components.

import { cameraKey, useStore } from '../store';
import { age, clock, humanKind, useNow } from '../format';
import { AckCell, AlertCounts, SeverityBadge, activeAlerts, alertAttrs, raisedTs, useSortedAlerts } from '../components/AlertBits';
import { CameraCard, StatusCounts, useSortedCameras } from '../components/CameraCard';
import { CloseStale, StaleMark, staleClass } from '../components/StaleAlert';
import { Legend, SiteMap } from '../components/SiteMap';
import { MapScopeNote, SiteTag } from '../components/Sites';

function ActiveAlerts() {
  const s = useStore();
  const now = useNow();
  const rows = useSortedAlerts(s);
  const active = activeAlerts(rows);
  const unacked = active.filter((r) => !r.acknowledgedBy).length;
  return (
    <section class="panel ov-alerts" data-testid="overview-alerts" aria-label="Active alerts">
      <div class="panel-head">
        <h2>Active alerts</h2>
        <AlertCounts active={active} extra={[unacked, 'unacknowledged']} testid="overview-alerts-active" />
        <a class="more" href="#/alerts">
          All alerts →
        </a>
      </div>
      {s.alertsError && <p class="error">Cannot load alerts: {s.alertsError}</p>}
      {active.length === 0 ? (
        <p class="muted ov-empty">No active alert. New ones appear here as they are raised.</p>
      ) : (
        <ol class="ov-alert-list">
          {active.map((r) => (
            <li
              key={r.key}
              class={`ov-alert sev-${r.latest.severity} ${r.acknowledgedBy ? 'is-acked' : ''} ${staleClass(r)}`}
              data-testid="overview-alert"
              {...alertAttrs(r)}
            >
              <div class="ov-alert-head">
                <SeverityBadge row={r} />
                <span class="ov-alert-kind" data-testid="alert-kind">
                  {humanKind(r.latest.kind)}
                </span>
                <span class="ov-alert-age" data-testid="alert-age" title={`raised at ${clock(raisedTs(r))}`}>
                  {age(raisedTs(r), now)}
                </span>
                <StaleMark row={r} />
              </div>
              <div class="ov-alert-where">
                <SiteTag site={r.latest.site} testid="alert-site" />
                <b data-testid="alert-camera">{r.latest.camera}</b>
                {r.latest.zone && (
                  <>
                    {' · '}
                    <span data-testid="alert-zone">{r.latest.zone}</span>
                  </>
                )}
                <span class="muted small"> · raised {clock(raisedTs(r))}</span>
              </div>
              {r.latest.message && <div class="ov-alert-msg">{r.latest.message}</div>}
              <div class="ov-alert-ack">
                <AckCell row={r} />
                <CloseStale row={r} />
              </div>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

export function OverviewPage() {
  const s = useStore();
  const now = useNow();
  const cams = useSortedCameras(s.cameras);
  return (
    <div class="overview" data-testid="overview-page">
      <ActiveAlerts />
      <section class="panel ov-cams" data-testid="overview-cameras" aria-label="Cameras">
        <div class="panel-head">
          <h2>Cameras</h2>
          <StatusCounts cameras={cams} />
          <a class="more" href="#/cameras">
            Details →
          </a>
        </div>
        {s.camerasError && <p class="error">Cannot load cameras: {s.camerasError}</p>}
        {cams.length === 0 && !s.camerasError && <p class="muted">No camera has reported yet.</p>}
        <div class="tile-grid">
          {cams.map((c) => (
            <CameraCard key={cameraKey(c.site, c.camera)} camera={c} now={now} compact testid="camera-tile" />
          ))}
        </div>
      </section>
      <section class="panel ov-map" data-testid="overview-map" aria-label="Site map">
        <div class="panel-head">
          <h2>Site map{s.site ? ` · ${s.site.id}` : ''}</h2>
          <Legend />
        </div>
        {s.siteError && <p class="error">Cannot load the site: {s.siteError}</p>}
        <MapScopeNote />
        <div class="map-box fill">
          <SiteMap site={s.site} cameras={s.cameras} />
        </div>
      </section>
    </div>
  );
}
