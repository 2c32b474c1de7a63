// The dashboard's shared state: who is signed in, alerts (one row per stable alert id),
// cameras with their live status and latest crowd, the site, and the live stream's state.

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
  type Site,
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
  cameras: Map<string, Camera>;
  camerasError: string | null;
  site: Site | null;
  siteError: string | null;
  live: LiveState;
  liveDetail: string | null;
  /** Stable ids of critical alerts that arrived live and are not acknowledged yet. */
  criticalFlash: string[];
}

const TOKEN_KEY = 'sightline.token';

let state: State = {
  auth: null,
  signInError: null,
  alerts: new Map(),
  alertsError: null,
  cameras: new Map(),
  camerasError: null,
  site: null,
  siteError: null,
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
  try {
    const page = await api<{ items: StoredAlert[] }>(token, '/api/v1/alerts?limit=500');
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
    set({ alertsError: (e as Error).message });
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
  try {
    const page = await api<{ items: Camera[] }>(token, '/api/v1/cameras');
    const cams = new Map<string, Camera>();
    for (const c of page.items) {
      const prev = state.cameras.get(c.camera);
      // keep a newer live status than the listing's
      if (prev?.status && c.status && Date.parse(prev.status.ts) > Date.parse(c.status.ts)) c.status = prev.status;
      cams.set(c.camera, c);
    }
    set({ cameras: cams, camerasError: null });
  } catch (e) {
    set({ camerasError: (e as Error).message });
  }
}

async function loadSite(token: string): Promise<void> {
  try {
    const site = await api<Site>(token, '/api/v1/site');
    set({ site, siteError: null });
  } catch (e) {
    set({ siteError: (e as Error).message });
  }
}

function emptyCamera(site: string, camera: string): Camera {
  return { site, camera, position: null, status: null, status_received_at: null };
}

function applyStatus(s: CameraStatus): void {
  const cams = new Map(state.cameras);
  const c = cams.get(s.camera) ?? emptyCamera(s.site, s.camera);
  if (c.status && Date.parse(c.status.ts) > Date.parse(s.ts)) return;
  // while its edge agent is offline the camera stays `unknown`, whatever it reported last
  const agentOffline = c.agent?.state === 'offline' && c.agent.id === s.agent;
  const derived = agentOffline ? { state: c.state, state_detail: c.state_detail } : { state: s.state, state_detail: s.detail ?? null };
  cams.set(s.camera, { ...c, status: s, status_received_at: new Date().toISOString(), ...derived });
  set({ cameras: cams });
}

function applyCrowd(e: CrowdEvent): void {
  const cams = new Map(state.cameras);
  const c = cams.get(e.camera) ?? emptyCamera(e.site, e.camera);
  if (c.latest_crowd && Date.parse(c.latest_crowd.ts) > Date.parse(e.ts)) return;
  const grid = e.grid !== undefined ? e.grid : (c.latest_crowd?.grid ?? null);
  cams.set(e.camera, {
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
  closeStream = openStream({
    url: `/api/v1/events?kinds=${kinds}`,
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
  set({ auth: { ...me, token }, signInError: null, alerts: new Map(), cameras: new Map(), site: null, criticalFlash: [] });
  setUnauthorizedHandler(() => signOut('The token was refused (revoked?). Sign in again.'));
  void loadAlerts(token);
  void loadCameras(token);
  void loadSite(token);
  startLive(token);
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
  set({
    auth: null,
    signInError: message,
    alerts: new Map(),
    cameras: new Map(),
    site: null,
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
