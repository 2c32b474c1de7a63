//! The store suite. Every backend-neutral test runs on both backends (the `both!` list at the
//! end: module `sqlite` on a real file, module `postgres` on a fresh database of a throwaway
//! PostgreSQL cluster, `sightline_tests::pg`): round trips, de-duplication, trajectory rows,
//! paging, crowd buckets, tokens, the audit log, the watchlist, restarts. Then what is particular
//! to each: SQLite's migrations of old files and the bytes of its files; PostgreSQL's refusals of
//! bad `store.url`s, foreign and newer databases, concurrent migrations, and compaction.
//!
//! (In `sightline-tests`, not the aggregator crate, so it shares the PostgreSQL harness with the
//! multi-node tests without a dependency cycle.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sightline_aggregator::store::migrations::{self, Migration};
use sightline_aggregator::store::postgres::schema;
use sightline_aggregator::store::*;
use sightline_contract::*;
use sightline_tests::pg::{PASSWORD, PgCluster, PgDatabase};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const MODEL: &str = "dlib-resnet-v1";

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aggregator.sqlite");
    (dir, path)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).unwrap()
}

/// 128 distinctive floats: `prefix` in the high 16 bits, the index in the low ones.
fn pattern(prefix: u32) -> Vec<f32> {
    (0..128).map(|i| f32::from_bits((prefix << 16) | (i * 97 + 13))).collect()
}

fn sighting(camera: &str, first: OffsetDateTime, last: OffsetDateTime, embedding: Vec<f32>) -> Sighting {
    Sighting {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        track: 4,
        first_seen: first,
        last_seen: last,
        best: BestShot {
            ts: first,
            bbox: [202.2139, 39.83889, 85.21399, 116.81976],
            landmarks: [
                [221.83218, 88.40773],
                [261.04733, 84.176765],
                [241.17981, 107.37846],
                [230.49316, 129.32237],
                [264.6186, 125.52226],
            ],
            det_score: 0.9343402,
            quality: 0.71530753,
        },
        frame_size: [640, 360],
        ground: Some([12.5, -3.25]),
        model: MODEL.into(),
        embedding,
    }
}

fn alert(alert: &str, state: AlertState, kind: AlertKind, camera: &str, ts: OffsetDateTime) -> Alert {
    Alert {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        ts,
        alert: alert.into(),
        state,
        kind,
        severity: Severity::Warning,
        zone: Some("plaza".into()),
        message: format!("{alert} {state:?}"),
        details: Some(json!({"count": 41.5, "threshold": 40, "note": null})),
    }
}

fn crowd(camera: &str, ts: OffsetDateTime, total: f32, plaza: f32) -> Crowd {
    Crowd {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        ts,
        method: CrowdMethod::Detection,
        total,
        zones: vec![
            ZoneCount { zone: "plaza".into(), count: plaza, area_m2: Some(120.0), density_per_m2: Some(plaza / 120.0) },
            ZoneCount { zone: "steps".into(), count: total - plaza, area_m2: None, density_per_m2: None },
        ],
        grid: None,
    }
}

fn audit_entry(ts: OffsetDateTime, token: &str, action: AuditAction, results: u64) -> AuditEntry {
    AuditEntry {
        ts,
        token: token.into(),
        role: Role::Integrator,
        action,
        purpose: Some("missing person report 2026-117".into()),
        query: json!({"since": "2026-11-23T08:00:00.000Z", "limit": 10}),
        results,
        outcome: AuditOutcome::Answered,
        sites: None,
    }
}

fn hash(n: u8) -> String {
    format!("{:064x}", u128::from(n) * 0x1234_5678_9abc_def1)
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The database file and its WAL, raw.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(w) = std::fs::read(&wal) {
        bytes.extend(w);
    }
    bytes
}

/// Whether any 8 consecutive bytes (two floats) of `embedding` are in the files.
fn any_trace(path: &Path, embedding: &[f32]) -> bool {
    trace_in(&file_bytes(path), embedding)
}

fn trace_in(bytes: &[u8], embedding: &[f32]) -> bool {
    let needles: std::collections::HashSet<[u8; 8]> =
        le_bytes(embedding).windows(8).step_by(4).map(|w| w.try_into().unwrap()).collect();
    bytes.windows(8).any(|w| needles.contains(<&[u8; 8]>::try_from(w).unwrap()))
}

/// Where a backend-neutral test keeps its store.
enum Backend {
    Sqlite { _dir: tempfile::TempDir, path: PathBuf },
    Postgres(Box<PgDatabase>),
}

impl Backend {
    fn sqlite() -> Backend {
        let (_dir, path) = tmp();
        Backend::Sqlite { _dir, path }
    }

    fn postgres() -> Backend {
        Backend::Postgres(Box::new(PgCluster::shared().database()))
    }

    /// Opens the store (again: the same file or database).
    fn open(&self) -> Box<dyn Store> {
        match self {
            Backend::Sqlite { path, .. } => Box::new(open(path)),
            Backend::Postgres(db) => Box::new(PostgresStore::open(&db.target).unwrap_or_else(|e| panic!("{e}"))),
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Backend::Sqlite { path, .. } => open(path).schema_version().unwrap(),
            Backend::Postgres(db) => PostgresStore::open(&db.target).unwrap().schema_version().unwrap(),
        }
    }

    /// Whether two consecutive floats of `embedding` are in the database's files.
    fn any_trace(&self, embedding: &[f32]) -> bool {
        match self {
            Backend::Sqlite { path, .. } => any_trace(path, embedding),
            Backend::Postgres(db) => trace_in(&db.file_bytes(), embedding),
        }
    }
}

fn sighting_round_trip_and_dedup(b: &Backend) {
    let store = b.open();
    let s = sighting("stage", T0, T0 + secs(6), pattern(0x3e11));
    let traj = Uuid::now_v7();
    assert!(!store.seen(s.id).unwrap());
    assert!(store.record_sighting(&s, traj, None, T0 + secs(9)).unwrap());
    assert!(store.seen(s.id).unwrap());
    // a redelivery changes nothing
    assert!(!store.record_sighting(&s, Uuid::now_v7(), Some(0.1), T0 + secs(20)).unwrap());
    let got = store.sighting(s.id).unwrap().unwrap();
    assert_eq!(
        got,
        StoredSighting { sighting: s.clone(), trajectory: traj, distance: None, received_at: T0 + secs(9) }
    );
    assert_eq!(store.trajectory(traj).unwrap().unwrap().summary.sighting_count, 1);
    assert!(store.sighting(Uuid::now_v7()).unwrap().is_none());
    assert!(!store.seen(Uuid::now_v7()).unwrap());

    // alerts and crowd measurements share the de-duplication
    let a = alert("a1", AlertState::Raised, AlertKind::CrowdThreshold, "stage", T0);
    let c = crowd("stage", T0, 10.0, 4.0);
    assert!(store.record_alert(&a, T0).unwrap());
    assert!(!store.record_alert(&a, T0 + secs(1)).unwrap());
    assert!(store.record_crowd(&c, T0).unwrap());
    assert!(!store.record_crowd(&c, T0 + secs(1)).unwrap());
    assert!(store.seen(a.id).unwrap() && store.seen(c.id).unwrap());
    // and are asked about together
    let unknown = Uuid::now_v7();
    let seen = store.seen_among(&[unknown, s.id, a.id, c.id, s.id]).unwrap();
    assert_eq!(seen, std::collections::HashSet::from([s.id, a.id, c.id]));
    assert!(store.seen_among(&[]).unwrap().is_empty());
}

fn trajectory_rows_follow_their_sightings(b: &Backend) {
    let store = b.open();
    let traj = Uuid::now_v7();
    let a = sighting("gate", T0, T0 + secs(60), pattern(0x3e01));
    let b = sighting("hall", T0 + secs(300), T0 + secs(360), pattern(0x3e02));
    let late = sighting("yard", T0 - secs(600), T0 - secs(480), pattern(0x3e03)); // arrives last, happened first
    let again = sighting("gate", T0 + secs(900), T0 + secs(930), pattern(0x3e04));
    store.record_sighting(&a, traj, None, T0 + secs(63)).unwrap();
    store.record_sighting(&b, traj, Some(0.41), T0 + secs(363)).unwrap();
    let t = store.trajectory(traj).unwrap().unwrap().summary;
    assert_eq!((t.first_seen, t.last_seen, t.sighting_count), (T0, T0 + secs(360), 2));
    assert_eq!(t.cameras, ["gate", "hall"]);
    store.record_sighting(&late, traj, Some(0.52), T0 + secs(400)).unwrap();
    store.record_sighting(&again, traj, Some(0.3), T0 + secs(933)).unwrap();
    assert!(!store.record_sighting(&b, traj, Some(0.41), T0 + secs(999)).unwrap());

    let d = store.trajectory(traj).unwrap().unwrap();
    assert_eq!(d.summary.id, traj);
    assert_eq!(d.summary.site, "riverside");
    assert_eq!(
        (d.summary.first_seen, d.summary.last_seen, d.summary.sighting_count),
        (T0 - secs(600), T0 + secs(930), 4)
    );
    assert_eq!(d.summary.cameras, ["yard", "gate", "hall"], "by first visit");
    let ids: Vec<Uuid> = d.sightings.iter().map(|p| p.id).collect();
    assert_eq!(ids, [late.id, a.id, b.id, again.id], "in event order");
    assert_eq!(d.sightings[0].distance, Some(0.52));
    assert_eq!(d.sightings[1].distance, None);
    assert_eq!(d.sightings[2].ground, Some([12.5, -3.25]));
    assert_eq!(store.sighting(b.id).unwrap().unwrap().trajectory, traj);
    // several in one call: those found, whatever the order asked
    let mut found: Vec<Uuid> =
        store.sightings(&[again.id, Uuid::now_v7(), a.id, a.id]).unwrap().iter().map(|s| s.sighting.id).collect();
    found.sort();
    let mut expected = vec![again.id, a.id];
    expected.sort();
    assert_eq!(found, expected);
    assert!(store.sightings(&[]).unwrap().is_empty());

    // a trajectory belongs to one site
    let mut elsewhere = sighting("gate", T0, T0 + secs(1), pattern(0x3e05));
    elsewhere.site = "docks".into();
    let e = store.record_sighting(&elsewhere, traj, Some(0.2), T0).unwrap_err().to_string();
    assert!(e.contains("site \"docks\"") && e.contains("belongs to site \"riverside\""), "{e}");
    assert!(!store.seen(elsewhere.id).unwrap());
    assert!(store.trajectory(Uuid::now_v7()).unwrap().is_none());
}

