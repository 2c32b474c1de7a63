//! Fixtures for tests and benchmarks (cargo feature `testing`): valid payloads with sensible
//! defaults, so that a test names only what it varies and a new field of the contract is added
//! in one place rather than in every test.
//!
//! `sighting().camera("lobby").at(t).embedding(face).build()`: a valid [`Sighting`] of camera
//! `lobby` whose face passed at `t`, everything else the defaults of [`SightingBuilder`].

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::{BestShot, Sighting, new_event_id};

/// A new [`SightingBuilder`].
pub fn sighting() -> SightingBuilder {
    SightingBuilder::new()
}

/// Builds a valid [`Sighting`]. Defaults: a new event id, camera `stage` of site `testsite`,
/// track 1, the face passing at 2026-11-23 08:00:00 UTC (first seen and best shot then, last seen
/// 2 s later), a 40x40 px face in a 640x360 frame (detection score 0.9, quality 0.8), no ground
/// position, model `dlib-resnet-v1` and a unit embedding of 128 values.
#[derive(Clone, Debug)]
#[must_use]
pub struct SightingBuilder {
    sighting: Sighting,
}

impl Default for SightingBuilder {
    fn default() -> Self {
        SightingBuilder::new()
    }
}

/// How long the face of a default sighting stays in view.
const IN_VIEW: time::Duration = time::Duration::seconds(2);

impl SightingBuilder {
    pub fn new() -> Self {
        let t = datetime!(2026-11-23 08:00:00 UTC);
        let dim = 128;
        SightingBuilder {
            sighting: Sighting {
                id: new_event_id(),
                site: "testsite".into(),
                camera: "stage".into(),
                track: 1,
                first_seen: t,
                last_seen: t + IN_VIEW,
                best: BestShot {
                    ts: t,
                    bbox: [10.0, 10.0, 40.0, 40.0],
                    landmarks: [[0.0; 2]; 5],
                    det_score: 0.9,
                    quality: 0.8,
                },
                frame_size: [640, 360],
                ground: None,
                model: "dlib-resnet-v1".into(),
                embedding: vec![(1.0 / dim as f32).sqrt(); dim],
            },
        }
    }

    pub fn build(self) -> Sighting {
        self.sighting
    }

    pub fn id(mut self, id: Uuid) -> Self {
        self.sighting.id = id;
        self
    }

    pub fn site(mut self, site: impl Into<String>) -> Self {
        self.sighting.site = site.into();
        self
    }

    pub fn camera(mut self, camera: impl Into<String>) -> Self {
        self.sighting.camera = camera.into();
        self
    }

    pub fn track(mut self, track: u64) -> Self {
        self.sighting.track = track;
        self
    }

    /// The face passed at `t`: first seen and best shot at `t`, last seen 2 s later.
    pub fn at(mut self, t: OffsetDateTime) -> Self {
        self.sighting.first_seen = t;
        self.sighting.best.ts = t;
        self.sighting.last_seen = t + IN_VIEW;
        self
    }

    pub fn first_seen(mut self, t: OffsetDateTime) -> Self {
        self.sighting.first_seen = t;
        self
    }

    pub fn last_seen(mut self, t: OffsetDateTime) -> Self {
        self.sighting.last_seen = t;
        self
    }

    /// The whole best shot (see [`Self::best_ts`], [`Self::quality`] for its parts).
    pub fn best(mut self, best: BestShot) -> Self {
        self.sighting.best = best;
        self
    }

    pub fn best_ts(mut self, t: OffsetDateTime) -> Self {
        self.sighting.best.ts = t;
        self
    }

    /// `[x, y, w, h]` of the best shot's face, in source-frame pixels.
    pub fn bbox(mut self, bbox: [f32; 4]) -> Self {
        self.sighting.best.bbox = bbox;
        self
    }

    pub fn det_score(mut self, score: f32) -> Self {
        self.sighting.best.det_score = score;
        self
    }

    pub fn quality(mut self, quality: f32) -> Self {
        self.sighting.best.quality = quality;
        self
    }

    pub fn frame_size(mut self, size: [u32; 2]) -> Self {
        self.sighting.frame_size = size;
        self
    }

    /// Metres in the site frame.
    pub fn ground(mut self, ground: [f64; 2]) -> Self {
        self.sighting.ground = Some(ground);
        self
    }

    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.sighting.model = model.into();
        self
    }

    pub fn embedding(mut self, embedding: impl Into<Vec<f32>>) -> Self {
        self.sighting.embedding = embedding.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    #[test]
    fn the_default_sighting_is_valid_and_round_trips() {
        let s = sighting().build();
        assert!(s.first_seen <= s.last_seen && s.best.bbox[2] > 0.0 && s.best.bbox[3] > 0.0);
        let norm: f32 = s.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        crate::validate_id("site", &s.site).unwrap();
        crate::validate_id("camera", &s.camera).unwrap();
        assert_eq!(Sighting::from_json(&s.to_json()).unwrap(), s);
        assert_ne!(sighting().build().id, s.id, "each sighting is a new event");
    }

    #[test]
    fn setters_set_what_they_name() {
        let t = datetime!(2026-12-01 10:00:00.5 UTC);
        let s = sighting()
            .site("riverside")
            .camera("gate")
            .track(7)
            .at(t)
            .quality(0.3)
            .ground([1.0, 2.0])
            .model("m")
            .embedding([1.0, 0.0])
            .build();
        assert_eq!((s.site.as_str(), s.camera.as_str(), s.track), ("riverside", "gate", 7));
        assert_eq!((s.first_seen, s.best.ts, s.last_seen), (t, t, t + IN_VIEW));
        assert_eq!((s.best.quality, s.ground, s.model.as_str()), (0.3, Some([1.0, 2.0]), "m"));
        assert_eq!(s.embedding, [1.0, 0.0]);
        let later = sighting().first_seen(t).last_seen(t + IN_VIEW * 3).best_ts(t + IN_VIEW).build();
        assert_eq!((later.first_seen, later.best.ts, later.last_seen), (t, t + IN_VIEW, t + IN_VIEW * 3));
    }
}
