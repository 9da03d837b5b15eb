//! The call pairer: spans in, calls out, with the semantics of the OpenTelemetry
//! servicegraph connector and Tempo's metrics-generator.
//!
//! A CLIENT or PRODUCER half waits under (trace id, its span id); a SERVER or CONSUMER half
//! under (trace id, its parent span id), or under each span it links to when it has links (a
//! batch consumer). When both halves of a key are there, they are one call. The halves of one
//! batch first pair with each other, so a call whose halves arrive together never waits. A
//! database client is a call at once; a root SERVER or CONSUMER without links is a call from
//! `user` at once.
//! Halves still alone after `wait` become calls to a virtual node when the client names its
//! server (`peer.service`, `server.address`, the messaging destination), and are counted as
//! unpaired otherwise. A producer stays for the whole wait, because several consumer groups
//! may read one message, unless every group known to read its destination has read it and
//! no new group has appeared there for a whole wait.
//!
//! Where collectors share a bucket (`remote_wait`), spans are routed to them by trace id, so
//! a batch consumer's message may have gone to another collector. Its halves still alone at
//! the end of the wait are orphans: they go to the bucket with the next flush, and every other
//! collector offers them to its producers ([`CallDeriver::remote_answers`]); the one holding
//! the message pairs them. To be there, a producer to a destination that batch consumers read
//! (learned from the consumers seen here and the orphans offered) waits `remote_wait` longer
//! before it is settled; other producers do not.
//!
//! At most `max_pending` halves wait: at the bound, the half that has waited longest is
//! settled at once, as if its wait were over, to make room. The waiting halves a flush saves
//! keep their arrival, so after a restart each waits what it had left, but at least half a
//! wait: a partner that its client could not send while the server was down still pairs.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use callwatch_storage::{CallDeriver, CallRow, CallType, NodeKind, PendingState};
use foldhash::{HashMap, HashSet};

use crate::graph_metrics::{EdgeTally, GraphMetrics, connection_type};
use crate::halves::{Half, LastResource, Name, Names, Side, SpanColumns};
use crate::pending::{Key, Parts, Saved};

#[derive(Debug, Clone)]
pub struct PairingConfig {
    /// How long a half waits for its partner.
    pub wait: Duration,
    /// Most halves kept waiting; at the bound, the longest waiting is settled early.
    pub max_pending: usize,
    /// Where other collectors share the bucket: how much longer than `wait` a producer
    /// waits for the orphans of another collector's consumers (that collector's wait and
    /// flush interval, and this one's refresh interval). `None`: no other collector.
    pub remote_wait: Option<Duration>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            max_pending: 1_000_000,
            remote_wait: None,
        }
    }
}

struct Waiting {
    half: Half,
    since: Instant,
    /// A producer that already met a consumer is not a call to a virtual node.
    paired: bool,
    /// A producer past its wait, waiting `remote_wait` more for other collectors' orphans.
    held: bool,
    /// A producer: the consumer groups that read its message, as bits of its destination's
    /// [`Groups`].
    read_by: u64,
    /// Where a checkpoint saved it; `None` until the next one does.
    saved: Option<Saved>,
}

/// The consumer groups (consumer services) seen reading one destination, and when the last
/// new one appeared.
struct Groups {
    services: Vec<Arc<str>>,
    changed: Instant,
}

/// Most groups followed per destination: a producer to one with more waits the whole wait.
const MAX_GROUPS: usize = 64;

pub struct Pairer {
    config: PairingConfig,
    metrics: Arc<GraphMetrics>,
    /// The names of the waiting halves.
    names: Names,
    /// The client of calls into root spans.
    user: Arc<str>,
    /// Client and producer halves by their own key.
    /// Boxed: the map moves its entries when it grows or sweeps removed ones, and a
    /// pointer moves faster than a half.
    starters: HashMap<Key, Box<Waiting>>,
    /// Server and consumer halves by the key of the span they answer, with when they began
    /// to wait and where a checkpoint saved them.
    answers: HashMap<Key, Vec<(Half, Instant, Option<Saved>)>>,
    answer_count: usize,
    /// Keys in the order they started waiting, and whether a starter (not an answer) waits
    /// there: expiry walks it from the front.
    queue: VecDeque<(Instant, Key, bool)>,
    /// Producers past their wait held for other collectors' orphans, by when they began to
    /// wait, in that order.
    held: VecDeque<(Instant, Key)>,
    /// Consumer halves no producer answered here, for the other collectors.
    orphans: Vec<(Key, Half)>,
    /// Destinations batch consumers read (here or on other collectors): their producers
    /// are held for other collectors' orphans.
    batch_destinations: HashSet<Arc<str>>,
    /// A batch consumer that names no destination was seen: every producer is held.
    batch_consumer_anywhere: bool,
    /// Client calls seen, by a hash of (trace, parent span, service, peer, operation): a
    /// second one under the same parent is a retry. A hash, so remembering one costs no
    /// copies; 64 bits make a false retry among a million waiting calls a 1 in 10^7 chance.
    /// Each call is remembered with the generation it was seen in; generations last half a
    /// wait and the two latest count, so a call is remembered for at least half a wait.
    /// One table, so that a look-up is one probe.
    siblings: HashMap<u64, u32>,
    sibling_generation: u32,
    siblings_since: Instant,
    sibling_hasher: foldhash::fast::RandomState,
    /// This batch's client and producer halves by their key, while the batch is paired:
    /// a call whose two halves arrive together is paired without waiting in `starters`.
    batch_starters: HashMap<Key, usize>,
    /// Service-graph observations since they were last merged into the shared series.
    edges: EdgeTally,
    /// Every service that sent a span: a client naming one of them calls a service, even
    /// when no server span arrives (an open breaker rejects the call before it is sent).
    services: HashSet<Arc<str>>,
    /// Destinations whose messages consumers have read: a message there that nobody read
    /// within the wait is still queued (or lost), not a call to the broker.
    consumed: HashSet<Arc<str>>,
    /// The consumer groups of each destination, learned from the consumers seen.
    consumer_groups: HashMap<Arc<str>, Groups>,
    /// The service a client's peer name turned out to be, where it is another name
    /// (`server.address` of a load balancer, say), learned from paired calls.
    servers_of_peers: HashMap<(Arc<str>, Arc<str>), Arc<str>>,
    status_texts: StatusTexts,
    calls: Vec<CallRow>,
    /// Client calls that began to wait since the last take, as their clients tell them.
    unpaired: Vec<CallRow>,
    /// The parts checkpoints saved waiting halves in, and which of those still wait.
    parts: Parts,
    /// Keys of halves that began to wait, or changed, since the last checkpoint, and whether
    /// a starter waits there: the next part is written from them.
    unsaved: Vec<(Key, bool)>,
}

