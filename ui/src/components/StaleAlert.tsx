// A stale alert: raised by an edge agent that went away (offline, or restarted since), so nobody
// will clear it. Shown greyed with "stale: agent offline"; an admin may close it with a reason
// (POST /api/v1/alerts/{id}/close, audited).

import { useState } from 'preact/hooks';
import { atLeast } from '../api';
import { closeAlert, useStore, type AlertRow } from '../store';
import { clock } from '../format';

/** Whether the row is shown as stale. */
export function isStale(r: AlertRow): boolean {
  return r.stale && r.latest.state === 'raised';
}

/** Class names of a stale row. */
export function staleClass(r: AlertRow): string {
  return isStale(r) ? 'is-stale' : '';
}

export function StaleMark({ row }: { row: AlertRow }) {
  if (!isStale(row)) return null;
  return (
    <span class="stale-mark" data-testid="alert-stale" title={row.staleSince ? `since ${row.staleSince}` : undefined}>
      stale: agent offline{row.staleSince ? ` since ${clock(row.staleSince)}` : ''}
    </span>
  );
}

const MAX_REASON = 500;

/** For admins, on a stale row: asks for the reason, then closes the alert. */
export function CloseStale({ row }: { row: AlertRow }) {
  const s = useStore();
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | null>(null);
  if (!isStale(row) || !atLeast(s.auth?.role, 'admin')) return null;
  if (!open) {
    return (
      <button type="button" class="btn small ghost" data-testid="alert-close" onClick={() => setOpen(true)}>
        Close…
      </button>
    );
  }
  const trimmed = reason.trim();
  return (
    <form
      class="close-form"
      data-testid="alert-close-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (!trimmed) return;
        setBusy(true);
        setErr(null);
        try {
          await closeAlert(row, trimmed);
          setOpen(false);
        } catch (x) {
          setErr((x as Error).message);
        } finally {
          setBusy(false);
        }
      }}
    >
      <input
        type="text"
        required
        maxLength={MAX_REASON}
        placeholder="Why close it? (kept in the audit log)"
        value={reason}
        data-testid="alert-close-reason"
        onInput={(e) => setReason((e.target as HTMLInputElement).value)}
      />
      <button type="submit" class="btn small" disabled={busy || !trimmed} data-testid="alert-close-confirm">
        {busy ? 'Closing…' : 'Close alert'}
      </button>
      <button type="button" class="btn small ghost" onClick={() => setOpen(false)}>
        Cancel
      </button>
      {err && (
        <span class="error small" role="alert">
          {' '}
          {err}
        </span>
      )}
    </form>
  );
}
