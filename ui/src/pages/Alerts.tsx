import { useMemo, useState } from 'preact/hooks';
import { dismissFlash, showSiteIds, useStore, type AlertRow } from '../store';
import { age, clock, humanKind, useNow } from '../format';
import { AckCell, AlertCounts, SeverityBadge, activeAlerts, alertAttrs, raisedTs, useSortedAlerts } from '../components/AlertBits';
import { CloseStale, StaleMark, staleClass } from '../components/StaleAlert';

const KINDS = [
  'crowd_threshold',
  'zone_intrusion',
  'camera_offline',
  'camera_frozen',
  'camera_tampered',
  'watchlist_match',
  'agent_offline',
];

export function AlertsPage() {
  const s = useStore();
  const now = useNow();
  const [kind, setKind] = useState('');
  const [stateFilter, setStateFilter] = useState<'all' | 'raised' | 'cleared' | 'unacked'>('all');

  const rows = useSortedAlerts(s);
  const kinds = useMemo(() => [...new Set([...KINDS, ...rows.map((r) => r.latest.kind)])], [rows]);
  const shown = rows.filter(
    (r) =>
      (!kind || r.latest.kind === kind) &&
      (stateFilter === 'all' ||
        (stateFilter === 'unacked' ? !r.acknowledgedBy && r.latest.state === 'raised' : r.latest.state === stateFilter)),
  );
  const active = activeAlerts(rows);
  // with several sites and none chosen, a Site column
  const siteCol = showSiteIds(s);

  return (
    <section class="panel" data-testid="alerts-page">
      <div class="panel-head">
        <h2>Live alerts</h2>
        <AlertCounts active={active} extra={[rows.length, 'total']} testid="alerts-active" />
        <div class="filters">
          <label>
            Kind{' '}
            <select value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value)} data-testid="alert-kind-filter">
              <option value="">All kinds</option>
              {kinds.map((k) => (
                <option key={k} value={k}>
                  {humanKind(k)}
                </option>
              ))}
            </select>
          </label>
          <label>
            Show{' '}
            <select
              value={stateFilter}
              onChange={(e) => setStateFilter((e.target as HTMLSelectElement).value as typeof stateFilter)}
              data-testid="alert-state-filter"
            >
              <option value="all">All</option>
              <option value="raised">Raised</option>
              <option value="unacked">Raised, not acknowledged</option>
              <option value="cleared">Cleared</option>
            </select>
          </label>
        </div>
      </div>
      {s.alertsError && <p class="error">Cannot load alerts: {s.alertsError}</p>}
      <div class="table-wrap">
        <table class="alerts" data-testid="alerts-table">
          <thead>
            <tr>
              <th>Severity</th>
              <th>Kind</th>
              {siteCol && <th>Site</th>}
              <th>Camera</th>
              <th>Zone</th>
              <th>State</th>
              <th>Raised</th>
              <th>Message</th>
              <th>Acknowledgement</th>
            </tr>
          </thead>
          <tbody>
            {shown.length === 0 && (
              <tr>
                <td colSpan={siteCol ? 9 : 8} class="muted empty">
                  {rows.length === 0 ? 'No alerts. New ones appear here as they are raised.' : 'No alert matches the filter.'}
                </td>
              </tr>
            )}
            {shown.map((r) => (
              <tr
                key={r.key}
                class={`sev-${r.latest.severity} state-${r.latest.state} ${r.acknowledgedBy ? 'is-acked' : ''} ${staleClass(r)}`}
                data-testid="alert-row"
                {...alertAttrs(r)}
              >
                <td>
                  <SeverityBadge row={r} />
                </td>
                <td data-testid="alert-kind">{humanKind(r.latest.kind)}</td>
                {siteCol && (
                  <td class="nowrap" data-testid="alert-site">
                    {r.latest.site}
                  </td>
                )}
                <td data-testid="alert-camera">{r.latest.camera}</td>
                <td data-testid="alert-zone">{r.latest.zone ?? '—'}</td>
                <td>
                  <span class={`state state-badge-${r.latest.state}`} data-testid="alert-state">
                    {r.latest.state}
                  </span>
                  {r.latest.state === 'cleared' && r.clearedAt && <span class="muted small"> {age(r.clearedAt, now)}</span>}
                  <StaleMark row={r} />
                </td>
                <td>
                  <span data-testid="alert-age" title={raisedTs(r)}>
                    {age(raisedTs(r), now)}
                  </span>
                  <div class="muted small">{clock(raisedTs(r))}</div>
                </td>
                <td class="msg">{r.latest.message}</td>
                <td>
                  <AckCell row={r} />
                  <CloseStale row={r} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

/** The cue of a critical alert that arrived live: a flashing banner (the sound plays once). */
export function CriticalBanner() {
  const s = useStore();
  const now = useNow();
  const rows = s.criticalFlash.map((k) => s.alerts.get(k)).filter((r): r is AlertRow => !!r && !r.acknowledgedBy);
  if (rows.length === 0) return null;
  const r = rows[0];
  return (
    <div class="critical-banner" role="alert" data-testid="critical-banner" data-alert-key={r.key}>
      <span class="critical-icon" aria-hidden="true">
        ▲
      </span>
      <strong>CRITICAL</strong>
      <span>
        {humanKind(r.latest.kind)} · {showSiteIds(s) ? `${r.latest.site} / ` : ''}
        {r.latest.camera}
        {r.latest.zone ? ` · ${r.latest.zone}` : ''} — {r.latest.message} ({age(raisedTs(r), now)})
      </span>
      {rows.length > 1 && <span class="muted">+{rows.length - 1} more</span>}
      <span class="spacer" />
      <a class="btn small" href="#/alerts">
        Show
      </a>
      <button type="button" class="btn small ghost" onClick={() => dismissFlash()} data-testid="critical-dismiss">
        Dismiss
      </button>
    </div>
  );
}
