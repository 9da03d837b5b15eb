//! A server killed with SIGKILL keeps every span it acknowledged, exactly once: after WAL
//! replay (in memory) and after its segments are written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::path::Path;

use callwatch_storage::SegmentLocation;
use prost::Message;

use crate::common::Server;
use crate::common::requests::{hex, numbered_span, request};

const SENDERS: u32 = 6;
const REQUESTS: u32 = 40;
const SPANS: u32 = 25;
/// Kill once this many requests were acknowledged, with others still in flight.
const KILL_AFTER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    kill_while_flushing_and_count(&dir.path().join("data"), &[], None).await;
}

/// Kills a server (started with `extra` flags, its segments at `segments`) while it flushes
/// small segments under load, then checks that every acknowledged span is stored once: as
/// the restarted store finds it, and after the real server restarted and stopped.
pub async fn kill_while_flushing_and_count(
    data: &Path,
    extra: &[&str],
    segments: Option<SegmentLocation>,
) {
    let data = data.to_path_buf();
    // Small flushes: at the kill, spans are spread over segments and the WAL.
    let mut flags = vec!["--flush-spans", "400", "--flush-interval", "1h"];
    flags.extend(extra);
    let server = Server::start(&data, &flags);
    let url = server.traces_url();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let acked_requests = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();

    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, url, acked, acked_requests) = (
            client.clone(),
            url.clone(),
            acked.clone(),
            acked_requests.clone(),
        );
        senders.push(tokio::spawn(async move {
            for request_no in 0..REQUESTS {
                let spans: Vec<_> = (0..SPANS)
                    .map(|i| numbered_span(sender, request_no, i))
                    .collect();
                let ids: Vec<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
                let body = request("order-service", spans).encode_to_vec();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 200 => {
                        acked.lock().unwrap().extend(ids);
                        acked_requests.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server is gone: nothing after this is acknowledged.
                    _ => return,
                }
            }
        }));
    }
    while acked_requests.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    server.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER * SPANS as usize);

    // In memory, as a restarted store finds it: replayed WAL plus committed segments.
    let (spans, hot) = crate::common::stored_spans_at(&data, segments.clone()).await;
    assert!(hot > 0, "some acknowledged spans were only in the WAL");
    assert!(spans.len() > hot, "and some already in segments");
    let counts = count_ids(spans.iter().map(|s| s.span_id.clone()));
    assert_once(&counts, &acked);

    // The real server restarts on the same directory and flushes on a graceful stop.
    let server = Server::start(&data, extra);
    server.stop();
    let (spans, hot) = crate::common::stored_spans_at(&data, segments).await;
    assert_eq!(hot, 0);
    let counts = count_ids(spans.iter().map(|s| s.span_id.clone()));
    assert_once(&counts, &acked);
}

fn count_ids(ids: impl Iterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Every acknowledged span is there, and no span at all is there twice.
fn assert_once(counts: &HashMap<String, usize>, acked: &HashSet<String>) {
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost",
        missing.len()
    );
}
