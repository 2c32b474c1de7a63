//! Who may do what on the broker (`docs/installing.md`, "Broker identities and topic rights").
//!
//! The identities come from the aggregator's config: every `[[camera]]` names the edge agent
//! that publishes it (`agent`), and an agent logs in to the broker with its agent id as user
//! name; the aggregator logs in as its `[mqtt] username`; `[broker] observers` are logins that
//! may read the topics that identify nobody (crowd counts, alerts, statuses) and publish nothing.
//!
//! [`Policy::decide`] judges one client action: a CONNECT (its client id and Will topic), a
//! PUBLISH (its topic) or a SUBSCRIBE (one filter). A filter with wildcards is allowed only when
//! every topic it can match is allowed. The embedded broker's gate (`gate.rs`) asks it for
//! every packet; [`Policy::render`] writes the same rules for mosquitto and EMQX.
//!
//! | login | publish | subscribe | client ids |
//! |---|---|---|---|
//! | the aggregator | `sightline/v1/#` | `sightline/v1/#`, also as `$share/{group}/…` | its `[mqtt] client_id`, `{client_id}-*` |
//! | agent A | `sightline/v1/{site}/{camera}/{sighting,crowd,alert,status,heatmap}` of its cameras, `sightline/v1/{site}/agent/A/status` (its only Will topic) | nothing | `sightline-edge-A`, `A` |
//! | observer O | nothing | `sightline/v1/{site}/+/{crowd,alert,status}`, `sightline/v1/{site}/agent/+/status` | `O`, `O-*` |
//!
//! Everything else is refused, and a client id belongs to one login only: no login can take
//! over another's session (a broker drops the older of two connections with one client id).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sightline_contract::TOPIC_ROOT;

/// The topic kinds an agent publishes for each of its cameras (`heatmap`: the protocol's
/// extension, a picture of the scene: the aggregator's to read, not observers').
const CAMERA_KINDS: [&str; 5] = ["sighting", "crowd", "alert", "status", "heatmap"];
/// The camera topic kinds an observer may read.
const OBSERVED_KINDS: [&str; 3] = ["crowd", "alert", "status"];

/// A config key at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct IdentityError {
    pub key: String,
    pub message: String,
}

pub(crate) fn fail<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, IdentityError> {
    Err(IdentityError { key: key.into(), message: message.into() })
}

/// Why an action was refused: the label of `sightline_aggregator_broker_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A CONNECT without a user name.
    NoLogin,
    /// A user name that is not the aggregator's, an agent's or an observer's.
    UnknownLogin,
    /// A client id this login may not use (another login's, or none of its own).
    ClientId,
    /// A Will topic this login may not publish on.
    WillTopic,
    /// A PUBLISH outside the login's topics.
    Publish,
    /// A SUBSCRIBE filter that can match a topic the login may not read.
    Subscribe,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoLogin => "no_login",
            Refusal::UnknownLogin => "unknown_login",
            Refusal::ClientId => "client_id",
            Refusal::WillTopic => "will_topic",
            Refusal::Publish => "publish",
            Refusal::Subscribe => "subscribe",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NoLogin => "no user name: every client logs in",
            Refusal::UnknownLogin => "the login is not the aggregator's, an agent's or an observer's",
            Refusal::ClientId => "the client id is not one this login may use",
            Refusal::WillTopic => "the Will topic is not one this login may publish on",
            Refusal::Publish => "the topic is not one this login may publish on",
            Refusal::Subscribe => "the filter can match topics this login may not read",
        })
    }
}

/// One client action to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    Connect { will_topic: Option<&'a str> },
    Publish { topic: &'a str },
    Subscribe { filter: &'a str },
}

/// A login's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role<'a> {
    Aggregator,
    Agent(&'a Agent),
    Observer,
}

/// What an agent may publish: its cameras, all of one site.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Agent {
    site: String,
    cameras: BTreeSet<String>,
}

/// The broker's access rules for the deployment's sites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    sites: BTreeSet<String>,
    /// The aggregator's login and client id.
    aggregator: Option<(String, String)>,
    /// Agent id -> its site and cameras.
    agents: BTreeMap<String, Agent>,
    observers: BTreeSet<String>,
}