/// Most names kept in each of the pairer's sets and maps of names.
const MAX_NAMES: usize = 200_000;

impl Pairer {
    pub fn new(config: PairingConfig, metrics: Arc<GraphMetrics>) -> Self {
        Self {
            config,
            metrics,
            names: Names::default(),
            user: Arc::from(callwatch_storage::schema::USER_NODE),
            starters: HashMap::default(),
            answers: HashMap::default(),
            answer_count: 0,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            orphans: Vec::new(),
            batch_destinations: HashSet::default(),
            batch_consumer_anywhere: false,
            siblings: HashMap::default(),
            sibling_generation: 0,
            siblings_since: Instant::now(),
            sibling_hasher: foldhash::fast::RandomState::default(),
            batch_starters: HashMap::default(),
            edges: EdgeTally::default(),
            services: HashSet::default(),
            consumed: HashSet::default(),
            consumer_groups: HashMap::default(),
            servers_of_peers: HashMap::default(),
            status_texts: StatusTexts::default(),
            calls: Vec::new(),
            unpaired: Vec::new(),
            parts: Parts::default(),
            unsaved: Vec::new(),
        }
    }

    fn pending_count(&self) -> usize {
        self.starters.len() + self.answer_count
    }

    /// Makes room for one more waiting half: at the bound, the halves that have waited
    /// longest are settled now (counted as dropped, where Tempo counts the halves it had no
    /// room for).
    fn make_room(&mut self) {
        while self.pending_count() >= self.config.max_pending.max(1) {
            // Held producers first: they have waited longest.
            let settled = if let Some((since, key)) = self.held.pop_front() {
                self.settle_held(since, key)
            } else if let Some((since, key, starter)) = self.queue.pop_front() {
                self.settle(since, key, starter, since)
            } else {
                break;
            };
            self.metrics.dropped.add(settled as u64);
        }
    }

    /// Pairs one batch's halves: first the calls both of whose halves came in it, then the
    /// rest with the halves waiting from earlier batches. `arrived` holds each half of the
    /// batch in span order.
    fn take_batch(&mut self, mut arrived: Vec<Option<Waiting>>, now: Instant) {
        // Starters in span order, so that a retry is the client after its first attempt.
        self.batch_starters.clear();
        for (index, slot) in arrived.iter_mut().enumerate() {
            let Some(waiting) = slot else { continue };
            let half = &mut waiting.half;
            if !half.side.starts_call() {
                continue;
            }
            if half.side == Side::Client {
                if let Some(database) = half.database {
                    let database = self.names.text(database).clone();
                    let call = self.one_sided(half, database, NodeKind::Database);
                    self.metrics.calls_database.add(1);
                    self.emit(call);
                    *slot = None;
                    continue;
                }
                half.resent |= self.is_sibling_retry(half);
            }
            self.batch_starters
                .insert((half.trace_id, half.span_id), index);
        }
        for index in 0..arrived.len() {
            if let Some(answer) = arrived[index].take_if(|w| !w.half.side.starts_call()) {
                if answer.half.side == Side::Consumer
                    && let Some(destination) = answer.half.destination
                {
                    self.learn_group(destination, answer.half.service, now);
                }
                self.take_answer(answer.half, &mut arrived, now);
            }
        }
        // Clients not answered in this batch, and every producer: it may have consumers
        // to come.
        for waiting in arrived.into_iter().flatten() {
            self.take_starter(waiting, now);
        }
    }

    fn take_starter(&mut self, waiting: Waiting, now: Instant) {
        let Waiting {
            half,
            mut paired,
            mut read_by,
            ..
        } = waiting;
        let key = (half.trace_id, half.span_id);
        if let Some(answers) = self.answers.remove(&key) {
            self.answer_count -= answers.len();
            for (answer, _, saved) in answers {
                self.parts.forget(saved);
                let call = self.paired(&half, &answer);
                read_by |= self.read_by(&half, &answer, now);
                self.emit(call);
                paired = true;
            }
            // A client has one server; a producer may have more consumers to come.
            if half.side == Side::Client {
                return;
            }
        }
        match half.side {
            Side::Client => self.tell_unpaired(&half),
            // Read in its own batch, or by answers that waited for it.
            _ if self.read_by_all(&half, read_by, now) => return,
            _ => {}
        }
        self.make_room();
        self.wait_for_answer(half, paired, read_by, now, None);
    }

