//! What a checkout does, span by span, and what the notification consumer does.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use rand::Rng;

use super::{
    CallType, Conditions, EdgeKey, GATEWAY, INVENTORY, MS, Message, NOTIFICATIONS, NodeKind,
    ORDERS, PAYMENTS, Simulator, SpanSpec, USERS, WEB, edge, int, text,
};

/// user-service calls that time out on the first attempt (and are retried).
const USER_TIMEOUT_SHARE: f64 = 0.04;
const USER_CLIENT_TIMEOUT_NS: u64 = 200 * MS;

impl Simulator {
    pub(super) fn checkout(&mut self, t0: u64) {
        let conditions = self.conditions(t0);
        let trace = self.trace_id();
        self.truth.traces += 1;
        let (root, web_client, gateway_server) = (self.span_id(), self.span_id(), self.span_id());
        let (web, gateway) = (self.instance(WEB), self.instance(GATEWAY));
        let user_id = self.rng.random_range(1..100_000);

        // The gateway asks for the user and places the order at once.
        let fan_out = t0 + 3 * MS / 2;
        let user_end = self.user_lookup(trace, gateway_server, gateway, fan_out, user_id);
        let (order_end, status) =
            self.place_order(trace, gateway_server, gateway, fan_out, &conditions);
        let failed = status >= 500;
        let gateway_end = user_end.max(order_end) + 300_000;
        let error = |what: &str| failed.then(|| format!("{what} answered {status}"));

        self.emit(
            trace,
            gateway_server,
            Some(web_client),
            SpanSpec::new(
                GATEWAY,
                gateway,
                SpanKind::Server,
                "POST /api/checkout",
                t0 + MS,
                gateway_end,
                http_server("POST", "/api/checkout", status),
            )
            .failed(error("order-service")),
        );
        self.emit(
            trace,
            web_client,
            Some(root),
            SpanSpec::new(
                WEB,
                web,
                SpanKind::Client,
                "POST",
                t0 + MS / 2,
                gateway_end + 400_000,
                http_client("POST", "api-gateway", "/api/checkout", Some(status), 0),
            )
            .failed(error("api-gateway")),
        );
        self.truth.call(
            edge("web-frontend", "api-gateway"),
            NodeKind::Service,
            failed,
        );
        let mut attributes = http_server("POST", "/checkout", status);
        attributes.push(text("enduser.id", &format!("user-{user_id}")));
        self.emit(
            trace,
            root,
            None,
            SpanSpec::new(
                WEB,
                web,
                SpanKind::Server,
                "POST /checkout",
                t0,
                gateway_end + 800_000,
                attributes,
            )
            .failed(error("api-gateway")),
        );
        self.truth
            .call(edge("user", "web-frontend"), NodeKind::Service, failed);
    }

    /// `GET /v1/users/{id}` from the gateway, with a retry after a client timeout now and
    /// then. Returns when the gateway has its answer.
    fn user_lookup(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        gateway: usize,
        start: u64,
        user_id: u32,
    ) -> u64 {
        let path = format!("/v1/users/{user_id}");
        let times_out = self.rng.random_bool(USER_TIMEOUT_SHARE);
        let mut attempt_start = start;
        for attempt in 0..=u32::from(times_out) {
            let timed_out = times_out && attempt == 0;
            let (client, server) = (self.span_id(), self.span_id());
            let instance = self.instance(USERS);
            let server_start = attempt_start + 400_000;
            // A timed-out attempt: the client gives up, the server runs on and answers late.
            let server_time = if timed_out {
                350 * MS
            } else {
                self.latency(4.0)
            };
            let server_end = server_start + server_time;
            let cache_start = server_start + 300_000;
            let cache = self.span_id();
            let cache_end = cache_start + self.latency(0.4);
            let hit = self.rng.random_bool(0.8);
            self.emit(
                trace,
                cache,
                Some(server),
                SpanSpec::new(
                    USERS,
                    instance,
                    SpanKind::Client,
                    "GET",
                    cache_start,
                    cache_end.min(server_end),
                    vec![
                        text("db.system.name", "redis"),
                        text("db.operation.name", "GET"),
                        text("db.query.text", "GET user:?"),
                        text("server.address", "user-cache"),
                        int("server.port", 6379),
                        text("app.cache.result", if hit { "hit" } else { "miss" }),
                    ],
                ),
            );
            self.truth.call(
                edge("user-service", "user-cache"),
                NodeKind::Database,
                false,
            );
            self.emit(
                trace,
                server,
                Some(client),
                SpanSpec::new(
                    USERS,
                    instance,
                    SpanKind::Server,
                    "GET /v1/users/{id}",
                    server_start,
                    server_end,
                    http_server("GET", "/v1/users/{id}", 200),
                ),
            );
            let (client_end, status, error) = if timed_out {
                (
                    attempt_start + USER_CLIENT_TIMEOUT_NS,
                    None,
                    Some("timeout after 200 ms".to_string()),
                )
            } else {
                (server_end + 500_000, Some(200), None)
            };
            let mut attributes = http_client("GET", "user-service", &path, status, attempt);
            if timed_out {
                attributes.push(text("error.type", "timeout"));
            }
            self.emit(
                trace,
                client,
                Some(parent),
                SpanSpec::new(
                    GATEWAY,
                    gateway,
                    SpanKind::Client,
                    "GET",
                    attempt_start,
                    client_end,
                    attributes,
                )
                .failed(error),
            );
            self.truth.call(
                edge("api-gateway", "user-service"),
                NodeKind::Service,
                timed_out,
            );
            if !timed_out {
                return client_end;
            }
            attempt_start = client_end + MS;
        }
        unreachable!("the last attempt succeeds")
    }

