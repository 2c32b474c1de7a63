//! A multi-camera site simulator for the aggregator's correlation (pure Rust, deterministic).
//!
//! People enter a campus of ten cameras through its gates, walk its walkways at 1.0–1.8 m/s to a
//! few destinations (revisiting some, lingering in view or out of sight), and leave. Each pass
//! through a camera's view yields a face sighting unless it is missed, split every 60 s like the
//! edge tracker does; its embedding is the person's identity centre plus a per-(person, camera)
//! bias plus per-sighting noise, scaled to the dlib distances measured in the models manifest.
//! Sightings are published when their track closes; some are delayed, and camera outages hold a
//! camera's sightings back and replay them in order when it comes back (an edge outbox).
//!
//! [`simulate`] returns the sightings in arrival order with the ground-truth person of each;
//! [`id_metrics`] scores a sighting → trajectory assignment (IDF1 with optimal identity matching).
//! See `docs/correlation.md` for what is and is not modelled.

use std::collections::HashMap;

use sightline_aggregator::correlate::{Observation, Uuid};
use sightline_aggregator::site::{CameraPlace, Link, SiteConfig, SiteModel};
use time::{Duration, OffsetDateTime};

/// Embedding model name of every simulated sighting.
pub const MODEL: &str = "dlib-resnet-v1";
/// Embedding length.
pub const DIM: usize = 128;
/// Camera view radius of the simulated site (m).
pub const VIEW_RADIUS_M: f64 = 10.0;
/// The edge tracker's `max_duration_s`: longer passes yield one sighting per 60 s.
const TRACK_MAX_S: f64 = 60.0;
/// The edge tracker's `lost_timeout_s`: a sighting is published this long after `last_seen`.
const TRACK_LOST_S: f64 = 2.0;

/// Start of every simulation (event time 0).
pub const T0: OffsetDateTime = time::macros::datetime!(2026-11-23 08:00:00 UTC);

// Embedding geometry (per-component standard deviations, 128 dimensions). Calibrated against the
// models manifest: same person 0.06–0.55 (mean 0.38), different people 0.65–1.0 (mean 0.84).
/// Identity offset of a person from the population mean: |o_p - o_q| ≈ 0.73.
const SIGMA_IDENTITY: f64 = 0.0455;
/// Per-(person, camera) bias (viewing angle, lighting): norm ≈ 0.10.
const SIGMA_CAMERA: f64 = 0.0088;
/// Per-sighting noise (pose, blur, expression): norm ≈ 0.26, times a quality factor 0.7–1.3
/// (1.4–1.8 for poor shots).
const SIGMA_NOISE: f64 = 0.023;

/// splitmix64: a small, fast, seedable generator (deterministic across platforms).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn gaussian_vec(&mut self, sigma: f64) -> Vec<f64> {
        (0..DIM).map(|_| sigma * self.normal()).collect()
    }
}

/// A camera of the simulated site, at a walkway junction.
#[derive(Clone, Debug)]
pub struct SimCamera {
    pub id: String,
    pub position: [f64; 2],
    /// People enter and leave the site here.
    pub entrance: bool,
}

/// A walkway between two cameras; longer than the straight line.
#[derive(Clone, Debug)]
pub struct Walkway {
    pub a: usize,
    pub b: usize,
    pub length_m: f64,
}

#[derive(Clone, Debug)]
pub struct SimSite {
    pub cameras: Vec<SimCamera>,
    pub walkways: Vec<Walkway>,
}