/// Repair after the fact: a merge stored with the batch that made it moves every sighting of the
/// merged trajectory, removes its row, and its id leads to the survivor, through merges of merges.
fn merges_move_sightings_and_lead_to_the_survivor(b: &Backend) {
    let store = b.open();
    let (older, younger, youngest) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let a = sighting("gate", T0, T0 + secs(10), pattern(0x4e01));
    let y1 = sighting("hall", T0 + secs(100), T0 + secs(110), pattern(0x4e02));
    let y2 = sighting("hall", T0 + secs(200), T0 + secs(210), pattern(0x4e03));
    let z = sighting("yard", T0 + secs(300), T0 + secs(310), pattern(0x4e04));
    let place = |s, t, d| SightingPlacement { sighting: s, trajectory: t, distance: d, received_at: T0 + secs(400) };
    store.record_sightings(&[place(&a, older, None), place(&y1, younger, None), place(&z, youngest, None)]).unwrap();
    let merge = |from, into, by: &Sighting| TrajectoryMerge {
        site: "riverside".into(),
        from,
        into,
        distance: 0.31,
        sighting: by.id,
        at: T0 + secs(500),
    };
    // y2 joins `younger`, and that makes `younger` merge into `older`
    let stored = store.record_batch(&[place(&y2, older, Some(0.4))], &[merge(younger, older, &y2)]).unwrap();
    assert_eq!(stored, [true]);
    assert!(store.trajectory(younger).unwrap().is_none(), "the merged row is gone");
    let d = store.trajectory(older).unwrap().unwrap();
    assert_eq!(d.sightings.iter().map(|p| p.id).collect::<Vec<_>>(), [a.id, y1.id, y2.id]);
    assert_eq!((d.summary.sighting_count, d.summary.last_seen), (3, T0 + secs(210)));
    assert_eq!(d.summary.cameras, ["gate", "hall"]);
    assert_eq!(store.sighting(y1.id).unwrap().unwrap().trajectory, older);
    assert_eq!(store.merged_into(younger).unwrap(), Some(older));
    assert_eq!(store.merged_into(older).unwrap(), None);
    // a merge of the survivor: the first id leads to the last one
    store.record_batch(&[], &[merge(older, youngest, &z)]).unwrap();
    assert_eq!(store.merged_into(younger).unwrap(), Some(youngest));
    assert_eq!(store.trajectory(youngest).unwrap().unwrap().summary.sighting_count, 4);
    // recorded once: the same merge again changes nothing
    store.record_batch(&[], &[merge(older, youngest, &z)]).unwrap();
    assert_eq!(store.merged_into(older).unwrap(), Some(youngest));
    // a merge across sites is refused, and nothing of its batch is stored
    let mut elsewhere = sighting("gate", T0, T0 + secs(1), pattern(0x4e05));
    elsewhere.site = "docks".into();
    let other = Uuid::now_v7();
    store.record_sightings(&[place(&elsewhere, other, None)]).unwrap();
    let late = sighting("gate", T0 + secs(600), T0 + secs(610), pattern(0x4e06));
    let e = store
        .record_batch(&[place(&late, youngest, Some(0.2))], &[merge(other, youngest, &late)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("belongs to site \"docks\""), "{e}");
    assert!(!store.seen(late.id).unwrap());
    assert_eq!(store.merged_into(other).unwrap(), None);
}

fn a_batch_of_sightings_is_one_transaction(b: &Backend) {
    let store = b.open();
    let (t1, t2, t3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let a = sighting("gate", T0, T0 + secs(5), pattern(0x3e21));
    let b = sighting("hall", T0 + secs(300), T0 + secs(305), pattern(0x3e22));
    let c = sighting("gate", T0 + secs(10), T0 + secs(12), pattern(0x3e23));
    let before = sighting("yard", T0 - secs(60), T0 - secs(55), pattern(0x3e24));
    assert!(store.record_sighting(&before, t1, None, T0).unwrap());
    let at =
        |s, trajectory, distance, r| SightingPlacement { sighting: s, trajectory, distance, received_at: T0 + secs(r) };
    let batch = [
        at(&a, t1, Some(0.2), 6),
        at(&b, t1, Some(0.3), 306),
        at(&c, t2, None, 13),
        at(&a, t1, Some(0.2), 307), // redelivered within the batch
        at(&before, t3, None, 308), // stored before: its trajectory is not created
    ];
    assert_eq!(store.record_sightings(&batch).unwrap(), [true, true, true, false, false]);
    let d = store.trajectory(t1).unwrap().unwrap();
    assert_eq!(
        (d.summary.first_seen, d.summary.last_seen, d.summary.sighting_count),
        (T0 - secs(60), T0 + secs(305), 3)
    );
    assert_eq!(d.summary.cameras, ["yard", "gate", "hall"]);
    assert_eq!(d.sightings.iter().map(|p| p.id).collect::<Vec<_>>(), [before.id, a.id, b.id]);
    assert_eq!(store.sighting(a.id).unwrap().unwrap().received_at, T0 + secs(6), "the first copy is kept");
    assert_eq!(store.trajectory(t2).unwrap().unwrap().summary.cameras, ["gate"]);
    assert!(store.trajectory(t3).unwrap().is_none());
    assert_eq!(store.sighting(before.id).unwrap().unwrap().trajectory, t1);

    // one sighting the store refuses (its trajectory is another site's): none of the batch is stored
    let fine = sighting("gate", T0 + secs(400), T0 + secs(401), pattern(0x3e25));
    let mut elsewhere = sighting("gate", T0 + secs(400), T0 + secs(401), pattern(0x3e26));
    elsewhere.site = "docks".into();
    let t4 = Uuid::now_v7();
    let e = store.record_sightings(&[at(&fine, t4, None, 402), at(&elsewhere, t2, None, 402)]).unwrap_err();
    assert!(e.to_string().contains("belongs to site \"riverside\""), "{e}");
    assert!(!store.seen(fine.id).unwrap() && !store.seen(elsewhere.id).unwrap());
    assert!(store.trajectory(t4).unwrap().is_none());
    assert_eq!(store.record_sightings(&[]).unwrap(), Vec::<bool>::new());
}

fn alerts_round_trip_filter_and_acknowledge(b: &Backend) {
    let store = b.open();
    let raise = alert("a1", AlertState::Raised, AlertKind::CrowdThreshold, "stage", T0);
    let clear = alert("a1", AlertState::Cleared, AlertKind::CrowdThreshold, "stage", T0 + secs(60));
    let mut offline = alert("a2", AlertState::Raised, AlertKind::CameraOffline, "lens", T0 + secs(30));
    offline.zone = None;
    offline.details = None;
    offline.severity = Severity::Critical;
    for a in [&raise, &clear, &offline] {
        assert!(store.record_alert(a, a.ts + secs(2)).unwrap());
    }
    let q = |f: &dyn Fn(&mut AlertQuery)| {
        let mut q = AlertQuery { limit: 100, ..Default::default() };
        f(&mut q);
        store.alerts(&q).unwrap().into_iter().map(|a| a.alert.id).collect::<Vec<_>>()
    };
    assert_eq!(q(&|_| {}), [clear.id, offline.id, raise.id], "newest first");
    assert_eq!(q(&|q| q.kind = Some(AlertKind::CrowdThreshold)), [clear.id, raise.id]);
    assert_eq!(q(&|q| q.state = Some(AlertState::Raised)), [offline.id, raise.id]);
    assert_eq!(q(&|q| q.camera = Some("lens".into())), [offline.id]);
    assert_eq!(q(&|q| q.sites = Some(vec!["docks".into()])), Vec::<Uuid>::new());
    assert_eq!(q(&|q| (q.since, q.until) = (Some(T0 + secs(30)), Some(T0 + secs(60)))), [offline.id], "half-open");
    assert_eq!(q(&|q| q.limit = 1), [clear.id]);
    let all = store.alerts(&AlertQuery { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(all[0].alert, clear);
    assert_eq!(all[1].alert, offline);
    assert_eq!(all[0].received_at, clear.ts + secs(2));
    assert_eq!(all[0].acknowledged_by, None);
    let e = store.alerts(&AlertQuery::default()).unwrap_err().to_string();
    assert!(e.contains("limit must be at least 1"), "{e}");

    assert_eq!(store.acknowledge_alert("a1", "ops-anna", T0 + secs(90)).unwrap(), Acknowledged::Now);
    assert_eq!(
        store.acknowledge_alert("a1", "ops-bob", T0 + secs(95)).unwrap(),
        Acknowledged::Already { by: "ops-anna".into(), at: T0 + secs(90) }
    );
    assert_eq!(store.acknowledge_alert("nope", "ops-bob", T0).unwrap(), Acknowledged::NotFound);
    // a later event of an acknowledged alert inherits the acknowledgement
    let again = alert("a1", AlertState::Raised, AlertKind::CrowdThreshold, "stage", T0 + secs(120));
    store.record_alert(&again, T0 + secs(121)).unwrap();
    let acks: Vec<_> = store
        .alerts(&AlertQuery { kind: Some(AlertKind::CrowdThreshold), limit: 10, ..Default::default() })
        .unwrap()
        .into_iter()
        .map(|a| (a.acknowledged_by, a.acknowledged_at))
        .collect();
    assert_eq!(acks, vec![(Some("ops-anna".to_string()), Some(T0 + secs(90))); 3]);
    let other = &store.alerts(&AlertQuery { camera: Some("lens".into()), limit: 1, ..Default::default() }).unwrap()[0];
    assert_eq!(other.acknowledged_at, None);
}

fn crowd_round_trip_and_bucketing(b: &Backend) {
    let store = b.open();
    // one measurement every 20 s from 08:00:00 to 08:02:40 on "stage"; total = i, plaza = i / 2
    for i in 0..9 {
        store.record_crowd(&crowd("stage", T0 + secs(20 * i), i as f32, i as f32 / 2.0), T0).unwrap();
    }
    store.record_crowd(&crowd("lens", T0 + secs(10), 100.0, 50.0), T0).unwrap();
    let series = |zone: Option<&str>, since, until, step_s| {
        store
            .crowd_series(&CrowdQuery {
                sites: None,
                camera: "stage".into(),
                zone: zone.map(Into::into),
                since,
                until,
                step_s,
            })
            .unwrap()
            .into_iter()
            .map(|b| (b.start, b.mean, b.min, b.max, b.samples))
            .collect::<Vec<_>>()
    };
    let end = T0 + secs(3600);
    assert_eq!(
        series(None, T0, end, 60),
        [(T0, 1.0, 0.0, 2.0, 3), (T0 + secs(60), 4.0, 3.0, 5.0, 3), (T0 + secs(120), 7.0, 6.0, 8.0, 3)]
    );
    assert_eq!(
        series(Some("plaza"), T0, end, 60),
        [(T0, 0.5, 0.0, 1.0, 3), (T0 + secs(60), 2.0, 1.5, 2.5, 3), (T0 + secs(120), 3.5, 3.0, 4.0, 3)]
    );
    // buckets are aligned to the epoch, not to `since`; samples before `since` are left out
    assert_eq!(
        series(None, T0 + secs(30), T0 + secs(100), 60),
        [(T0, 2.0, 2.0, 2.0, 1), (T0 + secs(60), 3.5, 3.0, 4.0, 2)]
    );
    assert_eq!(series(Some("nowhere"), T0, end, 60), []);
    assert_eq!(series(None, T0, end, 3600), [(T0, 4.0, 0.0, 8.0, 9)]);
    for (q, want) in [
        (CrowdQuery { sites: None, camera: "stage".into(), zone: None, since: T0, until: end, step_s: 0 }, "step"),
        (CrowdQuery { sites: None, camera: "stage".into(), zone: None, since: end, until: T0, step_s: 60 }, "until"),
    ] {
        let e = store.crowd_series(&q).unwrap_err().to_string();
        assert!(e.contains("invalid crowd query") && e.contains(want), "{e}");
    }
    let only_docks = CrowdQuery {
        sites: Some(vec!["docks".into()]),
        camera: "stage".into(),
        zone: None,
        since: T0,
        until: end,
        step_s: 60,
    };
    assert!(store.crowd_series(&only_docks).unwrap().is_empty());
}

fn latest_crowd_is_the_newest_measurement_of_each_known_camera(b: &Backend) {
    let store = b.open();
    assert!(store.latest_crowd().unwrap().is_empty());
    for cam in ["stage", "lens", "quiet"] {
        store.put_camera("riverside", cam, None).unwrap();
    }
    // inserted out of order: the newest by `ts` wins, not the last received
    for i in [3, 8, 1, 5] {
        store.record_crowd(&crowd("stage", T0 + secs(20 * i), i as f32, 0.5), T0).unwrap();
    }
    let mut lens = crowd("lens", T0 + secs(10), 7.0, 2.0);
    lens.grid = Some(DensityGrid { cols: 1, rows: 1, cells: vec![7.0] });
    store.record_crowd(&lens, T0).unwrap();
    // a camera the store does not know (no config, no status yet) is not listed
    store.record_crowd(&crowd("unknown", T0, 1.0, 0.0), T0).unwrap();
    let latest = store.latest_crowd().unwrap();
    let got: Vec<(&str, f32)> = latest.iter().map(|c| (c.camera.as_str(), c.total)).collect();
    assert_eq!(got, [("lens", 7.0), ("stage", 8.0)]);
    assert_eq!(latest[1].ts, T0 + secs(160));
    assert_eq!(latest[1].zones, crowd("stage", T0, 8.0, 0.5).zones);
    // the grid is not stored (the API holds the latest in memory)
    assert_eq!(latest[0].grid, None);
    assert_eq!(latest[0].id, lens.id);
}

fn camera_and_agent_statuses_keep_the_latest(b: &Backend) {
    let store = b.open();
    store.put_camera("riverside", "stage", Some([0.0, 0.0])).unwrap();
    store.put_camera("riverside", "gate", Some([30.0, 4.5])).unwrap();
    let status = |ts, state| CameraStatus {
        site: "riverside".into(),
        camera: "stage".into(),
        ts,
        agent: "edge-1".into(),
        state,
        fps_in: Some(30.0),
        fps_analyzed: Some(5.0),
        frames_dropped: Some(3),
        codec: Some("avc1.42C01E".into()),
        resolution: Some([640, 360]),
        detail: Some("source finished".into()),
    };
    let newer = status(T0 + secs(30), CameraState::Streaming);
    assert!(store.record_camera_status(&newer, T0 + secs(31)).unwrap());
    assert!(!store.record_camera_status(&status(T0, CameraState::Connecting), T0 + secs(40)).unwrap(), "older");
    let unknown =
        CameraStatus { camera: "spare".into(), state: CameraState::Disabled, ..status(T0, CameraState::Disabled) };
    assert!(store.record_camera_status(&unknown, T0).unwrap());
    store.put_camera("riverside", "stage", Some([1.0, 2.0])).unwrap(); // keeps the status
    let cams = store.cameras().unwrap();
    let summary: Vec<_> =
        cams.iter().map(|c| (c.camera.as_str(), c.position, c.status.as_ref().map(|s| s.state))).collect();
    assert_eq!(
        summary,
        [
            ("gate", Some([30.0, 4.5]), None),
            ("spare", None, Some(CameraState::Disabled)),
            ("stage", Some([1.0, 2.0]), Some(CameraState::Streaming))
        ]
    );
    assert_eq!(cams[2].status.as_ref(), Some(&newer));
    assert_eq!(cams[2].status_received_at, Some(T0 + secs(31)));

    let agent = |ts, state| AgentStatus {
        site: "riverside".into(),
        agent: "edge-1".into(),
        ts,
        state,
        version: Some("0.1.0".into()),
        cameras: Some(vec!["stage".into(), "gate".into()]),
        started: Some(T0 - secs(100)),
    };
    assert!(store.record_agent_status(&agent(T0, AgentState::Online), T0).unwrap());
    assert!(store.record_agent_status(&agent(T0 + secs(5), AgentState::Online), T0 + secs(6)).unwrap());
    // the Last Will carries the connect time, older than the agent's own statuses: agent
    // statuses are kept in the order they are received, not by `ts`
    let will = AgentStatus { cameras: None, ..agent(T0 - secs(100), AgentState::Offline) };
    assert!(store.record_agent_status(&will, T0 + secs(7)).unwrap());
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].status, will);
    assert_eq!(agents[0].received_at, T0 + secs(7));
    // and back online
    assert!(store.record_agent_status(&agent(T0 + secs(9), AgentState::Online), T0 + secs(9)).unwrap());
    assert_eq!(store.agents().unwrap()[0].status.state, AgentState::Online);
}

fn open_and_cleared_alerts(b: &Backend) {
    let store = b.open();
    let raise = |id: &str, kind, camera, at| alert(id, AlertState::Raised, kind, camera, at);
    let clear = |id: &str, kind, camera, at| alert(id, AlertState::Cleared, kind, camera, at);
    let off = AlertKind::AgentOffline;
    for a in [
        raise("agent_offline:edge-1:1", off, "edge-1", T0),
        clear("agent_offline:edge-1:1", off, "edge-1", T0 + secs(10)),
        raise("agent_offline:edge-2:2", off, "edge-2", T0 + secs(20)),
        // a clear dated before its raise (another clock) still clears it
        raise("agent_offline:edge-3:3", off, "edge-3", T0 + secs(30)),
        clear("agent_offline:edge-3:3", off, "edge-3", T0 + secs(25)),
        raise("gate:camera_offline", AlertKind::CameraOffline, "gate", T0 + secs(40)),
    ] {
        assert!(store.record_alert(&a, T0).unwrap());
    }
    let open_ids = |kind| store.open_alerts(kind, 10).unwrap().into_iter().map(|s| s.alert.alert).collect::<Vec<_>>();
    assert_eq!(open_ids(off), ["agent_offline:edge-2:2"]);
    assert_eq!(open_ids(AlertKind::CameraOffline), ["gate:camera_offline"]);
    assert!(store.open_alerts(off, 0).is_err(), "limit 0");
    let ids: Vec<String> =
        ["agent_offline:edge-1:1", "agent_offline:edge-2:2", "agent_offline:edge-3:3", "nope"].map(String::from).into();
    let cleared = store.cleared_alerts(&ids).unwrap();
    assert_eq!(cleared, ["agent_offline:edge-1:1", "agent_offline:edge-3:3"].map(String::from).into());
    assert!(store.cleared_alerts(&[]).unwrap().is_empty());
    let events = store.alert_events("agent_offline:edge-1:1", 10).unwrap();
    assert_eq!(events.iter().map(|e| e.alert.state).collect::<Vec<_>>(), [AlertState::Cleared, AlertState::Raised]);
    assert_eq!(store.alert_events("agent_offline:edge-1:1", 1).unwrap().len(), 1);
    assert!(store.alert_events("nope", 10).unwrap().is_empty());
}

fn trajectory_paging_is_keyset_and_stable_under_inserts(b: &Backend) {
    let store: Arc<dyn Store> = b.open().into();
    let mut want = Vec::new();
    for i in 0..25i64 {
        let traj = Uuid::now_v7();
        // pairs share a last_seen: ties are broken by id
        let last = T0 + secs(60 * (i / 2));
        let camera = if i % 3 == 0 { "gate" } else { "hall" };
        store.record_sighting(&sighting(camera, last - secs(5), last, pattern(0x3f00)), traj, None, last).unwrap();
        want.push((last, traj));
    }
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<Uuid> = want.into_iter().map(|(_, id)| id).collect();

    let mut got = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.trajectories(&TrajectoryQuery { limit: 10, cursor, ..Default::default() }).unwrap();
        got.extend(page.items.iter().map(|t| t.id));
        pages += 1;
        if pages == 1 {
            // newer trajectories arriving between pages do not shift the following pages
            for _ in 0..5 {
                let t = T0 + secs(10_000);
                store.record_sighting(&sighting("gate", t, t, pattern(0x3f01)), Uuid::now_v7(), None, t).unwrap();
            }
        }
        match page.next {
            // the cursor travels as an opaque string
            Some(c) => cursor = Some(c.to_string().parse().unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(got, want);

    let all = |q: TrajectoryQuery| store.trajectories(&q).unwrap().items.len();
    assert_eq!(all(TrajectoryQuery { limit: 100, ..Default::default() }), 30);
    assert_eq!(all(TrajectoryQuery { limit: 100, camera: Some("gate".into()), ..Default::default() }), 9 + 5);
    assert_eq!(all(TrajectoryQuery { limit: 100, sites: Some(vec!["docks".into()]), ..Default::default() }), 0);
    let window =
        TrajectoryQuery { limit: 100, since: Some(T0 + secs(60)), until: Some(T0 + secs(115)), ..Default::default() };
    assert_eq!(all(window), 2, "overlapping [since, until)");
    let e = "zz".parse::<Cursor>().unwrap_err().to_string();
    assert!(e.contains("invalid cursor"), "{e}");
    let full = store.trajectories(&TrajectoryQuery { limit: 30, ..Default::default() }).unwrap();
    assert_eq!((full.items.len(), full.next), (30, None), "no empty last page");
}

fn embeddings_and_replay(b: &Backend) {
    let store = b.open();
    let traj = Uuid::now_v7();
    let a = sighting("gate", T0 + secs(10), T0 + secs(50), pattern(0x3e21));
    let b = sighting("hall", T0, T0 + secs(20), pattern(0x3e22));
    let mut other = sighting("hall", T0, T0 + secs(30), vec![0.5; 512]);
    other.model = "arcface-r100".into();
    store.record_sighting(&a, traj, None, T0 + secs(60)).unwrap();
    store.record_sighting(&b, traj, Some(0.3), T0 + secs(61)).unwrap();
    store.record_sighting(&other, Uuid::now_v7(), None, T0 + secs(62)).unwrap();

    let rows = store.embeddings(MODEL, None, None).unwrap();
    assert_eq!(
        rows,
        [
            EmbeddingRow {
                sighting: b.id,
                trajectory: traj,
                site: "riverside".into(),
                camera: "hall".into(),
                last_seen: b.last_seen,
                embedding: b.embedding.clone()
            },
            EmbeddingRow {
                sighting: a.id,
                trajectory: traj,
                site: "riverside".into(),
                camera: "gate".into(),
                last_seen: a.last_seen,
                embedding: a.embedding.clone()
            },
        ]
    );
    let ids = |since, until| {
        store.embeddings(MODEL, since, until).unwrap().into_iter().map(|r| r.sighting).collect::<Vec<_>>()
    };
    assert_eq!(ids(Some(T0 + secs(21)), None), [a.id]);
    assert_eq!(ids(None, Some(T0 + secs(50))), [b.id], "until is exclusive");
    assert_eq!(store.embeddings("arcface-r100", None, None).unwrap()[0].embedding.len(), 512);
    let mut n = 0;
    assert_eq!(store.for_each_embedding(MODEL, None, None, &mut |_| n += 1).unwrap(), 2);
    assert_eq!(n, 2);

    let replay = store.sightings_for_replay(T0 + secs(25), None).unwrap();
    let order: Vec<Uuid> = replay.iter().map(|r| r.sighting.id).collect();
    // b ended before `since`, but its trajectory (with a) did not: trajectories come back whole
    assert_eq!(order, [b.id, other.id, a.id], "trajectories with last_seen >= since, by first_seen, id");
    let late = store.sightings_for_replay(T0 + secs(45), None).unwrap();
    assert_eq!(late.iter().map(|r| r.sighting.id).collect::<Vec<_>>(), [b.id, a.id]);
    let all = store.sightings_for_replay(T0 - secs(3600), None).unwrap();
    assert_eq!(all.iter().map(|r| r.sighting.id).collect::<Vec<_>>().len(), 3);
    assert_eq!(all[0].sighting.first_seen, T0);
    let rb = all.iter().find(|r| r.sighting.id == b.id).unwrap();
    assert_eq!((&rb.sighting, rb.trajectory, rb.distance), (&b, traj, Some(0.3)));
    // a node taking over one site replays that site's sightings only
    let mut elsewhere = sighting("gate", T0, T0 + secs(40), pattern(0x3e23));
    elsewhere.site = "harbour".into();
    store.record_sighting(&elsewhere, Uuid::now_v7(), None, T0 + secs(63)).unwrap();
    let of = |site| store.sightings_for_replay(T0 - secs(3600), Some(site)).unwrap().len();
    assert_eq!((of("riverside"), of("harbour"), of("docks")), (3, 1, 0));
}

fn token_lifecycle(b: &Backend) {
    let store = b.open();
    let t = store.create_token("dashboard", Role::Operator, None, &hash(1), T0).unwrap();
    assert_eq!((t.name.as_str(), t.role, t.created_at, t.revoked_at), ("dashboard", Role::Operator, T0, None));
    let admin = store.create_token("ops-anna", Role::Admin, None, &hash(2), T0 + secs(1)).unwrap();
    assert_eq!(store.token_by_hash(&hash(1)).unwrap(), Some(t.clone()));
    assert_eq!(store.token_by_hash(&hash(3)).unwrap(), None);

    let e = store.create_token("dashboard", Role::Admin, None, &hash(3), T0).unwrap_err();
    assert!(matches!(e, StoreError::TokenNameTaken(ref n) if n == "dashboard"), "{e}");
    assert!(e.to_string().contains("\"dashboard\" is already taken"), "{e}");
    let e = store.create_token("other", Role::Admin, None, &hash(1), T0).unwrap_err().to_string();
    assert!(e.contains("same hash"), "{e}");
    for bad in ["", "abc", &hash(1).to_uppercase()] {
        let e = store.create_token("x", Role::Admin, None, bad, T0).unwrap_err().to_string();
        assert!(e.contains("SHA-256 in lowercase hex"), "{e}");
    }
    let e = store.create_token(" ", Role::Admin, None, &hash(4), T0).unwrap_err().to_string();
    assert!(e.contains("name is empty"), "{e}");

    assert!(store.revoke_token("dashboard", T0 + secs(10)).unwrap());
    assert!(!store.revoke_token("dashboard", T0 + secs(20)).unwrap(), "already revoked");
    assert_eq!(store.token_by_hash(&hash(1)).unwrap(), None, "revoked tokens do not authenticate");
    let e = store.revoke_token("nobody", T0).unwrap_err().to_string();
    assert!(e.contains("token \"nobody\" not found"), "{e}");
    // names are never reused, so the audit log stays unambiguous
    assert!(matches!(
        store.create_token("dashboard", Role::Operator, None, &hash(5), T0),
        Err(StoreError::TokenNameTaken(_))
    ));

    let list = store.list_tokens().unwrap();
    assert_eq!(list, [Token { revoked_at: Some(T0 + secs(10)), ..t }, admin]);
}

fn audit_log_keeps_write_order(b: &Backend) {
    let store = b.open();
    let entries = [
        audit_entry(T0 + secs(5), "acme", AuditAction::Search, 3),
        audit_entry(T0, "acme", AuditAction::TrajectoryRead, 1), // a clock step back: order is still write order
        audit_entry(T0 + secs(5), "city", AuditAction::SightingRead, 1),
        audit_entry(T0 + secs(9), "acme", AuditAction::TrajectoryList, 20),
    ];
    let seqs: Vec<i64> = entries.iter().map(|e| store.audit(e).unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let log = |q: AuditQuery| store.audit_log(&q).unwrap();
    let all = log(AuditQuery { limit: 100, ..Default::default() });
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(), entries);
    let tokens = |rs: Vec<AuditRecord>| rs.into_iter().map(|r| (r.entry.token, r.entry.action)).collect::<Vec<_>>();
    assert_eq!(
        tokens(log(AuditQuery {
            token: Some("acme".into()),
            since: Some(T0 + secs(5)),
            limit: 100,
            ..Default::default()
        })),
        [("acme".to_string(), AuditAction::Search), ("acme".to_string(), AuditAction::TrajectoryList)]
    );
    let first_two = log(AuditQuery { limit: 2, ..Default::default() });
    let rest = log(AuditQuery { after_seq: Some(first_two[1].seq), limit: 100, ..Default::default() });
    assert_eq!(first_two.len() + rest.len(), 4);
    assert_eq!(rest[0].seq, seqs[2]);
    assert_eq!(log(AuditQuery { until: Some(T0 + secs(5)), limit: 100, ..Default::default() }).len(), 1);
    let e = store.audit_log(&AuditQuery::default()).unwrap_err().to_string();
    assert!(e.contains("invalid audit query"), "{e}");
}

fn watchlist_active_and_removal_erases_the_embedding(b: &Backend) {
    let store = b.open();
    let entry = |name: &str, expires_at, embedding| WatchlistEntry {
        id: Uuid::now_v7(),
        name: name.into(),
        purpose: "missing person report 2026-117".into(),
        model: MODEL.into(),
        embedding,
        created_by: "ops-anna".into(),
        created_at: T0,
        expires_at,
    };
    let lasting = entry("child A", T0 + secs(86_400), pattern(0x3e31));
    let brief = entry("adult B", T0 + secs(3600), pattern(0x3e32));
    assert!(store.watchlist_add(&lasting).unwrap());
    assert!(store.watchlist_add(&brief).unwrap());
    assert!(!store.watchlist_add(&brief).unwrap());
    assert_eq!(store.watchlist_active(T0 + secs(60)).unwrap(), [lasting.clone(), brief.clone()]);
    assert_eq!(
        store.watchlist_active(T0 + secs(3600)).unwrap(),
        std::slice::from_ref(&lasting),
        "expired at expires_at"
    );
    let bad = WatchlistEntry { purpose: "  ".into(), ..entry("x", T0 + secs(1), pattern(0x3e33)) };
    assert!(store.watchlist_add(&bad).unwrap_err().to_string().contains("purpose is empty"));
    let bad = entry("x", T0, pattern(0x3e33));
    assert!(store.watchlist_add(&bad).unwrap_err().to_string().contains("expires_at must be after created_at"));

    assert!(b.any_trace(&lasting.embedding), "the test can see embeddings in the files");
    assert!(store.watchlist_remove(lasting.id).unwrap());
    assert!(!store.watchlist_remove(lasting.id).unwrap());
    assert_eq!(store.watchlist_active(T0).unwrap(), std::slice::from_ref(&brief));
    assert!(!b.any_trace(&lasting.embedding), "a removed watchlist embedding is gone from the files");
    assert!(b.any_trace(&brief.embedding));
}

#[test]
fn retention_purges_rows_and_their_bytes() {
    let (_dir, path) = tmp();
    let now = datetime!(2026-12-01 12:00 UTC);
    let days = |d: i64| Duration::days(d);
    let store = open(&path);
    let old_emb = pattern(0x5ec0);
    let old_emb2 = pattern(0x5ec1);
    let new_emb = pattern(0x4d1d);

    // t1: only old sightings (goes); t2: old and recent (shrinks); t3: recent only (stays)
    let (t1, t2, t3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let old = now - days(10);
    let s1 = sighting("gate", old, old + secs(30), old_emb.clone());
    let s2 = sighting("hall", old + secs(100), old + secs(130), old_emb2.clone());
    let edge = sighting("hall", now - days(7) - secs(100), now - days(7), pattern(0x3e41)); // exactly at the limit
    let s3 = sighting("gate", now - days(1), now - days(1) + secs(20), new_emb.clone());
    let s4 = sighting("hall", now - days(1) + secs(60), now - days(1) + secs(90), pattern(0x3e42));
    store.record_sighting(&s1, t1, None, old).unwrap();
    store.record_sighting(&s2, t2, None, old).unwrap();
    store.record_sighting(&edge, t2, Some(0.3), now - days(7)).unwrap();
    store.record_sighting(&s3, t2, Some(0.4), now - days(1)).unwrap();
    store.record_sighting(&s4, t3, None, now - days(1)).unwrap();

    let old_alert = alert("a-old", AlertState::Raised, AlertKind::ZoneIntrusion, "gate", now - days(91));
    let new_alert = alert("a-new", AlertState::Raised, AlertKind::ZoneIntrusion, "gate", now - days(89));
    store.record_alert(&old_alert, now).unwrap();
    store.record_alert(&new_alert, now).unwrap();
    store.record_crowd(&crowd("gate", now - days(100), 5.0, 1.0), now).unwrap();
    store.record_crowd(&crowd("gate", now - days(2), 5.0, 1.0), now).unwrap();
    store.audit(&audit_entry(now - days(400), "acme", AuditAction::Search, 1)).unwrap();
    let kept_audit = store.audit(&audit_entry(now - days(300), "acme", AuditAction::Search, 1)).unwrap();
    let expired = WatchlistEntry {
        id: Uuid::now_v7(),
        name: "expired".into(),
        purpose: "p".into(),
        model: MODEL.into(),
        embedding: pattern(0x5ec2),
        created_by: "ops-anna".into(),
        created_at: now - days(30),
        expires_at: now - days(1),
    };
    store.watchlist_add(&expired).unwrap();

    for e in [&old_emb, &old_emb2, &expired.embedding, &new_emb] {
        assert!(any_trace(&path, e), "before the purge, the files hold the embeddings");
    }

    let report = store.purge(now, &RetentionPolicy::default()).unwrap();
    assert_eq!(
        report,
        PurgeReport {
            sightings: 2,
            trajectories_deleted: 1,
            trajectories_updated: 1,
            alerts: 1,
            crowd: 1,
            audit: 1,
            watchlist: 1,
            oldest_sighting: Some(now - days(7)),
            wal_truncated: true,
        }
    );

    // the bytes of the deleted embeddings are nowhere in the database files
    for e in [&old_emb, &old_emb2, &expired.embedding] {
        assert!(!any_trace(&path, e), "a purged embedding is still in the database files");
    }
    assert!(any_trace(&path, &new_emb), "kept embeddings are still there");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the WAL is truncated");

    // no row older than its limit remains (read with a separate connection)
    {
        let raw = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        for (sql, limit) in [
            ("SELECT COUNT(*) FROM sightings WHERE last_seen < ?1", now - days(7)),
            ("SELECT COUNT(*) FROM trajectories WHERE last_seen < ?1", now - days(7)),
            ("SELECT COUNT(*) FROM alerts WHERE ts < ?1", now - days(90)),
            ("SELECT COUNT(*) FROM crowd WHERE ts < ?1", now - days(90)),
            ("SELECT COUNT(*) FROM audit WHERE ts < ?1", now - days(365)),
            ("SELECT COUNT(*) FROM watchlist WHERE expires_at <= ?1", now),
        ] {
            let n: i64 = raw.query_row(sql, [ms(limit)], |r| r.get(0)).unwrap();
            assert_eq!(n, 0, "{sql}");
        }
        let n: i64 = raw.query_row("SELECT COUNT(*) FROM sightings", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
    }

    assert!(!store.seen(s1.id).unwrap() && !store.seen(s2.id).unwrap());
    assert!(store.trajectory(t1).unwrap().is_none());
    let t2row = store.trajectory(t2).unwrap().unwrap();
    assert_eq!(t2row.sightings.iter().map(|p| p.id).collect::<Vec<_>>(), [edge.id, s3.id]);
    assert_eq!(
        (t2row.summary.first_seen, t2row.summary.sighting_count, t2row.summary.cameras.clone()),
        (edge.first_seen, 2, vec!["hall".to_string(), "gate".to_string()])
    );
    assert_eq!(store.trajectory(t3).unwrap().unwrap().summary.sighting_count, 1);
    assert_eq!(store.audit_log(&AuditQuery { limit: 10, ..Default::default() }).unwrap()[0].seq, kept_audit);
    drop(store);

    // reopening after a purge works; a second purge finds nothing; sequences are not reused
    let store = open(&path);
    assert!(store.seen(s3.id).unwrap());
    let again = store.purge(now, &RetentionPolicy::default()).unwrap();
    assert_eq!(again, PurgeReport { oldest_sighting: Some(now - days(7)), wal_truncated: true, ..Default::default() });
    assert!(store.audit(&audit_entry(now, "acme", AuditAction::Search, 0)).unwrap() > kept_audit);
    assert!(!any_trace(&path, &old_emb));
    let size = std::fs::metadata(&path).unwrap().len();
    store.compact().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() <= size);
    assert!(any_trace(&path, &new_emb) && !any_trace(&path, &old_emb2));
    assert_eq!(store.trajectory(t2).unwrap().unwrap().sightings.len(), 2);
    // a day later the sighting at the limit goes, and its trajectory shrinks again
    let later = store.purge(now + days(1), &RetentionPolicy::default()).unwrap();
    assert_eq!((later.sightings, later.trajectories_updated, later.trajectories_deleted), (1, 1, 0));
}

fn retention_policy_is_checked(b: &Backend) {
    let store = b.open();
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let policy = RetentionPolicy { crowd_days: bad, ..Default::default() };
        let e = store.purge(T0, &policy).unwrap_err().to_string();
        assert!(e.contains("crowd_days must be a positive number of days"), "{e}");
    }
    let p = RetentionPolicy::default();
    assert_eq!((p.sightings_days, p.alerts_days, p.crowd_days, p.audit_days), (7.0, 90.0, 90.0, 365.0));
    let p: RetentionPolicy = toml::from_str("sightings_days = 0.5").unwrap();
    assert_eq!(RetentionPolicy::cutoff(T0, p.sightings_days), T0 - Duration::hours(12));
}

fn restart_keeps_trajectories_and_dedup_state(b: &Backend) {
    let traj = Uuid::now_v7();
    let s = sighting("gate", T0, T0 + secs(5), pattern(0x3e51));
    let a = alert("a1", AlertState::Raised, AlertKind::CameraFrozen, "gate", T0);
    let c = crowd("gate", T0, 3.0, 1.0);
    {
        let store = b.open();
        store.record_sighting(&s, traj, None, T0).unwrap();
        store.record_alert(&a, T0).unwrap();
        store.record_crowd(&c, T0).unwrap();
        store.create_token("acme", Role::Integrator, None, &hash(7), T0).unwrap();
    }
    let store = b.open();
    assert_eq!(b.schema_version(), migrations::LATEST);
    for id in [s.id, a.id, c.id] {
        assert!(store.seen(id).unwrap());
    }
    assert!(!store.record_sighting(&s, traj, None, T0 + secs(60)).unwrap());
    assert!(!store.record_alert(&a, T0 + secs(60)).unwrap());
    assert!(!store.record_crowd(&c, T0 + secs(60)).unwrap());
    assert_eq!(store.trajectory(traj).unwrap().unwrap().summary.sighting_count, 1);
    assert_eq!(store.sightings_for_replay(T0, None).unwrap()[0].trajectory, traj);
    assert_eq!(store.token_by_hash(&hash(7)).unwrap().unwrap().name, "acme");
}

#[test]
fn migrates_a_version_1_file() {
    let (_dir, path) = tmp();
    let traj = Uuid::now_v7();
    let s = sighting("gate", T0, T0 + secs(5), pattern(0x3e61));
    let alert_id = Uuid::now_v7();
    {
        let v1 = SqliteStore::open_with(&path, &migrations::MIGRATIONS[..1]).unwrap();
        assert_eq!(v1.schema_version().unwrap(), 1);
        v1.record_sighting(&s, traj, None, T0).unwrap();
    }
    {
        // an alert as version 1 stored it (no acknowledgement columns)
        let raw = rusqlite::Connection::open(&path).unwrap();
        let has_ack: bool = raw
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('alerts') WHERE name = 'acknowledged_at')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!has_ack);
        raw.execute(
            "INSERT INTO alerts (id, alert, site, camera, ts, state, kind, severity, message, received_at) \
             VALUES (?1, 'a1', 'riverside', 'gate', 1795420800000, 'raised', 'camera_offline', 'critical', 'gone', 1795420800000)",
            [alert_id.to_string()],
        )
        .unwrap();
    }
    let store = open(&path);
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(store.sighting(s.id).unwrap().unwrap().sighting, s);
    let alerts = store.alerts(&AlertQuery { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(
        (alerts[0].alert.id, alerts[0].alert.kind, alerts[0].acknowledged_at),
        (alert_id, AlertKind::CameraOffline, None)
    );
    assert_eq!(store.acknowledge_alert("a1", "ops-anna", T0).unwrap(), Acknowledged::Now);
    store.create_token("acme", Role::Integrator, None, &hash(9), T0).unwrap();
    assert_eq!(store.audit(&audit_entry(T0, "acme", AuditAction::Search, 0)).unwrap(), 1);
}

#[test]
fn a_failed_migration_is_rolled_back() {
    let (_dir, path) = tmp();
    let broken = [
        migrations::MIGRATIONS[0],
        Migration {
            version: 2,
            name: "broken step",
            sql: "CREATE TABLE half (a INTEGER); INSERT INTO missing VALUES (1);",
        },
    ];
    let e = SqliteStore::open_with(&path, &broken).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("migration to schema version 2 (broken step) failed and was rolled back")
            && msg.contains("no such table: missing")
            && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(migrations::version(&raw).unwrap(), 1, "version 1 committed, version 2 not");
        let half: bool =
            raw.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'half')", [], |r| r.get(0)).unwrap();
        assert!(!half, "the failed step left nothing behind");
    }
    assert_eq!(open(&path).schema_version().unwrap(), migrations::LATEST);
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let (_dir, path) = tmp();
    drop(open(&path));
    let newer = migrations::LATEST + 1;
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", newer).unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::TooNew { found, supported, .. } if found == newer && supported == migrations::LATEST)
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "schema version {newer} is newer than this aggregator supports (up to {})",
            migrations::LATEST
        )) && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file is left as it was");
}