    /// Learns that `service` reads `destination`; the bit of its group there (0 past
    /// [`MAX_GROUPS`]).
    fn learn_group(&mut self, destination: Name, service: Name, now: Instant) -> u64 {
        let destination = self.names.text(destination);
        if !self.consumer_groups.contains_key(&**destination) {
            if self.consumer_groups.len() >= MAX_NAMES {
                return 0;
            }
            let groups = Groups {
                services: Vec::new(),
                changed: now,
            };
            self.consumer_groups.insert(destination.clone(), groups);
        }
        let groups = self
            .consumer_groups
            .get_mut(&**destination)
            .expect("just made");
        let service = self.names.text(service);
        let index = match groups.services.iter().position(|s| s == service) {
            Some(index) => index,
            None if groups.services.len() < MAX_GROUPS => {
                groups.services.push(service.clone());
                groups.changed = now;
                groups.services.len() - 1
            }
            None => return 0,
        };
        1 << index
    }

    /// The bit of the group of `consumer`, which read `producer`'s message.
    fn read_by(&mut self, producer: &Half, consumer: &Half, now: Instant) -> u64 {
        if producer.side != Side::Producer {
            return 0;
        }
        match producer.destination.or(consumer.destination) {
            Some(destination) => self.learn_group(destination, consumer.service, now),
            None => 0,
        }
    }

    /// Whether a producer whose message the groups `read_by` have read is done: every group
    /// known to read its destination has, and none has been new there for a whole wait (a
    /// group not yet seen may still be on its way).
    fn read_by_all(&self, producer: &Half, read_by: u64, now: Instant) -> bool {
        let groups = match producer.destination {
            Some(destination) if producer.side == Side::Producer => {
                self.consumer_groups.get(&**self.names.text(destination))
            }
            _ => None,
        };
        let Some(groups) = groups else {
            return false;
        };
        let all = match groups.services.len() {
            0 | MAX_GROUPS => return false,
            known => (1_u64 << known) - 1,
        };
        read_by & all == all && now.duration_since(groups.changed) >= self.config.wait
    }

    /// The producer waiting under `key` was read by `consumer`'s group: done if that was
    /// the last of them.
    fn producer_read(&mut self, key: Key, consumer: &Half, now: Instant) {
        let Some(waiting) = self.starters.get(&key) else {
            return;
        };
        let producer = waiting.half.clone();
        let read_by = waiting.read_by | self.read_by(&producer, consumer, now);
        if self.read_by_all(&producer, read_by, now) {
            self.remove_starter(&key);
        } else if let Some(waiting) = self.starters.get_mut(&key) {
            waiting.read_by = read_by;
        }
    }

    /// A client half that waits for its server: its call as the client tells it, for the
    /// breakers, which must not wait for pairing. Its server is named as the end of its
    /// wait would name it, or as its peer name turned out to be before.
    fn tell_unpaired(&mut self, client: &Half) {
        let Some(peer) = client.peer else { return };
        let peer = self.names.text(peer).clone();
        let learned = self
            .servers_of_peers
            .get(&(self.names.text(client.service).clone(), peer.clone()))
            .cloned();
        let (server, kind) = match learned {
            Some(server) => (server, NodeKind::Service),
            None if self.services.contains(&peer) => (peer, NodeKind::Service),
            None => (peer, NodeKind::External),
        };
        let call = self.one_sided(client, server, kind);
        self.unpaired.push(call);
    }

    /// `since` is never before that of the halves already waiting: the queue stays in order.
    /// `saved`: where a checkpoint saved it, for a half restored from one.
    fn wait_for_answer(
        &mut self,
        half: Half,
        paired: bool,
        read_by: u64,
        since: Instant,
        saved: Option<Saved>,
    ) {
        let key = (half.trace_id, half.span_id);
        self.queue.push_back((since, key, true));
        if saved.is_none() {
            self.unsaved.push((key, true));
        }
        let waiting = Box::new(Waiting {
            half,
            since,
            paired,
            held: false,
            read_by,
            saved,
        });
        if let Some(replaced) = self.starters.insert(key, waiting) {
            self.parts.forget(replaced.saved);
        }
    }

    fn wait_for_starter(&mut self, key: Key, half: Half, since: Instant, saved: Option<Saved>) {
        self.queue.push_back((since, key, false));
        if saved.is_none() {
            self.unsaved.push((key, false));
        }
        // Most keys are answered once: a list grown by its first push would hold four.
        self.answers
            .entry(key)
            .or_insert_with(|| Vec::with_capacity(1))
            .push((half, since, saved));
        self.answer_count += 1;
    }

    /// Whether a half no part holds yet waits under `key`.
    fn waits_unsaved(&self, key: Key, starter: bool) -> bool {
        if starter {
            self.starters.get(&key).is_some_and(|w| w.saved.is_none())
        } else {
            (self.answers.get(&key)).is_some_and(|answers| answers.iter().any(|a| a.2.is_none()))
        }
    }

