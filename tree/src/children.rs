//! The names of a node's children.
//!
//! Most znodes have none: an empty set costs one null pointer, so that a [`crate::tree::Node`] fits
//! mimalloc's 128-byte size class rather than the 160-byte one (an inline `BTreeSet` is three words). On this
//! project's VMs the tree's bytes are CPU too: every fresh page the tree grows into is zeroed by the kernel.
//!
//! # Invariant
//! A set is boxed only while it holds a name: `Some` is never empty, so two equal sets compare equal.

use std::collections::BTreeSet;

/// The names, in byte order.
pub type Iter<'a> = std::iter::Flatten<std::option::IntoIter<std::collections::btree_set::Iter<'a, String>>>;

/// A node's children, by name, in byte order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // The point: one word inline where most nodes have no children.
pub struct Children(Option<Box<BTreeSet<String>>>);

impl Children {
    /// No children.
    pub const fn new() -> Children {
        Children(None)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `name` is one.
    pub fn contains(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(name))
    }

    /// The names, in byte order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.as_deref().map(BTreeSet::iter).into_iter().flatten()
    }

    /// Adds `name`; false if it was there.
    pub fn insert(&mut self, name: String) -> bool {
        self.0.get_or_insert_with(Box::default).insert(name)
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(set) = self.0.as_mut() else { return false };
        let removed = set.remove(name);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }
}

impl FromIterator<String> for Children {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Children {
        let set: BTreeSet<String> = names.into_iter().collect();
        Children((!set.is_empty()).then(|| Box::new(set)))
    }
}

impl<'a> IntoIterator for &'a Children {
    type Item = &'a String;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_set_is_no_set() {
        let mut children = Children::new();
        assert!(children.insert("b".into()) && children.insert("a".into()) && !children.insert("a".into()));
        assert_eq!(children.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((children.len(), children.contains("a"), children.contains("c")), (2, true, false));
        assert!(children.remove("a") && !children.remove("a") && children.remove("b"));
        assert_eq!(children, Children::new(), "empty again, and equal to a fresh one");
        assert!(children.is_empty() && children.0.is_none());
        assert_eq!(Vec::<String>::new().into_iter().collect::<Children>(), Children::new());
        assert!(!children.remove("x"));
    }
}
