//! The site model: where the cameras are, how fast people walk, which camera pairs are linked by
//! walkways with known transit times, and how the site frame maps to WGS84.
//!
//! It is read from the aggregator's TOML config (`[site]`, `[[camera]]`, `[[link]]`) and answers
//! one question for correlation: *can one person be seen by camera A during one time interval and
//! by camera B during another?* ([`SiteModel::feasible`]). See `docs/correlation.md`.
//!
//! ```toml
//! [site]
//! id = "riverside"
//! max_walking_speed_mps = 2.5        # default
//! time_tolerance_s = 1.0             # default
//! georef = { origin_lat = 48.8566, origin_lon = 2.3522, rotation_deg = 0.0 }   # optional
//!
//! [[camera]]
//! id = "gate-north"
//! position = [0.0, 120.0]            # metres in the site frame (x east, y north when rotation_deg = 0)
//! view_radius_m = 10.0               # default
//! homography = [[0.01, 0.0, -9.6], [0.0, 0.02, -5.4], [0.0, 0.001, 1.0]]   # optional, image px -> ground m
//!
//! [[link]]                           # optional; overrides the speed gate for this pair
//! from = "gate-north"
//! to = "plaza"
//! min_s = 40.0                       # default 0
//! max_s = 600.0                      # optional: no upper bound when absent
//! one_way = false                    # default: the link holds in both directions
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Default walking-speed limit (m/s). Pedestrians walk at 1.2–1.5 m/s on average and a brisk
/// walker reaches about 2 m/s; 2.5 m/s also admits hurrying. A person who runs faster between two
/// cameras gets split into two trajectories (a split, never a false merge); a higher limit admits
/// more impostors into a trajectory.
pub const DEFAULT_MAX_WALKING_SPEED_MPS: f64 = 2.5;
/// Default slack (s) on every time comparison between two *different* cameras: edge agents' clocks
/// (capture time = wall clock at stream start + PTS) and track boundaries are not exact.
pub const DEFAULT_TIME_TOLERANCE_S: f64 = 1.0;
/// Default distance (m) from a camera's `position` at which a person it sees can stand.
pub const DEFAULT_VIEW_RADIUS_M: f64 = 10.0;
/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

fn default_speed() -> f64 {
    DEFAULT_MAX_WALKING_SPEED_MPS
}
fn default_tolerance() -> f64 {
    DEFAULT_TIME_TOLERANCE_S
}
fn default_view_radius() -> f64 {
    DEFAULT_VIEW_RADIUS_M
}

/// `[site]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site id of the contract (`[a-z0-9][a-z0-9_-]{0,63}`), as in the MQTT topics.
    pub id: String,
    /// Nobody moves between two cameras faster than this (m/s, > 0). Default 2.5.
    #[serde(default = "default_speed")]
    pub max_walking_speed_mps: f64,
    /// Slack (s, >= 0) on times compared across cameras. Default 1.0.
    #[serde(default = "default_tolerance")]
    pub time_tolerance_s: f64,
    /// Where the site frame is on Earth; without it, positions are not published in WGS84.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub georef: Option<GeoRef>,
    /// What people call it (display only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The site above this one: the center of `parent` sees this site too (the tree: `sites.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `[[site.camera]]`: the site's cameras (with a single `[site]`, `[[camera]]` works too).
    #[serde(default, rename = "camera", skip_serializing)]
    pub cameras: Vec<CameraPlace>,
    /// `[[site.link]]`: the site's links (with a single `[site]`, `[[link]]` works too).
    #[serde(default, rename = "link", skip_serializing)]
    pub links: Vec<Link>,
}

impl SiteConfig {
    /// A site with the default speed and tolerance, no georeference, no parent, no cameras.
    pub fn new(id: &str) -> Self {
        SiteConfig {
            id: id.to_owned(),
            max_walking_speed_mps: DEFAULT_MAX_WALKING_SPEED_MPS,
            time_tolerance_s: DEFAULT_TIME_TOLERANCE_S,
            georef: None,
            name: None,
            parent: None,
            cameras: Vec::new(),
            links: Vec::new(),
        }
    }
}