impl SimSite {
    /// Ten cameras 90–250 m apart: four gates, a hall, a café, a plaza, a library, an east wing
    /// and a west walk, joined by twelve walkways 15 % longer than the straight line.
    pub fn campus() -> Self {
        let cams = [
            ("gate-north", [0.0, 220.0], true),
            ("hall", [0.0, 120.0], false),
            ("cafe", [-90.0, 140.0], false),
            ("plaza", [0.0, 0.0], false),
            ("library", [110.0, 60.0], false),
            ("east-wing", [140.0, -20.0], false),
            ("parking", [260.0, -10.0], true),
            ("west-walk", [-120.0, -30.0], false),
            ("gate-west", [-230.0, -70.0], true),
            ("gate-south", [10.0, -160.0], true),
        ];
        let cameras: Vec<SimCamera> = cams
            .iter()
            .map(|(id, position, entrance)| SimCamera { id: (*id).into(), position: *position, entrance: *entrance })
            .collect();
        let idx = |id: &str| cameras.iter().position(|c| c.id == id).unwrap();
        let ways = [
            ("gate-north", "hall"),
            ("hall", "cafe"),
            ("hall", "plaza"),
            ("hall", "library"),
            ("cafe", "west-walk"),
            ("plaza", "library"),
            ("plaza", "east-wing"),
            ("library", "east-wing"),
            ("east-wing", "parking"),
            ("plaza", "west-walk"),
            ("west-walk", "gate-west"),
            ("plaza", "gate-south"),
        ];
        let walkways = ways
            .iter()
            .map(|(a, b)| {
                let (a, b) = (idx(a), idx(b));
                let (pa, pb) = (cameras[a].position, cameras[b].position);
                Walkway { a, b, length_m: 1.15 * (pa[0] - pb[0]).hypot(pa[1] - pb[1]) }
            })
            .collect();
        Self { cameras, walkways }
    }

    /// A street grid of 22 cameras, one per crossing of 6 streets by 4, 70–140 m apart (the
    /// gaps drawn from `seed`), two crossings without a camera; walkways along the streets, 5 %
    /// longer than the straight line; the crossings on the border are where people come and go.
    /// Many routes between two cameras are about as short, so the site's geometry rules out
    /// far less than the campus's does.
    pub fn grid(seed: u64) -> Self {
        const COLS: usize = 6;
        const ROWS: usize = 4;
        let mut rng = Rng::new(seed ^ 0x6e1d);
        let mut axis = |n: usize| {
            let mut at = vec![0.0];
            for _ in 1..n {
                let last = *at.last().unwrap();
                at.push(last + rng.range(70.0, 140.0));
            }
            at
        };
        let (xs, ys) = (axis(COLS), axis(ROWS));
        // no camera at two inner crossings
        let missing = |c: usize, r: usize| (c, r) == (2, 1) || (c, r) == (4, 2);
        let mut cameras = Vec::new();
        let mut at: HashMap<(usize, usize), usize> = HashMap::new();
        for (r, &y) in ys.iter().enumerate() {
            for (c, &x) in xs.iter().enumerate() {
                if missing(c, r) {
                    continue;
                }
                at.insert((c, r), cameras.len());
                cameras.push(SimCamera {
                    id: format!("st-{c}-{r}"),
                    position: [x, y],
                    entrance: c == 0 || r == 0 || c == COLS - 1 || r == ROWS - 1,
                });
            }
        }
        // a street joins each camera to the next one along it, past a crossing without one
        let mut walkways = Vec::new();
        for (&(c, r), &a) in &at {
            for (dc, dr) in [(1, 0), (0, 1)] {
                let (mut c2, mut r2) = (c + dc, r + dr);
                while c2 < COLS && r2 < ROWS && missing(c2, r2) {
                    (c2, r2) = (c2 + dc, r2 + dr);
                }
                if let Some(&b) = at.get(&(c2, r2)) {
                    let (pa, pb) = (cameras[a].position, cameras[b].position);
                    walkways.push(Walkway { a, b, length_m: 1.05 * (pa[0] - pb[0]).hypot(pa[1] - pb[1]) });
                }
            }
        }
        walkways.sort_by_key(|w| (w.a, w.b));
        Self { cameras, walkways }
    }

    /// The aggregator's site model of this site: camera positions with [`VIEW_RADIUS_M`], and
    /// with `links`, one link per walkway whose `min_s` is its length (less both view radii) at
    /// 2.5 m/s, with no upper bound (people linger).
    pub fn site_model(&self, links: bool) -> SiteModel {
        let cameras = self
            .cameras
            .iter()
            .map(|c| CameraPlace {
                id: c.id.clone(),
                position: c.position,
                view_radius_m: VIEW_RADIUS_M,
                homography: None,
                agent: None,
            })
            .collect();
        let links = if links {
            self.walkways
                .iter()
                .map(|w| Link {
                    from: self.cameras[w.a].id.clone(),
                    to: self.cameras[w.b].id.clone(),
                    min_s: (w.length_m - 2.0 * VIEW_RADIUS_M) / 2.5,
                    max_s: None,
                    one_way: false,
                })
                .collect()
        } else {
            Vec::new()
        };
        let site = SiteConfig::new("sim");
        SiteModel::new(site, cameras, links).expect("simulated site is valid")
    }