    /// Takes the starter waiting under `key` out of the waiting halves.
    fn remove_starter(&mut self, key: &Key) -> Option<Box<Waiting>> {
        let waiting = self.starters.remove(key)?;
        self.parts.forget(waiting.saved);
        Some(waiting)
    }

    /// A waiting producer met a consumer: saved again, since its end is no longer the same.
    fn mark_paired(waiting: &mut Waiting, parts: &mut Parts, unsaved: &mut Vec<(Key, bool)>) {
        if waiting.paired {
            return;
        }
        waiting.paired = true;
        if let Some(saved) = waiting.saved.take() {
            parts.forget(Some(saved));
            unsaved.push(((waiting.half.trace_id, waiting.half.span_id), true));
        }
    }

    fn take_answer(&mut self, mut half: Half, batch: &mut [Option<Waiting>], now: Instant) {
        if half.side == Side::Consumer && !half.links.is_empty() {
            self.learn_batch_destination(&half);
            // A batch consumer answers each message it links to.
            for key in std::mem::take(&mut half.links) {
                self.answer(key, half.clone(), batch, now);
            }
        } else if let Some(parent) = half.parent_span_id {
            self.answer((half.trace_id, parent), half, batch, now);
        } else {
            // A root server or consumer: whoever called it sent no span.
            let call = self.called_by_user(&half, self.user.clone());
            self.metrics.calls_virtual.add(1);
            self.emit(call);
        }
    }

    /// Pairs `half` with the starter under `key` that came in its batch or waits from an
    /// earlier one, or lets it wait there. Taken by value: a server span often comes before
    /// its client's, and then waits as it is.
    fn answer(&mut self, key: Key, half: Half, batch: &mut [Option<Waiting>], now: Instant) {
        if let Some(&index) = self.batch_starters.get(&key)
            && let Some(arrived) = &mut batch[index]
        {
            // A client has one server: the pair is done. A producer waits on for more
            // consumer groups.
            let call = if arrived.half.side == Side::Client {
                let client = batch[index].take().expect("just seen").half;
                self.paired(&client, &half)
            } else {
                arrived.paired = true;
                arrived.read_by |= self.read_by(&arrived.half, &half, now);
                self.paired(&arrived.half, &half)
            };
            self.emit(call);
            return;
        }
        let starter = match self.starters.get_mut(&key) {
            Some(waiting) if waiting.half.side == Side::Client => {
                self.remove_starter(&key).expect("just found").half
            }
            // Past its wait, a producer held for other collectors' orphans answers only
            // those: a late consumer here is what it is with one collector.
            Some(waiting) if !waiting.held => {
                Self::mark_paired(waiting, &mut self.parts, &mut self.unsaved);
                waiting.half.clone()
            }
            _ => {
                self.make_room();
                self.wait_for_starter(key, half, now, None);
                return;
            }
        };
        let call = self.paired(&starter, &half);
        self.emit(call);
        if starter.side == Side::Producer {
            self.producer_read(key, &half, now);
        }
    }

    fn is_sibling_retry(&mut self, half: &Half) -> bool {
        let Some(parent) = half.parent_span_id else {
            return false;
        };
        let text = |name: Option<Name>| name.map(|name| &**self.names.text(name));
        let key = self.sibling_hasher.hash_one((
            half.trace_id,
            parent,
            text(Some(half.service)),
            text(half.peer),
            text(half.operation),
        ));
        let room = self.siblings.len() < 2 * self.config.max_pending;
        match self.siblings.entry(key) {
            // Older generations are gone: a call still here was seen within the last two.
            Entry::Occupied(_) => true,
            Entry::Vacant(new) => {
                if room {
                    new.insert(self.sibling_generation);
                }
                false
            }
        }
    }

    fn emit(&mut self, call: CallRow) {
        self.edges.observe(&call, connection_type(&call));
        self.calls.push(call);
    }

    /// A call both of whose halves arrived.
    fn paired(&mut self, client: &Half, server: &Half) -> CallRow {
        self.metrics.calls_paired.add(1);
        let status = self.status(client, Some(server));
        let names = &self.names;
        if let Some(destination) = client.destination
            && client.side == Side::Producer
            && !self.consumed.contains(&**names.text(destination))
            && self.consumed.len() < MAX_NAMES
        {
            self.consumed.insert(names.text(destination).clone());
        }
        let call_type = if client.side == Side::Producer {
            CallType::Async
        } else {
            CallType::Sync
        };
        if call_type == CallType::Sync
            && let Some(peer) = client.peer
            && peer != server.service
            && self.servers_of_peers.len() < MAX_NAMES
        {
            self.servers_of_peers.insert(
                (names.text(client.service).clone(), names.text(peer).clone()),
                names.text(server.service).clone(),
            );
        }
        let client_failed = client.error || client_grpc_failure(client.grpc_code);
        let failed =
            client_failed || server.error || server.http_status.is_some_and(|status| status >= 500);
        let timeout = timed_out(client, names) || (client_failed && server.end_ns > client.end_ns);
        let (operation, destination, queue_ns) = match call_type {
            CallType::Sync => (server.operation.or(client.operation), None, None),
            CallType::Async => {
                let destination = client.destination.or(server.destination);
                (
                    destination,
                    destination,
                    Some(server.start_ns.saturating_sub(client.end_ns)),
                )
            }
        };
        CallRow {
            start_ns: client.start_ns,
            trace_id: client.trace_id,
            client: names.text(client.service).clone(),
            server: names.text(server.service).clone(),
            call_type,
            server_kind: NodeKind::Service,
            operation: names.text_opt(operation),
            destination: names.text_opt(destination),
            client_instance: names.text_opt(client.instance),
            server_instance: names.text_opt(server.instance),
            api_version: names.text_opt(server.api_version.or(client.api_version)),
            client_duration_ns: Some(client.duration_ns()),
            server_duration_ns: Some(server.duration_ns()),
            queue_ns,
            failed,
            status,
            retry: client.resent,
            timeout,
            breaker_state: names.text_opt(client.breaker_state),
            breaker_name: names.text_opt(client.breaker_name),
            client_span_id: Some(client.span_id),
            server_span_id: Some(server.span_id),
        }
    }

