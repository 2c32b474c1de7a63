// The dashboard's shared state: who is signed in, alerts (one row per stable alert id),
// cameras with their live status and latest crowd, the site, and the live stream's state.
// With several sites, the site chosen in the header (`siteFilter`, kept in localStorage) scopes
// every request and the live stream: `site=ID` means ID and every site below it.

import { useEffect, useState } from 'preact/hooks';
import {
  api,
  ApiError,
  setUnauthorizedHandler,
  type Alert,
  type AlertAck,
  type Camera,
  type CameraStatus,
  type CrowdEvent,
  type Me,
  qs,
  type Site,
  type SiteEntry,
  type StoredAlert,
} from './api';
import { openStream, type LiveState, type SseEvent } from './sse';
import { beep, unlockAudio } from './sound';

/** One alert as the operator sees it: the latest event of its stable id. */
export interface AlertRow {
  key: string; // the stable `alert` id shared by raise and clear
  latest: Alert;
  raisedAt: string | null;
  clearedAt: string | null;
  eventIds: string[]; // every event id seen for it (newest first)
  raisedEventId: string | null;
  acknowledgedBy: string | null;
  acknowledgedAt: string | null;
  arrivedLive: boolean;
  /** Raised by an edge agent that went away: nobody will clear it (an admin may close it). */
  stale: boolean;
  staleSince: string | null;
}

export interface State {
  auth: (Me & { token: string }) | null;
  signInError: string | null;
  alerts: Map<string, AlertRow>;
  alertsError: string | null;
  /** Keyed by `cameraKey(site, camera)`: camera ids are unique within a site only. */
  cameras: Map<string, Camera>;
  camerasError: string | null;
  /** The map model: the chosen site's, or (all sites) the first site with cameras. */
  site: Site | null;
  siteError: string | null;
  /** The sites the token may see, in tree order; empty until known (or from an aggregator without `/sites`). */
  sites: SiteEntry[];
  /** The chosen site (it and every site below it), or null: every site the token may see. */
  siteFilter: string | null;
  live: LiveState;
  liveDetail: string | null;
  /** Stable ids of critical alerts that arrived live and are not acknowledged yet. */
  criticalFlash: string[];
}

const TOKEN_KEY = 'sightline.token';
const SITE_KEY = 'sightline.site';

let state: State = {
  auth: null,
  signInError: null,
  alerts: new Map(),
  alertsError: null,
  cameras: new Map(),
  camerasError: null,
  site: null,
  siteError: null,
  sites: [],
  siteFilter: null,
  live: 'stopped',
  liveDetail: null,
  criticalFlash: [],
};
const listeners = new Set<() => void>();

export function getState(): State {
  return state;
}

function set(patch: Partial<State>): void {
  state = { ...state, ...patch };
  listeners.forEach((l) => l());
}

