//! What services say of themselves, learned at ingest and kept in `catalog.json` in the data
//! directory, so that the map shows it the same way after a restart: the namespace each
//! service reports (`service.namespace` of its resource), and the consumer groups each
//! service reads a topic or queue as (`messaging.consumer.group.name` of its consumer spans).
//! It is rewritten at most once per maintenance tick; what was learned just before a crash
//! is learned again from the service's next spans. Where segments go to a bucket, each node
//! also keeps its catalog there, and readers add up those of the other nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// Entries remembered at most, of each kind: names come from clients, so their number is
/// capped.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest name kept, in bytes; longer ones are cut at a char boundary.
const MAX_NAME_BYTES: usize = 128;

const FILE: &str = "catalog.json";

/// Consumer groups by topic (or queue), then by the service that reads it.
pub type ConsumerGroups = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Known {
    /// Namespace by service name.
    pub namespaces: BTreeMap<String, String>,
    pub consumer_groups: ConsumerGroups,
}

impl Known {
    /// What `other` knows and this does not: namespaces this one has stay.
    fn add(&mut self, other: &Known) {
        for (service, namespace) in &other.namespaces {
            if self.namespaces.len() < MAX_ENTRIES || self.namespaces.contains_key(service) {
                self.namespaces
                    .entry(service.clone())
                    .or_insert_with(|| namespace.clone());
            }
        }
        for (topic, readers) in &other.consumer_groups {
            let mine = self.consumer_groups.entry(topic.clone()).or_default();
            for (service, groups) in readers {
                mine.entry(service.clone())
                    .or_default()
                    .extend(groups.iter().cloned());
            }
        }
    }
}

#[derive(Debug)]
pub struct Catalog {
    /// The file it is kept in; `None` on a node that ingests nothing.
    path: Option<PathBuf>,
    /// What this node learned.
    own: RwLock<Arc<Known>>,
    /// What the other nodes sharing the bucket learned, added up when last read.
    others: RwLock<Arc<Known>>,
    /// `own` with `others` added: what readers see.
    view: RwLock<Arc<Known>>,
    /// Learned since last written.
    dirty: AtomicBool,
}

impl Catalog {
    /// The catalog kept in `data_dir`; empty if the file is missing or unreadable (it is
    /// learned again from the next spans).
    pub fn open(data_dir: &std::path::Path) -> Self {
        let path = data_dir.join(FILE);
        let known = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "ignoring an unreadable catalog");
                Known::default()
            }),
            Err(_) => Known::default(),
        };
        Self {
            path: Some(path),
            view: RwLock::new(Arc::new(known.clone())),
            own: RwLock::new(Arc::new(known)),
            others: RwLock::new(Arc::default()),
            dirty: AtomicBool::new(false),
        }
    }

    /// A catalog that learns nothing itself and shows what the other nodes learned.
    pub fn reader() -> Self {
        Self {
            path: None,
            own: RwLock::default(),
            others: RwLock::default(),
            view: RwLock::default(),
            dirty: AtomicBool::new(false),
        }
    }

    /// What this node and the others learned.
    pub fn known(&self) -> Arc<Known> {
        read(&self.view)
    }

    /// Takes what the other nodes learned (their catalogs as JSON); unreadable ones are
    /// skipped, as a node's own unreadable file is.
    pub fn set_others(&self, catalogs: &[bytes::Bytes]) {
        let mut others = Known::default();
        for json in catalogs {
            match serde_json::from_slice::<Known>(json) {
                Ok(known) => others.add(&known),
                Err(error) => tracing::warn!(%error, "ignoring another node's unreadable catalog"),
            }
        }
        *write(&self.others) = Arc::new(others);
        self.refresh_view();
    }

    fn refresh_view(&self) {
        let mut view = (*read(&self.own)).clone();
        view.add(&read(&self.others));
        *write(&self.view) = Arc::new(view);
    }

    /// Takes the namespaces services reported: `(service, namespace)`. The latest wins.
    pub fn learn_namespaces<'a>(&self, reported: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let reported: Vec<(&str, &str)> = reported
            .into_iter()
            .map(|(service, namespace)| (service, clip(namespace)))
            .filter(|(_, namespace)| !namespace.is_empty())
            .collect();
        let known = read(&self.own);
        if reported.iter().all(|(service, namespace)| {
            known.namespaces.get(*service).map(String::as_str) == Some(namespace)
        }) {
            return;
        }
        self.change(|known| {
            for (service, namespace) in reported {
                let map = &mut known.namespaces;
                if map.len() >= MAX_ENTRIES && !map.contains_key(service) {
                    continue;
                }
                map.insert(service.to_string(), namespace.to_string());
            }
        });
    }

    /// Takes the consumer groups services read topics as: `(topic, service, group)`.
    pub fn learn_consumer_groups<'a>(
        &self,
        reported: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let reported: Vec<(&str, &str, &str)> = reported
            .into_iter()
            .map(|(topic, service, group)| (clip(topic), service, clip(group)))
            .filter(|(topic, _, group)| !topic.is_empty() && !group.is_empty())
            .collect();
        let known = read(&self.own);
        let is_known = |(topic, service, group): &(&str, &str, &str)| {
            known
                .consumer_groups
                .get(*topic)
                .and_then(|readers| readers.get(*service))
                .is_some_and(|groups| groups.contains(*group))
        };
        if reported.iter().all(is_known) {
            return;
        }
        self.change(|known| {
            let mut entries: usize = known
                .consumer_groups
                .values()
                .flat_map(|readers| readers.values())
                .map(BTreeSet::len)
                .sum();
            for (topic, service, group) in reported {
                if entries >= MAX_ENTRIES {
                    break;
                }
                let added = known
                    .consumer_groups
                    .entry(topic.to_string())
                    .or_default()
                    .entry(service.to_string())
                    .or_default()
                    .insert(group.to_string());
                entries += usize::from(added);
            }
        });
    }

    fn change(&self, change: impl FnOnce(&mut Known)) {
        change(Arc::make_mut(&mut write(&self.own)));
        self.dirty.store(true, Ordering::Relaxed);
        self.refresh_view();
    }

    /// Writes the file if anything was learned since it was last written; returns what it
    /// wrote, for the bucket.
    pub fn persist(&self) -> std::io::Result<Option<Vec<u8>>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(None);
        }
        let json = serde_json::to_vec(&*read(&self.own)).map_err(std::io::Error::other)?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, &json)
            .and_then(|()| std::fs::rename(&temporary, path))
            .inspect_err(|_| self.dirty.store(true, Ordering::Relaxed))?;
        Ok(Some(json))
    }

    /// What this node learned, as it is kept (JSON).
    pub fn own_json(&self) -> Vec<u8> {
        serde_json::to_vec(&*read(&self.own)).unwrap_or_default()
    }
}