/// What the rules are made of: the sites, each camera's agent, the aggregator's login and
/// client id, the observers (from the aggregator's config: `Config::identities`).
#[derive(Clone, Debug)]
pub struct Identities<'a> {
    pub sites: Vec<&'a str>,
    /// (site id, camera id, the agent that publishes it).
    pub cameras: Vec<(&'a str, &'a str, Option<&'a str>)>,
    /// The aggregator's login (`[mqtt] username`) and client id.
    pub aggregator: Option<(&'a str, &'a str)>,
    pub observers: &'a [String],
}

impl Policy {
    /// The rules of `ids`: every camera must name its agent.
    pub fn new(ids: &Identities<'_>) -> Result<Policy, IdentityError> {
        let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
        for &(site, camera, agent) in &ids.cameras {
            let Some(agent) = agent else {
                return fail(
                    format!("camera[{camera}].agent"),
                    "name the edge agent that publishes this camera (its broker login): \
                     needed for per-agent topic rights",
                );
            };
            let rights = agents
                .entry(agent.to_owned())
                .or_insert_with(|| Agent { site: site.to_owned(), cameras: BTreeSet::new() });
            if rights.site != site {
                return fail(
                    format!("camera[{camera}].agent"),
                    format!(
                        "agent {agent:?} already publishes cameras of site {:?}: an edge agent serves one site",
                        rights.site
                    ),
                );
            }
            rights.cameras.insert(camera.to_owned());
        }
        let aggregator = ids.aggregator.map(|(login, client_id)| (login.to_owned(), client_id.to_owned()));
        let mut observers = BTreeSet::new();
        for o in ids.observers {
            sightline_contract::validate_id("observer login", o)
                .map_err(|e| IdentityError { key: "broker.observers".into(), message: e.to_string() })?;
            if !observers.insert(o.clone()) {
                return fail("broker.observers", format!("{o:?} is listed twice"));
            }
        }
        let policy =
            Policy { sites: ids.sites.iter().map(|s| (*s).to_owned()).collect(), aggregator, agents, observers };
        policy.check_roles(ids)?;
        Ok(policy)
    }

    /// One part per login, and each login's own client ids its own.
    fn check_roles(&self, ids: &Identities<'_>) -> Result<(), IdentityError> {
        let camera_of = |agent: &str| {
            let c = ids.cameras.iter().find(|(_, _, a)| *a == Some(agent)).map(|(_, c, _)| *c);
            format!("camera[{}].agent", c.unwrap_or_default())
        };
        if let Some((login, _)) = &self.aggregator {
            if self.agents.contains_key(login) {
                return fail(camera_of(login), format!("{login:?} is the aggregator's login (mqtt.username)"));
            }
            if self.observers.contains(login) {
                return fail("broker.observers", format!("{login:?} is the aggregator's login (mqtt.username)"));
            }
        }
        if let Some(o) = self.observers.iter().find(|o| self.agents.contains_key(*o)) {
            return fail("broker.observers", format!("{o:?} is an agent's login"));
        }
        for agent in self.agents.keys() {
            for id in [format!("sightline-edge-{agent}"), agent.clone()] {
                if self.client_id_owner(&id) != Some(agent) {
                    return fail(
                        camera_of(agent),
                        format!("the client id {id:?} of agent {agent:?} is the aggregator's (mqtt.client_id)"),
                    );
                }
            }
        }
        for o in &self.observers {
            if self.client_id_owner(o) != Some(o) {
                return fail(
                    "broker.observers",
                    format!("{o:?} is a client id of the aggregator or of an agent: choose another name"),
                );
            }
        }
        Ok(())
    }

