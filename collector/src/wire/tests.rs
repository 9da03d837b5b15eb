use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::*;

fn attribute(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request_of(span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", V::StringValue("a".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span() -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        attributes: vec![
            attribute("http.method", V::StringValue("GET".into())),
            attribute("retry", V::BoolValue(true)),
            attribute("n", V::IntValue(-3)),
            attribute("x", V::DoubleValue(0.5)),
            attribute("b", V::BytesValue(vec![0, 1])),
            attribute("strindex", V::StringValueStrindex(4)),
            attribute(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::IntValue(1)),
                    }],
                }),
            ),
        ],
        events: vec![Event {
            name: "retry".into(),
            attributes: vec![attribute("attempt", V::IntValue(2))],
            ..Default::default()
        }],
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
        ..Default::default()
    }
}

/// A length-delimited field.
fn field(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend(body);
    out
}

/// A request body of one resource and one scope around an encoded span, as written.
fn request_around(span: &[u8]) -> Vec<u8> {
    field(1, &field(2, &field(2, span)))
}

/// The fields of a view, as text: what a view holds, to compare two.
fn shown(request: &Request<'_>) -> String {
    let attributes = |range: &Range<usize>| format!("{:?}", request.attributes(range));
    let mut out = String::new();
    for resource in &request.resources {
        out += &format!(
            "resource {} {}\n",
            attributes(&resource.attributes),
            resource.dropped_attributes_count
        );
        for scope in request.scopes(resource) {
            out += &format!(
                "scope {} {} {}\n",
                scope.name,
                scope.version,
                attributes(&scope.attributes)
            );
            for span in request.spans(scope) {
                out += &format!(
                    "span {:?} {:?} {:?} {} {} {} {} {:?} {} {}\n",
                    span.trace_id,
                    span.span_id,
                    span.parent_span_id,
                    span.name,
                    span.kind,
                    span.start_time_unix_nano,
                    span.flags,
                    span.status,
                    attributes(&span.attributes),
                    span.dropped_attributes_count,
                );
                for event in request.events(span) {
                    out += &format!("event {} {}\n", event.name, attributes(&event.attributes));
                }
                for link in request.links(span) {
                    out += &format!("link {:?} {}\n", link.span_id, attributes(&link.attributes));
                }
            }
        }
    }
    out
}

#[test]
fn a_body_read_in_place_holds_what_prost_decodes() {
    let request = request_of(span());
    let body = request.encode_to_vec();
    let read = read(&body).expect("an exporter's body is read in place");
    assert_eq!(shown(&read), shown(&Request::of(&request)));
    assert!(
        shown(&read).contains("Absent"),
        "a string-table reference is no value"
    );
}