    /// All-pairs shortest walking distances and next hops (Floyd–Warshall).
    fn routes(&self) -> (Vec<Vec<f64>>, Vec<Vec<usize>>) {
        let n = self.cameras.len();
        let mut d = vec![vec![f64::INFINITY; n]; n];
        let mut next = vec![vec![usize::MAX; n]; n];
        for i in 0..n {
            d[i][i] = 0.0;
            next[i][i] = i;
        }
        for w in &self.walkways {
            d[w.a][w.b] = w.length_m;
            d[w.b][w.a] = w.length_m;
            next[w.a][w.b] = w.b;
            next[w.b][w.a] = w.a;
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    if d[i][k] + d[k][j] < d[i][j] {
                        d[i][j] = d[i][k] + d[k][j];
                        next[i][j] = next[i][k];
                    }
                }
            }
        }
        (d, next)
    }
}

/// The site a scenario walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// [`SimSite::campus`].
    Campus,
    /// [`SimSite::grid`], its gaps drawn from the scenario's seed.
    Grid,
}

/// What real re-identification embeddings do besides identity and per-sighting noise; each
/// effect is off at 0. [`Looks::campus`] is the simulator's first geometry, [`Looks::world`] the
/// one calibrated against the real model (`docs/correlation.md`, "The simulator").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Looks {
    /// Norm of each camera's shift, shared by everyone that camera sees (light, angle, lens,
    /// compression).
    pub camera_shift: f64,
    /// Norm of the per-(person, camera) view offset (how this camera sees this face).
    pub view_offset: f64,
    /// Demographic groups (0: none). Strangers of one group are closer than strangers at large:
    /// they share `group_share` of their identity variance.
    pub groups: usize,
    pub group_share: f64,
    /// Scale of the identity offsets (1: the campus's, strangers 0.84 apart on average).
    pub identity_scale: f64,
}

impl Looks {
    pub fn campus() -> Self {
        Self {
            camera_shift: 0.0,
            view_offset: SIGMA_CAMERA * (DIM as f64).sqrt(),
            groups: 0,
            group_share: 0.0,
            identity_scale: 1.0,
        }
    }

    pub fn world() -> Self {
        Self { camera_shift: 0.15, view_offset: 0.22, groups: 8, group_share: 0.45, identity_scale: 0.89 }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    pub site: SiteKind,
    pub looks: Looks,
    /// Visitors, arriving uniformly over `arrival_window_s`.
    pub people: usize,
    pub arrival_window_s: f64,
    /// Destinations per visit: 1..=max_stops (a destination may be visited twice).
    pub max_stops: usize,
    /// Chance that a pass through a camera's view yields a sighting.
    pub detect_prob: f64,
    /// Chance that a sighting's best shot is poor (profile, blur): noise ×1.4–1.8 instead of
    /// ×0.7–1.3, so it can be 0.55–0.7 from the person's other sightings.
    pub poor_shot_prob: f64,
    /// Pairs of people whose identity centres are close: their sightings are 0.5–0.65 apart.
    pub lookalike_pairs: usize,
    /// Chance that a sighting is published late, by `late_s` seconds.
    pub late_prob: f64,
    pub late_s: (f64, f64),
    /// Camera outages: the camera's sightings are held back and replayed, in order, at the end.
    pub outages: usize,
    pub outage_s: (f64, f64),
    /// Each camera's clock is off by up to this (s), either way.
    pub clock_skew_s: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "default",
            seed: 1,
            site: SiteKind::Campus,
            looks: Looks::campus(),
            people: 40,
            arrival_window_s: 1800.0,
            max_stops: 4,
            detect_prob: 0.85,
            poor_shot_prob: 0.03,
            lookalike_pairs: 0,
            late_prob: 0.02,
            late_s: (30.0, 300.0),
            outages: 0,
            outage_s: (120.0, 600.0),
            clock_skew_s: 0.3,
        }
    }
}

/// One simulated sighting.
#[derive(Clone, Debug)]
pub struct SimSighting {
    pub id: Uuid,
    /// Ground truth: who it is.
    pub person: u32,
    pub camera: String,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    /// When it reaches the aggregator.
    pub arrival: OffsetDateTime,
    /// Delayed or replayed after an outage.
    pub late: bool,
    pub embedding: Vec<f32>,
}