#[test]
fn foreign_files_are_refused() {
    let (dir, path) = tmp();
    // an edge agent's outbox, say
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE outbox (seq INTEGER PRIMARY KEY);").unwrap();
    let e = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(e.contains("not a sightline aggregator database") && e.contains("outbox"), "{e}");

    let other_app = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&other_app).unwrap().pragma_update(None, "application_id", 42).unwrap();
    let e = SqliteStore::open(&other_app).unwrap_err().to_string();
    assert!(e.contains("not a sightline aggregator database: application_id is 0x2a"), "{e}");

    let text = dir.path().join("notes.sqlite");
    std::fs::write(
        &text,
        "this is not a database, it is a text file that is long enough to have a header\n".repeat(20),
    )
    .unwrap();
    let e = SqliteStore::open(&text).unwrap_err().to_string();
    assert!(e.contains("cannot open") && e.contains("notes.sqlite") && e.contains("not a database"), "{e}");
}

fn concurrent_writers_and_readers(b: &Backend) {
    let store: Arc<dyn Store> = b.open().into();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let traj = Uuid::now_v7();
                for i in 0..25 {
                    let t = T0 + secs(i);
                    let s = sighting(&format!("cam-{w}"), t, t, pattern(0x3e70));
                    assert!(store.record_sighting(&s, traj, Some(0.1), t).unwrap());
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                let page = store.trajectories(&TrajectoryQuery { limit: 10, ..Default::default() }).unwrap();
                assert!(page.items.len() <= 4);
                store.embeddings(MODEL, None, None).unwrap();
            }
        })
    };
    for h in writers {
        h.join().unwrap();
    }
    reader.join().unwrap();
    let page = store.trajectories(&TrajectoryQuery { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(page.items.iter().map(|t| t.sighting_count).collect::<Vec<_>>(), [25; 4]);
}

/// Two weeks of ingestion with a purge at the end of every day, sightings of uneven sizes, some
/// arriving late: deletes land all over the b-tree and SQLite rebalances its pages. After every
/// purge, no two consecutive floats of any purged embedding are left in the files (each embedding's
/// floats count up by one, so stray page bytes are not mistaken for them).
#[test]
fn retention_at_scale_leaves_no_trace() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let start = datetime!(2026-11-01 00:00 UTC);
    let policy = RetentionPolicy::default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // embedding of a sighting seen on `day`: every float's high 16 bits are 0x5E00 | day, the low
    // 16 bits count up
    let embedding = |day: i64, serial: u32| -> Vec<f32> {
        (0..128u32).map(|k| f32::from_bits(((0x5E00 | day as u32) << 16) | ((serial * 128 + k) & 0xFFFF))).collect()
    };
    let mut serial = 0u32;
    let mut traj = Uuid::now_v7();
    let mut purged_through = -1i64; // sightings of days <= this must be gone
    for day in 0..15i64 {
        for _ in 0..120 {
            // ~10% arrive late (an edge's outbox replay): seen up to two days earlier
            let back = if next(10) == 0 { next(2 * 86_400) as i64 } else { 0 };
            let t = (start + Duration::days(day) + secs(next(86_400) as i64) - secs(back)).max(start);
            let seen_day = (t - start).whole_days();
            let mut s =
                sighting(&"c".repeat(1 + next(40) as usize), t, t + secs(next(30) as i64), embedding(seen_day, serial));
            s.last_seen = s.last_seen.min(start + Duration::days(seen_day + 1) - secs(1));
            s.ground = if next(2) == 0 { None } else { Some([next(1000) as f64, 1.5]) };
            serial += 1;
            if next(4) == 0 {
                traj = Uuid::now_v7();
            }
            store.record_sighting(&s, traj, Some(0.3), t).unwrap();
        }
        let now = start + Duration::days(day + 1);
        let report = store.purge(now, &policy).unwrap();
        assert!(report.wal_truncated);
        purged_through = purged_through.max(day + 1 - 7 - 1);
        if let Some(oldest) = report.oldest_sighting {
            assert!(oldest >= RetentionPolicy::cutoff(now, policy.sightings_days));
        }
        assert_eq!(
            trace_of_days(&file_bytes(&path), |d| d <= purged_through),
            None,
            "day {day}: bytes of an embedding purged (seen on day <= {purged_through}) remain"
        );
    }
    assert_eq!(purged_through, 7);
    assert!(trace_of_days(&file_bytes(&path), |d| d == 14).is_some(), "kept embeddings are found");
}

