//! The half of a call that one span describes, read from a `spans` batch: only the columns
//! and attributes that pairing needs, its names held as numbers in [`Names`].

use std::num::NonZeroU32;
use std::sync::Arc;

use arrow::array::{Array, AsArray, ListArray, MapArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampNanosecondType;
use callwatch_storage::schema;
use callwatch_storage::{parse_span_id, parse_trace_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Side {
    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "CLIENT" => Some(Self::Client),
            "SERVER" => Some(Self::Server),
            "PRODUCER" => Some(Self::Producer),
            "CONSUMER" => Some(Self::Consumer),
            _ => None,
        }
    }

    /// Client and producer spans start calls; server and consumer spans answer them.
    pub fn starts_call(self) -> bool {
        matches!(self, Self::Client | Self::Producer)
    }
}

/// What one CLIENT, SERVER, PRODUCER or CONSUMER span says about its call. Hundreds of
/// thousands wait at full ingest, so names are [`Name`]s: four bytes each, copied and
/// dropped without touching a shared count.
#[derive(Debug, Clone, PartialEq)]
pub struct Half {
    pub side: Side,
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    /// (trace id, span id) of each linked span.
    pub links: Vec<(u128, u64)>,
    pub service: Name,
    pub instance: Option<Name>,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Status ERROR.
    pub error: bool,
    pub http_status: Option<i64>,
    pub grpc_code: Option<i64>,
    pub error_type: Option<Name>,
    /// Route with method, rpc service/method, or database operation.
    pub operation: Option<Name>,
    pub api_version: Option<Name>,
    /// Who the client says it calls: `peer.service` > `server.address` >
    /// `network.peer.address[:port]`.
    pub peer: Option<Name>,
    /// The database node of a database client span, by DESIGN's order of names.
    pub database: Option<Name>,
    /// `messaging.destination.name`.
    pub destination: Option<Name>,
    /// `http.request.resend_count` > 0.
    pub resent: bool,
    pub breaker_state: Option<Name>,
    /// `circuit_breaker.name`.
    pub breaker_name: Option<Name>,
}

impl Half {
    pub fn duration_ns(&self) -> i64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Every name the half holds, to be renumbered.
    pub fn names_mut(&mut self) -> impl Iterator<Item = &mut Name> {
        let optional = [
            &mut self.instance,
            &mut self.error_type,
            &mut self.operation,
            &mut self.api_version,
            &mut self.peer,
            &mut self.database,
            &mut self.destination,
            &mut self.breaker_state,
            &mut self.breaker_name,
        ];
        std::iter::once(&mut self.service).chain(optional.into_iter().flatten())
    }
}

/// A name by its number in [`Names`]. Not zero, so that an absent name costs nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(NonZeroU32);

/// Each name the waiting halves hold, once, by number.
///
/// Names are never taken back one by one: a half does not say when it lets go of one.
/// Instead, when the table has grown past [`Names::is_full`], the pairer renumbers every
/// name still held into a new table ([`Names::renumber`]) and drops the old one.
#[derive(Default)]
pub struct Names {
    /// The text of name `n` at `n - 1`.
    texts: Vec<Arc<str>>,
    numbers: foldhash::HashMap<Arc<str>, Name>,
    /// Where names made of parts are put together before they are looked up.
    scratch: String,
    /// How many names the table held after it was last renumbered.
    kept: usize,
}

/// Names a table holds before it is renumbered, at the least.
const MOST_NAMES: usize = 200_000;

impl Names {
    pub fn get(&mut self, text: &str) -> Name {
        if let Some(&name) = self.numbers.get(text) {
            return name;
        }
        self.insert(Arc::from(text))
    }

    pub fn get_opt(&mut self, text: Option<&str>) -> Option<Name> {
        text.map(|text| self.get(text))
    }

    /// The name `parts` make when joined, put together without allocating when it is known.
    pub fn get_joined(&mut self, parts: &[&str]) -> Name {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend(parts.iter().copied());
        let name = self.get(&scratch);
        self.scratch = scratch;
        name
    }

    fn insert(&mut self, text: Arc<str>) -> Name {
        let number = u32::try_from(self.texts.len() + 1).expect("renumbered before 2^32 names");
        let name = Name(NonZeroU32::new(number).expect("one or more"));
        self.texts.push(text.clone());
        self.numbers.insert(text, name);
        name
    }

