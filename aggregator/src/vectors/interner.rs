//! Names (cameras, models) interned once: rows keep a `u32` instead of a string.

use std::collections::HashMap;
use std::sync::Arc;

/// Names numbered 0, 1, 2, … in order of first appearance. Never shrinks: a site has a bounded
/// set of cameras and of embedding models.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `name`, given it now if it has none.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 names");
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, i);
        i
    }

    /// The number of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name numbered `i`.
    ///
    /// # Panics
    /// When no name has that number.
    pub fn name(&self, i: u32) -> &Arc<str> {
        &self.names[i as usize]
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_numbered_in_order_of_first_appearance() {
        let mut names = Interner::new();
        assert!(names.is_empty());
        assert_eq!((names.intern("gate"), names.intern("hall"), names.intern("gate")), (0, 1, 0));
        assert_eq!((names.get("hall"), names.get("dock")), (Some(1), None));
        assert_eq!((&**names.name(0), &**names.name(1)), ("gate", "hall"));
        assert_eq!(names.len(), 2);
    }
}