    /// A call whose server sends no spans: a database, a broker, an external API, or a
    /// service that never got the call.
    fn one_sided(&mut self, client: &Half, server: Arc<str>, kind: NodeKind) -> CallRow {
        let call_type = if client.side == Side::Producer {
            CallType::Async
        } else {
            CallType::Sync
        };
        let failed = client.error || client_grpc_failure(client.grpc_code);
        let status = self.status(client, None);
        let names = &self.names;
        CallRow {
            start_ns: client.start_ns,
            trace_id: client.trace_id,
            client: names.text(client.service).clone(),
            server,
            call_type,
            server_kind: kind,
            operation: names.text_opt(client.operation),
            destination: names.text_opt(client.destination),
            client_instance: names.text_opt(client.instance),
            server_instance: None,
            api_version: names.text_opt(client.api_version),
            client_duration_ns: Some(client.duration_ns()),
            server_duration_ns: None,
            queue_ns: None,
            failed,
            status,
            retry: client.resent,
            timeout: timed_out(client, names),
            breaker_state: names.text_opt(client.breaker_state),
            breaker_name: names.text_opt(client.breaker_name),
            client_span_id: Some(client.span_id),
            server_span_id: None,
        }
    }

    /// A call into a root server or consumer span.
    fn called_by_user(&mut self, server: &Half, user: Arc<str>) -> CallRow {
        let call_type = if server.side == Side::Consumer {
            CallType::Async
        } else {
            CallType::Sync
        };
        let status = self.status(server, None);
        let names = &self.names;
        CallRow {
            start_ns: server.start_ns,
            trace_id: server.trace_id,
            client: user,
            server: names.text(server.service).clone(),
            call_type,
            server_kind: NodeKind::Service,
            operation: names.text_opt(server.operation),
            destination: names.text_opt(server.destination),
            client_instance: None,
            server_instance: names.text_opt(server.instance),
            api_version: names.text_opt(server.api_version),
            client_duration_ns: None,
            server_duration_ns: Some(server.duration_ns()),
            queue_ns: None,
            failed: server.error || server.http_status.is_some_and(|status| status >= 500),
            status,
            retry: false,
            timeout: false,
            breaker_state: None,
            breaker_name: None,
            client_span_id: None,
            server_span_id: Some(server.span_id),
        }
    }

    /// HTTP status (the server's when there is one), else the gRPC code name (the
    /// client's first), else `error.type` (the client's first).
    fn status(&mut self, client: &Half, server: Option<&Half>) -> Option<Arc<str>> {
        let http = server.and_then(|s| s.http_status).or(client.http_status);
        let grpc = client.grpc_code.or(server.and_then(|s| s.grpc_code));
        match (http, grpc) {
            (Some(status), _) => Some(self.status_texts.http(status)),
            (None, Some(code)) => Some(self.status_texts.grpc(code)),
            (None, None) => self
                .names
                .text_opt(client.error_type.or(server.and_then(|s| s.error_type))),
        }
    }

    fn expire_before(&mut self, cutoff: Instant, now: Instant) {
        while let Some(&(since, key, starter)) = self.queue.front() {
            if since > cutoff {
                break;
            }
            self.queue.pop_front();
            self.settle(since, key, starter, cutoff);
        }
        if let Some(held_cutoff) = self
            .config
            .remote_wait
            .and_then(|more| cutoff.checked_sub(more))
        {
            while let Some(&(since, key)) = self.held.front() {
                if since > held_cutoff {
                    break;
                }
                self.held.pop_front();
                self.settle_held(since, key);
            }
        }
        // A new generation starts, and the one before the last is forgotten.
        if now.duration_since(self.siblings_since) >= self.config.wait / 2 {
            self.sibling_generation += 1;
            let kept = self.sibling_generation - 1;
            self.siblings.retain(|_, seen| *seen >= kept);
            self.siblings_since = now;
        }
        self.metrics.merge_edges(std::mem::take(&mut self.edges));
        // Without checkpoints (flushes failing), keys of halves long gone would pile up.
        if self.unsaved.len() > 2 * self.pending_count() + 4096 {
            let mut unsaved = std::mem::take(&mut self.unsaved);
            // A key waited at again is there twice.
            unsaved.sort_unstable();
            unsaved.dedup();
            unsaved.retain(|&(key, starter)| self.waits_unsaved(key, starter));
            self.unsaved = unsaved;
        }
        if self.names.is_full() {
            self.renumber_names();
        }
        self.metrics.set_pending(self.pending_count());
    }