/// The site frame's origin in WGS84 and its rotation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoRef {
    /// Latitude of the site frame's `[0, 0]`, degrees (-90, 90).
    pub origin_lat: f64,
    /// Longitude of the site frame's `[0, 0]`, degrees [-180, 180].
    pub origin_lon: f64,
    /// Angle from geographic east to the site frame's +x axis, degrees counter-clockwise
    /// (0: x points east and y north; 90: x points north and y west). Default 0.
    #[serde(default)]
    pub rotation_deg: f64,
}

/// `[[camera]]`: a camera's place in the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPlace {
    /// The camera id of the contract, as in the MQTT topics.
    pub id: String,
    /// Metres in the site frame: roughly the centre of the area the camera sees faces in.
    pub position: [f64; 2],
    /// How far from `position` a person this camera sees can stand (m, >= 0). Default 10.
    #[serde(default = "default_view_radius")]
    pub view_radius_m: f64,
    /// Row-major 3×3 homography from source-frame pixels to site-frame metres on the ground.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homography: Option<[[f64; 3]; 3]>,
    /// The edge agent that publishes this camera (its broker login): see `broker/acl.rs`.
    #[serde(default, skip_serializing)]
    pub agent: Option<String>,
}

/// `[[link]]`: a walkway between two cameras with its transit time, replacing the speed gate for
/// this pair. Camera pairs without a link are judged by the speed gate only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub from: String,
    pub to: String,
    /// Nobody gets from one camera to the other faster (s, >= 0): the end of the sighting at one
    /// to the start of the sighting at the other. Default 0.
    #[serde(default)]
    pub min_s: f64,
    /// Nobody takes longer (s, >= `min_s`). Only for passages where people cannot linger or
    /// leave (a corridor, a turnstile lane): anyone slower is split into two trajectories.
    /// Default: no upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_s: Option<f64>,
    /// The window holds from `from` to `to` only; the other direction is left to the speed gate
    /// (or to its own link). Default false: both directions.
    #[serde(default)]
    pub one_way: bool,
}

/// A site setting out of range, naming its config key (`camera[2].position`, `link[0].to`, …).
/// Also used for `[correlation]` keys.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct SiteError {
    pub key: String,
    pub reason: String,
}

impl SiteError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

/// A link's transit window in one direction.
#[derive(Clone, Copy, Debug)]
struct Window {
    min_s: f64,
    max_s: f64,
}

/// The validated site: cameras indexed by id, links by directed camera pair.
#[derive(Clone, Debug)]
pub struct SiteModel {
    site: SiteConfig,
    cameras: Vec<CameraPlace>,
    links: Vec<Link>,
    index: HashMap<String, usize>,
    windows: HashMap<(usize, usize), Window>,
}

fn check(ok: bool, key: impl FnOnce() -> String, reason: &str) -> Result<(), SiteError> {
    if ok { Ok(()) } else { Err(SiteError::new(key(), reason)) }
}