impl SimSighting {
    pub fn observation(&self) -> Observation {
        Observation {
            sighting: self.id,
            camera: self.camera.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            embedding: self.embedding.clone(),
            model: MODEL.into(),
        }
    }
}

/// A simulation's output.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub site: SimSite,
    /// In arrival order.
    pub sightings: Vec<SimSighting>,
    pub people: usize,
    /// Look-alike pairs (person ids).
    pub lookalikes: Vec<(u32, u32)>,
    /// Passes through a view that yielded no sighting.
    pub missed: usize,
    /// Sightings delayed or replayed after an outage.
    pub late: usize,
}

/// An interval in view of one camera (seconds after [`T0`]).
struct Pass {
    cam: usize,
    start: f64,
    end: f64,
}

fn at(s: f64) -> OffsetDateTime {
    T0 + Duration::seconds_f64(s)
}

/// A UUIDv7 for time `ms` with random bits from `rng` (deterministic).
fn uuid_v7(ms: u64, rng: &mut Rng) -> Uuid {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let mut v = ((ms as u128) & 0xFFFF_FFFF_FFFF) << 80;
    v |= 0x7 << 76;
    v |= ((a & 0xFFF) as u128) << 64;
    v |= 1 << 63;
    v |= (b & 0x3FFF_FFFF_FFFF_FFFF) as u128;
    Uuid::from_u128(v)
}

/// One visit: the passes through camera views, in time order.
fn walk(site: &SimSite, routes: &(Vec<Vec<f64>>, Vec<Vec<usize>>), rng: &mut Rng, t0: f64, sc: &Scenario) -> Vec<Pass> {
    let (_, next) = routes;
    let n = site.cameras.len();
    let entrances: Vec<usize> = (0..n).filter(|&i| site.cameras[i].entrance).collect();
    let inner: Vec<usize> = (0..n).filter(|&i| !site.cameras[i].entrance).collect();
    let speed = rng.range(1.0, 1.8);
    let entry = entrances[rng.below(entrances.len())];
    let mut targets: Vec<usize> = Vec::new();
    for _ in 0..1 + rng.below(sc.max_stops) {
        // Sometimes back to a destination already visited.
        let t = if !targets.is_empty() && rng.chance(0.3) {
            targets[rng.below(targets.len())]
        } else {
            inner[rng.below(inner.len())]
        };
        targets.push(t);
    }
    let exit = if rng.chance(0.5) { entry } else { entrances[rng.below(entrances.len())] };
    targets.push(exit);

    let mut passes = Vec::new();
    let mut t = t0;
    let mut here = entry;
    let mut half = VIEW_RADIUS_M / speed;
    passes.push(Pass { cam: here, start: t - half, end: t + half });
    let last = targets.len() - 1;
    for (i, &target) in targets.iter().enumerate() {
        if target == here {
            // Straight back: out of view for a while.
            t += rng.range(30.0, 300.0);
            passes.push(Pass { cam: here, start: t - half, end: t + half });
            continue;
        }
        while here != target {
            let hop = next[here][target];
            let len = site.walkways.iter().find(|w| (w.a, w.b) == (here, hop) || (w.b, w.a) == (here, hop)).unwrap();
            let v = (speed * rng.range(0.9, 1.1)).min(1.9);
            half = VIEW_RADIUS_M / v;
            t += len.length_m / v;
            here = hop;
            if here == target && i != last {
                // A destination: linger in view, or go out of sight (into a building) and come back.
                if rng.chance(0.5) {
                    let dwell = rng.range(10.0, 150.0);
                    passes.push(Pass { cam: here, start: t - half, end: t + dwell + half });
                    t += dwell;
                } else {
                    passes.push(Pass { cam: here, start: t - half, end: t });
                    t += rng.range(60.0, 900.0);
                    passes.push(Pass { cam: here, start: t, end: t + half });
                }
            } else {
                passes.push(Pass { cam: here, start: t - half, end: t + half });
            }
        }
    }
    passes
}

