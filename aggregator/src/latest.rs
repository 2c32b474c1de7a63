//! The latest crowd measurement of each camera, in memory, with its density grid.
//!
//! The store keeps crowd measurements without their `grid` (a grid is for the live view, not for
//! history, and storing it would need a schema migration for no query). The ingest thread puts
//! every new measurement here; `GET /api/v1/cameras` answers each camera's latest measurement
//! from here when it is at least as recent as the store's, else from the store (without a grid:
//! after a restart, until the camera's next measurement).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sightline_contract::Crowd;

/// Shared between the ingest thread and the API; cheap to clone.
#[derive(Clone, Default)]
pub struct LatestCrowd {
    by_camera: Arc<RwLock<HashMap<(String, String), Crowd>>>,
}

impl LatestCrowd {
    /// Keeps `crowd` if it is at least as recent (by `ts`) as the camera's one held.
    pub fn update(&self, crowd: &Crowd) {
        let mut map = self.by_camera.write().unwrap_or_else(|e| e.into_inner());
        let key = (crowd.site.clone(), crowd.camera.clone());
        match map.get(&key) {
            Some(held) if held.ts > crowd.ts => {}
            _ => {
                map.insert(key, crowd.clone());
            }
        }
    }

    /// The camera's latest measurement held, if any.
    pub fn get(&self, site: &str, camera: &str) -> Option<Crowd> {
        let map = self.by_camera.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(site.to_owned(), camera.to_owned())).cloned()
    }

    /// Of `stored` (the store's latest, without a grid) and the one held, the more recent; the
    /// held one (with its grid) when they are as recent.
    pub fn newest(&self, stored: Option<Crowd>, site: &str, camera: &str) -> Option<Crowd> {
        match (stored, self.get(site, camera)) {
            (Some(s), Some(h)) => Some(if h.ts >= s.ts { h } else { s }),
            (s, h) => h.or(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::{CrowdMethod, DensityGrid};
    use time::macros::datetime;

    fn crowd(camera: &str, secs: i64, grid: bool) -> Crowd {
        Crowd {
            id: sightline_contract::new_event_id(),
            site: "s".into(),
            camera: camera.into(),
            ts: datetime!(2026-11-23 08:00 UTC) + time::Duration::seconds(secs),
            method: CrowdMethod::Density,
            total: secs as f32,
            zones: vec![],
            grid: grid.then(|| DensityGrid { cols: 1, rows: 1, cells: vec![secs as f32] }),
        }
    }

    #[test]
    fn keeps_the_most_recent_per_camera() {
        let l = LatestCrowd::default();
        l.update(&crowd("a", 10, true));
        l.update(&crowd("a", 5, true)); // late redelivery: not newer
        l.update(&crowd("b", 1, true));
        assert_eq!(l.get("s", "a").unwrap().total, 10.0);
        assert_eq!(l.get("s", "b").unwrap().total, 1.0);
        assert!(l.get("s", "c").is_none());
        // the store's is newer (e.g. held one is from before a restart): the store's wins
        assert_eq!(l.newest(Some(crowd("a", 20, false)), "s", "a").unwrap().total, 20.0);
        let same = l.newest(Some(crowd("a", 10, false)), "s", "a").unwrap();
        assert!(same.grid.is_some(), "as recent: the held one, with its grid");
        assert_eq!(l.newest(None, "s", "c"), None);
        assert_eq!(l.newest(Some(crowd("c", 3, false)), "s", "c").unwrap().total, 3.0);
    }
}