    /// The shared text of `name`: one allocation for every call that names it.
    pub fn text(&self, name: Name) -> &Arc<str> {
        &self.texts[name.0.get() as usize - 1]
    }

    pub fn text_opt(&self, name: Option<Name>) -> Option<Arc<str>> {
        name.map(|name| self.text(name).clone())
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the table should be renumbered: it holds [`MOST_NAMES`] and twice what it
    /// kept the last time, so that renumbering costs little per name added.
    pub fn is_full(&self) -> bool {
        self.texts.len() > MOST_NAMES.max(2 * self.kept)
    }

    /// `name`'s number in `into`, which takes its text (the same allocation).
    pub fn renumber(&self, name: &mut Name, into: &mut Names) {
        let text = self.text(*name);
        *name = match into.numbers.get(&**text) {
            Some(&kept) => kept,
            None => into.insert(text.clone()),
        };
    }

    /// A table renumbered into: it now counts what it holds as kept.
    pub fn renumbered(mut self) -> Self {
        self.kept = self.texts.len();
        self
    }
}

/// The attributes pairing reads, by key.
#[derive(Default)]
struct Wanted<'a> {
    http_route: Option<&'a str>,
    http_method: Option<&'a str>,
    url_template: Option<&'a str>,
    http_status: Option<&'a str>,
    rpc_service: Option<&'a str>,
    rpc_method: Option<&'a str>,
    grpc_code: Option<&'a str>,
    db_system: Option<&'a str>,
    db_namespace: Option<&'a str>,
    db_operation: Option<&'a str>,
    peer_service: Option<&'a str>,
    server_address: Option<&'a str>,
    peer_address: Option<&'a str>,
    peer_port: Option<&'a str>,
    destination: Option<&'a str>,
    resend_count: Option<&'a str>,
    error_type: Option<&'a str>,
    api_version: Option<&'a str>,
    breaker_state: Option<&'a str>,
    breaker_name: Option<&'a str>,
    /// Envoy's `response_flags`: `UO` is a request its circuit breaker turned away.
    response_flags: Option<&'a str>,
    /// Polly reports breaker events as `event.name`.
    event_name: Option<&'a str>,
}

impl<'a> Wanted<'a> {
    fn take(&mut self, key: &str, value: &'a str) {
        let slot = match key {
            "http.route" => &mut self.http_route,
            "http.request.method" | "http.method" => &mut self.http_method,
            "url.template" => &mut self.url_template,
            "http.response.status_code" | "http.status_code" => &mut self.http_status,
            "rpc.service" => &mut self.rpc_service,
            "rpc.method" => &mut self.rpc_method,
            "rpc.grpc.status_code" => &mut self.grpc_code,
            "db.system.name" | "db.system" => &mut self.db_system,
            "db.namespace" | "db.name" => &mut self.db_namespace,
            "db.operation.name" | "db.operation" => &mut self.db_operation,
            "peer.service" => &mut self.peer_service,
            "server.address" | "net.peer.name" => &mut self.server_address,
            "network.peer.address" | "net.sock.peer.addr" => &mut self.peer_address,
            "network.peer.port" => &mut self.peer_port,
            "messaging.destination.name" | "messaging.destination" => &mut self.destination,
            "http.request.resend_count" => &mut self.resend_count,
            "error.type" => &mut self.error_type,
            "api.version" | "http.request.header.accept-version" => &mut self.api_version,
            "circuit_breaker.state" | "circuitbreaker.state" => &mut self.breaker_state,
            "circuit_breaker.name" | "circuitbreaker.name" => &mut self.breaker_name,
            "response_flags" => &mut self.response_flags,
            "event.name" => &mut self.event_name,
            _ => return,
        };
        // The first of two spellings wins, so the current semantic conventions go first.
        if slot.is_none() {
            *slot = Some(value);
        }
    }
}