/// Where two consecutive floats of an embedding of `retention_at_scale_leaves_no_trace` seen on a
/// day matching `day` are in `bytes`.
fn trace_of_days(bytes: &[u8], day: impl Fn(i64) -> bool) -> Option<usize> {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    // candidates: the top byte of a float
    (3..bytes.len().saturating_sub(5)).filter(|&i| bytes[i] == 0x5E).map(|i| i - 3).find(|&i| {
        let (a, b) = (word(i), word(i + 4));
        day(i64::from((a >> 16) & 0xFF)) && b == a + 1
    })
}

#[test]
fn migrates_a_version_2_audit_log_marking_refused_photos() {
    let (_dir, path) = tmp();
    {
        let v2 = SqliteStore::open_with(&path, &migrations::MIGRATIONS[..2]).unwrap();
        assert_eq!(v2.schema_version().unwrap(), 2);
    }
    {
        // rows as version 2 wrote them: an answered search, and a photo without a usable face
        // (recorded with `outcome` in the query)
        let raw = rusqlite::Connection::open(&path).unwrap();
        for query in [r#"{"limit":20}"#, r#"{"limit":20,"outcome":"no face found in the photo"}"#] {
            raw.execute(
                "INSERT INTO audit (ts, token, role, action, purpose, query, results) \
                 VALUES (1795420800000, 'acme', 'integrator', 'search', 'case 7', ?1, 0)",
                [query],
            )
            .unwrap();
        }
    }
    let store = open(&path);
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let log = store.audit_log(&AuditQuery { limit: 10, ..Default::default() }).unwrap();
    let outcomes: Vec<AuditOutcome> = log.iter().map(|r| r.entry.outcome).collect();
    assert_eq!(outcomes, [AuditOutcome::Answered, AuditOutcome::Refused]);
    // a refused access is written and read back as such
    let refused = AuditEntry {
        purpose: None,
        outcome: AuditOutcome::Refused,
        ..audit_entry(T0, "acme", AuditAction::TrajectoryList, 0)
    };
    let seq = store.audit(&refused).unwrap();
    let back = store.audit_log(&AuditQuery { after_seq: Some(seq - 1), limit: 1, ..Default::default() }).unwrap();
    assert_eq!(back[0].entry, refused);
}

