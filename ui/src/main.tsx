import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './styles.css';
import { atLeast, type Role } from './api';
import { isMultiSite, resume, signOut, useStore } from './store';
import { SitePicker } from './components/Sites';
import { SignIn } from './pages/SignIn';
import { AlertsPage, CriticalBanner } from './pages/Alerts';
import { OverviewPage } from './pages/Overview';
import { CamerasPage } from './pages/Cameras';
import { MapPage } from './pages/MapPage';
import { CrowdPage } from './pages/Crowd';
import { InvestigationsPage } from './pages/Investigations';
import { AuditPage } from './pages/Audit';

interface Route {
  path: string;
  label: string;
  role: Role;
}

const ROUTES: Route[] = [
  { path: 'overview', label: 'Overview', role: 'operator' },
  { path: 'alerts', label: 'Alerts', role: 'operator' },
  { path: 'cameras', label: 'Cameras', role: 'operator' },
  { path: 'map', label: 'Map', role: 'operator' },
  { path: 'crowd', label: 'Crowd', role: 'operator' },
  { path: 'investigations', label: 'Investigations', role: 'integrator' },
  { path: 'audit', label: 'Audit log', role: 'admin' },
];

/** The page after sign-in, for every role: the wall screen. */
const DEFAULT_PATH = 'overview';

function currentPath(): string {
  const h = location.hash.replace(/^#\/?/, '');
  return h.split(/[/?]/)[0] || DEFAULT_PATH;
}

function useRoute(): string {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const on = () => setPath(currentPath());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return path;
}

function LiveIndicator() {
  const s = useStore();
  const label = s.live === 'live' ? 'Live' : s.live === 'stopped' ? 'Not live' : s.live === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  return (
    <span class={`live live-${s.live}`} data-testid="live-status" data-state={s.live} title={s.liveDetail ?? ''}>
      <span class="live-dot" aria-hidden="true" />
      {label}
    </span>
  );
}

function App() {
  const s = useStore();
  const path = useRoute();
  const [resuming, setResuming] = useState(true);
  useEffect(() => {
    void resume().finally(() => setResuming(false));
  }, []);

  if (!s.auth) {
    return resuming ? <div class="boot">Loading…</div> : <SignIn />;
  }
  const role = s.auth.role;
  const route = ROUTES.find((r) => r.path === path);
  let page;
  if (!route) {
    page = (
      <section class="panel">
        <h2>Not found</h2>
        <p>
          There is no page <code>#/{path}</code>. <a href={`#/${DEFAULT_PATH}`}>Go to the overview</a>.
        </p>
      </section>
    );
  } else if (!atLeast(role, route.role)) {
    page = (
      <section class="panel notice-denied" data-testid="not-permitted" role="alert">
        <h2>{route.label}</h2>
        <p>
          {route.label} {route.label.endsWith('s') ? 'are' : 'is'} not permitted for the {role} role. It needs the{' '}
          {route.role} role.
        </p>
      </section>
    );
  } else {
    page = {
      overview: <OverviewPage />,
      alerts: <AlertsPage />,
      cameras: <CamerasPage />,
      map: <MapPage />,
      crowd: <CrowdPage />,
      investigations: <InvestigationsPage />,
      audit: <AuditPage />,
    }[route.path];
  }

  return (
    <div class={`shell ${route?.path === 'overview' ? 'fit' : ''}`}>
      <header class="topbar">
        <div class="brand">
          <img src="/favicon.svg" alt="" width={28} height={28} />
          <span>sightline</span>
          {isMultiSite(s) ? <SitePicker /> : s.site && (
            <span class="site-id" data-testid="header-site">
              {s.site.id}
            </span>
          )}
        </div>
        <nav class="nav" data-testid="nav">
          {ROUTES.filter((r) => atLeast(role, r.role)).map((r) => (
            <a
              key={r.path}
              href={`#/${r.path}`}
              class={r.path === path ? 'active' : ''}
              data-testid={`nav-${r.path}`}
              aria-current={r.path === path ? 'page' : undefined}
            >
              {r.label}
            </a>
          ))}
        </nav>
        <div class="who">
          <LiveIndicator />
          <span class="user" data-testid="user-name">
            {s.auth.name}
          </span>
          <span class={`role role-${role}`} data-testid="user-role">
            {role}
          </span>
          <button type="button" class="btn ghost" data-testid="sign-out" onClick={() => {
              signOut();
              // the next person to sign in starts on the overview
              location.hash = '';
            }}>
            Sign out
          </button>
        </div>
      </header>
      <CriticalBanner />
      <main class="content">{page}</main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