/// Columns of a spans batch that pairing reads.
pub struct SpanColumns<'a> {
    trace_id: &'a StringArray,
    span_id: &'a StringArray,
    parent_span_id: &'a StringArray,
    service: &'a StringArray,
    instance: &'a StringArray,
    name: &'a StringArray,
    kind: &'a StringArray,
    start: &'a arrow::array::TimestampNanosecondArray,
    end: &'a arrow::array::TimestampNanosecondArray,
    status: &'a StringArray,
    /// The attribute map: offsets per row into its keys and values, read in place rather
    /// than sliced into a new map per row.
    attributes: &'a MapArray,
    attribute_keys: &'a StringArray,
    attribute_values: &'a StringArray,
    events: &'a ListArray,
    links: &'a ListArray,
}

impl<'a> SpanColumns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Option<Self> {
        let text = |name: &str| batch.column_by_name(name)?.as_string_opt::<i32>();
        let time = |name: &str| {
            batch
                .column_by_name(name)?
                .as_primitive_opt::<TimestampNanosecondType>()
        };
        let attributes: &MapArray = batch.column_by_name(schema::ATTRIBUTES)?.as_map_opt()?;
        Some(Self {
            trace_id: text(schema::TRACE_ID)?,
            span_id: text(schema::SPAN_ID)?,
            parent_span_id: text(schema::PARENT_SPAN_ID)?,
            service: text(schema::SERVICE_NAME)?,
            instance: text(schema::SERVICE_INSTANCE_ID)?,
            name: text(schema::SPAN_NAME)?,
            kind: text(schema::SPAN_KIND)?,
            start: time(schema::START_TIME)?,
            end: time(schema::END_TIME)?,
            status: text(schema::STATUS_CODE)?,
            attributes,
            attribute_keys: attributes.keys().as_string_opt::<i32>()?,
            attribute_values: attributes.values().as_string_opt::<i32>()?,
            events: batch.column_by_name(schema::EVENTS)?.as_list_opt::<i32>()?,
            links: batch.column_by_name(schema::LINKS)?.as_list_opt::<i32>()?,
        })
    }

    pub fn len(&self) -> usize {
        self.kind.len()
    }

    pub fn service(&self, row: usize) -> &'a str {
        self.service.value(row)
    }

    pub fn name(&self, row: usize) -> &'a str {
        self.name.value(row)
    }

    pub fn kind(&self, row: usize) -> &'a str {
        self.kind.value(row)
    }

    pub fn status(&self, row: usize) -> &'a str {
        self.status.value(row)
    }

    pub fn duration_ns(&self, row: usize) -> i64 {
        self.end.value(row).saturating_sub(self.start.value(row))
    }

    /// The half this row describes; `None` for INTERNAL and UNSPECIFIED spans. `last`
    /// holds the names of the row read before.
    pub fn half(&self, row: usize, names: &mut Names, last: &mut LastResource<'a>) -> Option<Half> {
        let side = Side::parse(self.kind.value(row))?;
        let trace_id = parse_trace_id(self.trace_id.value(row))?;
        let span_id = parse_span_id(self.span_id.value(row))?;
        let parent_span_id = if self.parent_span_id.is_valid(row) {
            parse_span_id(self.parent_span_id.value(row))
        } else {
            None
        };

        let offsets = self.attributes.value_offsets();
        let (keys, values) = (self.attribute_keys, self.attribute_values);
        let mut wanted = Wanted::default();
        for index in offsets[row] as usize..offsets[row + 1] as usize {
            if values.is_valid(index) {
                wanted.take(keys.value(index), values.value(index));
            }
        }

        // Breakers sit on the client side of a call.
        let (breaker_state, breaker_name) = if side == Side::Client {
            reported_breaker(&wanted, self.events, row)
        } else {
            (None, None)
        };
        let links = if side == Side::Consumer {
            link_ids(self.links, row)
        } else {
            Vec::new()
        };
        let operation = operation(&wanted, side, self.name.value(row));
        let peer = peer(&wanted);
        // A database is named by the peer, else its namespace, else its system.
        let database = wanted
            .db_system
            .map(|system| peer.unwrap_or([wanted.db_namespace.unwrap_or(system), "", ""]));
        let mut joined = |parts: Option<[&str; 3]>| parts.map(|parts| names.get_joined(&parts));
        let (operation, peer, database) = (joined(operation), joined(peer), joined(database));
        Some(Half {
            side,
            trace_id,
            span_id,
            parent_span_id,
            links,
            service: repeated(&mut last.service, self.service.value(row), names),
            instance: self
                .instance
                .is_valid(row)
                .then(|| repeated(&mut last.instance, self.instance.value(row), names)),
            start_ns: self.start.value(row),
            end_ns: self.end.value(row),
            error: self.status.value(row) == "ERROR",
            http_status: wanted.http_status.and_then(|s| s.parse().ok()),
            grpc_code: wanted.grpc_code.and_then(|s| s.parse().ok()),
            error_type: names.get_opt(wanted.error_type),
            operation,
            // An explicit version is kept as sent; one read from a route or package is
            // lowercased (`/V1/` and `/v1/` are one version).
            api_version: match wanted.api_version {
                Some(explicit) => Some(names.get(explicit)),
                None => api_version(&wanted).map(|version| {
                    if version.bytes().any(|b| b.is_ascii_uppercase()) {
                        names.get(&version.to_ascii_lowercase())
                    } else {
                        names.get(version)
                    }
                }),
            },
            peer,
            database,
            destination: names.get_opt(wanted.destination),
            resent: wanted
                .resend_count
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|n| n > 0),
            breaker_state: names.get_opt(breaker_state.map(normalize_breaker_state)),
            breaker_name: names.get_opt(breaker_name),
        })
    }
}