    /// Decides whether `login` (the CONNECT's user name) connected as `client_id` may do `action`.
    pub fn decide(&self, login: Option<&str>, client_id: &str, action: Action<'_>) -> Result<(), Refusal> {
        let login = login.ok_or(Refusal::NoLogin)?;
        let role = self.role(login).ok_or(Refusal::UnknownLogin)?;
        match action {
            Action::Connect { will_topic } => {
                if self.client_id_owner(client_id) != Some(login) {
                    return Err(Refusal::ClientId);
                }
                let will_ok = match (role, will_topic) {
                    (_, None) => true,
                    (Role::Agent(rights), Some(topic)) => topic == agent_status(&rights.site, login),
                    (role, Some(topic)) => self.may_publish(role, login, topic),
                };
                if will_ok { Ok(()) } else { Err(Refusal::WillTopic) }
            }
            Action::Publish { topic } => {
                if self.may_publish(role, login, topic) {
                    Ok(())
                } else {
                    Err(Refusal::Publish)
                }
            }
            Action::Subscribe { filter } => {
                if self.may_subscribe(role, filter) {
                    Ok(())
                } else {
                    Err(Refusal::Subscribe)
                }
            }
        }
    }

    fn role(&self, login: &str) -> Option<Role<'_>> {
        if self.aggregator.as_ref().is_some_and(|(l, _)| l == login) {
            return Some(Role::Aggregator);
        }
        if let Some(rights) = self.agents.get(login) {
            return Some(Role::Agent(rights));
        }
        self.observers.contains(login).then_some(Role::Observer)
    }

    /// The one login a client id belongs to: the aggregator's client id, then the agents'
    /// `sightline-edge-{A}` and `{A}`, then the observers' `{O}` and `{O}-*`, then the
    /// aggregator's `{client id}-*`.
    fn client_id_owner(&self, client_id: &str) -> Option<&str> {
        if let Some((login, id)) = &self.aggregator
            && client_id == id
        {
            return Some(login);
        }
        for agent in self.agents.keys() {
            if client_id == agent || client_id.strip_prefix("sightline-edge-") == Some(agent) {
                return Some(agent);
            }
        }
        for o in &self.observers {
            if client_id == o || client_id.strip_prefix(o.as_str()).is_some_and(|rest| rest.starts_with('-')) {
                return Some(o);
            }
        }
        match &self.aggregator {
            Some((login, id)) if client_id.strip_prefix(id.as_str()).is_some_and(|rest| rest.starts_with('-')) => {
                Some(login)
            }
            _ => None,
        }
    }

    fn may_publish(&self, role: Role<'_>, login: &str, topic: &str) -> bool {
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return false;
        }
        match role {
            Role::Aggregator => topic.strip_prefix(TOPIC_ROOT).is_some_and(|rest| rest.starts_with('/')),
            Role::Agent(rights) => {
                if topic == agent_status(&rights.site, login) {
                    return true;
                }
                let levels: Vec<&str> = topic.split('/').collect();
                let root: Vec<&str> = TOPIC_ROOT.split('/').collect();
                levels.len() == root.len() + 3
                    && levels[..root.len()] == root[..]
                    && levels[root.len()] == rights.site
                    && rights.cameras.contains(levels[root.len() + 1])
                    && CAMERA_KINDS.contains(&levels[root.len() + 2])
            }
            Role::Observer => false,
        }
    }

    fn may_subscribe(&self, role: Role<'_>, filter: &str) -> bool {
        match role {
            Role::Aggregator => {
                let filter = match filter.strip_prefix("$share/") {
                    Some(rest) => match rest.split_once('/') {
                        Some((group, rest)) if !group.is_empty() && !group.contains(['+', '#']) => rest,
                        _ => return false,
                    },
                    None => filter,
                };
                filter_within(filter, &format!("{TOPIC_ROOT}/#"))
            }
            Role::Agent(_) => false,
            Role::Observer => self.observer_filters().iter().any(|allowed| filter_within(filter, allowed)),
        }
    }

    /// What observers may subscribe to (and read).
    fn observer_filters(&self) -> Vec<String> {
        let mut filters = Vec::new();
        for site in &self.sites {
            filters.extend(OBSERVED_KINDS.iter().map(|k| format!("{TOPIC_ROOT}/{site}/+/{k}")));
            filters.push(agent_status(site, "+"));
        }
        filters
    }

    /// The topics agent `agent` may publish on.
    fn agent_topics(agent: &str, rights: &Agent) -> Vec<String> {
        let site = &rights.site;
        let mut topics: Vec<String> = rights
            .cameras
            .iter()
            .flat_map(|c| CAMERA_KINDS.iter().map(move |k| format!("{TOPIC_ROOT}/{site}/{c}/{k}")))
            .collect();
        topics.push(agent_status(site, agent));
        topics
    }

    /// The rules as an ACL file for `format`, ready to install (its comments say how).
    pub fn render(&self, format: AclFormat) -> Result<String, IdentityError> {
        let Some((aggregator, _)) = &self.aggregator else {
            return fail("mqtt.username", "the aggregator's broker login is needed to write its access rules");
        };
        if aggregator.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return fail("mqtt.username", "a login with spaces or control characters cannot go into an ACL file");
        }
        let mut out = String::new();
        let site = join(&self.sites);
        let all = format!("{TOPIC_ROOT}/#");
        match format {
            AclFormat::Mosquitto => {
                let _ = write!(
                    out,
                    "# sightline broker access rules for sites {site} (`aggregator broker-acl --format mosquitto`).\n\
                     # Install as mosquitto's acl_file, with these lines in mosquitto.conf (mosquitto 2):\n\
                     #   allow_anonymous false\n\
                     #   password_file /etc/mosquitto/passwd   # mosquitto_passwd: a login for each user below\n\
                     #   acl_file /etc/mosquitto/sightline.acl  # this file\n\
                     # mosquitto grants every subscription and filters each message by the read rules;\n\
                     # it acknowledges a denied publish and drops it. It does not tie client ids to\n\
                     # logins: see docs/installing.md.\n\
                     # Regenerate after adding a camera, an agent or an observer.\n\n\
                     # the aggregator: everything under {TOPIC_ROOT}\n\
                     user {aggregator}\ntopic readwrite {all}\n"
                );
                // (mosquitto checks what a subscriber reads on each message's topic: a shared
                // subscription needs no rule of its own)
                for (agent, rights) in &self.agents {
                    let _ = write!(
                        out,
                        "\n# agent {agent}: publishes its cameras ({}) and its status; reads nothing\nuser {agent}\n",
                        join(&rights.cameras)
                    );
                    for t in Self::agent_topics(agent, rights) {
                        let _ = writeln!(out, "topic write {t}");
                    }
                }
                for o in &self.observers {
                    let _ = write!(
                        out,
                        "\n# observer {o}: crowd counts, alerts and statuses; publishes nothing\nuser {o}\n"
                    );
                    for f in self.observer_filters() {
                        let _ = writeln!(out, "topic read {f}");
                    }
                }
            }
            AclFormat::Emqx => {
                let _ = write!(
                    out,
                    "%% sightline broker access rules for sites {site} (`aggregator broker-acl --format emqx`).\n\
                     %% EMQX 5: replace the file authorizer's acl.conf with this file (authorization.sources,\n\
                     %% type = file) and set authorization.no_match = deny; logins come from EMQX's\n\
                     %% authentication (a user for each login below). EMQX does not tie client ids to logins:\n\
                     %% see docs/installing.md. Regenerate after adding a camera, an agent or an observer.\n\n\
                     %% the aggregator: everything under {TOPIC_ROOT}\n\
                     {{allow, {{username, {}}}, all, [{}]}}.\n",
                    erl(aggregator),
                    erl(&all)
                );
                for (agent, rights) in &self.agents {
                    let topics: Vec<String> = Self::agent_topics(agent, rights).iter().map(|t| erl(t)).collect();
                    let _ = write!(
                        out,
                        "\n%% agent {agent}: publishes its cameras ({}) and its status; reads nothing\n\
                         {{allow, {{username, {}}}, publish, [{}]}}.\n",
                        join(&rights.cameras),
                        erl(agent),
                        topics.join(", ")
                    );
                }
                for o in &self.observers {
                    let filters: Vec<String> = self.observer_filters().iter().map(|f| erl(f)).collect();
                    let _ = write!(
                        out,
                        "\n%% observer {o}: crowd counts, alerts and statuses; publishes nothing\n\
                         {{allow, {{username, {}}}, subscribe, [{}]}}.\n",
                        erl(o),
                        filters.join(", ")
                    );
                }
                out.push_str("\n%% everything else, for every client\n{deny, all}.\n");
            }
        }
        Ok(out)
    }
}