/// Each backend-neutral test, once per backend.
/// Site filters and scopes: queries keep the sites asked for, tokens and audit records keep their
/// scope, and an audit query scoped to some sites reads the records made within them.
fn sites_filter_queries_tokens_and_audit_records(b: &Backend) {
    let store = b.open();
    let at = |s: &str, mut x: Sighting| {
        x.site = s.into();
        x
    };
    let emb = |i: u32| pattern(i);
    for (i, site) in ["riverside", "harbour", "hilltop"].into_iter().enumerate() {
        let s = at(site, sighting("gate", T0 + secs(i as i64), T0 + secs(i as i64 + 2), emb(i as u32)));
        store.record_sighting(&s, Uuid::now_v7(), None, T0 + secs(10)).unwrap();
        let mut a = alert(&format!("{site}:gate:zone"), AlertState::Raised, AlertKind::ZoneIntrusion, "gate", T0);
        a.site = site.into();
        store.record_alert(&a, T0).unwrap();
        let mut c = crowd("gate", T0 + secs(i as i64), 10.0 * (i + 1) as f32, 0.0);
        c.site = site.into();
        store.record_crowd(&c, T0).unwrap();
    }
    let two = Some(vec!["riverside".to_string(), "hilltop".to_string()]);
    let page = store.trajectories(&TrajectoryQuery { sites: two.clone(), limit: 10, ..Default::default() }).unwrap();
    let mut sites: Vec<String> = page.items.iter().map(|t| t.site.clone()).collect();
    sites.sort();
    assert_eq!(sites, ["hilltop", "riverside"]);
    let none = store.trajectories(&TrajectoryQuery { sites: Some(vec![]), limit: 10, ..Default::default() }).unwrap();
    assert!(none.items.is_empty(), "an empty scope sees nothing");
    let alerts = store.alerts(&AlertQuery { sites: Some(vec!["harbour".into()]), limit: 10, ..Default::default() });
    assert_eq!(alerts.unwrap().iter().map(|a| a.alert.site.as_str()).collect::<Vec<_>>(), ["harbour"]);
    let series = store
        .crowd_series(&CrowdQuery {
            sites: two,
            camera: "gate".into(),
            zone: None,
            since: T0,
            until: T0 + secs(60),
            step_s: 60,
        })
        .unwrap();
    assert_eq!((series.len(), series[0].samples, series[0].max), (1, 2, 30.0), "{series:?}");

    let scoped = store.create_token("east-app", Role::Integrator, Some(&["east".into()]), &hash(11), T0).unwrap();
    assert_eq!(scoped.sites, Some(vec!["east".to_string()]));
    let back = store.token_by_hash(&hash(11)).unwrap().unwrap();
    assert_eq!(back.sites, scoped.sites);
    let every = store.create_token("city", Role::Admin, None, &hash(12), T0).unwrap();
    assert_eq!(every.sites, None);

    let entry = |token: &str, sites: Option<Vec<String>>| AuditEntry {
        sites,
        ..audit_entry(T0, token, AuditAction::TrajectoryList, 1)
    };
    store.audit(&entry("east-app", Some(vec!["east".into()]))).unwrap();
    store.audit(&entry("river-app", Some(vec!["riverside".into()]))).unwrap();
    store.audit(&entry("both-app", Some(vec!["east".into(), "west".into()]))).unwrap();
    store.audit(&entry("city", None)).unwrap();
    let read = |sites: Option<Vec<String>>| {
        let log = store.audit_log(&AuditQuery { sites, limit: 100, ..Default::default() }).unwrap();
        log.into_iter().map(|r| r.entry.token).collect::<Vec<_>>()
    };
    assert_eq!(read(None), ["east-app", "river-app", "both-app", "city"]);
    assert_eq!(read(Some(vec!["east".into(), "riverside".into()])), ["east-app", "river-app"]);
    assert_eq!(read(Some(vec!["riverside".into()])), ["river-app"]);
    let back = store.audit_log(&AuditQuery { limit: 1, ..Default::default() }).unwrap();
    assert_eq!(back[0].entry.sites, Some(vec!["east".to_string()]));
}