    /// Settles what the queue entry (`since`, `key`, `starter`) stands for, if it still
    /// waits: the starter that began to wait at `since`, or the answers under `key` that
    /// began to wait by `cutoff`. Returns how many halves were settled.
    fn settle(&mut self, since: Instant, key: Key, starter: bool, cutoff: Instant) -> usize {
        if starter {
            match self.starters.get_mut(&key) {
                Some(waiting) if waiting.since == since => {
                    let batch_consumed = self.batch_consumer_anywhere
                        || waiting.half.destination.is_some_and(|d| {
                            self.batch_destinations.contains(&**self.names.text(d))
                        });
                    if self.config.remote_wait.is_some()
                        && waiting.half.side == Side::Producer
                        && batch_consumed
                    {
                        // Another collector's consumer may still answer it.
                        waiting.held = true;
                        self.held.push_back((since, key));
                        return 0;
                    }
                    let waiting = self.remove_starter(&key).expect("just found");
                    if !waiting.paired {
                        self.settle_starter(&waiting.half);
                    }
                    1
                }
                _ => 0,
            }
        } else if let Some(answers) = self.answers.get_mut(&key) {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(answers)
                .into_iter()
                .partition(|(_, at, _)| *at <= cutoff);
            *answers = kept;
            if answers.is_empty() {
                self.answers.remove(&key);
            }
            self.answer_count -= expired.len();
            let settled = expired.len();
            for (half, _, saved) in expired {
                self.parts.forget(saved);
                // A link to another trace's message: another collector may hold it.
                if self.config.remote_wait.is_some() && key.0 != half.trace_id {
                    self.metrics.orphans_written.add(1);
                    self.orphans.push((key, half));
                } else {
                    self.metrics.unpaired_server.add(1);
                }
            }
            settled
        } else {
            0
        }
    }

    /// Remembers that batch consumers read `consumer`'s destination.
    fn learn_batch_destination(&mut self, consumer: &Half) {
        match consumer.destination.map(|d| self.names.text(d)) {
            Some(destination) if !self.batch_destinations.contains(destination) => {
                if self.batch_destinations.len() < MAX_NAMES {
                    self.batch_destinations.insert(destination.clone());
                } else {
                    self.batch_consumer_anywhere = true;
                }
            }
            Some(_) => {}
            None => self.batch_consumer_anywhere = true,
        }
    }

    /// Numbers the names the waiting halves still hold anew, in a table without the rest.
    fn renumber_names(&mut self) {
        let mut kept = Names::default();
        let halves = (self.starters.values_mut().map(|waiting| &mut waiting.half))
            .chain(self.answers.values_mut().flatten().map(|(half, ..)| half))
            .chain(self.orphans.iter_mut().map(|(_, half)| half));
        for half in halves {
            for name in half.names_mut() {
                self.names.renumber(name, &mut kept);
            }
        }
        self.names = kept.renumbered();
    }

    /// Settles a producer held for other collectors' orphans, if it still waits.
    fn settle_held(&mut self, since: Instant, key: Key) -> usize {
        match self.starters.get(&key) {
            Some(waiting) if waiting.since == since && waiting.held => {
                let waiting = self.remove_starter(&key).expect("just found");
                if !waiting.paired {
                    self.settle_starter(&waiting.half);
                }
                1
            }
            _ => 0,
        }
    }

    /// A client or producer whose server never answered.
    fn settle_starter(&mut self, half: &Half) {
        let names = &self.names;
        if half.side == Side::Producer
            && half
                .destination
                .is_some_and(|d| self.consumed.contains(&**names.text(d)))
        {
            self.metrics.unconsumed.add(1);
            return;
        }
        let target = match half.side {
            Side::Producer => names
                .text_opt(half.destination.or(half.peer))
                .map(|name| (name, NodeKind::Messaging)),
            _ => names.text_opt(half.peer).map(|name| {
                let kind = if self.services.contains(&name) {
                    NodeKind::Service
                } else {
                    NodeKind::External
                };
                (name, kind)
            }),
        };
        match target {
            Some((name, kind)) => {
                let call = self.one_sided(half, name, kind);
                self.metrics.calls_virtual.add(1);
                self.emit(call);
            }
            None => self.metrics.unpaired_client.add(1),
        }
    }
}

/// gRPC codes that fail a call on the client side (OpenTelemetry: every code but OK).
fn client_grpc_failure(code: Option<i64>) -> bool {
    code.is_some_and(|code| code != 0)
}

fn timed_out(client: &Half, names: &Names) -> bool {
    client.grpc_code == Some(4)
        || client.http_status == Some(504)
        || client.http_status == Some(408)
        || client.error_type.is_some_and(|t| {
            let t = names.text(t);
            let t = t.to_ascii_lowercase();
            t.contains("timeout") || t.contains("timedout") || t.contains("deadline")
        })
}

/// The text of each HTTP status below 1000 and of each gRPC code, made once: nearly every
/// call has one of a few, and writing it anew would cost an allocation and a look-up.
#[derive(Default)]
struct StatusTexts {
    http: Vec<Option<Arc<str>>>,
    grpc: [Option<Arc<str>>; GRPC_CODES.len()],
}

impl StatusTexts {
    fn http(&mut self, status: i64) -> Arc<str> {
        let Some(index) = usize::try_from(status).ok().filter(|&s| s < 1000) else {
            return Arc::from(status.to_string());
        };
        if self.http.is_empty() {
            self.http.resize(1000, None);
        }
        (self.http[index].get_or_insert_with(|| Arc::from(status.to_string()))).clone()
    }