/** Re-renders the component when the state changes. */
export function useStore(): State {
  const [, force] = useState(0);
  useEffect(() => {
    const l = () => force((n) => n + 1);
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, []);
  return state;
}

// ---- sites ----------------------------------------------------------------------------------------

/** The key of a camera in `State.cameras`. */
export function cameraKey(site: string, camera: string): string {
  return `${site}/${camera}`;
}

/** Several sites are visible to the token (the site picker is shown). */
export function isMultiSite(s: State): boolean {
  return s.sites.length > 1;
}

/** Lists mix items of several sites ("All sites", or a site with sites below it): each shows its site id. */
export function showSiteIds(s: State): boolean {
  return isMultiSite(s) && (s.siteFilter === null || s.sites.some((x) => x.parent === s.siteFilter));
}

/** The `site` query parameter of every scoped request (null: none, everything the token may see). */
export function siteParam(): string | null {
  return state.siteFilter;
}

/** Bumped when the scope changes (sign-in, another site): answers of an older scope are dropped. */
let generation = 0;

function storedSite(): string | null {
  try {
    return localStorage.getItem(SITE_KEY);
  } catch {
    return null;
  }
}

function storeSite(id: string | null): void {
  try {
    if (id) localStorage.setItem(SITE_KEY, id);
    else localStorage.removeItem(SITE_KEY);
  } catch {
    /* storage disabled: the choice lasts for this page only */
  }
}

/** Loads the visible sites; returns the site filter to use (the stored choice if still visible). */
async function loadSites(token: string): Promise<string | null> {
  const g = generation;
  try {
    const page = await api<{ items: SiteEntry[] }>(token, '/api/v1/sites');
    if (g !== generation) return state.siteFilter;
    const wanted = storedSite();
    const visible = page.items.length > 1 && wanted !== null && page.items.some((x) => x.id === wanted);
    set({ sites: page.items });
    // a choice this token cannot see (another token's, or a site removed) is forgotten
    if (wanted !== null && !visible) storeSite(null);
    return visible ? wanted : null;
  } catch {
    // an aggregator without sites (one site): no picker, no filter
    if (g === generation) set({ sites: [] });
    return null;
  }
}

/** Chooses the site every page and the live stream are scoped to (null: all sites). */
export function chooseSite(id: string | null): void {
  const auth = state.auth;
  if (!auth) return;
  const next = id !== null && state.sites.some((x) => x.id === id) ? id : null;
  storeSite(next);
  if (next === state.siteFilter) return;
  generation += 1;
  set({ siteFilter: next, alerts: new Map(), alertsError: null, cameras: new Map(), camerasError: null, site: null, siteError: null });
  loadScoped(auth.token);
}

/** Everything that depends on the chosen site: alerts, cameras, the map and the live stream. */
function loadScoped(token: string): void {
  void loadAlerts(token);
  void loadCameras(token);
  void loadSite(token);
  startLive(token);
}

// ---- alerts ---------------------------------------------------------------------------------

function mergeAlert(
  rows: Map<string, AlertRow>,
  a: Alert,
  ack: { by: string | null; at: string | null },
  live: boolean,
): AlertRow {
  const key = a.alert || a.id;
  const prev = rows.get(key);
  const row: AlertRow = prev
    ? { ...prev, eventIds: prev.eventIds.includes(a.id) ? prev.eventIds : [a.id, ...prev.eventIds] }
    : {
        key,
        latest: a,
        raisedAt: null,
        clearedAt: null,
        eventIds: [a.id],
        raisedEventId: null,
        acknowledgedBy: null,
        acknowledgedAt: null,
        arrivedLive: live,
        stale: false,
        staleSince: null,
      };
  if (!prev || Date.parse(a.ts) >= Date.parse(row.latest.ts)) row.latest = a;
  if (a.state === 'raised') {
    if (!row.raisedAt || Date.parse(a.ts) <= Date.parse(row.raisedAt) || (row.clearedAt && Date.parse(a.ts) > Date.parse(row.clearedAt))) {
      row.raisedAt = a.ts;
      row.raisedEventId = a.id;
    }
  } else if (!row.clearedAt || Date.parse(a.ts) > Date.parse(row.clearedAt)) {
    row.clearedAt = a.ts;
  }
  if (ack.by && !row.acknowledgedBy) {
    row.acknowledgedBy = ack.by;
    row.acknowledgedAt = ack.at;
  }
  rows.set(key, row);
  return row;
}

async function loadAlerts(token: string): Promise<void> {
  const g = generation;
  try {
    const page = await api<{ items: StoredAlert[] }>(token, '/api/v1/alerts' + qs({ limit: 500, site: siteParam() }));
    if (g !== generation) return;
    const rows = new Map(state.alerts);
    // oldest first so each row ends with its latest state
    for (const s of [...page.items].reverse()) {
      const row = mergeAlert(rows, s.alert, { by: s.acknowledged_by, at: s.acknowledged_at }, false);
      if (s.alert.state === 'raised' && s.alert.id === row.raisedEventId) {
        row.stale = !!s.stale;
        row.staleSince = s.stale_since ?? null;
      }
      if (row.latest.state === 'cleared') row.stale = false;
    }
    set({ alerts: rows, alertsError: null });
  } catch (e) {
    if (g === generation) set({ alertsError: (e as Error).message });
  }
}

function applyAck(ack: AlertAck): void {
  const rows = new Map(state.alerts);
  for (const [k, r] of rows) {
    if (r.key === ack.alert || r.eventIds.includes(ack.alert)) {
      rows.set(k, {
        ...r,
        acknowledgedBy: r.acknowledgedBy ?? ack.acknowledged_by,
        acknowledgedAt: r.acknowledgedAt ?? ack.acknowledged_at,
      });
      set({ criticalFlash: state.criticalFlash.filter((f) => f !== k) });
    }
  }
  set({ alerts: rows });
}

/** Acknowledges an alert by its stable id; the answer and the `alert_ack` event both update the row. */
export async function acknowledge(row: AlertRow): Promise<void> {
  const auth = state.auth;
  if (!auth) return;
  const ack = await api<AlertAck>(auth.token, `/api/v1/alerts/${encodeURIComponent(row.key)}/ack`, { method: 'POST' });
  applyAck({ ...ack, alert: row.key });
}

/** Closes a stale alert (admin) with a reason; the stored clear also arrives as a live `alert`. */
export async function closeAlert(row: AlertRow, reason: string): Promise<void> {
  const auth = state.auth;
  if (!auth) return;
  const clear = await api<Alert>(auth.token, `/api/v1/alerts/${encodeURIComponent(row.key)}/close`, {
    method: 'POST',
    body: { reason },
  });
  const rows = new Map(state.alerts);
  const r = mergeAlert(rows, clear, { by: null, at: null }, false);
  r.stale = false;
  set({ alerts: rows, criticalFlash: state.criticalFlash.filter((k) => k !== row.key) });
}

export function dismissFlash(): void {
  set({ criticalFlash: [] });
}

// ---- cameras and site ---------------------------------------------------------------------------

async function loadCameras(token: string): Promise<void> {
  const g = generation;
  try {
    const page = await api<{ items: Camera[] }>(token, '/api/v1/cameras' + qs({ site: siteParam() }));
    if (g !== generation) return;
    const cams = new Map<string, Camera>();
    for (const c of page.items) {
      const key = cameraKey(c.site, c.camera);
      const prev = state.cameras.get(key);
      // keep a newer live status than the listing's
      if (prev?.status && c.status && Date.parse(prev.status.ts) > Date.parse(c.status.ts)) c.status = prev.status;
      cams.set(key, c);
    }
    set({ cameras: cams, camerasError: null });
  } catch (e) {
    if (g === generation) set({ camerasError: (e as Error).message });
  }
}

/** The map model of a site (`null`: the first site, in tree order, that has cameras). */
export function fetchSite(token: string, id: string | null, signal?: AbortSignal): Promise<Site> {
  return api<Site>(token, '/api/v1/site' + qs({ site: id }), { signal });
}

async function loadSite(token: string): Promise<void> {
  const g = generation;
  try {
    const site = await fetchSite(token, siteParam());
    if (g === generation) set({ site, siteError: null });
  } catch (e) {
    if (g === generation) set({ siteError: (e as Error).message });
  }
}

function emptyCamera(site: string, camera: string): Camera {
  return { site, camera, position: null, status: null, status_received_at: null };
}

function applyStatus(s: CameraStatus): void {
  const cams = new Map(state.cameras);
  const key = cameraKey(s.site, s.camera);
  const c = cams.get(key) ?? emptyCamera(s.site, s.camera);
  if (c.status && Date.parse(c.status.ts) > Date.parse(s.ts)) return;
  // while its edge agent is offline the camera stays `unknown`, whatever it reported last
  const agentOffline = c.agent?.state === 'offline' && c.agent.id === s.agent;
  const derived = agentOffline ? { state: c.state, state_detail: c.state_detail } : { state: s.state, state_detail: s.detail ?? null };
  cams.set(key, { ...c, status: s, status_received_at: new Date().toISOString(), ...derived });
  set({ cameras: cams });
}

function applyCrowd(e: CrowdEvent): void {
  const cams = new Map(state.cameras);
  const key = cameraKey(e.site, e.camera);
  const c = cams.get(key) ?? emptyCamera(e.site, e.camera);
  if (c.latest_crowd && Date.parse(c.latest_crowd.ts) > Date.parse(e.ts)) return;
  const grid = e.grid !== undefined ? e.grid : (c.latest_crowd?.grid ?? null);
  cams.set(key, {
    ...c,
    latest_crowd: {
      ts: e.ts,
      method: e.method,
      total: e.total,
      zones: e.zones.map((z) => ({ zone: z.zone, count: z.count })),
      grid,
    },
  });
  set({ cameras: cams });
}

// ---- live stream ----------------------------------------------------------------------------

let closeStream: (() => void) | null = null;
let refreshTimer: ReturnType<typeof setInterval> | null = null;

function onLive(e: SseEvent): void {
  const auth = state.auth;
  if (!auth) return;
  let data: unknown;
  try {
    data = e.data ? JSON.parse(e.data) : null;
  } catch {
    return;
  }
  switch (e.event) {
    case 'ready':
      // anything before this may have been missed: re-read what the page shows
      void loadAlerts(auth.token);
      void loadCameras(auth.token);
      break;
    case 'lagged':
      void loadAlerts(auth.token);
      void loadCameras(auth.token);
      break;
    case 'alert': {
      const a = data as Alert;
      const rows = new Map(state.alerts);
      const existed = rows.has(a.alert || a.id);
      const row = mergeAlert(rows, a, { by: null, at: null }, true);
      if (!existed) row.arrivedLive = true;
      const patch: Partial<State> = { alerts: rows };
      if (a.severity === 'critical' && a.state === 'raised' && !row.acknowledgedBy) {
        patch.criticalFlash = [row.key, ...state.criticalFlash.filter((k) => k !== row.key)];
        beep();
      }
      if (a.state === 'cleared') patch.criticalFlash = state.criticalFlash.filter((k) => k !== row.key);
      set(patch);
      break;
    }
    case 'alert_ack':
      applyAck(data as AlertAck);
      break;
    case 'camera_status':
      applyStatus(data as CameraStatus);
      break;
    case 'agent_status':
      // an agent went or came back: camera states and stale alerts are derived by the aggregator
      void loadCameras(auth.token);
      void loadAlerts(auth.token);
      break;
    case 'crowd':
      applyCrowd(data as CrowdEvent);
      break;
  }
}

function startLive(token: string, kinds = 'alert,alert_ack,camera_status,agent_status,crowd'): void {
  closeStream?.();
  const site = siteParam();
  closeStream = openStream({
    url: `/api/v1/events?kinds=${kinds}` + (site ? `&site=${encodeURIComponent(site)}` : ''),
    token,
    onEvent: onLive,
    onState: (live, detail) => set({ live, liveDetail: detail ?? null }),
    onFatal: (status, message, parameter) => {
      // an aggregator without acknowledgement events: stream the rest
      if (status === 400 && parameter === 'kinds' && kinds.includes('alert_ack')) {
        startLive(token, 'alert,camera_status,crowd');
        return;
      }
      set({ live: 'stopped', liveDetail: message });
      if (status === 401) signOut('The token was refused (revoked?). Sign in again.');
    },
  });
}

// ---- sign in / out ------------------------------------------------------------------------------

export async function signIn(token: string): Promise<boolean> {
  unlockAudio(); // the click that signs in is the user gesture audio needs
  token = token.trim();
  if (!token) {
    set({ signInError: 'Enter an API token.' });
    return false;
  }
  try {
    const me = await api<Me>(token, '/api/v1/me');
    sessionStorage.setItem(TOKEN_KEY, token);
    begin(token, me);
    return true;
  } catch (e) {
    const err = e as ApiError;
    const msg =
      err.status === 401
        ? 'Sign-in failed: this token is unknown or revoked.'
        : err.status === 0
          ? `Sign-in failed: ${err.message}.`
          : `Sign-in failed: ${err.message}`;
    set({ signInError: msg });
    return false;
  }
}

function begin(token: string, me: Me): void {
  generation += 1;
  set({
    auth: { ...me, token },
    signInError: null,
    alerts: new Map(),
    cameras: new Map(),
    site: null,
    sites: [],
    siteFilter: null,
    criticalFlash: [],
  });
  setUnauthorizedHandler(() => signOut('The token was refused (revoked?). Sign in again.'));
  if (storedSite() === null) {
    // nothing chosen before: everything the token may see, while the sites load
    loadScoped(token);
    void loadSites(token);
  } else {
    // a site chosen before: scope the first requests to it if the token still sees it
    set({ live: 'connecting' });
    const g = generation;
    void loadSites(token).then((filter) => {
      if (g !== generation) return;
      set({ siteFilter: filter });
      loadScoped(token);
    });
  }
  if (refreshTimer) clearInterval(refreshTimer);
  // fps and crowd grids are not all streamed: refresh the camera list now and then
  refreshTimer = setInterval(() => void loadCameras(token), 30_000);
}

export function signOut(message: string | null = null): void {
  closeStream?.();
  closeStream = null;
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
  setUnauthorizedHandler(null);
  sessionStorage.removeItem(TOKEN_KEY);
  generation += 1;
  set({
    auth: null,
    signInError: message,
    alerts: new Map(),
    cameras: new Map(),
    site: null,
    sites: [],
    siteFilter: null,
    live: 'stopped',
    liveDetail: null,
    criticalFlash: [],
  });
}

/** Signs back in with the session's token after a reload. */
export async function resume(): Promise<void> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  try {
    const me = await api<Me>(token, '/api/v1/me');
    begin(token, me);
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    set({ signInError: `Please sign in again (${(e as Error).message}).` });
  }
}