/// A database holds one tree of sites: the same tree is claimed again, another is refused
/// naming the site that differs, unless it replaces the stored one.
fn a_database_holds_one_tree_of_sites(b: &Backend) {
    let store = b.open();
    let row = |id: &str, parent: Option<&str>| SiteRow { id: id.into(), parent: parent.map(Into::into), name: None };
    let tree = [row("district", None), row("east", Some("district")), row("riverside", Some("east"))];
    store.claim_sites(&tree, false).unwrap();
    store.claim_sites(&tree, false).unwrap();
    let moved = [row("district", None), row("east", Some("district")), row("riverside", Some("district"))];
    let e = store.claim_sites(&moved, false).unwrap_err().to_string();
    assert!(e.contains("site \"riverside\"") && e.contains("another tree of sites"), "{e}");
    assert!(e.contains("aggregator sites apply"), "{e}");
    let e = store.claim_sites(&tree[..2], false).unwrap_err().to_string();
    assert!(e.contains("\"riverside\" of the database's tree is not in this config"), "{e}");
    store.claim_sites(&moved, true).unwrap();
    store.claim_sites(&moved, false).unwrap();
    assert!(store.claim_sites(&tree, false).is_err(), "the replaced tree is the database's now");
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Backend::sqlite()) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Backend::postgres()) } )*
        }
    };
}

