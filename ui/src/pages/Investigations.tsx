// Investigations (integrator and admin): trajectories and face search. Every query here reads
// personal data: it is audited by the aggregator, and the page asks for its purpose first.

import { useEffect, useMemo, useState } from 'preact/hooks';
import {
  api,
  fileToBase64,
  qs,
  type SearchResponse,
  type Site,
  type TrajectoryDetail,
  type TrajectorySummary,
} from '../api';
import { fetchSite, isMultiSite, showSiteIds, siteParam, useStore, type State } from '../store';
import { SiteTag } from '../components/Sites';
import { SiteMap, type TrackPoint } from '../components/SiteMap';
import { PurposeField, usePurpose } from '../components/PurposeField';
import { clock, dateTime, localInputToRfc3339, shortId } from '../format';

const MAX_PHOTO_BYTES = 20 * 1024 * 1024;

function duration(a: string, b: string): string {
  const s = Math.max(0, Math.round((Date.parse(b) - Date.parse(a)) / 1000));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The map model of a trajectory's site: the store's when it is that site, else asked for. */
function useSiteModel(s: State, id: string | null): { site: Site | null; error: string | null } {
  const own = id === null || s.site?.id === id;
  const [other, setOther] = useState<{ site: Site | null; error: string | null }>({ site: null, error: null });
  const token = s.auth?.token;
  useEffect(() => {
    if (own || !token || id === null) return;
    const ctl = new AbortController();
    setOther({ site: null, error: null });
    fetchSite(token, id, ctl.signal)
      .then((site) => setOther({ site, error: null }))
      .catch((e) => {
        if ((e as Error).name !== 'AbortError') setOther({ site: null, error: (e as Error).message });
      });
    return () => ctl.abort();
  }, [own, token, id]);
  if (own) return { site: s.site, error: null };
  // (until the effect runs: not the previous trajectory's site)
  return other.site && other.site.id !== id ? { site: null, error: null } : other;
}

/** The search request: with a site chosen, only its sightings (and those of the sites below it). */
function searchBody(image: string, purpose: string): { image: string; purpose: string; site?: string } {
  const site = siteParam();
  return site ? { image, purpose, site } : { image, purpose };
}

export function InvestigationsPage() {
  const s = useStore();
  const auth = s.auth!;
  // asked once, sent with every read below (the aggregator refuses and audits a read without it)
  const purpose = usePurpose();

  // trajectory list
  const [since, setSince] = useState('');
  const [until, setUntil] = useState('');
  const [camera, setCamera] = useState('');
  const [list, setList] = useState<TrajectorySummary[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [listError, setListError] = useState<string | null>(null);
  const [listBusy, setListBusy] = useState(false);

  // search
  const [file, setFile] = useState<File | null>(null);
  const [search, setSearch] = useState<SearchResponse | null>(null);
  const [searchError, setSearchError] = useState<string | null>(null);
  const [searchBusy, setSearchBusy] = useState(false);

  // the trajectory shown
  const [detail, setDetail] = useState<TrajectoryDetail | null>(null);
  const [detailError, setDetailError] = useState<string | null>(null);
  const [detailBusy, setDetailBusy] = useState<string | null>(null);

  // keys of `s.cameras` (`site/camera`); a camera chosen before another site was chosen counts as none
  const cams = useMemo(() => [...s.cameras.keys()].sort(), [s.cameras]);
  const chosenCam = s.cameras.get(camera);
  const siteCol = showSiteIds(s);

  const needPurpose = purpose.need;

  // another site chosen in the header: the lists answered for the previous one go
  useEffect(() => {
    setList(null);
    setNext(null);
    setSearch(null);
  }, [s.siteFilter]);

  const listTrajectories = async (cursor: string | null) => {
    const p = needPurpose();
    if (!p) return;
    setListBusy(true);
    setListError(null);
    try {
      const page = await api<{ items: TrajectorySummary[]; next: string | null }>(
        auth.token,
        '/api/v1/trajectories' +
          qs({
            since: localInputToRfc3339(since),
            until: localInputToRfc3339(until),
            // camera ids are unique within a site: with several sites, the camera's own site
            site: chosenCam && isMultiSite(s) ? chosenCam.site : siteParam(),
            camera: chosenCam?.camera ?? null,
            limit: 50,
            cursor,
            purpose: p,
          }),
      );
      setList(cursor ? [...(list ?? []), ...page.items] : page.items);
      setNext(page.next);
    } catch (e) {
      setListError((e as Error).message);
    } finally {
      setListBusy(false);
    }
  };

  const showTrajectory = async (id: string) => {
    const p = needPurpose();
    if (!p) return;
    setDetailBusy(id);
    setDetailError(null);
    try {
      setDetail(await api<TrajectoryDetail>(auth.token, `/api/v1/trajectories/${encodeURIComponent(id)}` + qs({ purpose: p })));
    } catch (e) {
      setDetailError((e as Error).message);
    } finally {
      setDetailBusy(null);
    }
  };

  const runSearch = async (e: Event) => {
    e.preventDefault();
    const p = needPurpose();
    if (!p) return;
    if (!file) {
      setSearchError('Choose a photo (JPEG or PNG) first.');
      return;
    }
    if (file.size > MAX_PHOTO_BYTES) {
      setSearchError(`The photo is too large (${(file.size / 1e6).toFixed(1)} MB).`);
      return;
    }
    setSearchBusy(true);
    setSearchError(null);
    setSearch(null);
    try {
      const image = await fileToBase64(file);
      setSearch(await api<SearchResponse>(auth.token, '/api/v1/search', { method: 'POST', body: searchBody(image, p) }));
    } catch (err) {
      setSearchError((err as Error).message);
    } finally {
      setSearchBusy(false);
    }
  };

  // the trajectory's site frame (with several sites, maybe not the one the other pages show)
  const trackSite = useSiteModel(s, detail?.site ?? null);

  // where each sighting was: its ground point, else its camera's position
  const track: TrackPoint[] = useMemo(() => {
    if (!detail) return [];
    const camPos = new Map<string, [number, number]>();
    for (const c of trackSite.site?.cameras ?? []) camPos.set(c.id, c.position);
    for (const c of s.cameras.values()) {
      if (c.site === detail.site && c.position && !camPos.has(c.camera)) camPos.set(c.camera, c.position);
    }
    const out: TrackPoint[] = [];
    detail.sightings.forEach((p, i) => {
      const xy = p.ground ?? camPos.get(p.camera);
      if (xy) out.push({ x: xy[0], y: xy[1], camera: p.camera, ts: p.first_seen, order: i + 1 });
    });
    return out;
  }, [detail, trackSite.site, s.cameras]);

  return (
    <div class="investigations" data-testid="investigations-page">
      <section class="panel audit-notice" data-testid="audit-notice" role="note">
        <p>
          <strong>Searches and trajectory views are recorded in the audit log</strong> — with your token ({auth.name}), the
          purpose you give and what you asked.
        </p>
        <PurposeField purpose={purpose} what="any search or trajectory view" />
      </section>

      <div class="inv-grid">
        <div class="inv-col">
          <section class="panel" data-testid="photo-search">
            <h2>Search by photo</h2>
            <form onSubmit={runSearch} class="form-row">
              <label for="photo">Photo (JPEG or PNG)</label>
              <input
                id="photo"
                type="file"
                accept="image/jpeg,image/png"
                onChange={(e) => setFile((e.target as HTMLInputElement).files?.[0] ?? null)}
                data-testid="photo-input"
              />
              <button type="submit" class="btn primary" disabled={searchBusy} data-testid="search-submit">
                {searchBusy ? 'Searching…' : 'Search'}
              </button>
            </form>
            {searchError && (
              <p class="error" role="alert" data-testid="search-error">
                {searchError}
              </p>
            )}
            {search && (
              <div data-testid="search-results">
                <p class="muted small">
                  {search.trajectories.length} trajectories, {search.sightings.length} sightings matched among {search.searched}{' '}
                  indexed{search.probe.faces_found !== undefined ? ` · ${search.probe.faces_found} face(s) in the photo` : ''}.
                </p>
                {search.trajectories.length === 0 && <p class="muted">No match.</p>}
                <ul class="result-list">
                  {search.trajectories.map((t) => (
                    <li key={t.trajectory} data-testid="search-result" data-trajectory={t.trajectory} data-site={t.site}>
                      <button
                        type="button"
                        class={`result ${detail?.id === t.trajectory ? 'selected' : ''}`}
                        onClick={() => showTrajectory(t.trajectory)}
                        data-testid="search-result-open"
                      >
                        <span class="mono">
                          {shortId(t.trajectory)} {t.site && <SiteTag site={t.site} testid="search-result-site" />}
                        </span>
                        <span>distance {t.distance.toFixed(3)}</span>
                        <span>
                          {t.matches} match{t.matches === 1 ? '' : 'es'} · {t.cameras.join(' → ')}
                        </span>
                        <span class="muted small">
                          {clock(t.first_match)}–{clock(t.last_match)}
                        </span>
                      </button>
                    </li>
                  ))}
                </ul>
              </div>
            )}
          </section>

          <section class="panel" data-testid="trajectory-list">
            <h2>Trajectories</h2>
            <form
              class="filters wrap"
              onSubmit={(e) => {
                e.preventDefault();
                void listTrajectories(null);
              }}
            >
              <label>
                Since <input type="datetime-local" value={since} onInput={(e) => setSince((e.target as HTMLInputElement).value)} />
              </label>
              <label>
                Until <input type="datetime-local" value={until} onInput={(e) => setUntil((e.target as HTMLInputElement).value)} />
              </label>
              <label>
                Camera{' '}
                <select value={chosenCam ? camera : ''} onChange={(e) => setCamera((e.target as HTMLSelectElement).value)}>
                  <option value="">Any</option>
                  {cams.map((c) => {
                    const x = s.cameras.get(c);
                    return (
                      <option key={c} value={c}>
                        {x ? (siteCol ? `${x.site} / ${x.camera}` : x.camera) : c}
                      </option>
                    );
                  })}
                </select>
              </label>
              <button type="submit" class="btn" disabled={listBusy} data-testid="trajectory-list-submit">
                {listBusy ? 'Loading…' : 'List'}
              </button>
            </form>
            {listError && <p class="error">{listError}</p>}
            {list && list.length === 0 && <p class="muted">No trajectory in this window.</p>}
            {list && list.length > 0 && (
              <div class="table-wrap short">
                <table class="trajectories">
                  <thead>
                    <tr>
                      <th>Trajectory</th>
                      {siteCol && <th>Site</th>}
                      <th>First seen</th>
                      <th>Last seen</th>
                      <th>Sightings</th>
                      <th>Cameras</th>
                    </tr>
                  </thead>
                  <tbody>
                    {list.map((t) => (
                      <tr
                        key={t.id}
                        class={`clickable ${detail?.id === t.id ? 'selected' : ''}`}
                        onClick={() => showTrajectory(t.id)}
                        data-testid="trajectory-row"
                        data-trajectory={t.id}
                        data-site={t.site}
                      >
                        <td class="mono">{shortId(t.id)}</td>
                        {siteCol && <td data-testid="trajectory-site">{t.site}</td>}
                        <td>{dateTime(t.first_seen)}</td>
                        <td>{dateTime(t.last_seen)}</td>
                        <td>{t.sighting_count}</td>
                        <td>{t.cameras.join(' → ')}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
            {next && (
              <button type="button" class="btn small" onClick={() => listTrajectories(next)} disabled={listBusy}>
                More
              </button>
            )}
          </section>
        </div>

        <section class="panel inv-map" data-testid="trajectory-panel">
          <h2>
            Trajectory{detail ? ` ${shortId(detail.id)}` : ''}
            {detail && " "}
            {detail && <SiteTag site={detail.site} testid="trajectory-detail-site" />}
            {detailBusy && <span class="muted small"> loading…</span>}
          </h2>
          {detailError && <p class="error">{detailError}</p>}
          {!detail && !detailError && <p class="muted">Pick a search result or a trajectory to draw it on the site map.</p>}
          {detail && (
            <div data-testid="trajectory-detail" data-trajectory={detail.id}>
              <p class="muted small">
                {dateTime(detail.first_seen)} → {dateTime(detail.last_seen)} ({duration(detail.first_seen, detail.last_seen)}) ·{' '}
                {detail.sightings.length} sightings · cameras {detail.cameras.join(' → ')}
              </p>
              <div class="map-box small">
                {trackSite.error && <p class="error">Cannot load the map of {detail.site}: {trackSite.error}</p>}
                <SiteMap site={trackSite.site} cameras={s.cameras} track={track} testid="trajectory-map" />
              </div>
              <ol class="sightings" data-testid="trajectory-sightings">
                {detail.sightings.map((p) => (
                  <li key={p.id} data-testid="trajectory-sighting" data-camera={p.camera}>
                    <b>{p.camera}</b> {clock(p.first_seen)}–{clock(p.last_seen)}
                    {p.distance != null && <span class="muted small"> · distance {p.distance.toFixed(3)}</span>}
                    {p.ground && (
                      <span class="muted small">
                        {' '}
                        · at {p.ground[0].toFixed(1)}, {p.ground[1].toFixed(1)} m
                      </span>
                    )}
                  </li>
                ))}
              </ol>
            </div>
          )}
        </section>
      </div>
    </div>
  );
}
