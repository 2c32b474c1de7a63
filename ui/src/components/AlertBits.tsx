// Pieces shared by the Alerts page and the Overview: the sorted alert rows, which ones are
// active, the severity badge and the acknowledgement cell.

import { useMemo, useState } from 'preact/hooks';
import { acknowledge, type AlertRow, type State } from '../store';
import { clock } from '../format';

/** Every alert row, the latest event first. */
export function useSortedAlerts(s: State): AlertRow[] {
  return useMemo(() => [...s.alerts.values()].sort((a, b) => Date.parse(b.latest.ts) - Date.parse(a.latest.ts)), [s.alerts]);
}

/** Raised and not cleared (acknowledged or not). */
export function isActive(r: AlertRow): boolean {
  return r.latest.state === 'raised';
}

/** When the alert was raised (its latest event's time when the raise was not seen). */
export function raisedTs(r: AlertRow): string {
  return r.raisedAt ?? r.latest.ts;
}

/** The active alerts, the most recently raised first. */
export function activeAlerts(rows: AlertRow[]): AlertRow[] {
  return rows.filter(isActive).sort((a, b) => Date.parse(raisedTs(b)) - Date.parse(raisedTs(a)));
}

/** The counts heading an alert list: the active alerts, the critical ones among them, and `extra`. */
export function AlertCounts({ active, extra, testid }: { active: AlertRow[]; extra: [number, string]; testid: string }) {
  const critical = active.filter((r) => r.latest.severity === 'critical').length;
  return (
    <div class="stats">
      <span class="stat" data-testid={testid}>
        <b>{active.length}</b> active
      </span>
      <span class={`stat ${critical ? 'stat-critical' : ''}`}>
        <b>{critical}</b> critical
      </span>
      <span class="stat">
        <b>{extra[0]}</b> {extra[1]}
      </span>
    </div>
  );
}

/** Attributes that identify an alert row for tests and styles, on every page that lists alerts. */
export function alertAttrs(r: AlertRow) {
  return {
    'data-alert-key': r.key,
    'data-site': r.latest.site,
    'data-event-ids': r.eventIds.join(' '),
    'data-state': r.latest.state,
    'data-severity': r.latest.severity,
    'data-stale': r.stale && r.latest.state === 'raised' ? 'true' : 'false',
  };
}

export function SeverityBadge({ row }: { row: AlertRow }) {
  return (
    <span class={`sev sev-badge-${row.latest.severity}`} data-testid="alert-severity">
      {row.latest.severity}
    </span>
  );
}

export function AckCell({ row }: { row: AlertRow }) {
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | null>(null);
  if (row.acknowledgedBy) {
    return (
      <span class="acked" data-testid="alert-ack-info">
        acknowledged by <strong>{row.acknowledgedBy}</strong> at {clock(row.acknowledgedAt)}
      </span>
    );
  }
  return (
    <span>
      <button
        type="button"
        class="btn small"
        disabled={busy}
        data-testid="alert-ack"
        onClick={async () => {
          setBusy(true);
          setErr(null);
          try {
            await acknowledge(row);
          } catch (e) {
            setErr((e as Error).message);
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? 'Acknowledging…' : 'Acknowledge'}
      </button>
      {err && (
        <span class="error small" role="alert">
          {' '}
          {err}
        </span>
      )}
    </span>
  );
}