/// Where an ACL is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclFormat {
    /// mosquitto's `acl_file`.
    Mosquitto,
    /// EMQX's file authorizer (`acl.conf`, Erlang terms).
    Emqx,
}

impl std::str::FromStr for AclFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mosquitto" => Ok(AclFormat::Mosquitto),
            "emqx" => Ok(AclFormat::Emqx),
            _ => Err(format!("{s:?}: expected mosquitto or emqx")),
        }
    }
}

fn agent_status(site: &str, agent: &str) -> String {
    sightline_contract::topic::agent_status(site, agent)
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// An Erlang string literal (ids and topics hold no quote or backslash, but escape anyway).
fn erl(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether every topic `filter` can match is matched by `allowed` (both valid filters; `allowed`
/// may end in `#`). `+` in `filter` is only covered by `+` or `#` in `allowed`, `#` only by `#`.
/// (Sound for the rules here: a filter covered by a union of these rules is covered by one.)
pub fn filter_within(filter: &str, allowed: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    // a filter with misplaced wildcards matches nothing sensible: refuse it
    for (i, level) in f.iter().enumerate() {
        if (level.contains('#') && (*level != "#" || i + 1 != f.len())) || (level.contains('+') && *level != "+") {
            return false;
        }
    }
    let a: Vec<&str> = allowed.split('/').collect();
    for (i, rule) in a.iter().enumerate() {
        if *rule == "#" {
            // `x/#` also matches `x` itself: whatever `filter` has from here on is covered
            return true;
        }
        let Some(level) = f.get(i) else {
            // `filter` is shorter: its topics lack levels `allowed` requires
            return false;
        };
        match (*level, *rule) {
            // `#` in `filter` matches any number of levels; only `#` covers that
            ("#", _) => return false,
            (_, "+") => {}
            ("+", _) => return false,
            (l, r) if l == r => {}
            _ => return false,
        }
    }
    f.len() == a.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    use crate::config::{Config, Secret};

    pub(crate) const CONFIG: &str = r#"
[broker]
users_file = "users"
observers = ["dashboard"]

[mqtt]
username = "aggregator"
password = "x"

[site]
id = "s"

[[camera]]
id = "gate"
position = [0.0, 0.0]
agent = "edge-a"

[[camera]]
id = "hall"
position = [5.0, 0.0]
agent = "edge-a"

[[camera]]
id = "yard"
position = [9.0, 0.0]
agent = "edge-b"
"#;

    pub(crate) fn policy() -> Policy {
        let cfg = Config::parse(CONFIG, Path::new("a.toml")).unwrap();
        Policy::new(&cfg.identities()).unwrap()
    }

    fn connect(p: &Policy, login: &str, client_id: &str, will: Option<&str>) -> Result<(), Refusal> {
        p.decide(Some(login), client_id, Action::Connect { will_topic: will })
    }
    fn publish(p: &Policy, login: &str, topic: &str) -> Result<(), Refusal> {
        p.decide(Some(login), "any", Action::Publish { topic })
    }
    fn subscribe(p: &Policy, login: &str, filter: &str) -> Result<(), Refusal> {
        p.decide(Some(login), "any", Action::Subscribe { filter })
    }

    #[test]
    fn agents_publish_their_own_cameras_and_status_only() {
        let p = policy();
        for kind in CAMERA_KINDS {
            assert_eq!(publish(&p, "edge-a", &format!("sightline/v1/s/gate/{kind}")), Ok(()), "{kind}");
            assert_eq!(publish(&p, "edge-a", &format!("sightline/v1/s/hall/{kind}")), Ok(()), "{kind}");
            assert_eq!(publish(&p, "edge-a", &format!("sightline/v1/s/yard/{kind}")), Err(Refusal::Publish));
        }
        assert_eq!(publish(&p, "edge-b", "sightline/v1/s/yard/sighting"), Ok(()));
        assert_eq!(publish(&p, "edge-a", "sightline/v1/s/agent/edge-a/status"), Ok(()));
        for topic in [
            "sightline/v1/s/agent/edge-b/status",
            "sightline/v1/s/trajectory",
            "sightline/v1/other/gate/sighting",
            "sightline/v1/s/gate/sighting/x",
            "sightline/v1/s/gate/trajectory",
            "sightline/v2/s/gate/sighting",
            "sightline/v1/s/+/sighting",
            "other/topic",
            "",
        ] {
            assert_eq!(publish(&p, "edge-a", topic), Err(Refusal::Publish), "{topic}");
        }
        for filter in ["#", "sightline/v1/#", "sightline/v1/s/gate/sighting", "sightline/v1/s/+/crowd", "+/+/sighting"]
        {
            assert_eq!(subscribe(&p, "edge-a", filter), Err(Refusal::Subscribe), "{filter}");
        }
    }

    #[test]
    fn only_the_aggregator_reads_sightings_and_publishes_its_kinds() {
        let p = policy();
        for filter in [
            "sightline/v1/#",
            "sightline/v1/+/+/sighting",
            "sightline/v1/+/agent/+/status",
            "$share/centre/sightline/v1/+/+/sighting",
            "sightline/v1/s/gate/sighting",
        ] {
            assert_eq!(subscribe(&p, "aggregator", filter), Ok(()), "{filter}");
        }
        for filter in ["#", "+/v1/#", "sightline/#", "$share/+/sightline/v1/#", "$share//sightline/v1/#", "$SYS/#"] {
            assert_eq!(subscribe(&p, "aggregator", filter), Err(Refusal::Subscribe), "{filter}");
        }
        assert_eq!(publish(&p, "aggregator", "sightline/v1/s/trajectory"), Ok(()));
        assert_eq!(publish(&p, "aggregator", "sightline/v1/s/gate/alert"), Ok(()));
        assert_eq!(publish(&p, "aggregator", "sightline/v1"), Err(Refusal::Publish));
        assert_eq!(publish(&p, "aggregator", "elsewhere"), Err(Refusal::Publish));
    }

    #[test]
    fn observers_read_what_identifies_nobody_and_publish_nothing() {
        let p = policy();
        for filter in [
            "sightline/v1/s/+/crowd",
            "sightline/v1/s/gate/alert",
            "sightline/v1/s/+/status",
            "sightline/v1/s/agent/+/status",
            "sightline/v1/s/agent/edge-a/status",
        ] {
            assert_eq!(subscribe(&p, "dashboard", filter), Ok(()), "{filter}");
        }
        for filter in [
            "#",
            "sightline/v1/#",
            "sightline/v1/s/#",
            "sightline/v1/s/+/+",
            "sightline/v1/s/gate/#",
            "sightline/v1/+/+/crowd",
            "sightline/v1/s/+/sighting",
            "sightline/v1/s/trajectory",
            "sightline/v1/s/agent/#",
            "$share/g/sightline/v1/s/+/crowd",
            "sightline/v1/s/+/crowd/#",
            "sightline/v1/s/gate/heatmap",
            "sightline/v1/s/+/heatmap",
        ] {
            assert_eq!(subscribe(&p, "dashboard", filter), Err(Refusal::Subscribe), "{filter}");
        }
        assert_eq!(publish(&p, "dashboard", "sightline/v1/s/gate/alert"), Err(Refusal::Publish));
        assert_eq!(connect(&p, "dashboard", "dashboard", Some("sightline/v1/s/gate/status")), Err(Refusal::WillTopic));
    }

    #[test]
    fn client_ids_belong_to_one_login() {
        let p = policy();
        assert_eq!(connect(&p, "aggregator", "sightline-aggregator", None), Ok(()));
        assert_eq!(connect(&p, "aggregator", "sightline-aggregator-debug", None), Ok(()));
        assert_eq!(connect(&p, "edge-a", "sightline-edge-edge-a", None), Ok(()));
        assert_eq!(connect(&p, "edge-a", "edge-a", None), Ok(()));
        assert_eq!(connect(&p, "dashboard", "dashboard", None), Ok(()));
        assert_eq!(connect(&p, "dashboard", "dashboard-7", None), Ok(()));
        // takeovers
        for (login, id) in [
            ("edge-a", "sightline-aggregator"),
            ("edge-a", "sightline-edge-edge-b"),
            ("edge-a", "edge-b"),
            ("edge-b", "edge-a"),
            ("dashboard", "sightline-aggregator"),
            ("aggregator", "sightline-edge-edge-a"),
            ("aggregator", "dashboard"),
            ("edge-a", "dashboard-1"),
            ("edge-a", "edge-a-2"),
            ("edge-a", ""),
            ("edge-a", "sightline-aggregator-x"),
        ] {
            assert_eq!(connect(&p, login, id, None), Err(Refusal::ClientId), "{login} as {id}");
        }
        assert_eq!(p.decide(None, "sightline-aggregator", Action::Connect { will_topic: None }), Err(Refusal::NoLogin));
        assert_eq!(connect(&p, "mallory", "mallory", None), Err(Refusal::UnknownLogin));
    }

    #[test]
    fn an_agent_s_will_is_its_own_status() {
        let p = policy();
        let id = "sightline-edge-edge-a";
        assert_eq!(connect(&p, "edge-a", id, Some("sightline/v1/s/agent/edge-a/status")), Ok(()));
        assert_eq!(connect(&p, "edge-a", id, Some("sightline/v1/s/agent/edge-b/status")), Err(Refusal::WillTopic));
        assert_eq!(connect(&p, "edge-a", id, Some("sightline/v1/s/gate/status")), Err(Refusal::WillTopic));
    }

    #[test]
    fn filter_coverage_reasons_about_wildcards() {
        assert!(filter_within("a/b/c", "a/+/c"));
        assert!(filter_within("a/+/c", "a/+/c"));
        assert!(!filter_within("a/+/c", "a/b/c"));
        assert!(filter_within("a/b/c", "a/#"));
        assert!(filter_within("a", "a/#"));
        assert!(filter_within("a/#", "a/#"));
        assert!(filter_within("a/+/#", "a/#"));
        assert!(!filter_within("a/#", "a/+"));
        assert!(!filter_within("#", "a/#"));
        assert!(!filter_within("+/b", "a/b"));
        assert!(!filter_within("a", "a/+"));
        assert!(!filter_within("a/b/c", "a/b"));
        assert!(!filter_within("a/#/c", "#"));
        assert!(!filter_within("a/b+", "#"));
        assert!(!filter_within("", "#"));
        assert!(filter_within("x", "#"));
    }

    #[test]
    fn identities_are_checked_in_the_config() {
        let bad = |text: &str| Config::parse(text, Path::new("a.toml")).unwrap_err().to_string();
        let no_agent = CONFIG.replace("agent = \"edge-b\"\n", "");
        assert!(bad(&no_agent).contains("`camera[yard].agent`"), "{}", bad(&no_agent));
        let e = bad(&CONFIG.replace("agent = \"edge-b\"", "agent = \"Edge B\""));
        assert!(e.contains("camera[yard].agent"), "{e}");
        let e = bad(&CONFIG.replace("agent = \"edge-b\"", "agent = \"aggregator\""));
        assert!(e.contains("camera[yard].agent") && e.contains("aggregator's login"), "{e}");
        let e = bad(&CONFIG.replace("[\"dashboard\"]", "[\"edge-b\"]"));
        assert!(e.contains("broker.observers"), "{e}");
        let e = bad(&CONFIG.replace("[\"dashboard\"]", "[\"sightline-edge-edge-b\"]"));
        assert!(e.contains("broker.observers"), "{e}");
        let e = bad(&CONFIG.replace("password = \"x\"", "password = \"x\"\nclient_id = \"edge-b\""));
        assert!(e.contains("camera[yard].agent") && e.contains("client id"), "{e}");
        // without users_file: loopback only, no observers
        let open = "[broker]\nlisten = \"0.0.0.0:1883\"\n[site]\nid = \"s\"\n";
        let e = bad(open);
        assert!(e.contains("broker.listen") && e.contains("needs users_file"), "{e}");
        let e = bad("[broker]\nobservers = [\"o\"]\n[site]\nid = \"s\"\n");
        assert!(e.contains("broker.observers"), "{e}");
        Config::parse("[broker]\nlisten = \"127.0.0.1:1883\"\n[site]\nid = \"s\"\n", Path::new("a.toml")).unwrap();
        // an external broker: the embedded one's rules do not apply
        Config::parse("[broker]\nembedded = false\nlisten = \"0.0.0.0:1883\"\n[site]\nid = \"s\"\n", Path::new("a"))
            .unwrap();
    }

    #[test]
    fn agents_and_observers_need_logins() {
        let cfg = Config::parse(CONFIG, Path::new("a.toml")).unwrap();
        let users = |names: &[&str]| names.iter().map(|n| (n.to_string(), Secret("p".into()))).collect::<Vec<_>>();
        cfg.check_user_identities(&users(&["aggregator", "edge-a", "edge-b", "dashboard"])).unwrap();
        let e = cfg.check_user_identities(&users(&["aggregator", "edge-a", "dashboard"])).unwrap_err();
        assert_eq!(e.key, "camera[yard].agent");
        let e = cfg.check_user_identities(&users(&["aggregator", "edge-a", "edge-b"])).unwrap_err();
        assert_eq!(e.key, "broker.observers");
    }

    #[test]
    fn rendered_acls_carry_the_same_rules() {
        let p = policy();
        let m = p.render(AclFormat::Mosquitto).unwrap();
        assert!(m.contains("user aggregator\ntopic readwrite sightline/v1/#\n"), "{m}");
        assert!(m.contains("user edge-a\ntopic write sightline/v1/s/gate/sighting\n"), "{m}");
        assert!(m.contains("topic write sightline/v1/s/agent/edge-b/status\n"), "{m}");
        assert!(m.contains("user dashboard\ntopic read sightline/v1/s/+/crowd\n"), "{m}");
        assert!(m.contains("allow_anonymous false") && m.contains("acl_file"), "{m}");
        // the agents' blocks hold write rules only, and no agent gets another's camera
        let block = m.split("user edge-b\n").nth(1).unwrap().split("\n\n").next().unwrap();
        assert!(block.lines().all(|l| l.starts_with("topic write ") && !l.contains("/gate/")), "{block}");
        assert_eq!(m.matches("topic write").count(), 3 * CAMERA_KINDS.len() + 2);

        let e = p.render(AclFormat::Emqx).unwrap();
        assert!(e.contains("{allow, {username, \"aggregator\"}, all, [\"sightline/v1/#\"]}.\n"), "{e}");
        assert!(e.contains("{allow, {username, \"edge-b\"}, publish, [\"sightline/v1/s/yard/sighting\", "), "{e}");
        assert!(e.contains("{allow, {username, \"dashboard\"}, subscribe, [\"sightline/v1/s/+/crowd\", "), "{e}");
        assert!(e.trim_end().ends_with("{deny, all}."), "{e}");
        // every rule is a term ending with `}.`
        assert!(e.lines().filter(|l| l.starts_with('{')).all(|l| l.ends_with("}.")), "{e}");

        let mut anonymous = Config::parse(CONFIG, Path::new("a.toml")).unwrap();
        anonymous.mqtt.security.username = None;
        let e = Policy::new(&anonymous.identities()).unwrap().render(AclFormat::Emqx).unwrap_err();
        assert_eq!(e.key, "mqtt.username");
        assert_eq!("emqx".parse::<AclFormat>(), Ok(AclFormat::Emqx));
        assert!("acl".parse::<AclFormat>().is_err());
    }
}