    /// `POST /v1|v2/orders` from the gateway and all that order-service does for it.
    /// Returns when the gateway has its answer, and the HTTP status.
    fn place_order(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        gateway: usize,
        start: u64,
        conditions: &Conditions,
    ) -> (u64, i64) {
        let version = if self.rng.random_bool(conditions.v2_share) {
            "v2"
        } else {
            "v1"
        };
        let route = format!("/{version}/orders");
        let (client, server) = (self.span_id(), self.span_id());
        let instance = self.instance(ORDERS);
        let degraded = conditions.degraded_order_instance == Some(instance);
        let slowdown = if degraded { 5.0 } else { 1.0 };
        let server_start = start + MS / 2;

        // The fraud check and the charge go out together.
        let fraud = self.span_id();
        let fraud_start = server_start + 200_000;
        let fraud_end = fraud_start + self.latency(8.0);
        self.emit(
            trace,
            fraud,
            Some(server),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Client,
                "POST",
                fraud_start,
                fraud_end,
                vec![
                    text("http.request.method", "POST"),
                    text("url.full", "https://api.fraudcheck.example/v1/score"),
                    text("server.address", "api.fraudcheck.example"),
                    int("server.port", 443),
                    text("peer.service", "fraud-check"),
                    int("http.response.status_code", 200),
                ],
            ),
        );
        self.truth.call(
            edge("order-service", "fraud-check"),
            NodeKind::External,
            false,
        );
        // Every charge starts at the same offset into its trace, so charges reach the
        // breaker in the order traces start.
        let (charge_end, charge_failed) =
            self.charge(trace, server, instance, server_start + MS, conditions);