/// The service and instance of the last row read. Spans come grouped by resource, so most
/// rows repeat them, and comparing two short texts costs less than a look-up.
#[derive(Default)]
pub struct LastResource<'a> {
    service: Option<(&'a str, Name)>,
    instance: Option<(&'a str, Name)>,
}

fn repeated<'a>(last: &mut Option<(&'a str, Name)>, text: &'a str, names: &mut Names) -> Name {
    match *last {
        Some((seen, name)) if seen == text => name,
        _ => last.insert((text, names.get(text))).1,
    }
}

/// The breaker state a client span reports, by what says most: a state-change event, a
/// Polly breaker event, the state attribute, or Envoy's `UO` flag (the breaker turned the
/// request away, so it is open). The breaker's name is the span's `circuit_breaker.name`,
/// else the one its breaker event carries.
fn reported_breaker<'a>(
    wanted: &Wanted<'a>,
    events: &'a ListArray,
    row: usize,
) -> (Option<&'a str>, Option<&'a str>) {
    let (event_state, event_name) = breaker_event(events, row).unwrap_or_default();
    let state = event_state
        .or(wanted.event_name.and_then(polly_breaker_state))
        .or(wanted.breaker_state)
        .or_else(|| {
            wanted
                .response_flags
                .is_some_and(|flags| flags.split(',').any(|flag| flag.trim() == "UO"))
                .then_some("open")
        });
    (state, wanted.breaker_name.or(event_name))
}

/// Polly's breaker events, as `event.name`.
fn polly_breaker_state(event: &str) -> Option<&'static str> {
    match event {
        "OnCircuitOpened" => Some("open"),
        "OnCircuitHalfOpened" => Some("half_open"),
        "OnCircuitClosed" => Some("closed"),
        _ => None,
    }
}

/// The state the last breaker event of a span names (`to` of a `circuit_breaker.state_change`
/// event, or a Polly event by its name or `event.name` attribute), with the breaker's name
/// when the event carries `circuit_breaker.name`.
fn breaker_event(events: &ListArray, row: usize) -> Option<(Option<&str>, Option<&str>)> {
    if events.is_null(row) || events.value_length(row) == 0 {
        return None;
    }
    let items = events.values().as_struct_opt()?;
    let names = items
        .column_by_name(schema::EVENT_NAME)?
        .as_string_opt::<i32>()?;
    let attributes = items.column_by_name(schema::ATTRIBUTES)?.as_map_opt()?;
    let (keys, values) = (
        attributes.keys().as_string_opt::<i32>()?,
        attributes.values().as_string_opt::<i32>()?,
    );
    let offsets = events.value_offsets();
    let (first, last) = (offsets[row] as usize, offsets[row + 1] as usize);
    (first..last).rev().find_map(|event| {
        let attribute = |key: &str| {
            let range = attributes.value_offsets();
            (range[event] as usize..range[event + 1] as usize)
                .find(|&i| keys.value(i) == key && values.is_valid(i))
                .map(|i| values.value(i))
        };
        let state = match names.value(event) {
            "circuit_breaker.state_change" => attribute("to"),
            name => polly_breaker_state(name)
                .or_else(|| attribute("event.name").and_then(polly_breaker_state)),
        }?;
        Some((Some(state), attribute("circuit_breaker.name")))
    })
}

