//! The sites of a deployment and their tree: a center sees its own sites and every site below
//! them (district → township → community). Each site has its cameras, links and georeference
//! ([`SiteModel`]); a site without cameras only groups the sites below it.
//!
//! [`Scope`] is what a request may see: every site, or a set of sites. A token scoped to some
//! sites sees each of them with its subtree ([`Sites::scope_of`]); a `site` filter narrows that to
//! one subtree ([`Sites::narrow`]). Store queries take the scope's [`Scope::filter`].

use std::collections::{BTreeSet, HashMap};

use crate::site::{SiteError, SiteModel};
use crate::store::SiteRow;

/// One site of the tree.
#[derive(Clone, Debug)]
pub struct Site {
    pub model: SiteModel,
    /// What people call it (display only).
    pub name: Option<String>,
    pub parent: Option<String>,
    /// 0 for a top site.
    pub depth: usize,
}

impl Site {
    pub fn id(&self) -> &str {
        &self.model.site().id
    }
}

/// The validated tree of sites, in tree order (depth first, a parent before its children).
#[derive(Clone, Debug)]
pub struct Sites {
    order: Vec<Site>,
    index: HashMap<String, usize>,
    /// Each site's subtree (itself included), as positions in `order`.
    below: Vec<Vec<usize>>,
}

/// A site as configured, for [`Sites::new`]: its model, name and parent.
pub type SiteSpec = (SiteModel, Option<String>, Option<String>);

/// Which sites a request may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn allows(&self, site: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(s) => s.contains(site),
        }
    }

    /// The store's filter: `None` for every site.
    pub fn filter(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Only(s) => Some(s.iter().cloned().collect()),
        }
    }
}

