// Several sites (district → township → community) in one deployment: the header's site picker,
// the site id shown on items when they mix sites, and the map's note on which site it shows.
// With one site none of this renders: the dashboard looks as on a one-site aggregator.

import type { SiteEntry } from '../api';
import { chooseSite, isMultiSite, showSiteIds, useStore, type State } from '../store';

/** A native `<option>` keeps no padding: the tree's indentation is non-breaking spaces. */
function optionLabel(x: SiteEntry): string {
  const pad = '\u00a0\u00a0\u00a0'.repeat(x.depth);
  const cams = x.cameras > 0 ? ` · ${x.cameras} camera${x.cameras === 1 ? '' : 's'}` : '';
  return `${pad}${x.depth > 0 ? '└ ' : ''}${x.name || x.id}${cams}`;
}

/** The site every page and the live stream are scoped to (a site and every site below it). */
export function SitePicker() {
  const s = useStore();
  if (!isMultiSite(s)) return null;
  const chosen = s.sites.find((x) => x.id === s.siteFilter);
  return (
    <select
      class="site-picker"
      value={s.siteFilter ?? ''}
      onChange={(e) => chooseSite((e.target as HTMLSelectElement).value || null)}
      data-testid="site-picker"
      data-site={s.siteFilter ?? ''}
      aria-label="Site"
      title={chosen ? `${chosen.name} (${chosen.id}) and every site below it` : 'Every site you may see'}
    >
      <option value="" data-testid="site-option-all">
        All sites
      </option>
      {s.sites.map((x) => (
        <option key={x.id} value={x.id} data-testid={`site-option-${x.id}`} data-depth={x.depth}>
          {optionLabel(x)}
        </option>
      ))}
    </select>
  );
}

/** An item's site id, shown only while the lists mix several sites ("All sites"). */
export function SiteTag({ site, testid = 'item-site' }: { site: string; testid?: string }) {
  const s = useStore();
  if (!showSiteIds(s)) return null;
  return (
    <span class="site-tag" data-testid={testid} title={siteName(s, site)}>
      {site}
    </span>
  );
}

function siteName(s: State, id: string): string {
  return s.sites.find((x) => x.id === id)?.name ?? id;
}

/** Under a map: which site it shows when several are visible. */
export function MapScopeNote() {
  const s = useStore();
  if (!isMultiSite(s) || !s.site) return null;
  if (s.siteFilter === null) {
    return (
      <p class="muted small map-note" data-testid="map-site-note">
        All sites: the map shows <b>{siteName(s, s.site.id)}</b> ({s.site.id}), the first site with cameras. Choose a site in
        the header to see its map.
      </p>
    );
  }
  if (!s.sites.some((x) => x.parent === s.siteFilter)) return null;
  return (
    <p class="muted small map-note" data-testid="map-site-note">
      {s.site.cameras.length === 0
        ? `${siteName(s, s.site.id)} has no camera of its own: choose a site below it to see its cameras on a map.`
        : `The map shows the cameras of ${siteName(s, s.site.id)} itself: each site below it has its own map.`}
    </p>
  );
}
