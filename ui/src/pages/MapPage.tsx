import { useStore } from '../store';
import { Legend, SiteMap } from '../components/SiteMap';
import { MapScopeNote } from '../components/Sites';

export function MapPage() {
  const s = useStore();
  return (
    <section class="panel map-panel" data-testid="map-page">
      <div class="panel-head">
        <h2>Site map{s.site ? ` · ${s.site.id}` : ''}</h2>
        <Legend />
      </div>
      {s.siteError && <p class="error">Cannot load the site: {s.siteError}</p>}
      <MapScopeNote />
      <p class="muted small">
        Site frame in metres, north up. {s.site?.georef ? 'Hover a camera for its latitude and longitude.' : 'The site has no georeference.'}
      </p>
      <div class="map-box">
        <SiteMap site={s.site} cameras={s.cameras} />
      </div>
    </section>
  );
}