/// `half-open`, `HALF_OPEN` and `half_open` are one state.
fn normalize_breaker_state(state: &str) -> &str {
    const STATES: [&str; 5] = ["closed", "open", "half_open", "forced_open", "disabled"];
    let same = |known: &str| {
        known.len() == state.len()
            && known
                .bytes()
                .zip(state.bytes())
                .all(|(k, s)| k == s.to_ascii_lowercase() || (k == b'_' && s == b'-'))
    };
    STATES
        .into_iter()
        .find(|known| same(known))
        .unwrap_or(state)
}

fn link_ids(links: &ListArray, row: usize) -> Vec<(u128, u64)> {
    if links.is_null(row) || links.value_length(row) == 0 {
        return Vec::new();
    }
    let Some(items) = links.values().as_struct_opt() else {
        return Vec::new();
    };
    let (Some(traces), Some(spans)) = (
        items
            .column_by_name(schema::TRACE_ID)
            .and_then(|c| c.as_string_opt::<i32>()),
        items
            .column_by_name(schema::SPAN_ID)
            .and_then(|c| c.as_string_opt::<i32>()),
    ) else {
        return Vec::new();
    };
    let offsets = links.value_offsets();
    (offsets[row] as usize..offsets[row + 1] as usize)
        .filter_map(|i| {
            Some((
                parse_trace_id(traces.value(i))?,
                parse_span_id(spans.value(i))?,
            ))
        })
        .collect()
}

/// The operation of a call as its span names it: `METHOD /route`, `pkg.Service/Method`, the
/// database operation, or the messaging destination; in parts to be joined.
fn operation<'a>(wanted: &Wanted<'a>, side: Side, span_name: &'a str) -> Option<[&'a str; 3]> {
    if let (Some(service), Some(method)) = (wanted.rpc_service, wanted.rpc_method) {
        return Some([service, "/", method]);
    }
    if let Some(route) = wanted.http_route.or(wanted.url_template) {
        return Some(match wanted.http_method {
            Some(method) => [method, " ", route],
            None => [route, "", ""],
        });
    }
    if wanted.db_system.is_some() {
        return Some([wanted.db_operation.unwrap_or(span_name), "", ""]);
    }
    if let Some(destination) = wanted.destination {
        return Some([destination, "", ""]);
    }
    // An HTTP client without a route template only knows its method; the server side
    // names the route when it arrives.
    let named = match side {
        Side::Server | Side::Consumer => true,
        Side::Client | Side::Producer => wanted.http_method.is_none(),
    };
    named.then_some([span_name, "", ""])
}

/// Who a client says it calls, in parts to be joined: `peer.service` > `server.address` >
/// `network.peer.address[:port]`.
fn peer<'a>(wanted: &Wanted<'a>) -> Option<[&'a str; 3]> {
    if let Some(peer) = wanted.peer_service.or(wanted.server_address) {
        return Some([peer, "", ""]);
    }
    let address = wanted.peer_address?;
    Some(match wanted.peer_port {
        Some(port) => [address, ":", port],
        None => [address, "", ""],
    })
}

/// `v1` from `/v1/orders` or `payments.v1.PaymentService` (the caller lowercases it).
fn api_version<'a>(wanted: &Wanted<'a>) -> Option<&'a str> {
    let from_route = wanted
        .http_route
        .or(wanted.url_template)
        .and_then(|route| route.split('/').find(|p| is_version(p)));
    let from_package = || wanted.rpc_service?.split('.').find(|p| is_version(p));
    from_route.or_else(from_package)
}

