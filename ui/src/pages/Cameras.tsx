import { cameraKey, useStore } from '../store';
import { useNow } from '../format';
import { CameraCard, StatusCounts, useSortedCameras } from '../components/CameraCard';

export function CamerasPage() {
  const s = useStore();
  const now = useNow();
  const cams = useSortedCameras(s.cameras);

  return (
    <section class="panel" data-testid="cameras-page">
      <div class="panel-head">
        <h2>Cameras</h2>
        <StatusCounts cameras={cams} />
      </div>
      {s.camerasError && <p class="error">Cannot load cameras: {s.camerasError}</p>}
      {cams.length === 0 && !s.camerasError && <p class="muted">No camera has reported yet.</p>}
      <div class="camera-grid">
        {cams.map((c) => (
          <CameraCard key={cameraKey(c.site, c.camera)} camera={c} now={now} />
        ))}
      </div>
    </section>
  );
}