        let internal_failure = degraded && self.rng.random_bool(0.2);
        let ok = !charge_failed && !internal_failure;
        let mut cursor = fraud_end.max(charge_end) + 200_000;
        if ok {
            cursor =
                self.persist_and_publish(trace, server, instance, cursor, slowdown, conditions);
        }
        let server_end = cursor + (500_000.0 * slowdown) as u64 + self.latency(1.0);
        let status = match (charge_failed, internal_failure) {
            (true, _) => 503,
            (false, true) => 500,
            (false, false) => 201,
        };
        let error = (!ok).then(|| match status {
            503 => "payment declined: payment-service unavailable".to_string(),
            _ => "order-service-2: connection pool exhausted".to_string(),
        });
        let events = if internal_failure {
            vec![Event {
                time_unix_nano: server_end - 100_000,
                name: "exception".into(),
                attributes: vec![
                    text(
                        "exception.type",
                        "org.springframework.dao.DataAccessResourceFailureException",
                    ),
                    text("exception.message", "connection pool exhausted"),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        self.emit(
            trace,
            server,
            Some(client),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Server,
                format!("POST {route}"),
                server_start,
                server_end,
                http_server("POST", &route, status),
            )
            .failed(error.clone())
            .with_events(events),
        );
        let client_end = server_end + 400_000;
        self.emit(
            trace,
            client,
            Some(parent),
            SpanSpec::new(
                GATEWAY,
                gateway,
                SpanKind::Client,
                "POST",
                start,
                client_end,
                http_client("POST", "order-service", &route, Some(status), 0),
            )
            .failed(error),
        );
        self.truth
            .call(edge("api-gateway", "order-service"), NodeKind::Service, !ok);
        (client_end, status)
    }

    /// `payments.v1.PaymentService/Charge` through the client's circuit breaker.
    /// Returns when the client has its answer and whether the charge failed.
    fn charge(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        instance: usize,
        start: u64,
        conditions: &Conditions,
    ) -> (u64, bool) {
        let client = self.span_id();
        let (permitted, state) = self.breaker.try_acquire(start);
        let mut attributes = vec![
            text("rpc.system", "grpc"),
            text("rpc.service", "payments.v1.PaymentService"),
            text("rpc.method", "Charge"),
            text("server.address", "payment-service"),
            int("server.port", 50051),
            text("circuit_breaker.name", "payment"),
            text("circuit_breaker.state", state.as_str()),
        ];
        if !permitted {
            // Rejected by the open breaker: fails at once, no server span.
            attributes.push(text("error.type", "CallNotPermittedException"));
            let end = start + 40_000;
            self.emit(
                trace,
                client,
                Some(parent),
                SpanSpec::new(
                    ORDERS,
                    instance,
                    SpanKind::Client,
                    "payments.v1.PaymentService/Charge",
                    start,
                    end,
                    attributes,
                )
                .failed(Some(
                    "CircuitBreaker 'payment' is OPEN and does not permit further calls".into(),
                )),
            );
            self.truth.call(
                edge("order-service", "payment-service"),
                NodeKind::Service,
                true,
            );
            return (end, true);
        }
        let server = self.span_id();
        let payment = self.instance(PAYMENTS);
        let server_start = start + 600_000;
        let server_time = (self.latency(18.0) as f64 * conditions.payment_slowdown) as u64;
        let server_end = server_start + server_time;
        let failed = self.rng.random_bool(conditions.payment_error_rate);
        let code = if failed { 14 } else { 0 };
        let error = failed.then(|| "card processor unavailable".to_string());
        self.emit(
            trace,
            server,
            Some(client),
            SpanSpec::new(
                PAYMENTS,
                payment,
                SpanKind::Server,
                "payments.v1.PaymentService/Charge",
                server_start,
                server_end,
                vec![
                    text("rpc.system", "grpc"),
                    text("rpc.service", "payments.v1.PaymentService"),
                    text("rpc.method", "Charge"),
                    int("rpc.grpc.status_code", code),
                ],
            )
            .failed(error.clone()),
        );
        attributes.push(int("rpc.grpc.status_code", code));
        let end = server_end + 500_000;
        self.emit(
            trace,
            client,
            Some(parent),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Client,
                "payments.v1.PaymentService/Charge",
                start,
                end,
                attributes,
            )
            .failed(error),
        );
        self.breaker.record(start, failed, end - start);
        self.truth.call(
            edge("order-service", "payment-service"),
            NodeKind::Service,
            failed,
        );
        (end, failed)
    }

    /// Writes the order to PostgreSQL and publishes it to Kafka (inventory-service consumes
    /// it in this trace) and RabbitMQ (notification-service consumes it later, in a batch).
    /// Returns when order-service is done.
    fn persist_and_publish(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        instance: usize,
        start: u64,
        slowdown: f64,
        conditions: &Conditions,
    ) -> u64 {
        let insert = self.span_id();
        let insert_end = start + (self.latency(3.0) as f64 * slowdown) as u64;
        self.emit(
            trace,
            insert,
            Some(parent),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Client,
                "INSERT orders",
                start,
                insert_end,
                vec![
                    text("db.system.name", "postgresql"),
                    text("db.namespace", "orders"),
                    text("db.operation.name", "INSERT"),
                    text("db.collection.name", "orders"),
                    text(
                        "db.query.text",
                        "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
                    ),
                    text("peer.service", "orders"),
                    text("server.address", "orders-db"),
                    int("server.port", 5432),
                ],
            ),
        );
        self.truth
            .call(edge("order-service", "orders"), NodeKind::Database, false);

        let (publish, consume) = (self.span_id(), self.span_id());
        let publish_start = insert_end + 200_000;
        let publish_end = publish_start + self.latency(1.0);
        self.emit(
            trace,
            publish,
            Some(parent),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Producer,
                "publish order-events",
                publish_start,
                publish_end,
                vec![
                    text("messaging.system", "kafka"),
                    text("messaging.destination.name", "order-events"),
                    text("messaging.operation.type", "send"),
                    text("server.address", "kafka"),
                ],
            ),
        );
        let consume_start = publish_end + conditions.inventory_lag_ns + self.latency(5.0);
        let inventory = self.instance(INVENTORY);
        let consume_end = consume_start + self.latency(6.0);
        self.emit(
            trace,
            consume,
            Some(publish),
            SpanSpec::new(
                INVENTORY,
                inventory,
                SpanKind::Consumer,
                "process order-events",
                consume_start,
                consume_end,
                vec![
                    text("messaging.system", "kafka"),
                    text("messaging.destination.name", "order-events"),
                    text("messaging.operation.type", "process"),
                    text("messaging.consumer.group.name", "inventory"),
                    int("messaging.kafka.message.offset", self.truth.traces as i64),
                ],
            ),
        );
        self.truth.call(
            EdgeKey {
                source: "order-service",
                target: "inventory-service",
                call_type: CallType::Async,
                destination: Some("order-events"),
            },
            NodeKind::Service,
            false,
        );