impl SiteModel {
    /// Validates the site, its cameras and links. Errors name the offending key.
    pub fn new(site: SiteConfig, cameras: Vec<CameraPlace>, links: Vec<Link>) -> Result<Self, SiteError> {
        sightline_contract::validate_id("site", &site.id)
            .map_err(|_| SiteError::new("site.id", "must match [a-z0-9][a-z0-9_-]{0,63}"))?;
        let v = site.max_walking_speed_mps;
        check(v.is_finite() && v > 0.0, || "site.max_walking_speed_mps".into(), "must be a finite speed > 0")?;
        let tol = site.time_tolerance_s;
        check(tol.is_finite() && tol >= 0.0, || "site.time_tolerance_s".into(), "must be a finite number >= 0")?;
        if let Some(g) = &site.georef {
            check(
                g.origin_lat.is_finite() && g.origin_lat.abs() < 90.0,
                || "site.georef.origin_lat".into(),
                "must be a latitude in (-90, 90)",
            )?;
            check(
                g.origin_lon.is_finite() && g.origin_lon.abs() <= 180.0,
                || "site.georef.origin_lon".into(),
                "must be a longitude in [-180, 180]",
            )?;
            check(g.rotation_deg.is_finite(), || "site.georef.rotation_deg".into(), "must be finite")?;
        }

        let mut index = HashMap::with_capacity(cameras.len());
        for (i, c) in cameras.iter().enumerate() {
            sightline_contract::validate_id("camera", &c.id)
                .map_err(|_| SiteError::new(format!("camera[{i}].id"), "must match [a-z0-9][a-z0-9_-]{0,63}"))?;
            if index.insert(c.id.clone(), i).is_some() {
                return Err(SiteError::new(format!("camera[{i}].id"), format!("duplicate camera id {:?}", c.id)));
            }
            check(
                c.position.iter().all(|p| p.is_finite()),
                || format!("camera[{i}].position"),
                "must be two finite numbers (metres)",
            )?;
            check(
                c.view_radius_m.is_finite() && c.view_radius_m >= 0.0,
                || format!("camera[{i}].view_radius_m"),
                "must be a finite distance >= 0",
            )?;
            if let Some(h) = &c.homography {
                check(
                    h.iter().flatten().all(|x| x.is_finite()) && det3(h) != 0.0,
                    || format!("camera[{i}].homography"),
                    "must be an invertible 3x3 matrix of finite numbers",
                )?;
            }
        }

        let mut windows = HashMap::new();
        for (i, l) in links.iter().enumerate() {
            let from = *index
                .get(&l.from)
                .ok_or_else(|| SiteError::new(format!("link[{i}].from"), format!("unknown camera {:?}", l.from)))?;
            let to = *index
                .get(&l.to)
                .ok_or_else(|| SiteError::new(format!("link[{i}].to"), format!("unknown camera {:?}", l.to)))?;
            check(from != to, || format!("link[{i}].to"), "a link joins two different cameras")?;
            check(l.min_s.is_finite() && l.min_s >= 0.0, || format!("link[{i}].min_s"), "must be a finite time >= 0")?;
            let max_s = l.max_s.unwrap_or(f64::INFINITY);
            if l.max_s.is_some() {
                check(
                    max_s.is_finite() && max_s >= l.min_s,
                    || format!("link[{i}].max_s"),
                    "must be a finite time >= min_s",
                )?;
            }
            let w = Window { min_s: l.min_s, max_s };
            let pairs: &[(usize, usize)] = if l.one_way { &[(from, to)] } else { &[(from, to), (to, from)] };
            for &pair in pairs {
                if windows.insert(pair, w).is_some() {
                    return Err(SiteError::new(
                        format!("link[{i}]"),
                        format!("a link from {:?} to {:?} is already defined", cameras[pair.0].id, cameras[pair.1].id),
                    ));
                }
            }
        }
        Ok(Self { site, cameras, links, index, windows })
    }

    pub fn site(&self) -> &SiteConfig {
        &self.site
    }

