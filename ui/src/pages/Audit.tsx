import { useEffect, useState } from 'preact/hooks';
import { api, qs, type AuditRecord } from '../api';
import { useStore } from '../store';
import { dateTime } from '../format';

const PAGE = 1000;
const MAX_PAGES = 20;

export function AuditPage() {
  const s = useStore();
  const [rows, setRows] = useState<AuditRecord[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [filter, setFilter] = useState('');
  const [reload, setReload] = useState(0);

  useEffect(() => {
    const auth = s.auth;
    if (!auth) return;
    const ctl = new AbortController();
    (async () => {
      const all: AuditRecord[] = [];
      let after: number | null = null;
      for (let i = 0; i < MAX_PAGES; i++) {
        const page: { items: AuditRecord[]; next_after: number | null } = await api(
          auth.token,
          '/api/v1/audit' + qs({ limit: PAGE, after }),
          { signal: ctl.signal },
        );
        all.push(...page.items);
        if (page.next_after === null) break;
        after = page.next_after;
      }
      setRows(all.reverse());
      setError(null);
    })().catch((e) => {
      if ((e as Error).name !== 'AbortError') setError((e as Error).message);
    });
    return () => ctl.abort();
  }, [s.auth, reload]);

  const f = filter.trim().toLowerCase();
  const shown = (rows ?? []).filter(
    (r) => !f || [r.token, r.role, r.action, r.purpose ?? '', JSON.stringify(r.query)].some((v) => v.toLowerCase().includes(f)),
  );

  return (
    <section class="panel" data-testid="audit-page">
      <div class="panel-head">
        <h2>Audit log</h2>
        <div class="filters">
          <label>
            Filter{' '}
            <input
              type="search"
              value={filter}
              placeholder="token, action, purpose…"
              onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
              data-testid="audit-filter"
            />
          </label>
          <button type="button" class="btn small" onClick={() => setReload((n) => n + 1)} data-testid="audit-reload">
            Reload
          </button>
        </div>
      </div>
      <p class="muted small">Newest first. Reading the audit log is itself recorded.</p>
      {error && <p class="error">Cannot load the audit log: {error}</p>}
      {rows === null && !error && <p class="muted">Loading…</p>}
      {rows && (
        <div class="table-wrap">
          <table class="audit" data-testid="audit-table">
            <thead>
              <tr>
                <th>#</th>
                <th>Time</th>
                <th>Token</th>
                <th>Role</th>
                <th>Action</th>
                <th>Purpose</th>
                <th>Results</th>
                <th>Query</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r) => (
                <tr key={r.seq} data-testid="audit-row" data-action={r.action} data-token={r.token}>
                  <td>{r.seq}</td>
                  <td class="nowrap">{dateTime(r.ts)}</td>
                  <td class="nowrap">{r.token}</td>
                  <td>{r.role}</td>
                  <td class="nowrap">{r.action.replace(/_/g, ' ')}</td>
                  <td data-testid="audit-purpose">{r.purpose ?? <span class="muted">—</span>}</td>
                  <td>{r.results}</td>
                  <td class="query">
                    <code>{JSON.stringify(r.query)}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
