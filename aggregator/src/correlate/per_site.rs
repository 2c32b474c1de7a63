//! One correlator per site: a site's cameras share a frame and walkways, so a trajectory never
//! crosses from one site to another (people who do are two trajectories, one per site).

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::config::CorrelationConfig;
use super::correlator::{Assignment, Correlator, Observation};
use crate::site::SiteError;
use crate::sites::Sites;

/// The correlators of a deployment's sites.
pub struct SiteCorrelators {
    by_site: HashMap<String, Correlator>,
}

impl SiteCorrelators {
    /// A correlator for each site with cameras.
    pub fn new(cfg: &CorrelationConfig, sites: &Sites) -> Result<Self, SiteError> {
        let mut by_site = HashMap::new();
        for site in sites.iter().filter(|s| !s.model.cameras().is_empty()) {
            by_site.insert(site.id().to_owned(), Correlator::new(cfg.clone(), site.model.clone())?);
        }
        Ok(SiteCorrelators { by_site })
    }

    /// Whether a correlator serves `site`.
    pub fn serves(&self, site: &str) -> bool {
        self.by_site.contains_key(site)
    }

    /// Places a sighting of `site`, which must be served ([`Self::serves`]).
    ///
    /// # Panics
    /// When no correlator serves `site`.
    pub fn assign(&mut self, site: &str, obs: Observation) -> Assignment {
        self.by_site.get_mut(site).expect("a site with a correlator (checked by the caller)").assign(obs)
    }

    /// Rebuilds state from a stored placement; `false` when no correlator serves `site`.
    pub fn restore(&mut self, site: &str, obs: Observation, trajectory: Uuid) -> bool {
        self.by_site.get_mut(site).map(|c| c.restore(obs, trajectory)).is_some()
    }

    pub fn forget_before(&mut self, t: OffsetDateTime) {
        self.by_site.values_mut().for_each(|c| c.forget_before(t));
    }

    /// Live trajectories, over every site.
    pub fn live(&self) -> usize {
        self.by_site.values().map(Correlator::live).sum()
    }
}
