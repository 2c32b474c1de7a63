import { useEffect, useState } from 'preact/hooks';
import { api, qs, type AuditRecord } from '../api';
import { siteParam, useStore } from '../store';
import { PurposeField, usePurpose } from '../components/PurposeField';
import { dateTime } from '../format';

const PAGE = 1000;
const MAX_PAGES = 20;

export function AuditPage() {
  const s = useStore();
  const [rows, setRows] = useState<AuditRecord[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [filter, setFilter] = useState('');
  const [reload, setReload] = useState(0);
  // reading the audit log needs a purpose too: the session's, or one asked for here
  const purpose = usePurpose();
  const [used, setUsed] = useState<string | null>(purpose.value.trim() || null);
  const load = (e?: Event) => {
    e?.preventDefault();
    const p = purpose.need();
    if (!p) return;
    setUsed(p);
    setReload((n) => n + 1);
  };

  useEffect(() => {
    const auth = s.auth;
    if (!auth || !used) return;
    const site = siteParam();
    const ctl = new AbortController();
    (async () => {
      const all: AuditRecord[] = [];
      let after: number | null = null;
      for (let i = 0; i < MAX_PAGES; i++) {
        const page: { items: AuditRecord[]; next_after: number | null } = await api(
          auth.token,
          '/api/v1/audit' + qs({ limit: PAGE, after, site, purpose: used }),
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
  }, [s.auth, s.siteFilter, reload, used]);

  const f = filter.trim().toLowerCase();
  const shown = (rows ?? []).filter(
    (r) =>
      !f ||
      [r.token, r.role, r.action, r.outcome, r.purpose ?? '', JSON.stringify(r.query)].some((v) => v.toLowerCase().includes(f)),
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
          <button type="button" class="btn small" onClick={() => load()} data-testid="audit-reload">
            Reload
          </button>
        </div>
      </div>
      <form class="audit-purpose" onSubmit={load} data-testid="audit-purpose-form">
        <p class="muted small">Newest first. Reading the audit log is itself recorded, with its purpose.</p>
        <PurposeField purpose={purpose} what="reading the audit log" />
        <button type="submit" class="btn small" data-testid="audit-load">
          Load
        </button>
      </form>
      {error && <p class="error">Cannot load the audit log: {error}</p>}
      {rows === null && !error && used && <p class="muted">Loading…</p>}
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
                <th>Outcome</th>
                <th>Purpose</th>
                <th>Results</th>
                <th>Query</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r) => (
                <tr
                  key={r.seq}
                  class={r.outcome === 'refused' ? 'refused' : ''}
                  data-testid="audit-row"
                  data-action={r.action}
                  data-token={r.token}
                  data-outcome={r.outcome}
                >
                  <td>{r.seq}</td>
                  <td class="nowrap">{dateTime(r.ts)}</td>
                  <td class="nowrap">{r.token}</td>
                  <td>{r.role}</td>
                  <td class="nowrap">{r.action.replace(/_/g, ' ')}</td>
                  <td class="nowrap" data-testid="audit-outcome">
                    {r.outcome === 'refused' ? <strong class="error">refused</strong> : 'answered'}
                  </td>
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
