//! One correlator per site: a site's cameras share a frame and walkways, so a trajectory never
//! crosses from one site to another (people who do are two trajectories, one per site).

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::config::CorrelationConfig;
use super::correlator::{Assignment, Correlator, Merge, Observation};
use crate::site::{SiteError, SiteModel};
use crate::sites::Sites;

/// The correlators of a deployment's sites: of every site with cameras, or, on a node of a
/// cluster, of the sites the node owns at the moment ([`Self::take`], [`Self::hand_over`]).
pub struct SiteCorrelators {
    cfg: CorrelationConfig,
    /// The model of each site with cameras (checked by [`Self::none`]).
    models: HashMap<String, SiteModel>,
    by_site: HashMap<String, Correlator>,
}

impl SiteCorrelators {
    /// A correlator for each site with cameras.
    pub fn new(cfg: &CorrelationConfig, sites: &Sites) -> Result<Self, SiteError> {
        let mut all = SiteCorrelators::none(cfg, sites)?;
        let ids: Vec<String> = all.models.keys().cloned().collect();
        for site in ids {
            all.take(&site);
        }
        Ok(all)
    }

    /// No correlator yet: sites are taken one by one.
    pub fn none(cfg: &CorrelationConfig, sites: &Sites) -> Result<Self, SiteError> {
        let mut models = HashMap::new();
        for site in sites.iter().filter(|s| !s.model.cameras().is_empty()) {
            // (checked once here, so that taking a site cannot fail)
            Correlator::new(cfg.clone(), site.model.clone())?;
            models.insert(site.id().to_owned(), site.model.clone());
        }
        Ok(SiteCorrelators { cfg: cfg.clone(), models, by_site: HashMap::new() })
    }

    /// Starts serving `site` with an empty correlator (to be restored); `false` when the site has
    /// no cameras in the config.
    pub fn take(&mut self, site: &str) -> bool {
        let Some(model) = self.models.get(site) else { return false };
        let fresh =
            Correlator::new(self.cfg.clone(), model.clone()).expect("a site model checked by SiteCorrelators::none");
        self.by_site.insert(site.to_owned(), fresh);
        true
    }

    /// Stops serving `site`, forgetting its correlator's state (the next owner rebuilds it from
    /// the store).
    pub fn hand_over(&mut self, site: &str) {
        self.by_site.remove(site);
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

    /// The merges `site`'s correlator made since the last call ([`Correlator::take_merges`]).
    pub fn take_merges(&mut self, site: &str) -> Vec<Merge> {
        self.by_site.get_mut(site).map(Correlator::take_merges).unwrap_or_default()
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