/// Runs a scenario.
pub fn simulate(sc: &Scenario) -> SimRun {
    let site = match sc.site {
        SiteKind::Campus => SimSite::campus(),
        SiteKind::Grid => SimSite::grid(sc.seed),
    };
    let routes = site.routes();
    let mut rng = Rng::new(sc.seed);
    let n_cams = site.cameras.len();
    let skew: Vec<f64> = (0..n_cams).map(|_| rng.range(-sc.clock_skew_s, sc.clock_skew_s)).collect();
    let looks = sc.looks;

    // Identities: a population mean, an offset per person; look-alikes share most of theirs.
    let mean = rng.gaussian_vec(0.11);
    // Some faces are more distinctive than others: the offset's scale varies by ±15 %.
    let individual = (1.0 - looks.group_share).sqrt() * looks.identity_scale;
    let mut centres: Vec<Vec<f64>> = (0..sc.people)
        .map(|_| {
            let scale = rng.range(0.85, 1.15);
            rng.gaussian_vec(SIGMA_IDENTITY * scale * individual)
        })
        .collect();
    if looks.groups > 0 {
        // a group's share of the identity, the same for all its members
        let groups: Vec<Vec<f64>> = (0..looks.groups)
            .map(|_| rng.gaussian_vec(SIGMA_IDENTITY * looks.identity_scale * looks.group_share.sqrt()))
            .collect();
        for c in centres.iter_mut() {
            let g = &groups[rng.below(groups.len())];
            c.iter_mut().zip(g).for_each(|(c, g)| *c += g);
        }
    }
    let shift: Vec<Vec<f64>> = if looks.camera_shift > 0.0 {
        (0..n_cams).map(|_| rng.gaussian_vec(looks.camera_shift / (DIM as f64).sqrt())).collect()
    } else {
        vec![vec![0.0; DIM]; n_cams]
    };
    let mut lookalikes = Vec::new();
    if let Some(stride) = sc.people.checked_div(sc.lookalike_pairs).map(|s| s.max(2)) {
        for j in 0..sc.lookalike_pairs {
            let p = (j * stride) & !1;
            if p + 1 >= sc.people {
                break;
            }
            // |delta| in [0.30, 0.45]: sighting-to-sighting 0.5–0.62 across the pair.
            let delta = rng.gaussian_vec(1.0);
            let norm = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
            let len = rng.range(0.30, 0.45);
            centres[p + 1] = centres[p].iter().zip(&delta).map(|(c, d)| c + d * len / norm).collect();
            lookalikes.push((p as u32, p as u32 + 1));
        }
    }
    let view = looks.view_offset / (DIM as f64).sqrt();
    let bias: Vec<Vec<Vec<f64>>> =
        (0..sc.people).map(|_| (0..n_cams).map(|_| rng.gaussian_vec(view)).collect()).collect();

    // People in arrival order (so look-alike pairs, adjacent ids, are on site together).
    let mut arrivals: Vec<f64> = (0..sc.people).map(|_| rng.range(0.0, sc.arrival_window_s)).collect();
    arrivals.sort_by(f64::total_cmp);

    let mut out: Vec<SimSighting> = Vec::new();
    let mut publish: Vec<f64> = Vec::new();
    let mut missed = 0;
    for (person, &t0) in arrivals.iter().enumerate() {
        for pass in walk(&site, &routes, &mut rng, t0, sc) {
            if !rng.chance(sc.detect_prob) {
                missed += 1;
                continue;
            }
            // The face is visible for part of the pass; the tracker splits it every 60 s.
            let len = pass.end - pass.start;
            let mut s = pass.start + rng.range(0.0, 0.3) * len;
            let e = (pass.end - rng.range(0.0, 0.3) * len).max(s + 0.6);
            while s < e {
                let chunk_end = (s + TRACK_MAX_S).min(e);
                let quality = if rng.chance(sc.poor_shot_prob) { rng.range(1.4, 1.8) } else { rng.range(0.7, 1.3) };
                let embedding = (0..DIM)
                    .map(|i| {
                        (mean[i]
                            + centres[person][i]
                            + bias[person][pass.cam][i]
                            + shift[pass.cam][i]
                            + quality * SIGMA_NOISE * rng.normal()) as f32
                    })
                    .collect();
                let (first, last) = (s + skew[pass.cam], chunk_end + skew[pass.cam]);
                let ms = (T0.unix_timestamp() * 1000) as f64 + first * 1000.0;
                out.push(SimSighting {
                    id: uuid_v7(ms as u64, &mut rng),
                    person: person as u32,
                    camera: site.cameras[pass.cam].id.clone(),
                    first_seen: at(first),
                    last_seen: at(last),
                    arrival: T0,
                    late: false,
                    embedding,
                });
                publish.push(last + TRACK_LOST_S + rng.range(0.05, 0.5));
                s = chunk_end;
            }
        }
    }

    // Individually late sightings (a slow uplink, a retry).
    for (i, p) in publish.iter_mut().enumerate() {
        if rng.chance(sc.late_prob) {
            *p += rng.range(sc.late_s.0, sc.late_s.1);
            out[i].late = true;
        }
    }
    // Outages: everything a camera publishes during one is replayed in order when it ends.
    let horizon = sc.arrival_window_s + 900.0;
    for _ in 0..sc.outages {
        let cam = &site.cameras[rng.below(n_cams)].id;
        let start = rng.range(0.0, horizon);
        let end = start + rng.range(sc.outage_s.0, sc.outage_s.1);
        let replay = end + rng.range(1.0, 5.0);
        let mut held: Vec<usize> =
            (0..out.len()).filter(|&i| &out[i].camera == cam && publish[i] >= start && publish[i] < end).collect();
        held.sort_by(|&a, &b| publish[a].total_cmp(&publish[b]));
        for (k, i) in held.into_iter().enumerate() {
            publish[i] = replay + 0.001 * k as f64;
            out[i].late = true;
        }
    }
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| publish[a].total_cmp(&publish[b]).then(out[a].id.cmp(&out[b].id)));
    let late = out.iter().filter(|s| s.late).count();
    let sightings = order
        .into_iter()
        .map(|i| {
            let mut s = out[i].clone();
            s.arrival = at(publish[i]);
            s
        })
        .collect();
    SimRun { site, sightings, people: sc.people, lookalikes, missed, late }
}