both!(
    sighting_round_trip_and_dedup,
    trajectory_rows_follow_their_sightings,
    merges_move_sightings_and_lead_to_the_survivor,
    a_batch_of_sightings_is_one_transaction,
    alerts_round_trip_filter_and_acknowledge,
    crowd_round_trip_and_bucketing,
    latest_crowd_is_the_newest_measurement_of_each_known_camera,
    camera_and_agent_statuses_keep_the_latest,
    open_and_cleared_alerts,
    trajectory_paging_is_keyset_and_stable_under_inserts,
    embeddings_and_replay,
    token_lifecycle,
    audit_log_keeps_write_order,
    watchlist_active_and_removal_erases_the_embedding,
    retention_policy_is_checked,
    restart_keeps_trajectories_and_dedup_state,
    concurrent_writers_and_readers,
    sites_filter_queries_tokens_and_audit_records,
    a_database_holds_one_tree_of_sites,
);

// ---- PostgreSQL only ------------------------------------------------------------------------------

fn pg_open_err(target: &PgTarget) -> StoreError {
    match PostgresStore::open(target) {
        Ok(_) => panic!("{target}: opened"),
        Err(e) => e,
    }
}

#[test]
fn pg_bad_urls_name_store_url_and_what_is_wrong() {
    let cluster = PgCluster::shared();
    let db = cluster.database();

    // nothing listens on the port
    let port = sightline_tests::free_port();
    let nowhere = PgTarget::new(&format!("postgres://sightline@127.0.0.1:{port}/{}", db.name), Some(PASSWORD)).unwrap();
    let started = std::time::Instant::now();
    let e = pg_open_err(&nowhere);
    let msg = e.to_string();
    assert!(matches!(e, StoreError::PgConnect { .. }), "{msg}");
    assert!(
        msg.contains("store.url")
            && msg.contains(&format!("127.0.0.1:{port}/{}", db.name))
            && msg.contains("cannot connect"),
        "{msg}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "bounded by the connect timeout");

    // wrong password: named, and never shown
    let wrong = PgTarget::new(&cluster.url(&db.name), Some("not-the-password")).unwrap();
    let msg = pg_open_err(&wrong).to_string();
    assert!(
        msg.contains("store.url")
            && msg.contains("password authentication failed for user \"sightline\"")
            && msg.contains("store.password_file"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "{msg}");
    // a password in the URL is not shown either
    let in_url =
        PgTarget::new(&format!("postgres://sightline:hunter2-secret@127.0.0.1:{}/{}", cluster.port(), db.name), None)
            .unwrap();
    assert!(!in_url.to_string().contains("hunter2") && !format!("{in_url:?}").contains("hunter2"));
    let msg = pg_open_err(&in_url).to_string();
    assert!(msg.contains("password authentication failed") && !msg.contains("hunter2"), "{msg}");

    // no such database
    let missing = db.target.with_database("no_such_db");
    let msg = pg_open_err(&missing).to_string();
    assert!(
        msg.contains("store.url")
            && msg.contains(&format!("127.0.0.1:{}/no_such_db", cluster.port()))
            && msg.contains("database \"no_such_db\" does not exist"),
        "{msg}"
    );

    // not a URL
    let msg = PgTarget::new("sightline@localhost/db", None).unwrap_err().to_string();
    assert!(msg.contains("store.url"), "{msg}");
}

#[test]
fn pg_foreign_databases_are_refused_untouched() {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    db.admin().batch_execute("CREATE TABLE orders (id serial PRIMARY KEY); GRANT ALL ON orders TO sightline").unwrap();
    let e = pg_open_err(&db.target);
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Foreign { .. }), "{msg}");
    assert!(
        msg.contains("store.url") && msg.contains("not a sightline aggregator database") && msg.contains("orders"),
        "{msg}"
    );
    let tables: i64 =
        db.admin().query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(tables, 1, "nothing was created");

    // another application's schema_migrations
    let other = cluster.database();
    other
        .admin()
        .batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY); INSERT INTO schema_migrations VALUES (1)",
        )
        .unwrap();
    let msg = pg_open_err(&other.target).to_string();
    assert!(msg.contains("not a sightline aggregator database") && msg.contains("another application"), "{msg}");
}