fn read(lock: &RwLock<Arc<Known>>) -> Arc<Known> {
    lock.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn write(lock: &RwLock<Arc<Known>>) -> std::sync::RwLockWriteGuard<'_, Arc<Known>> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn clip(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_services_report_is_learned_capped_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path());
        catalog.learn_namespaces([("order", "shop"), ("payment", "billing"), ("cart", "")]);
        catalog.learn_namespaces([("order", "checkout")]);
        let long = "é".repeat(100);
        catalog.learn_namespaces([("search", long.as_str())]);
        catalog.learn_consumer_groups([
            ("order-events", "inventory", "inventory"),
            ("order-events", "audit", "audit-1"),
            ("order-events", "audit", "audit-2"),
            ("order-events", "mailer", ""),
        ]);
        catalog.persist().unwrap();
        let again = Catalog::open(dir.path()).known();
        assert_eq!(again.namespaces.len(), 3);
        assert_eq!(again.namespaces["order"], "checkout");
        assert_eq!(again.namespaces["payment"], "billing");
        assert_eq!(again.namespaces["search"], "é".repeat(64));
        let readers = &again.consumer_groups["order-events"];
        assert_eq!(readers.len(), 2);
        assert_eq!(
            readers["audit"].iter().collect::<Vec<_>>(),
            vec!["audit-1", "audit-2"]
        );
        // Past the cap, known services still move; new ones are not taken.
        let names: Vec<String> = (0..MAX_ENTRIES).map(|n| format!("svc-{n}")).collect();
        catalog.learn_namespaces(names.iter().map(|n| (n.as_str(), "many")));
        catalog.learn_namespaces([("order", "shop")]);
        catalog.learn_consumer_groups(names.iter().map(|n| ("t", n.as_str(), "g")));
        let known = catalog.known();
        assert_eq!(known.namespaces.len(), MAX_ENTRIES);
        assert_eq!(known.namespaces["order"], "shop");
        let groups: usize = known
            .consumer_groups
            .values()
            .flat_map(|r| r.values())
            .map(BTreeSet::len)
            .sum();
        assert_eq!(groups, MAX_ENTRIES);
    }
}