/// min / mean / max and count of a set of distances.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Summary {
    fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        Self {
            n: v.len(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} / {:.3} / {:.3} (n={})", self.min, self.mean, self.max, self.n)
    }
}

/// Sighting-to-sighting Euclidean distances: same person, different people (not look-alikes),
/// look-alike pairs. Samples at most `max_pairs` pairs of each kind, deterministically.
pub fn distances(run: &SimRun, max_pairs: usize) -> (Summary, Summary, Summary) {
    let s = &run.sightings;
    let dist = |a: &SimSighting, b: &SimSighting| {
        a.embedding.iter().zip(&b.embedding).map(|(x, y)| ((x - y) * (x - y)) as f64).sum::<f64>().sqrt()
    };
    let pair_of: HashMap<u32, u32> = run.lookalikes.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
    let (mut same, mut diff, mut alike) = (Vec::new(), Vec::new(), Vec::new());
    let mut rng = Rng::new(7);
    let mut tries = 0;
    while (same.len() < max_pairs || diff.len() < max_pairs) && tries < 200 * max_pairs {
        tries += 1;
        let (a, b) = (&s[rng.below(s.len())], &s[rng.below(s.len())]);
        if a.id == b.id {
            continue;
        }
        if a.person == b.person {
            if same.len() < max_pairs {
                same.push(dist(a, b));
            }
        } else if pair_of.get(&a.person) != Some(&b.person) && diff.len() < max_pairs {
            diff.push(dist(a, b));
        }
    }
    // Same-person pairs are rare at random: take them person by person too.
    let mut by_person: HashMap<u32, Vec<&SimSighting>> = HashMap::new();
    for x in s {
        by_person.entry(x.person).or_default().push(x);
    }
    let mut people: Vec<_> = by_person.keys().copied().collect();
    people.sort_unstable();
    'outer: for p in &people {
        let v = &by_person[p];
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                if same.len() >= max_pairs {
                    break 'outer;
                }
                same.push(dist(v[i], v[j]));
            }
        }
    }
    for &(a, b) in &run.lookalikes {
        if let (Some(va), Some(vb)) = (by_person.get(&a), by_person.get(&b)) {
            for x in va {
                for y in vb {
                    alike.push(dist(x, y));
                }
            }
        }
    }
    (Summary::of(&same), Summary::of(&diff), Summary::of(&alike))
}

/// Identity metrics (Ristani et al. 2016, as `motmetrics` computes them) over items such as
/// sightings: each has a ground-truth identity and a predicted one (`None`: missing on that side).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdMetrics {
    pub idtp: u64,
    pub idfp: u64,
    pub idfn: u64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub gt_ids: usize,
    pub pred_ids: usize,
}

impl std::fmt::Display for IdMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IDF1 {:.4}  IDP {:.4}  IDR {:.4}  IDTP {}  IDFP {}  IDFN {}  identities {}  trajectories {}",
            self.idf1, self.idp, self.idr, self.idtp, self.idfp, self.idfn, self.gt_ids, self.pred_ids
        )
    }
}

