// The aggregator's HTTP API (docs/aggregator.md): JSON, `Authorization: Bearer slt_…`.

export type Role = 'operator' | 'integrator' | 'admin';
export const ROLE_RANK: Record<Role, number> = { operator: 0, integrator: 1, admin: 2 };
export function atLeast(role: Role | undefined, needed: Role): boolean {
  return role !== undefined && ROLE_RANK[role] >= ROLE_RANK[needed];
}

export interface Me {
  name: string;
  role: Role;
  /** The site ids the token is scoped to (each with the sites below it); `null` or absent: every site. */
  sites?: string[] | null;
}

/** One site the token may see (`GET /api/v1/sites`), in tree order: a parent before its children. */
export interface SiteEntry {
  id: string;
  name: string;
  parent: string | null;
  /** 0 at the top of what the token sees. */
  depth: number;
  cameras: number;
}

export type Severity = 'info' | 'warning' | 'critical';
export type AlertState = 'raised' | 'cleared';

/** `sightline.alert/1` */
export interface Alert {
  id: string;
  site: string;
  camera: string;
  ts: string;
  alert: string;
  state: AlertState;
  kind: string;
  severity: Severity;
  zone?: string | null;
  message: string;
  details?: unknown;
}

export interface StoredAlert {
  alert: Alert;
  received_at: string;
  acknowledged_by: string | null;
  acknowledged_at: string | null;
  /** A raised, not cleared edge alert whose edge agent went away (offline, or restarted since). */
  stale?: boolean;
  stale_since?: string | null;
}

export interface AlertAck {
  alert: string;
  acknowledged_by: string;
  acknowledged_at: string;
  already?: boolean;
}

export type CameraState = 'connecting' | 'streaming' | 'offline' | 'disabled';
/** What the centre shows: the last report, or `unknown` (no status, or its edge agent offline). */
export type LiveCameraState = CameraState | 'unknown';

/** `sightline.agent_status/1` */
export interface AgentStatus {
  site: string;
  agent: string;
  ts: string;
  state: 'online' | 'offline';
  cameras?: string[] | null;
}

/** The edge agent serving a camera, by its latest status as received. */
export interface CameraAgent {
  id: string;
  state: 'online' | 'offline';
  since: string;
}

/** `sightline.camera_status/1` */
export interface CameraStatus {
  site: string;
  camera: string;
  ts: string;
  agent: string;
  state: CameraState;
  fps_in?: number | null;
  fps_analyzed?: number | null;
  frames_dropped?: number | null;
  codec?: string | null;
  resolution?: [number, number] | null;
  detail?: string | null;
}

export interface CrowdGrid {
  cols: number;
  rows: number;
  cells: number[];
}

export interface LatestCrowd {
  ts: string;
  method: string;
  total: number;
  zones: { zone: string; count: number }[];
  grid?: CrowdGrid | null;
}

export interface Camera {
  site: string;
  camera: string;
  position: [number, number] | null;
  status: CameraStatus | null;
  status_received_at: string | null;
  wgs84?: [number, number] | null;
  latest_crowd?: LatestCrowd | null;
  /** Derived by the aggregator (absent from an older one: use `status.state`). */
  state?: LiveCameraState;
  state_detail?: string | null;
  agent?: CameraAgent | null;
}

/** `sightline.crowd/1` (as streamed; `grid` only if the aggregator adds it) */
export interface CrowdEvent {
  id: string;
  site: string;
  camera: string;
  ts: string;
  method: string;
  total: number;
  zones: { zone: string; count: number }[];
  grid?: CrowdGrid | null;
}

export interface SiteCamera {
  id: string;
  position: [number, number];
  view_radius_m?: number | null;
  wgs84?: [number, number] | null;
}

export interface SiteLink {
  from: string;
  to: string;
  min_s?: number;
  max_s?: number;
  one_way?: boolean;
}

export interface Site {
  id: string;
  georef: unknown | null;
  cameras: SiteCamera[];
  links: SiteLink[];
}

export interface CrowdBucket {
  start: string;
  mean: number;
  min: number;
  max: number;
  samples: number;
}

export interface CrowdSeries {
  camera: string;
  zone: string | null;
  since: string;
  until: string;
  step_s: number;
  items: CrowdBucket[];
}

export interface TrajectorySummary {
  id: string;
  site: string;
  first_seen: string;
  last_seen: string;
  sighting_count: number;
  cameras: string[];
}

export interface TrajectoryPoint {
  id: string;
  camera: string;
  first_seen: string;
  last_seen: string;
  ground?: [number, number] | null;
  distance?: number | null;
}

export interface TrajectoryDetail extends TrajectorySummary {
  sightings: TrajectoryPoint[];
}

export interface TrajectoryMatch {
  trajectory: string;
  site?: string;
  distance: number;
  matches: number;
  cameras: string[];
  first_match: string;
  last_match: string;
}

export interface SearchResponse {
  probe: { source: string; digest: string; faces_found?: number; quality?: number };
  model: string;
  searched: number;
  sightings: { sighting: string; site?: string; trajectory: string; camera: string; last_seen: string; distance: number }[];
  trajectories: TrajectoryMatch[];
}

export interface AuditRecord {
  seq: number;
  ts: string;
  token: string;
  role: Role;
  action: string;
  purpose: string | null;
  query: unknown;
  results: number;
  /** `refused`: the access was refused (e.g. no purpose) and nothing was read. */
  outcome: 'answered' | 'refused';
}

/** An error answer of the API (`{error, message, parameter}`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public parameter?: string,
  ) {
    super(message);
  }
}

let onUnauthorized: (() => void) | null = null;
/** Called when a signed-in request gets a 401 (token revoked meanwhile). */
export function setUnauthorizedHandler(f: (() => void) | null): void {
  onUnauthorized = f;
}

export async function api<T>(
  token: string,
  path: string,
  init: { method?: string; body?: unknown; signal?: AbortSignal } = {},
): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  let body: string | undefined;
  if (init.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(init.body);
  }
  let resp: Response;
  try {
    resp = await fetch(path, { method: init.method ?? 'GET', headers, body, signal: init.signal, cache: 'no-store' });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `cannot reach the aggregator (${(e as Error).message})`);
  }
  if (!resp.ok) {
    let code = 'http_' + resp.status;
    let message = `${resp.status} ${resp.statusText}`;
    let parameter: string | undefined;
    try {
      const j = await resp.json();
      code = j.error ?? code;
      message = j.message ?? message;
      parameter = j.parameter;
    } catch {
      /* not JSON */
    }
    if (resp.status === 401 && onUnauthorized) onUnauthorized();
    throw new ApiError(resp.status, code, message, parameter);
  }
  return (await resp.json()) as T;
}

export function qs(params: Record<string, string | number | null | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

/** Reads a file as base64 (no `data:` prefix). */
export function fileToBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onerror = () => reject(r.error ?? new Error('cannot read the file'));
    r.onload = () => {
      const s = String(r.result);
      const i = s.indexOf(',');
      resolve(i >= 0 ? s.slice(i + 1) : s);
    };
    r.readAsDataURL(file);
  });
}