    fn grpc(&mut self, code: i64) -> Arc<str> {
        let index = grpc_code_index(code);
        (self.grpc[index].get_or_insert_with(|| Arc::from(GRPC_CODES[index]))).clone()
    }
}

const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Where a gRPC code's name is in [`GRPC_CODES`]: a code gRPC does not define is UNKNOWN.
fn grpc_code_index(code: i64) -> usize {
    const UNKNOWN: usize = 2;
    usize::try_from(code)
        .ok()
        .filter(|&code| code < GRPC_CODES.len())
        .unwrap_or(UNKNOWN)
}

impl CallDeriver for Pairer {
    fn restore(&mut self, index: &[u8], parts: &[(u64, Vec<u8>)]) -> Result<(), String> {
        enum Restored {
            Starter(Half, bool),
            Answer(Key, Half),
        }
        // Each half with its arrival and where it is saved.
        let mut halves: Vec<(Option<u64>, Restored, Option<Saved>)> = Vec::new();
        if Parts::is_index(index) {
            let waiting = Parts::decode(index)?;
            for id in waiting.ids() {
                let (_, bytes) = parts
                    .iter()
                    .find(|(part, _)| *part == id)
                    .ok_or_else(|| format!("part {id} of the waiting halves is missing"))?;
                let part = crate::pending::decode(bytes, &mut self.names)
                    .map_err(|error| format!("part {id}: {error}"))?;
                let starters = part.starters.len();
                let saved = |index: usize| Saved {
                    part: id,
                    index: index as u32,
                };
                for (index, (half, paired, arrived)) in part.starters.into_iter().enumerate() {
                    let saved = saved(index);
                    if waiting.waits(saved) {
                        halves.push((arrived, Restored::Starter(half, paired), Some(saved)));
                    }
                }
                for (index, (key, half, arrived)) in part.answers.into_iter().enumerate() {
                    let saved = saved(starters + index);
                    if waiting.waits(saved) {
                        halves.push((arrived, Restored::Answer(key, half), Some(saved)));
                    }
                }
            }
            self.parts = waiting;
        } else {
            // A whole file of halves, from before parts: the next checkpoint saves them anew.
            let pending = crate::pending::decode(index, &mut self.names)?;
            halves.extend(
                (pending.starters.into_iter()).map(|(half, paired, arrived)| {
                    (arrived, Restored::Starter(half, paired), None)
                }),
            );
            halves.extend(
                (pending.answers.into_iter())
                    .map(|(key, half, arrived)| (arrived, Restored::Answer(key, half), None)),
            );
        }
        let (now, wall) = (Instant::now(), unix_ms());
        // A restored half waits what it had left, but at least half a wait after the
        // restart: its partner may have been retried while the server was down.
        let most_waited = self.config.wait - self.config.wait / 2;
        let since = |arrived: Option<u64>| {
            let waited = Duration::from_millis(arrived.map_or(0, |a| wall.saturating_sub(a)));
            now.checked_sub(waited.min(most_waited)).unwrap_or(now)
        };
        let mut restored: Vec<(Instant, Restored, Option<Saved>)> = halves
            .into_iter()
            .map(|(arrived, half, saved)| (since(arrived), half, saved))
            .collect();
        // Into the queue in the order they began to wait, which expiry relies on.
        restored.sort_by_key(|(since, _, _)| *since);
        for (since, restored, saved) in restored {
            match restored {
                Restored::Starter(half, paired) => {
                    // What was known of its destination before the restart: it has
                    // consumers, who may read it in batches.
                    if paired && let Some(destination) = half.destination {
                        let destination = self.names.text(destination);
                        self.consumed.insert(destination.clone());
                        self.batch_destinations.insert(destination.clone());
                    }
                    self.wait_for_answer(half, paired, 0, since, saved)
                }
                Restored::Answer(key, half) => self.wait_for_starter(key, half, since, saved),
            }
        }
        self.metrics.set_pending(self.pending_count());
        Ok(())
    }

    fn spans(&mut self, batch: &RecordBatch, now: Instant) {
        let Some(columns) = SpanColumns::new(batch) else {
            tracing::error!("the call pairer was given a batch without the spans columns");
            return;
        };
        self.metrics.spans_seen.add(columns.len() as u64);
        let mut last_service = None;
        for row in 0..columns.len() {
            let service = columns.service(row);
            // Spans come grouped by resource: most rows repeat the service before them.
            if last_service != Some(service)
                && !self.services.contains(service)
                && self.services.len() < MAX_NAMES
            {
                self.services.insert(Arc::from(service));
            }
            last_service = Some(service);
        }
        let mut last = LastResource::default();
        // Sized for every row at once: a half is large, and growing would copy them all.
        let mut arrived = Vec::with_capacity(columns.len());
        arrived.extend(
            (0..columns.len())
                .filter_map(|row| columns.half(row, &mut self.names, &mut last))
                .map(|half| {
                    Some(Waiting {
                        half,
                        since: now,
                        paired: false,
                        held: false,
                        read_by: 0,
                        saved: None,
                    })
                }),
        );
        self.take_batch(arrived, now);
        self.metrics.merge_edges(std::mem::take(&mut self.edges));
        self.metrics.set_pending(self.pending_count());
    }