impl Sites {
    /// Builds the tree of `(site, name, parent)`s, in config order. Errors name the key
    /// (`site[2].parent`); `prefix(i)` is what site `i`'s own keys are prefixed with.
    pub fn new(sites: Vec<SiteSpec>, prefix: impl Fn(usize) -> String) -> Result<Self, SiteError> {
        if sites.is_empty() {
            return Err(SiteError::new("site", "at least one site is needed"));
        }
        let mut at: HashMap<String, usize> = HashMap::new();
        for (i, (model, name, _)) in sites.iter().enumerate() {
            if at.insert(model.site().id.clone(), i).is_some() {
                return Err(SiteError::new(
                    format!("{}id", prefix(i)),
                    format!("site {:?} is defined twice", model.site().id),
                ));
            }
            if let Some(n) = name
                && (n.trim().is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control))
            {
                return Err(SiteError::new(format!("{}name", prefix(i)), "must be 1 to 200 printable characters"));
            }
        }
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); sites.len()];
        let mut roots = Vec::new();
        for (i, (_, _, parent)) in sites.iter().enumerate() {
            match parent {
                None => roots.push(i),
                Some(p) => {
                    let Some(&j) = at.get(p) else {
                        return Err(SiteError::new(format!("{}parent", prefix(i)), format!("unknown site {p:?}")));
                    };
                    children[j].push(i);
                }
            }
        }
        // depth-first from the roots; a site never reached is on a cycle
        let mut order = Vec::with_capacity(sites.len());
        let mut depth = vec![usize::MAX; sites.len()];
        let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
        while let Some((i, d)) = stack.pop() {
            depth[i] = d;
            order.push(i);
            stack.extend(children[i].iter().rev().map(|&c| (c, d + 1)));
        }
        if let Some(i) = depth.iter().position(|&d| d == usize::MAX) {
            return Err(SiteError::new(
                format!("{}parent", prefix(i)),
                "the parents form a cycle: a site cannot be below itself",
            ));
        }
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let mut below = vec![Vec::new(); sites.len()];
        // children come after their parent in `order`: walk backwards, gathering subtrees
        for pos in (0..order.len()).rev() {
            let i = order[pos];
            let mut sub = vec![pos];
            for c in &children[i] {
                sub.extend(below[position[c]].iter().copied());
            }
            below[pos] = sub;
        }
        let mut slots: Vec<Option<SiteSpec>> = sites.into_iter().map(Some).collect();
        let order: Vec<Site> = order
            .iter()
            .map(|&i| {
                let (model, name, parent) = slots[i].take().expect("each site once");
                Site { model, name, parent, depth: depth[i] }
            })
            .collect();
        let index = order.iter().enumerate().map(|(pos, s)| (s.id().to_owned(), pos)).collect();
        Ok(Sites { order, index, below })
    }

    /// One site, alone.
    pub fn single(model: SiteModel) -> Self {
        Sites::new(vec![(model, None, None)], |_| "site.".into()).expect("one site is a tree")
    }

    /// In tree order.
    pub fn iter(&self) -> impl Iterator<Item = &Site> {
        self.order.iter()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The tree as the store keeps it (`Store::claim_sites`).
    pub fn rows(&self) -> Vec<SiteRow> {
        self.order
            .iter()
            .map(|s| SiteRow { id: s.id().to_owned(), parent: s.parent.clone(), name: s.name.clone() })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Site> {
        self.index.get(id).map(|&i| &self.order[i])
    }

    /// `id` and every site below it; `None` for an unknown site.
    pub fn subtree(&self, id: &str) -> Option<impl Iterator<Item = &str>> {
        let &pos = self.index.get(id)?;
        Some(self.below[pos].iter().map(|&p| self.order[p].id()))
    }

    /// What a token scoped to `sites` sees (`None`: every site): each with its subtree. Unknown
    /// site ids see nothing (a site removed from the config).
    pub fn scope_of(&self, sites: Option<&[String]>) -> Scope {
        match sites {
            None => Scope::All,
            Some(list) => {
                Scope::Only(list.iter().filter_map(|s| self.subtree(s)).flatten().map(str::to_owned).collect())
            }
        }
    }

    /// `scope` narrowed to `site` and the sites below it; `None` when `site` is unknown or
    /// outside `scope`.
    pub fn narrow(&self, scope: &Scope, site: &str) -> Option<Scope> {
        if !scope.allows(site) {
            return None;
        }
        // a subtree of a visible site is visible: scopes are unions of subtrees
        Some(Scope::Only(self.subtree(site)?.map(str::to_owned).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SiteConfig;

    fn model(id: &str) -> SiteModel {
        let cfg: SiteConfig = toml::from_str(&format!("id = \"{id}\"")).unwrap();
        SiteModel::new(cfg, vec![], vec![]).unwrap()
    }

    fn tree(spec: &[(&str, Option<&str>)]) -> Result<Sites, SiteError> {
        Sites::new(spec.iter().map(|(id, parent)| (model(id), None, parent.map(str::to_owned))).collect(), |i| {
            format!("site[{i}].")
        })
    }

    fn ids<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        it.collect()
    }

    #[test]
    fn tree_order_subtrees_and_scopes() {
        // given children before parents, in no particular order
        let sites = tree(&[
            ("riverside", Some("east")),
            ("district", None),
            ("east", Some("district")),
            ("west", Some("district")),
            ("harbour", Some("west")),
            ("hilltop", Some("east")),
            ("airport", None),
        ])
        .unwrap();
        let order: Vec<(&str, usize)> = sites.iter().map(|s| (s.id(), s.depth)).collect();
        assert_eq!(
            order,
            [
                ("district", 0),
                ("east", 1),
                ("riverside", 2),
                ("hilltop", 2),
                ("west", 1),
                ("harbour", 2),
                ("airport", 0)
            ]
        );
        assert_eq!(ids(sites.subtree("east").unwrap()), ["east", "riverside", "hilltop"]);
        assert_eq!(ids(sites.subtree("district").unwrap()).len(), 6);
        assert!(sites.subtree("nowhere").is_none());

        let east = sites.scope_of(Some(&["east".into()]));
        assert!(east.allows("hilltop") && east.allows("east"));
        assert!(!east.allows("district") && !east.allows("west") && !east.allows("harbour"));
        assert_eq!(sites.scope_of(None), Scope::All);
        assert_eq!(sites.scope_of(Some(&["gone".into()])), Scope::Only(BTreeSet::new()));
        // narrowing: inside the scope only
        assert_eq!(sites.narrow(&east, "riverside").unwrap().filter().unwrap(), ["riverside"]);
        assert!(sites.narrow(&east, "west").is_none());
        assert!(sites.narrow(&east, "district").is_none(), "a parent of the scope is outside it");
        assert_eq!(sites.narrow(&Scope::All, "west").unwrap().filter().unwrap(), ["harbour", "west"]);
        assert!(sites.narrow(&Scope::All, "nowhere").is_none());
    }

    #[test]
    fn bad_trees_name_the_key() {
        let e = tree(&[("a", None), ("a", None)]).unwrap_err();
        assert_eq!(e.key, "site[1].id");
        let e = tree(&[("a", Some("b"))]).unwrap_err();
        assert_eq!(e.key, "site[0].parent");
        assert!(e.reason.contains("unknown site \"b\""), "{e}");
        let e = tree(&[("top", None), ("a", Some("b")), ("b", Some("a"))]).unwrap_err();
        assert_eq!(e.key, "site[1].parent");
        assert!(e.reason.contains("cycle"), "{e}");
        let e = tree(&[("a", Some("a"))]).unwrap_err();
        assert!(e.reason.contains("cycle"), "{e}");
        assert!(Sites::new(vec![], |_| String::new()).is_err());
    }
}