/// IDF1 = 2·IDTP / (2·IDTP + IDFP + IDFN), where IDTP is the largest number of items a one-to-one
/// matching of ground-truth identities to predicted identities can agree on (Hungarian algorithm
/// on the contingency table, per connected component), IDFN = ground-truth items − IDTP and
/// IDFP = predicted items − IDTP.
pub fn id_metrics<G, P>(items: &[(Option<G>, Option<P>)]) -> IdMetrics
where
    G: std::hash::Hash + Eq + Clone,
    P: std::hash::Hash + Eq + Clone,
{
    let mut gt_index: HashMap<G, usize> = HashMap::new();
    let mut pred_index: HashMap<P, usize> = HashMap::new();
    let mut counts: HashMap<(usize, usize), u64> = HashMap::new();
    let (mut n_gt, mut n_pred) = (0u64, 0u64);
    for (g, p) in items {
        let gi = g.as_ref().map(|g| {
            let next = gt_index.len();
            *gt_index.entry(g.clone()).or_insert(next)
        });
        let pi = p.as_ref().map(|p| {
            let next = pred_index.len();
            *pred_index.entry(p.clone()).or_insert(next)
        });
        n_gt += gi.is_some() as u64;
        n_pred += pi.is_some() as u64;
        if let (Some(gi), Some(pi)) = (gi, pi) {
            *counts.entry((gi, pi)).or_default() += 1;
        }
    }
    let (ng, np) = (gt_index.len(), pred_index.len());
    // Connected components of the bipartite graph (union-find over gt 0..ng, pred ng..ng+np).
    let mut parent: Vec<usize> = (0..ng + np).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    // ((ground-truth identity, predicted identity), items in both)
    type Edge = ((usize, usize), u64);
    let mut edges: Vec<Edge> = counts.into_iter().collect();
    edges.sort_unstable();
    for &((g, p), _) in &edges {
        let (a, b) = (find(&mut parent, g), find(&mut parent, ng + p));
        parent[a] = b;
    }
    let mut components: HashMap<usize, Vec<Edge>> = HashMap::new();
    for &e in &edges {
        let root = find(&mut parent, e.0.0);
        components.entry(root).or_default().push(e);
    }
    let mut idtp = 0u64;
    for edges in components.values() {
        let mut rows: Vec<usize> = edges.iter().map(|e| e.0.0).collect();
        let mut cols: Vec<usize> = edges.iter().map(|e| e.0.1).collect();
        rows.sort_unstable();
        rows.dedup();
        cols.sort_unstable();
        cols.dedup();
        let mut w = vec![vec![0i64; cols.len()]; rows.len()];
        for &((g, p), c) in edges {
            let (r, k) = (rows.binary_search(&g).unwrap(), cols.binary_search(&p).unwrap());
            w[r][k] = c as i64;
        }
        idtp += max_weight_matching(&w) as u64;
    }
    let idfn = n_gt - idtp;
    let idfp = n_pred - idtp;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    IdMetrics {
        idtp,
        idfp,
        idfn,
        idf1: ratio(2 * idtp, 2 * idtp + idfp + idfn),
        idp: ratio(idtp, idtp + idfp),
        idr: ratio(idtp, idtp + idfn),
        gt_ids: ng,
        pred_ids: np,
    }
}

/// Largest total weight of a one-to-one matching of rows to columns (weights >= 0), with the
/// edge agent's Hungarian solver (exact here: the weights are counts, far below 2^53).
pub fn max_weight_matching(w: &[Vec<i64>]) -> i64 {
    if w.is_empty() || w[0].is_empty() {
        return 0;
    }
    let (n, m) = (w.len(), w[0].len());
    // the solver minimises cost with rows <= columns: transpose if needed, negate
    let (rows, cols) = (n.min(m), n.max(m));
    let weight = |r: usize, c: usize| if n <= m { w[r][c] } else { w[c][r] };
    let cost: Vec<f64> = (0..rows).flat_map(|r| (0..cols).map(move |c| -(weight(r, c) as f64))).collect();
    let assignment = sightline_edge_agent::tracker::assign::hungarian(&cost, rows, cols);
    assignment.iter().enumerate().map(|(r, &c)| weight(r, c)).sum()
}