    pub fn cameras(&self) -> &[CameraPlace] {
        &self.cameras
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    pub fn camera(&self, id: &str) -> Option<&CameraPlace> {
        self.index.get(id).map(|&i| &self.cameras[i])
    }

    /// Position of `id` in [`cameras`](Self::cameras).
    pub fn camera_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Can one person be seen by `from_cam` during `from` (first_seen, last_seen) and by `to_cam`
    /// during `to`? The intervals may come in either time order.
    ///
    /// - Same camera: only if the intervals do not overlap (two simultaneous tracks on one
    ///   camera are two people); touching is fine (a track split at its maximum duration).
    /// - A camera that is not in the site model: always (nothing is known about where it is).
    /// - A linked pair (in the direction of travel): the gap between the intervals must be in
    ///   `[min_s, max_s]`, widened by `time_tolerance_s`; overlapping intervals count as a gap of 0.
    /// - Otherwise the speed gate: `max(0, distance − both view radii) <= max_walking_speed_mps ·
    ///   (gap + time_tolerance_s)`.
    pub fn feasible(
        &self,
        from_cam: &str,
        from: (OffsetDateTime, OffsetDateTime),
        to_cam: &str,
        to: (OffsetDateTime, OffsetDateTime),
    ) -> bool {
        let a = span_ms(from);
        let b = span_ms(to);
        if from_cam == to_cam {
            return same_camera_ok(a, b);
        }
        self.feasible_ms(self.camera_index(from_cam), a, self.camera_index(to_cam), b)
    }

    /// [`feasible`](Self::feasible) for two *different* cameras given by index, times in Unix ms.
    pub(crate) fn feasible_ms(&self, a: Option<usize>, sa: (i64, i64), b: Option<usize>, sb: (i64, i64)) -> bool {
        let (Some(a), Some(b)) = (a, b) else { return true };
        if a == b {
            return same_camera_ok(sa, sb);
        }
        // Direction of travel and the gap between the end of the earlier and the start of the later.
        let (gap_ms, from, to, overlap) = if sb.0 >= sa.1 {
            (sb.0 - sa.1, a, b, false)
        } else if sa.0 >= sb.1 {
            (sa.0 - sb.1, b, a, false)
        } else {
            (0, a, b, true)
        };
        let gap = gap_ms as f64 / 1000.0;
        let tol = self.site.time_tolerance_s;
        if !self.windows.is_empty() {
            let w = match overlap {
                false => self.windows.get(&(from, to)),
                true => self.windows.get(&(a, b)).or_else(|| self.windows.get(&(b, a))),
            };
            if let Some(w) = w {
                return gap + tol >= w.min_s && gap - tol <= w.max_s;
            }
        }
        self.effective_distance(a, b) <= self.site.max_walking_speed_mps * (gap + tol)
    }

    /// Metres someone must walk at least between two cameras' views: centre distance minus both
    /// view radii, at least 0.
    pub fn effective_distance(&self, a: usize, b: usize) -> f64 {
        let (ca, cb) = (&self.cameras[a], &self.cameras[b]);
        let d = (ca.position[0] - cb.position[0]).hypot(ca.position[1] - cb.position[1]);
        (d - ca.view_radius_m - cb.view_radius_m).max(0.0)
    }

    /// `[lon, lat]` of a site-frame point (GeoJSON's order), degrees; `None` without a georef.
    pub fn lon_lat(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        self.to_wgs84(p).map(|(lat, lon)| [lon, lat])
    }

    /// Site-frame metres to WGS84 `(lat, lon)` degrees, `None` without `[site] georef`.
    ///
    /// Equirectangular (local tangent plane) projection around the origin: at 1 km from the
    /// origin the error is below 0.1 m at mid latitudes, far below camera-position accuracy.
    pub fn to_wgs84(&self, p: [f64; 2]) -> Option<(f64, f64)> {
        let g = self.site.georef?;
        let (s, c) = g.rotation_deg.to_radians().sin_cos();
        let east = p[0] * c - p[1] * s;
        let north = p[0] * s + p[1] * c;
        let lat = g.origin_lat + (north / EARTH_RADIUS_M).to_degrees();
        let mut lon = g.origin_lon + (east / (EARTH_RADIUS_M * g.origin_lat.to_radians().cos())).to_degrees();
        if lon >= 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        (lat.is_finite() && lon.is_finite()).then_some((lat, lon))
    }

    /// Source-frame pixel `[x, y]` of `camera` to ground metres in the site frame, through the
    /// camera's homography. `None` for an unknown or uncalibrated camera, or a point on (or
    /// beyond) the horizon line.
    pub fn ground(&self, camera: &str, image_point: [f64; 2]) -> Option<[f64; 2]> {
        let h = self.camera(camera)?.homography.as_ref()?;
        let [x, y] = image_point;
        let w = h[2][0] * x + h[2][1] * y + h[2][2];
        if w.abs() < 1e-12 || !w.is_finite() {
            return None;
        }
        let g = [(h[0][0] * x + h[0][1] * y + h[0][2]) / w, (h[1][0] * x + h[1][1] * y + h[1][2]) / w];
        g.iter().all(|v| v.is_finite()).then_some(g)
    }
}

/// Two intervals on one camera can be one person's only if they do not overlap (touching allowed);
/// two tracks starting on the same instant are two people.
pub(crate) fn same_camera_ok(a: (i64, i64), b: (i64, i64)) -> bool {
    !((a.0 < b.1 && b.0 < a.1) || a.0 == b.0)
}

/// Unix milliseconds.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `(first, last)` in Unix ms, `last` clamped to at least `first`.
pub(crate) fn span_ms((first, last): (OffsetDateTime, OffsetDateTime)) -> (i64, i64) {
    let a = unix_ms(first);
    (a, unix_ms(last).max(a))
}

fn det3(h: &[[f64; 3]; 3]) -> f64 {
    h[0][0] * (h[1][1] * h[2][2] - h[1][2] * h[2][1]) - h[0][1] * (h[1][0] * h[2][2] - h[1][2] * h[2][0])
        + h[0][2] * (h[1][0] * h[2][1] - h[1][1] * h[2][0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-23 08:00:00 UTC);

    fn at(s: f64) -> OffsetDateTime {
        T0 + Duration::seconds_f64(s)
    }

    fn iv(a: f64, b: f64) -> (OffsetDateTime, OffsetDateTime) {
        (at(a), at(b))
    }

    fn site() -> SiteConfig {
        SiteConfig::new("riverside")
    }

    fn cam(id: &str, x: f64, y: f64) -> CameraPlace {
        CameraPlace { id: id.into(), position: [x, y], view_radius_m: 10.0, homography: None, agent: None }
    }

    fn link(from: &str, to: &str, min_s: f64, max_s: Option<f64>) -> Link {
        Link { from: from.into(), to: to.into(), min_s, max_s, one_way: false }
    }

    fn model(links: Vec<Link>) -> SiteModel {
        SiteModel::new(site(), vec![cam("a", 0.0, 0.0), cam("b", 120.0, 0.0), cam("c", 0.0, 15.0)], links).unwrap()
    }

    #[test]
    fn parses_toml_with_defaults() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            site: SiteConfig,
            camera: Vec<CameraPlace>,
            #[serde(default)]
            link: Vec<Link>,
        }
        let f: File = toml::from_str(
            r#"
            [site]
            id = "riverside"
            [[camera]]
            id = "gate"
            position = [1, -2.5]
            homography = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
            [[camera]]
            id = "plaza"
            position = [100.0, 0.0]
            view_radius_m = 4
            [[link]]
            from = "gate"
            to = "plaza"
            max_s = 300
            "#,
        )
        .unwrap();
        assert_eq!(f.site.max_walking_speed_mps, DEFAULT_MAX_WALKING_SPEED_MPS);
        assert_eq!(f.site.time_tolerance_s, DEFAULT_TIME_TOLERANCE_S);
        assert_eq!(f.camera[0].view_radius_m, DEFAULT_VIEW_RADIUS_M);
        assert_eq!(f.camera[0].position, [1.0, -2.5]);
        assert_eq!(f.camera[1].view_radius_m, 4.0);
        assert_eq!(f.link[0].min_s, 0.0);
        assert_eq!(f.link[0].max_s, Some(300.0));
        assert!(!f.link[0].one_way);
        let m = SiteModel::new(f.site, f.camera, f.link).unwrap();
        assert_eq!(m.ground("gate", [3.0, 4.0]), Some([3.0, 4.0]));

        let unknown = toml::from_str::<File>("[site]\nid = \"x\"\nspeed = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `speed`"), "{unknown}");
        let unknown = toml::from_str::<CameraPlace>("id = \"x\"\nposition = [0, 0]\nradius = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `radius`"), "{unknown}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = |site: SiteConfig, cams: Vec<CameraPlace>, links: Vec<Link>| {
            SiteModel::new(site, cams, links).unwrap_err().key
        };
        let cams = || vec![cam("a", 0.0, 0.0), cam("b", 10.0, 0.0), cam("c", 0.0, 10.0)];
        let mut bad = cams();
        bad[2].position = [f64::NAN, 0.0];
        assert_eq!(err(site(), bad, vec![]), "camera[2].position");
        let mut bad = cams();
        bad[1].id = "a".into();
        assert_eq!(err(site(), bad, vec![]), "camera[1].id");
        let mut bad = cams();
        bad[0].id = "Gate North".into();
        assert_eq!(err(site(), bad, vec![]), "camera[0].id");
        let mut bad = cams();
        bad[1].view_radius_m = -1.0;
        assert_eq!(err(site(), bad, vec![]), "camera[1].view_radius_m");
        let mut bad = cams();
        bad[0].homography = Some([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]]);
        assert_eq!(err(site(), bad, vec![]), "camera[0].homography");
        assert_eq!(err(site(), cams(), vec![link("a", "zz", 0.0, None)]), "link[0].to");
        assert_eq!(err(site(), cams(), vec![link("a", "b", 0.0, None), link("q", "b", 0.0, None)]), "link[1].from");
        assert_eq!(err(site(), cams(), vec![link("a", "a", 0.0, None)]), "link[0].to");
        assert_eq!(err(site(), cams(), vec![link("a", "b", -1.0, None)]), "link[0].min_s");
        assert_eq!(err(site(), cams(), vec![link("a", "b", 10.0, Some(5.0))]), "link[0].max_s");
        assert_eq!(err(site(), cams(), vec![link("a", "b", 1.0, None), link("b", "a", 1.0, None)]), "link[1]");
        let mut one = link("a", "b", 1.0, None);
        one.one_way = true;
        let mut back = link("b", "a", 5.0, None);
        back.one_way = true;
        assert!(SiteModel::new(site(), cams(), vec![one, back]).is_ok());
        let mut s = site();
        s.max_walking_speed_mps = 0.0;
        assert_eq!(err(s, cams(), vec![]), "site.max_walking_speed_mps");
        let mut s = site();
        s.id = "".into();
        assert_eq!(err(s, cams(), vec![]), "site.id");
        let mut s = site();
        s.georef = Some(GeoRef { origin_lat: 91.0, origin_lon: 0.0, rotation_deg: 0.0 });
        assert_eq!(err(s, cams(), vec![]), "site.georef.origin_lat");
        let e = SiteModel::new(site(), cams(), vec![link("a", "zz", 0.0, None)]).unwrap_err();
        assert_eq!(e.to_string(), "`link[0].to`: unknown camera \"zz\"");
    }

    #[test]
    fn speed_gate() {
        let m = model(vec![]);
        // a and b: 120 m apart, 100 m between the edges of their views; at 2.5 m/s that is 40 s,
        // 39 s plus the 1 s tolerance.
        assert!(m.feasible("a", iv(0.0, 10.0), "b", iv(49.0, 55.0)));
        assert!(!m.feasible("a", iv(0.0, 10.0), "b", iv(48.5, 55.0)));
        // Either order of the intervals.
        assert!(m.feasible("b", iv(49.0, 55.0), "a", iv(0.0, 10.0)));
        assert!(!m.feasible("b", iv(0.0, 10.0), "a", iv(30.0, 40.0)));
        // Overlapping in time far apart: impossible; overlapping views (a, c: 15 m < 20 m): fine.
        assert!(!m.feasible("a", iv(0.0, 10.0), "b", iv(5.0, 20.0)));
        assert!(m.feasible("a", iv(0.0, 10.0), "c", iv(5.0, 20.0)));
        // Unknown cameras are not gated.
        assert!(m.feasible("a", iv(0.0, 10.0), "elsewhere", iv(5.0, 20.0)));
        assert_eq!(m.effective_distance(0, 1), 100.0);
    }

    #[test]
    fn same_camera_overlap_is_two_people() {
        let m = model(vec![]);
        assert!(!m.feasible("a", iv(0.0, 10.0), "a", iv(9.0, 20.0)));
        assert!(!m.feasible("a", iv(0.0, 10.0), "a", iv(2.0, 3.0)));
        assert!(!m.feasible("a", iv(5.0, 5.0), "a", iv(5.0, 5.0)));
        assert!(m.feasible("a", iv(0.0, 10.0), "a", iv(10.0, 20.0)));
        assert!(m.feasible("a", iv(30.0, 40.0), "a", iv(0.0, 10.0)));
    }

    #[test]
    fn links_override_the_speed_gate() {
        // a-b: the walkway around the river takes at least 90 s, at most 300 s.
        let m = model(vec![link("a", "b", 90.0, Some(300.0))]);
        assert!(!m.feasible("a", iv(0.0, 10.0), "b", iv(60.0, 70.0)), "speed gate alone would allow it");
        assert!(m.feasible("a", iv(0.0, 10.0), "b", iv(99.5, 110.0)));
        assert!(m.feasible("b", iv(0.0, 10.0), "a", iv(300.0, 310.0)));
        assert!(m.feasible("b", iv(0.0, 10.0), "a", iv(311.0, 320.0)));
        assert!(!m.feasible("b", iv(0.0, 10.0), "a", iv(312.0, 320.0)));
        assert!(!m.feasible("a", iv(0.0, 10.0), "b", iv(5.0, 20.0)));
        // No link between a and c: the speed gate.
        assert!(m.feasible("a", iv(0.0, 10.0), "c", iv(5.0, 20.0)));

        // A link that allows co-visibility (min 0), with positions that would forbid it.
        let m = model(vec![link("a", "b", 0.0, None)]);
        assert!(m.feasible("a", iv(0.0, 10.0), "b", iv(5.0, 20.0)));
        assert!(m.feasible("a", iv(0.0, 10.0), "b", iv(5000.0, 5020.0)));

        // One way: a -> b at least 90 s; b -> a falls back to the speed gate (40 s).
        let mut l = link("a", "b", 90.0, None);
        l.one_way = true;
        let m = model(vec![l]);
        assert!(!m.feasible("a", iv(0.0, 10.0), "b", iv(60.0, 70.0)));
        assert!(m.feasible("b", iv(0.0, 10.0), "a", iv(60.0, 70.0)));
        assert!(!m.feasible("b", iv(0.0, 10.0), "a", iv(40.0, 70.0)));
    }

    #[test]
    fn wgs84_equirectangular() {
        let mut s = site();
        s.georef = Some(GeoRef { origin_lat: 48.8566, origin_lon: 2.3522, rotation_deg: 0.0 });
        let m = SiteModel::new(s.clone(), vec![], vec![]).unwrap();
        let (lat, lon) = m.to_wgs84([0.0, 0.0]).unwrap();
        assert!((lat - 48.8566).abs() < 1e-12 && (lon - 2.3522).abs() < 1e-12);
        // 1 km north is 1/111.2 degrees of latitude; 1 km east is more degrees of longitude at 48.9° N.
        let (lat, lon) = m.to_wgs84([0.0, 1000.0]).unwrap();
        assert!((lat - 48.8566 - 0.0089932).abs() < 1e-6, "{lat}");
        assert!((lon - 2.3522).abs() < 1e-12);
        let (lat, lon) = m.to_wgs84([1000.0, 0.0]).unwrap();
        assert!((lon - 2.3522 - 0.0089932 / 48.8566f64.to_radians().cos()).abs() < 1e-6, "{lon}");
        assert!((lat - 48.8566).abs() < 1e-12);
        // Rotated 90°: +x points north.
        s.georef.as_mut().unwrap().rotation_deg = 90.0;
        let m = SiteModel::new(s, vec![], vec![]).unwrap();
        let (lat, lon) = m.to_wgs84([1000.0, 0.0]).unwrap();
        assert!((lat - 48.8566 - 0.0089932).abs() < 1e-6 && (lon - 2.3522).abs() < 1e-9, "{lat} {lon}");
        assert_eq!(model(vec![]).to_wgs84([0.0, 0.0]), None);
    }

    #[test]
    fn ground_through_homography() {
        // Scale 0.01 m/px, shift, and a perspective term.
        let h = [[0.01, 0.0, -5.0], [0.0, 0.02, 1.0], [0.0, 0.001, 1.0]];
        let mut c = cam("a", 0.0, 0.0);
        c.homography = Some(h);
        let m = SiteModel::new(site(), vec![c, cam("b", 50.0, 0.0)], vec![]).unwrap();
        let g = m.ground("a", [500.0, 1000.0]).unwrap();
        assert!((g[0] - 0.0).abs() < 1e-12 && (g[1] - 10.5).abs() < 1e-12, "{g:?}");
        assert_eq!(m.ground("a", [0.0, -1000.0]), None, "horizon line");
        assert_eq!(m.ground("b", [1.0, 1.0]), None, "uncalibrated");
        assert_eq!(m.ground("zz", [1.0, 1.0]), None, "unknown");
    }
}
