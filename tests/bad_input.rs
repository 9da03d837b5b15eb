//! Bad or excessive input gets the status the OTLP specification asks for, and the server
//! keeps serving: undecodable bodies, wrong content types and encodings, oversized messages,
//! invalid ids, a full memory budget and a full ingest queue.

use std::collections::HashSet;
use std::io::Write;

use crate::common::requests::{hex, numbered_span, request};
use crate::common::{Server, grpc_export, metric};
use bytes::Bytes;
use callwatch_collector::RpcStatus;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn post(
    server: &Server,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.traces_url())
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Sends a valid request (span ids from `n`) and expects it stored: the server still serves.
async fn still_serving(server: &Server, n: u32, accepted: &mut HashSet<String>) {
    let span = numbered_span(1, n, 0);
    let id = hex(&span.span_id);
    let response = post(
        server,
        PROTOBUF,
        None,
        request("svc", vec![span]).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    accepted.insert(id);
}

async fn expect_status(response: reqwest::Response, status: u16, json: bool, message: &str) {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.bytes().await.unwrap();
    let error = if json {
        assert_eq!(content_type, JSON);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["message"].as_str().unwrap().to_string()
    } else {
        assert_eq!(content_type, PROTOBUF);
        RpcStatus::decode(body).unwrap().message
    };
    assert!(error.contains(message), "{error:?} should say {message:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_bad_requests_with_the_right_status_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--max-message-size", "64KiB"]);
    let mut accepted = HashSet::new();

    let response = post(&server, PROTOBUF, None, vec![0xff, 0xff, 0xff, 0x0f]).await;
    expect_status(
        response,
        400,
        false,
        "not a protobuf ExportTraceServiceRequest",
    )
    .await;
    assert_eq!(
        metric(&server, "callwatch_ingest_requests_invalid_total").await,
        1.0,
        "counted once"
    );
    still_serving(&server, 1, &mut accepted).await;

    let response = post(&server, JSON, None, b"{\"resourceSpans\": [".to_vec()).await;
    expect_status(response, 400, true, "invalid JSON").await;
    let response = post(
        &server,
        "application/json; charset=utf-8",
        None,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#.to_vec(),
    )
    .await;
    expect_status(response, 400, true, "traceId").await;
    still_serving(&server, 2, &mut accepted).await;

    let response = post(&server, "text/plain", None, b"hello".to_vec()).await;
    expect_status(response, 415, true, "unsupported Content-Type").await;
    let valid = request("svc", vec![numbered_span(9, 9, 9)]).encode_to_vec();
    let response = post(&server, PROTOBUF, Some("br"), valid.clone()).await;
    expect_status(response, 415, false, "unsupported Content-Encoding").await;
    let response = post(&server, PROTOBUF, Some("gzip"), valid).await;
    expect_status(response, 400, false, "not valid gzip").await;
    still_serving(&server, 3, &mut accepted).await;

    let response = post(&server, PROTOBUF, None, vec![0; 100 * 1024]).await;
    expect_status(response, 413, false, "larger than the limit of 65536 bytes").await;
    // 1 MiB of zeros gzips to about a kilobyte; decompressed it is over the limit.
    let bomb = gzip(&vec![0; 1 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let response = post(&server, PROTOBUF, Some("gzip"), bomb).await;
    expect_status(response, 413, false, "larger than the limit").await;
    still_serving(&server, 4, &mut accepted).await;

    // gzip that is fine is fine.
    let span = numbered_span(2, 1, 0);
    accepted.insert(hex(&span.span_id));
    let response = post(
        &server,
        PROTOBUF,
        Some("gzip"),
        gzip(&request("svc", vec![span]).encode_to_vec()),
    )
    .await;
    assert_eq!(response.status(), 200);

    // Invalid spans are rejected one by one; the valid one in the same request is kept.
    let good = numbered_span(3, 1, 0);
    accepted.insert(hex(&good.span_id));
    let mut empty_id = numbered_span(3, 1, 1);
    empty_id.trace_id.clear();
    let mut backwards = numbered_span(3, 1, 2);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let body = request("svc", vec![empty_id.clone(), good, backwards.clone()]).encode_to_vec();
    let response = post(&server, PROTOBUF, None, body).await;
    assert_eq!(response.status(), 200);
    let reply = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = reply.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("trace_id must be 16 bytes, got 0"),
        "{}",
        partial.error_message
    );
    assert!(
        partial
            .error_message
            .contains("before start_time_unix_nano")
    );
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"","spanId":"{}","startTimeUnixNano":"1","endTimeUnixNano":"2"}}]}}]}}]}}"#,
        hex(&empty_id.span_id)
    );
    let response = post(&server, JSON, None, json.into_bytes()).await;
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["partialSuccess"]["rejectedSpans"], "1");

    let response = reqwest::get(server.traces_url()).await.unwrap();
    assert_eq!(response.status(), 405);
    still_serving(&server, 5, &mut accepted).await;

    server.stop();
    let (stored, _) = crate::common::stored_spans(&data).await;
    let stored: HashSet<String> = stored.into_iter().map(|s| s.span_id).collect();
    assert_eq!(stored, accepted, "exactly the valid spans are stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_bad_requests_with_the_right_code_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--max-message-size", "64KiB"]);
    let url = server.grpc_url();

    let status = grpc_export(&url, Bytes::from_static(&[0xff, 0xff, 0xff, 0x0f]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("not an ExportTraceServiceRequest"),
        "{}",
        status.message()
    );
    assert_eq!(
        metric(&server, "callwatch_ingest_requests_invalid_total").await,
        1.0,
        "counted once"
    );

    let status = grpc_export(&url, Bytes::from(vec![0; 100 * 1024]))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::OutOfRange,
        "{}",
        status.message()
    );

    let mut short_id = numbered_span(4, 1, 0);
    short_id.span_id.truncate(3);
    let body = request("svc", vec![short_id, numbered_span(4, 1, 1)]).encode_to_vec();
    let reply = grpc_export(&url, Bytes::from(body)).await.unwrap();
    let partial = reply.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("span_id must be 8 bytes, got 3")
    );

    // gzip-compressed requests, as SDKs send them with compression on.
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let mut client = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let reply = client
        .export(request("svc", vec![numbered_span(4, 2, 0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.partial_success, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_budget_answers_503_and_unavailable_with_retry_hints() {
    let dir = tempfile::tempdir().unwrap();
    // One byte of budget: any accepted request fills it. A refusal asks for a flush, which
    // frees it again, so requests are sent back to back until one finds it full.
    let server = Server::start(
        &dir.path().join("data"),
        &["--memory-limit", "1", "--flush-interval", "1h"],
    );
    let body = |n| request("svc", vec![numbered_span(5, n, 0)]).encode_to_vec();
    let mut refused_http = None;
    for n in 0..50 {
        let response = post(&server, PROTOBUF, None, body(n)).await;
        if response.status() != 200 {
            refused_http = Some(response);
            break;
        }
    }
    let response = refused_http.expect("a request found the budget full");
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    expect_status(response, 503, false, "memory budget").await;

    let mut refused_grpc = None;
    for n in 100..150 {
        if let Err(status) = grpc_export(&server.grpc_url(), Bytes::from(body(n))).await {
            refused_grpc = Some(status);
            break;
        }
    }
    let status = refused_grpc.expect("a gRPC request found the budget full");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo in the status details");
    assert!(retry.retry_delay.unwrap() >= std::time::Duration::from_secs(1));

    let health = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let refused = crate::common::metric(
        &server,
        "callwatch_ingest_requests_refused_total{reason=\"memory_full\"}",
    )
    .await;
    assert!(refused >= 2.0, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingest_queue_answers_429_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A queue of one request: concurrent requests find it full.
    let server = Server::start(&data, &["--ingest-queue", "1"]);
    let client = reqwest::Client::new();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for round in 0..20u32 {
        let mut sends = Vec::new();
        for sender in 0..48u32 {
            let spans: Vec<_> = (0..500).map(|i| numbered_span(sender, round, i)).collect();
            let ids: Vec<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
            let send = client
                .post(server.traces_url())
                .header("content-type", PROTOBUF)
                .body(request("svc", spans).encode_to_vec())
                .send();
            sends.push(async move { (send.await.unwrap(), ids) });
        }
        for (response, ids) in futures::future::join_all(sends).await {
            match response.status().as_u16() {
                200 => accepted.extend(ids),
                429 => {
                    assert!(response.headers().contains_key("retry-after"));
                    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
                    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
                    refused += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "48 concurrent requests never found a queue of one full"
    );
    still_serving(&server, 7, &mut accepted).await;
    server.stop();
    let (stored, _) = crate::common::stored_spans(&data).await;
    let stored: HashSet<String> = stored.into_iter().map(|s| s.span_id).collect();
    assert_eq!(
        stored, accepted,
        "what was acknowledged is stored, what was refused is not"
    );
}