    fn expire(&mut self, now: Instant) {
        if let Some(cutoff) = now.checked_sub(self.config.wait) {
            self.expire_before(cutoff, now);
        }
    }

    fn take_calls(&mut self) -> Vec<CallRow> {
        // The next take is about as long: room for it now, not by doubling from empty.
        let capacity = self.calls.len();
        std::mem::replace(&mut self.calls, Vec::with_capacity(capacity))
    }

    fn take_unpaired_calls(&mut self) -> Vec<CallRow> {
        std::mem::take(&mut self.unpaired)
    }

    fn take_orphans(&mut self) -> Vec<u8> {
        if self.orphans.is_empty() {
            return Vec::new();
        }
        let wall = unix_ms();
        let mut encoder = crate::pending::Encoder::with_capacity(self.orphans.len());
        for (key, half) in &self.orphans {
            encoder.answer(*key, half, wall);
        }
        let orphans = encoder.finish(&self.names, 0, self.orphans.len());
        self.orphans.clear();
        orphans
    }

    fn remote_answers(&mut self, orphans: &[u8], now: Instant) -> Result<(), String> {
        let orphans = crate::pending::decode(orphans, &mut self.names)?;
        for (key, half, _) in orphans.answers {
            self.learn_batch_destination(&half);
            let starter = match self.starters.get_mut(&key) {
                Some(waiting) if waiting.half.side == Side::Producer => {
                    Self::mark_paired(waiting, &mut self.parts, &mut self.unsaved);
                    waiting.half.clone()
                }
                // A client, or nothing: not this collector's message.
                _ => continue,
            };
            self.metrics.calls_paired_remote.add(1);
            let call = self.paired(&starter, &half);
            self.emit(call);
            self.producer_read(key, &half, now);
        }
        self.metrics.merge_edges(std::mem::take(&mut self.edges));
        Ok(())
    }

    fn pending(&mut self) -> PendingState {
        let (now, wall) = (Instant::now(), unix_ms());
        let arrived = |since: Instant| {
            wall.saturating_sub(u64::try_from(now.duration_since(since).as_millis()).unwrap_or(0))
        };
        // Only the halves no part holds yet are written: starters first, then answers.
        let unsaved = std::mem::take(&mut self.unsaved);
        let part = self.parts.next_id();
        let mut encoder = crate::pending::Encoder::with_capacity(unsaved.len());
        let mut written = 0;
        for &(key, _) in unsaved.iter().filter(|(_, starter)| *starter) {
            if let Some(waiting) = self.starters.get_mut(&key)
                && waiting.saved.is_none()
            {
                encoder.starter(&waiting.half, waiting.paired, arrived(waiting.since));
                waiting.saved = Some(Saved {
                    part,
                    index: written,
                });
                written += 1;
            }
        }
        let starters = written;
        for &(key, _) in unsaved.iter().filter(|(_, starter)| !*starter) {
            let Some(answers) = self.answers.get_mut(&key) else {
                continue;
            };
            for (half, since, saved) in answers.iter_mut().filter(|(_, _, s)| s.is_none()) {
                encoder.answer(key, half, arrived(*since));
                *saved = Some(Saved {
                    part,
                    index: written,
                });
                written += 1;
            }
        }
        let new_part = (written > 0).then(|| {
            self.parts.add(written);
            let bytes = encoder.finish(
                &self.names,
                starters as usize,
                (written - starters) as usize,
            );
            (part, bytes)
        });
        // The list's room is kept for the next checkpoint, unless one burst made it large.
        self.unsaved = unsaved;
        self.unsaved.clear();
        self.unsaved.shrink_to(1 << 16);
        PendingState {
            new_part,
            index: self.parts.encode(),
            parts: self.parts.ids(),
        }
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // Maps by their slots (a key, a value and a control byte each), waiting halves by
        // their size; names by a typical length. Links and long names are not counted.
        let starters = self.starters.capacity()
            * (size_of::<Key>() + size_of::<Box<Waiting>>() + 1)
            + self.starters.len() * size_of::<Waiting>();
        let answers = self.answers.capacity()
            * (size_of::<Key>() + size_of::<Vec<(Half, Instant, Option<Saved>)>>() + 1)
            + self.answer_count * size_of::<(Half, Instant, Option<Saved>)>();
        let queue = self.queue.capacity() * size_of::<(Instant, Key, bool)>()
            + self.held.capacity() * size_of::<(Instant, Key)>()
            + self.orphans.capacity() * size_of::<(Key, Half)>();
        let siblings = self.siblings.capacity() * (size_of::<u64>() + size_of::<u32>() + 1);
        let saving = self.unsaved.capacity() * size_of::<(Key, bool)>() + self.parts.memory_bytes();
        let names = self.names.len() * NAME_BYTES;
        let peers = self.servers_of_peers.capacity() * (3 * size_of::<Arc<str>>() + 1);
        let groups: usize = self
            .consumer_groups
            .values()
            .map(|g| {
                size_of::<(Arc<str>, Groups)>() + 1 + g.services.capacity() * size_of::<Arc<str>>()
            })
            .sum();
        starters + answers + queue + siblings + saving + names + peers + groups
    }
}

/// Milliseconds since the Unix epoch: waiting halves keep their arrival across a restart.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one interned name costs, about: its text, the `Arc`'s counts and a set slot.
const NAME_BYTES: usize = 64;

#[cfg(test)]
mod tests;