#[test]
fn unknown_fields_are_skipped() {
    let mut body = request_of(span()).encode_to_vec();
    // Field 9 (varint), 10 (fixed64), 11 (bytes) and 12 (fixed32) of the request.
    body.extend([9 << 3, 0x96, 0x01]);
    body.extend([(10 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    body.extend([(11 << 3) | 2, 2, b'h', b'i']);
    body.extend([(12 << 3) | 5, 1, 2, 3, 4]);
    assert!(ExportTraceServiceRequest::decode(&body[..]).is_ok());
    let read = read(&body).expect("read");
    assert_eq!(read.span_count(), 1);
}

/// What protobuf merges, or what is not as exporters write it, is left to prost.
#[test]
fn bodies_read_in_place_only_as_exporters_write_them() {
    // A status given twice: protobuf merges the two.
    let status = Status {
        message: "a".into(),
        code: 1,
    }
    .encode_to_vec();
    let mut span_body = span().encode_to_vec();
    span_body.push((15 << 3) | 2);
    span_body.push(status.len() as u8);
    span_body.extend(&status);
    let body = request_around(&span_body);
    let merged = ExportTraceServiceRequest::decode(&body[..]).expect("prost merges");
    assert_eq!(
        merged.resource_spans[0].scope_spans[0].spans[0]
            .status
            .as_ref()
            .unwrap()
            .message,
        "a"
    );
    assert!(read(&body).is_none());

    // Not UTF-8: prost's error.
    let mut bad = span();
    bad.name = "é".into();
    let mut body = request_of(bad).encode_to_vec();
    let at = body.windows(2).position(|w| w == "é".as_bytes()).unwrap();
    body[at] = 0xff;
    assert!(ExportTraceServiceRequest::decode(&body[..]).is_err());
    assert!(read(&body).is_none());

    // Cut short.
    let body = request_of(span()).encode_to_vec();
    assert!(read(&body[..body.len() - 3]).is_none());

    // Arrays nested deeper than exporters nest them.
    let mut deep = AnyValue {
        value: Some(V::IntValue(1)),
    };
    for _ in 0..=MOST_NESTED {
        deep = AnyValue {
            value: Some(V::ArrayValue(ArrayValue { values: vec![deep] })),
        };
    }
    let mut nested = span();
    nested.attributes = vec![KeyValue {
        key: "deep".into(),
        value: Some(deep),
        ..Default::default()
    }];
    let body = request_of(nested).encode_to_vec();
    assert!(ExportTraceServiceRequest::decode(&body[..]).is_ok());
    assert!(read(&body).is_none());
}

#[test]
fn a_spans_attributes_given_around_an_event_are_left_to_prost() {
    let mut first = span();
    first.events.clear();
    let mut body = first.encode_to_vec();
    body.extend(
        Span {
            events: span().events,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    body.extend(
        Span {
            attributes: vec![attribute("late", V::IntValue(1))],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let merged = Span::decode(&body[..]).unwrap();
    assert_eq!(merged.attributes.len(), span().attributes.len() + 1);
    let request = request_of(merged.clone());
    // Written in field order by prost, it is read in place.
    assert!(read(&request.encode_to_vec()).is_some());
    // Written in the order above, it is not, and prost takes it.
    let request_body = request_around(&body);
    assert!(read(&request_body).is_none());
    let decoded = ExportTraceServiceRequest::decode(&request_body[..]).unwrap();
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans[0], merged);
}

/// Bytes the views' lists hold.
fn views_bytes(request: &Request<'_>) -> usize {
    fn bytes<T>(list: &Vec<T>) -> usize {
        list.capacity() * size_of::<T>()
    }
    bytes(&request.resources)
        + bytes(&request.scopes)
        + bytes(&request.spans)
        + bytes(&request.events)
        + bytes(&request.links)
        + bytes(&request.attributes)
}

#[test]
fn the_views_are_charged_while_they_live_and_refused_past_the_budget() {
    use crate::inflight::InflightBudget;
    let mut request = request_of(span());
    request.resource_spans[0].scope_spans[0].spans = vec![span(); 100];
    let body = request.encode_to_vec();

    let budget = InflightBudget::new(1 << 20);
    let read = read_within(&body, Room::charged(budget.charge(), 0))
        .unwrap()
        .unwrap();
    assert_eq!(shown(&read), shown(&Request::of(&request)));
    // The lists' bytes, and the nested array decoded whole (a `KeyValue` per two bytes).
    assert!(budget.used() >= views_bytes(&read), "{}", budget.used());
    assert!(budget.used() < 2 * views_bytes(&read) + body.len() * 16);
    drop(read);
    assert_eq!(budget.used(), 0);

    // A budget with room for less than the views: refused for good, and nothing charged.
    let small = InflightBudget::new(4096);
    let refused = read_within(&body, Room::charged(small.charge(), 0)).unwrap_err();
    assert!(
        matches!(refused, IngestError::DecodedTooLarge { limit: 4096 }),
        "{refused}"
    );
    assert_eq!((small.used(), small.refused()), (0, 0));

    // Room for them, but taken by other requests: refused for now.
    let mut others = budget.charge();
    others.grow((1 << 20) - 4096).unwrap();
    let refused = read_within(&body, Room::charged(budget.charge(), 0)).unwrap_err();
    assert!(
        matches!(refused, IngestError::InflightFull { .. }),
        "{refused}"
    );
    assert_eq!((budget.used(), budget.refused()), ((1 << 20) - 4096, 1));
}

#[test]
fn the_bound_for_prost_covers_the_messages_and_their_views() {
    use opentelemetry_proto::tonic::trace::v1::span::Link;
    let mut one = span();
    one.links = vec![Link::default(); 3];
    // Attributes as exporters send them: their values count once, not byte by byte.
    one.attributes.push(attribute(
        "user_agent.original",
        V::StringValue("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into()),
    ));
    let mut request = request_of(one);
    request.resource_spans[0].scope_spans[0].spans =
        vec![request.resource_spans[0].scope_spans[0].spans[0].clone(); 50];
    let body = request.encode_to_vec();
    let views = Request::of(&request);
    let spans = 50;
    let attributes = views.attributes.len();
    let decoded = size_of::<ResourceSpans>()
        + size_of::<ScopeSpans>()
        + spans * (size_of::<Span>() + size_of::<Event>() + 3 * size_of::<Link>())
        + attributes * size_of::<KeyValue>();
    let bound = decoded_bound(&body);
    assert!(bound >= decoded + views_bytes(&views), "{bound}");
    // Not far past it: a body of ordinary spans is not refused for its bound.
    assert!(bound < 8 * (decoded + views_bytes(&views)), "{bound}");
    // An array value of empty values: an `AnyValue` for every two bytes of it, at least.
    let mut nested = span();
    nested.attributes = vec![attribute(
        "list",
        V::ArrayValue(ArrayValue {
            values: vec![AnyValue::default(); 500],
        }),
    )];
    let mut plain = span();
    plain.attributes = vec![attribute("list", V::IntValue(1))];
    let grows = decoded_bound(&request_of(nested).encode_to_vec())
        - decoded_bound(&request_of(plain).encode_to_vec());
    assert!(grows >= 500 * size_of::<AnyValue>(), "{grows}");
    // Empty spans: two bytes each, and their messages and views counted in full.
    let body = field(1, &field(2, &[0x12, 0x00].repeat(1000)));
    assert!(decoded_bound(&body) >= 1000 * (size_of::<Span>() + size_of::<super::Span>()));
}