        let notify = self.span_id();
        let notify_start = publish_end + 100_000;
        let notify_end = notify_start + self.latency(0.8);
        self.emit(
            trace,
            notify,
            Some(parent),
            SpanSpec::new(
                ORDERS,
                instance,
                SpanKind::Producer,
                "publish notifications",
                notify_start,
                notify_end,
                vec![
                    text("messaging.system", "rabbitmq"),
                    text("messaging.destination.name", "notifications"),
                    text("messaging.operation.type", "send"),
                    text(
                        "messaging.rabbitmq.destination.routing_key",
                        "order.created",
                    ),
                ],
            ),
        );
        self.queued_notifications.push(Message {
            trace_id: trace,
            span_id: notify,
            published_ns: notify_end,
        });
        notify_end
    }

    /// notification-service takes every message published by now, in one trace of its own
    /// that links to each message.
    pub(super) fn notification_batch(&mut self, at: u64) {
        let (ready, waiting): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.queued_notifications)
                .into_iter()
                .partition(|m| m.published_ns <= at);
        self.queued_notifications = waiting;
        if ready.is_empty() {
            return;
        }
        let trace = self.trace_id();
        self.truth.traces += 1;
        let span = self.span_id();
        let links = ready
            .iter()
            .map(|m| Link {
                trace_id: m.trace_id.to_vec(),
                span_id: m.span_id.to_vec(),
                attributes: vec![text("messaging.operation.type", "process")],
                ..Link::default()
            })
            .collect();
        let count = ready.len();
        self.emit(
            trace,
            span,
            None,
            SpanSpec::new(
                NOTIFICATIONS,
                0,
                SpanKind::Consumer,
                "process notifications",
                at,
                at + 2 * MS + count as u64 * MS,
                vec![
                    text("messaging.system", "rabbitmq"),
                    text("messaging.destination.name", "notifications"),
                    text("messaging.operation.type", "process"),
                    int("messaging.batch.message_count", count as i64),
                ],
            )
            .with_links(links),
        );
        let edge = EdgeKey {
            source: "order-service",
            target: "notification-service",
            call_type: CallType::Async,
            destination: Some("notifications"),
        };
        for _ in 0..count {
            self.truth.call(edge.clone(), NodeKind::Service, false);
        }
    }
}

fn http_server(method: &str, route: &str, status: i64) -> Vec<KeyValue> {
    vec![
        text("http.request.method", method),
        text("http.route", route),
        text("url.scheme", "http"),
        int("http.response.status_code", status),
        text("network.protocol.version", "1.1"),
    ]
}

fn http_client(
    method: &str,
    host: &str,
    path: &str,
    status: Option<i64>,
    resend_count: u32,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        text("http.request.method", method),
        text("url.full", &format!("http://{host}:8080{path}")),
        text("server.address", host),
        int("server.port", 8080),
    ];
    if let Some(status) = status {
        attributes.push(int("http.response.status_code", status));
    }
    if resend_count > 0 {
        attributes.push(int("http.request.resend_count", i64::from(resend_count)));
    }
    attributes
}