#[test]
fn pg_a_newer_schema_is_refused_untouched() {
    let db = PgCluster::shared().database();
    drop(PostgresStore::open(&db.target).unwrap());
    let newer = migrations::LATEST + 1;
    db.admin()
        .execute("INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')", &[&(newer as i32)])
        .unwrap();
    let snapshot = |db: &PgDatabase| -> Vec<String> {
        db.admin()
            .query(
                "SELECT version || ' ' || name FROM schema_migrations UNION ALL \
                 SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let before = snapshot(&db);
    let e = pg_open_err(&db.target);
    assert!(
        matches!(e, StoreError::TooNew { found, supported, .. } if found == newer && supported == migrations::LATEST)
    );
    let msg = e.to_string();
    assert!(
        msg.contains("store.url")
            && msg.contains(&format!(
                "schema version {newer} is newer than this aggregator supports (up to {})",
                migrations::LATEST
            )),
        "{msg}"
    );
    assert_eq!(snapshot(&db), before, "the database is left as it was");
}

#[test]
fn pg_concurrent_aggregators_migrate_once() {
    // a few rounds: the race it guards against (two aggregators creating the tables) is timing-bound
    for _ in 0..3 {
        let db = PgCluster::shared().database();
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (target, barrier) = (db.target.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    PostgresStore::open(&target).map(|s| s.schema_version().unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap_or_else(|e| panic!("{e}")), migrations::LATEST);
        }
        let versions: Vec<i32> = db
            .admin()
            .query("SELECT version FROM schema_migrations ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=migrations::LATEST as i32).collect::<Vec<_>>());
    }
    // the steps are the same versions, with the same names, as SQLite's
    for (pg, lite) in schema::MIGRATIONS.iter().zip(migrations::MIGRATIONS) {
        assert_eq!((pg.version, pg.name), (lite.version, lite.name));
    }
    assert_eq!(schema::MIGRATIONS.len(), migrations::MIGRATIONS.len());
}

#[test]
fn pg_a_failed_migration_is_rolled_back() {
    let db = PgCluster::shared().database();
    let broken = [
        schema::MIGRATIONS[0],
        schema::Migration {
            version: 2,
            name: "broken step",
            sql: "CREATE TABLE half (a integer); INSERT INTO missing VALUES (1);",
        },
    ];
    let msg = PostgresStore::open_with(&db.target, &broken).unwrap_err().to_string();
    assert!(
        msg.contains("store.url")
            && msg.contains("migration to schema version 2 (broken step) failed and was rolled back")
            && msg.contains("missing"),
        "{msg}"
    );
    let half: bool = db.admin().query_one("SELECT to_regclass('half') IS NOT NULL", &[]).unwrap().get(0);
    assert!(!half, "the failed step left nothing behind");
    let store = PostgresStore::open(&db.target).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
}

#[test]
fn pg_migrates_a_version_2_audit_log_marking_refused_photos() {
    let db = PgCluster::shared().database();
    drop(PostgresStore::open_with(&db.target, &schema::MIGRATIONS[..2]).unwrap());
    for query in [r#"{"limit":20}"#, r#"{"limit":20,"outcome":"no face found in the photo"}"#] {
        db.admin()
            .execute(
                "INSERT INTO audit (ts, token, role, action, purpose, query, results) \
                 VALUES (1795420800000, 'acme', 'integrator', 'search', 'case 7', $1, 0)",
                &[&query],
            )
            .unwrap();
    }
    let store = PostgresStore::open(&db.target).unwrap();
    let log = store.audit_log(&AuditQuery { limit: 10, ..Default::default() }).unwrap();
    let outcomes: Vec<AuditOutcome> = log.iter().map(|r| r.entry.outcome).collect();
    assert_eq!(outcomes, [AuditOutcome::Answered, AuditOutcome::Refused]);
}

/// A purge removes the rows at once; `compact` (VACUUM FULL) removes their bytes from the
/// database's files; a restart finds the rest.
#[test]
fn pg_retention_leaves_no_embedding_after_compact() {
    let db = PgCluster::shared().database();
    let store = PostgresStore::open(&db.target).unwrap();
    let now = T0 + Duration::days(30);
    let (old_t, new_t) = (Uuid::now_v7(), Uuid::now_v7());
    let old_emb = pattern(0x3e91);
    let new_emb = pattern(0x3e92);
    let old = sighting("gate", now - Duration::days(9), now - Duration::days(8), old_emb.clone());
    let new = sighting("gate", now - Duration::days(1), now - Duration::days(1), new_emb.clone());
    // the kept row first: a plain VACUUM leaves the later, deleted one's bytes in the page's free
    // space (were it first, the kept row would move over them)
    store.record_sighting(&new, new_t, None, new.last_seen).unwrap();
    store.record_sighting(&old, old_t, None, old.last_seen).unwrap();
    assert!(trace_in(&db.file_bytes(), &old_emb), "the test can see embeddings in the files");

    let report = store.purge(now, &RetentionPolicy::default()).unwrap();
    assert_eq!((report.sightings, report.trajectories_deleted, report.trajectories_updated), (1, 1, 0));
    assert_eq!(report.oldest_sighting, Some(new.last_seen));
    assert!(!store.seen(old.id).unwrap() && store.sighting(old.id).unwrap().is_none());
    assert!(store.trajectory(old_t).unwrap().is_none());
    assert_eq!(store.embeddings(MODEL, None, None).unwrap().len(), 1);

    store.compact().unwrap();
    let bytes = db.file_bytes();
    assert!(!trace_in(&bytes, &old_emb), "a purged embedding is still in the database files after compact");
    assert!(trace_in(&bytes, &new_emb), "kept embeddings are still there");
    drop(store);

    let store = PostgresStore::open(&db.target).unwrap();
    assert!(store.seen(new.id).unwrap() && !store.seen(old.id).unwrap());
    assert_eq!(store.trajectory(new_t).unwrap().unwrap().summary.sighting_count, 1);
    let again = store.purge(now, &RetentionPolicy::default()).unwrap();
    assert_eq!(again.sightings, 0);
}

/// Two aggregators on one database: sightings of one trajectory written at once from both keep
/// its row exact (writers take turns on it), and their audit records get distinct, increasing
/// `seq`s in commit order.
#[test]
fn pg_two_stores_share_one_database() {
    let db = PgCluster::shared().database();
    let stores: Vec<Arc<dyn Store>> =
        (0..2).map(|_| Arc::new(PostgresStore::open(&db.target).unwrap()) as Arc<dyn Store>).collect();
    let traj = Uuid::now_v7();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = stores[w % 2].clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    let t = T0 + secs(i * 4 + w as i64);
                    let s = sighting(&format!("cam-{w}"), t, t + secs(1), pattern(0x3ea0));
                    assert!(store.record_sighting(&s, traj, Some(0.2), t).unwrap());
                    seqs.push(store.audit(&audit_entry(t, &format!("w{w}"), AuditAction::Search, 1)).unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut seqs: Vec<i64> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let t = stores[0].trajectory(traj).unwrap().unwrap();
    assert_eq!(t.summary.sighting_count, 80);
    assert_eq!(t.sightings.len(), 80);
    assert_eq!((t.summary.first_seen, t.summary.last_seen), (T0, T0 + secs(19 * 4 + 3) + secs(1)));
    assert_eq!(t.summary.cameras, ["cam-0", "cam-1", "cam-2", "cam-3"]);
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 80, "no seq given twice");
    let log = stores[1].audit_log(&AuditQuery { limit: 1000, ..Default::default() }).unwrap();
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs, "every record, in seq order");
}
