//! `callwatch sink`: an OTLP/gRPC receiver that decodes every request and keeps nothing.
//! Benchmarks run the load generator against it to measure, in the same run, what the
//! machine can do before any storage work: the baseline for `callwatch serve`'s numbers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use callwatch_collector::{EXPORT_PATH, count_spans};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};

use crate::config::SinkArgs;

pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.otlp_grpc)
        .await
        .with_context(|| format!("binding {}", args.otlp_grpc))?;
    println!("listening otlp-grpc {}", listener.local_addr()?);
    let spans = Arc::new(AtomicU64::new(0));
    let service = DropService {
        spans: spans.clone(),
    };
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    println!("decoded {} spans", spans.load(Ordering::Relaxed));
    Ok(())
}

#[derive(Clone)]
struct DropService {
    spans: Arc<AtomicU64>,
}

impl NamedService for DropService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl tower_service::Service<http::Request<Body>> for DropService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(tonic::Status::unimplemented("only Export").into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(DropCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(service, request).await)
        })
    }
}

impl UnaryService<ExportTraceServiceRequest> for DropService {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        let spans = count_spans(request.get_ref()) as u64;
        self.spans.fetch_add(spans, Ordering::Relaxed);
        Box::pin(async { Ok(tonic::Response::new(ExportTraceServiceResponse::default())) })
    }
}

struct DropCodec;

impl Codec for DropCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = ExportTraceServiceRequest;
    type Encoder = DropCodec;
    type Decoder = DropCodec;

    fn encoder(&mut self) -> DropCodec {
        DropCodec
    }

    fn decoder(&mut self) -> DropCodec {
        DropCodec
    }
}

impl Encoder for DropCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

impl Decoder for DropCodec {
    type Item = ExportTraceServiceRequest;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceRequest::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::invalid_argument(error.to_string()))
    }
}
