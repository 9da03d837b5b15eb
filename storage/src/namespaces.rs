//! The namespace (`service.namespace`) each service reports, learned at ingest from its
//! resource attributes and kept in `namespaces.json` in the data directory, so that the map
//! groups services the same way after a restart. It is rewritten at most once per
//! maintenance tick; a namespace learned just before a crash is learned again from the
//! service's next spans.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Services remembered at most: names come from clients, so their number is capped.
pub const MAX_SERVICES: usize = 10_000;
/// Longest namespace kept, in bytes; longer ones are cut at a char boundary.
const MAX_NAMESPACE_BYTES: usize = 128;

const FILE: &str = "namespaces.json";

#[derive(Debug)]
pub struct Namespaces {
    path: PathBuf,
    known: RwLock<Arc<BTreeMap<String, String>>>,
    /// Learned since last written.
    dirty: AtomicBool,
}

impl Namespaces {
    /// The namespaces kept in `data_dir`; none if the file is missing or unreadable (it is
    /// learned again from the next spans).
    pub fn open(data_dir: &std::path::Path) -> Self {
        let path = data_dir.join(FILE);
        let known = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "ignoring unreadable namespaces");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self {
            path,
            known: RwLock::new(Arc::new(known)),
            dirty: AtomicBool::new(false),
        }
    }

    /// Every service's namespace, by service name.
    pub fn all(&self) -> Arc<BTreeMap<String, String>> {
        self.known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes the namespaces services reported: `(service, namespace)`. The latest wins.
    pub fn learn<'a>(&self, reported: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let reported: Vec<(&str, &str)> = reported
            .into_iter()
            .map(|(service, namespace)| (service, clip(namespace)))
            .filter(|(_, namespace)| !namespace.is_empty())
            .collect();
        let known = self.all();
        let new = |(service, namespace): &(&str, &str)| {
            known.get(*service).map(String::as_str) != Some(*namespace)
        };
        if !reported.iter().any(new) {
            return;
        }
        let mut guard = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let map = Arc::make_mut(&mut guard);
        for (service, namespace) in reported {
            if map.len() >= MAX_SERVICES && !map.contains_key(service) {
                continue;
            }
            if map.get(service).map(String::as_str) != Some(namespace) {
                map.insert(service.to_string(), namespace.to_string());
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Writes the file if anything was learned since it was last written.
    pub fn persist(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let json = serde_json::to_vec(&*self.all()).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, json)
            .and_then(|()| std::fs::rename(&temporary, &self.path))
            .inspect_err(|_| self.dirty.store(true, Ordering::Relaxed))
    }
}

fn clip(namespace: &str) -> &str {
    let mut end = namespace.len().min(MAX_NAMESPACE_BYTES);
    while !namespace.is_char_boundary(end) {
        end -= 1;
    }
    &namespace[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_learned_capped_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let namespaces = Namespaces::open(dir.path());
        namespaces.learn([("order", "shop"), ("payment", "billing"), ("cart", "")]);
        namespaces.learn([("order", "checkout")]);
        let long = "é".repeat(100);
        namespaces.learn([("search", long.as_str())]);
        namespaces.persist().unwrap();
        let again = Namespaces::open(dir.path()).all();
        assert_eq!(again.len(), 3);
        assert_eq!(again["order"], "checkout");
        assert_eq!(again["payment"], "billing");
        assert_eq!(again["search"], "é".repeat(64));
        // Past the cap, known services still move; new ones are not taken.
        let names: Vec<String> = (0..MAX_SERVICES).map(|n| format!("svc-{n}")).collect();
        namespaces.learn(names.iter().map(|n| (n.as_str(), "many")));
        namespaces.learn([("order", "shop")]);
        let all = namespaces.all();
        assert_eq!(all.len(), MAX_SERVICES);
        assert_eq!(all["order"], "shop");
    }
}