/// `v1`, `V2`, `v1beta2`, `v2alpha`.
fn is_version(part: &str) -> bool {
    let Some(rest) = part.strip_prefix(['v', 'V']) else {
        return false;
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let tail = &rest[digits..];
    digits > 0
        && (tail.is_empty()
            || ["alpha", "beta"].iter().any(|stage| {
                tail.strip_prefix(stage)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbered_names_keep_their_texts_and_leave_the_rest() {
        let mut names = Names::default();
        let mut held = [
            names.get("orders"),
            names.get_joined(&["GET", " ", "/v1/orders"]),
        ];
        assert_eq!(names.get("orders"), held[0], "one number per text");
        let before = held.map(|name| names.text(name).clone());
        for n in 0..MOST_NAMES {
            names.get(&n.to_string());
        }
        assert!(names.is_full());
        let mut kept = Names::default();
        for name in &mut held {
            names.renumber(name, &mut kept);
        }
        let mut kept = kept.renumbered();
        assert_eq!(kept.len(), 2);
        for (name, text) in held.iter().zip(&before) {
            // The same allocation: what keys by a name's address still finds it.
            assert!(Arc::ptr_eq(kept.text(*name), text));
        }
        assert_eq!(&**kept.text(held[1]), "GET /v1/orders");
        assert_eq!(kept.get("orders"), held[0]);
        let new = kept.get("payments");
        assert_eq!(&**kept.text(new), "payments");
        assert!(!kept.is_full());
    }

    fn version_of(route: Option<&str>, rpc: Option<&str>) -> Option<String> {
        api_version(&Wanted {
            http_route: route,
            rpc_service: rpc,
            ..Wanted::default()
        })
        .map(str::to_ascii_lowercase)
    }

    #[test]
    fn api_versions_come_from_routes_and_packages() {
        assert_eq!(version_of(Some("/v2/orders"), None).as_deref(), Some("v2"));
        assert_eq!(
            version_of(Some("/api/V1/users/{id}"), None).as_deref(),
            Some("v1")
        );
        assert_eq!(version_of(Some("/vouchers"), None), None);
        assert_eq!(version_of(Some("/v/x"), None), None);
        assert_eq!(
            version_of(None, Some("payments.v1.PaymentService")).as_deref(),
            Some("v1")
        );
        assert_eq!(
            version_of(None, Some("google.pubsub.v1beta2.Publisher")).as_deref(),
            Some("v1beta2")
        );
        assert_eq!(version_of(None, Some("grpc.health.Health")), None);
    }

    #[test]
    fn peers_are_named_by_service_address_or_socket() {
        let joined = |wanted: Wanted| peer(&wanted).map(|parts| parts.concat());
        let socket = Wanted {
            peer_address: Some("10.0.0.7"),
            peer_port: Some("5432"),
            ..Wanted::default()
        };
        assert_eq!(joined(socket).as_deref(), Some("10.0.0.7:5432"));
        let address_only = Wanted {
            peer_address: Some("10.0.0.7"),
            ..Wanted::default()
        };
        assert_eq!(joined(address_only).as_deref(), Some("10.0.0.7"));
        let named = Wanted {
            peer_service: Some("payments"),
            server_address: Some("pay.internal"),
            peer_address: Some("10.0.0.7"),
            ..Wanted::default()
        };
        assert_eq!(joined(named).as_deref(), Some("payments"));
        assert_eq!(joined(Wanted::default()), None);
    }

    #[test]
    fn operations_name_routes_methods_and_destinations() {
        fn operation(wanted: &Wanted, side: Side, span_name: &str) -> Option<String> {
            super::operation(wanted, side, span_name).map(|parts| parts.concat())
        }
        let wanted = Wanted {
            http_route: Some("/v1/users/{id}"),
            http_method: Some("GET"),
            ..Wanted::default()
        };
        assert_eq!(
            operation(&wanted, Side::Server, "GET").as_deref(),
            Some("GET /v1/users/{id}")
        );
        let client = Wanted {
            http_method: Some("GET"),
            ..Wanted::default()
        };
        assert_eq!(operation(&client, Side::Client, "GET"), None);
        let rpc = Wanted {
            rpc_service: Some("payments.v1.PaymentService"),
            rpc_method: Some("Charge"),
            ..Wanted::default()
        };
        assert_eq!(
            operation(&rpc, Side::Client, "x").as_deref(),
            Some("payments.v1.PaymentService/Charge")
        );
        let queue = Wanted {
            destination: Some("order-events"),
            ..Wanted::default()
        };
        assert_eq!(
            operation(&queue, Side::Producer, "send").as_deref(),
            Some("order-events")
        );
    }
}
