//! The process's resident memory as the kernel counts it. The memory budget counts what
//! callwatch holds on purpose; this also sees what it does not count (request bodies being
//! decoded, a flush's buffers, queries) and what the allocator keeps after it is freed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A reading is used this long before the kernel is asked again: admission asks for every
/// export request, and the resident size moves slowly next to that.
const READ_EVERY: Duration = Duration::from_millis(100);

pub(crate) struct Resident {
    last: Mutex<Option<(Instant, Option<usize>)>>,
}

impl Resident {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }

    /// Resident bytes, at most `READ_EVERY` old; `None` where the kernel does not say (not
    /// Linux, or `/proc` not mounted).
    pub(crate) fn bytes(&self) -> Option<usize> {
        let now = Instant::now();
        let mut last = self.last.lock().expect("not poisoned");
        match *last {
            Some((read_at, bytes)) if now.duration_since(read_at) < READ_EVERY => bytes,
            _ => {
                let bytes = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|status| vm_rss(&status));
                *last = Some((now, bytes));
                bytes
            }
        }
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<usize> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: usize = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tcallwatch\nVmHWM:\t  3356 kB\nVmRSS:\t    2048 kB\nThreads:\t9\n";
        assert_eq!(vm_rss(status), Some(2 << 20));
        assert_eq!(vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(vm_rss("VmRSS:\t2048 MB\n"), None);
        assert_eq!(vm_rss("VmRSS:\tmany kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_resident() {
        let resident = Resident::new();
        let bytes = resident.bytes().expect("Linux says how much is resident");
        assert!(bytes > 1 << 20, "{bytes}");
    }
}
