//! Real sightings of Lin-Manuel Miranda for the aggregator: the real clip through two edge agents,
//! as cameras `stage` and `lobby` 30 m apart (the lobby camera sees the clip transcoded to
//! 960×540), so that his sightings on both join one trajectory and a photo search finds it.
//! Used by the aggregator's end-to-end test and the dashboard's browser test.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sightline_contract::{Payload, Sighting, Trajectory};
use uuid::Uuid;

use crate::{Agent, Aggregator, Subscriber, agent_config, gst_launch, media, reference_embedding};

/// A site config (`[site]` and `[[camera]]` tables) with the two cameras of [`miranda_walks`]
/// and `extra` (more `[[camera]]` tables) after them.
pub fn miranda_site(extra: &str) -> String {
    format!(
        "[site]\nid = \"testsite\"\n\n[[camera]]\nid = \"stage\"\nposition = [0.0, 0.0]\n\n\
         [[camera]]\nid = \"lobby\"\nposition = [30.0, 0.0]\n\n{extra}"
    )
}

/// A `[[camera]]` table of an edge agent replaying `file`.
pub fn file_camera(id: &str, file: &Path) -> String {
    format!("[[camera]]\nid = \"{id}\"\nfile = \"{}\"\n", file.display())
}

/// What the walk produced, as the aggregator announced it.
pub struct MirandaWalk {
    /// Every sighting the agents published.
    pub sightings: Vec<Sighting>,
    /// The trajectory update of each sighting, by sighting id.
    pub placed: HashMap<Uuid, Trajectory>,
    /// The embedding of his photo (`lin-manuel-miranda.png`).
    pub photo: Vec<f32>,
}

impl MirandaWalk {
    /// Embedding distance of a sighting to his photo.
    pub fn to_photo(&self, s: &Sighting) -> f32 {
        sightline_vision::distance(&s.embedding, &self.photo)
    }

    pub fn on(&self, camera: &str) -> Vec<&Sighting> {
        self.sightings.iter().filter(|s| s.camera == camera).collect()
    }

    /// The trajectories of his sightings on the stage camera (within 0.6 of his photo).
    pub fn his_stage_trajectories(&self) -> HashSet<Uuid> {
        self.on("stage").into_iter().filter(|s| self.to_photo(s) < 0.6).map(|s| self.placed[&s.id].trajectory).collect()
    }

    /// His sighting on the lobby camera: the lobby sighting most like his photo.
    pub fn him_in_lobby(&self) -> Option<&Sighting> {
        self.on("lobby").into_iter().min_by(|a, b| self.to_photo(a).total_cmp(&self.to_photo(b)))
    }

    /// His trajectory across both cameras: the one his lobby sighting joined, when it is also
    /// one of his stage sightings' (an error naming the distances otherwise).
    pub fn trajectory(&self) -> Result<Uuid> {
        let his = self.his_stage_trajectories();
        if his.is_empty() {
            bail!("Miranda not seen on stage: {:?}", self.report());
        }
        let lobby = self.him_in_lobby().ok_or_else(|| anyhow!("no lobby sightings"))?;
        let t = self.placed[&lobby.id].trajectory;
        if !his.contains(&t) {
            bail!(
                "his lobby sighting (at {:.3} from his photo) did not join his trajectory {his:?}: {:?}",
                self.to_photo(lobby),
                self.report()
            );
        }
        Ok(t)
    }

    /// (camera, distance to his photo, trajectory) of every sighting.
    pub fn report(&self) -> Vec<(String, f32, Uuid)> {
        self.sightings.iter().map(|s| (s.camera.clone(), self.to_photo(s), self.placed[&s.id].trajectory)).collect()
    }
}

/// The sightings-per-camera total an agent logged at its end (`camera totals … sightings=N`).
fn published(agent: &Agent) -> Result<usize> {
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("camera totals")).ok_or_else(|| anyhow!("no totals:\n{log}"))?;
    let at = line.find("sightings=").ok_or_else(|| anyhow!("no sightings= in {line}"))? + "sightings=".len();
    line[at..].split_whitespace().next().unwrap_or_default().parse().with_context(|| format!("in {line}"))
}

/// Lin-Manuel Miranda passes the stage camera, walks 30 m and passes the lobby camera: two edge
/// agents replay the clip (`dir` gets the transcoded copy) into `agg`'s broker on `port`, and
/// this waits until the aggregator placed and announced every sighting they published. The site
/// must have cameras `stage` and `lobby` ([`miranda_site`]).
pub fn miranda_walks(agg: &Aggregator, port: u16, dir: &Path) -> Result<MirandaWalk> {
    let mut sub = Subscriber::connect(port)?;
    let clip = media("short_hamilton_clip.mp4");
    let scaled = dir.join("lobby.mp4");
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,width=960,height=540 ! \
         x264enc speed-preset=ultrafast ! mp4mux ! filesink location={}",
        clip.display(),
        scaled.display()
    ))?;

    let mut stage = Agent::start(&agent_config(port, &file_camera("stage", &clip)))?;
    if !stage.wait_exit(Duration::from_secs(90))?.success() {
        bail!("the stage agent failed:\n{}", stage.log());
    }
    // the walk: 30 m between the cameras (10 m between their views) takes a few seconds
    std::thread::sleep(Duration::from_secs(5));
    let mut lobby = Agent::start(&agent_config(port, &file_camera("lobby", &scaled)))?;
    if !lobby.wait_exit(Duration::from_secs(90))?.success() {
        bail!("the lobby agent failed:\n{}", lobby.log());
    }

    // every sighting the agents published is placed and announced
    let expected = published(&stage)? + published(&lobby)?;
    let mut bad = None;
    sub.wait_until(Duration::from_secs(30), |m| {
        let mut ids = HashSet::new();
        for t in m.iter().filter(|m| m.topic.ends_with("/trajectory")) {
            match Trajectory::from_json(&t.payload) {
                Ok(t) => {
                    ids.insert(t.sighting);
                }
                Err(e) => bad = Some(e.to_string()),
            }
        }
        ids.len() >= expected && m.iter().filter(|m| m.topic.ends_with("/sighting")).count() >= expected
    })
    .with_context(|| format!("{expected} sightings expected\naggregator log:\n{}", agg.log()))?;
    if let Some(e) = bad {
        bail!("a trajectory update is not valid: {e}");
    }
    let placed: HashMap<Uuid, Trajectory> = sub
        .on("trajectory")
        .iter()
        .map(|m| Trajectory::from_json(&m.payload).map(|t| (t.sighting, t)))
        .collect::<Result<_, _>>()?;
    let sightings: Vec<Sighting> =
        sub.on("sighting").iter().map(|m| Sighting::from_json(&m.payload)).collect::<Result<_, _>>()?;
    if let Some(s) = sightings.iter().find(|s| !placed.contains_key(&s.id)) {
        bail!("sighting {} was not placed", s.id);
    }
    Ok(MirandaWalk { sightings, placed, photo: reference_embedding("lin-manuel-miranda.png") })
}
