//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! Written out instead of generated so that the codec hands over the message still encoded,
//! for ingest to read in place, answers a body that does not decode with `INVALID_ARGUMENT`
//! (tonic's prost codec says `INTERNAL`), and counts the bytes received.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Status, body::Body};

use crate::auth::{AuthListener, Denied, Scope, Tokens, presented_token};
use crate::error::IngestError;
use crate::inflight::{Charge, ChargedGrpcBody};
use crate::ingest::Ingest;

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace service, ready for `tonic::transport::Server::add_service`.
#[derive(Debug, Clone)]
pub struct TraceService {
    ingest: Arc<Ingest>,
    max_message_size: usize,
    tokens: Arc<Tokens>,
}

impl TraceService {
    /// Once `tokens` has any, an export needs one with the `ingest` scope.
    pub fn new(ingest: Arc<Ingest>, max_message_size: usize, tokens: Arc<Tokens>) -> Self {
        Self {
            ingest,
            max_message_size,
            tokens,
        }
    }
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower_service::Service<http::Request<B>> for TraceService
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        let max_message_size = self.max_message_size;
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only TraceService/Export is served").into_http())
            });
        }
        // Before the body is read: a stranger's bytes cost nothing.
        let token = presented_token(request.headers());
        let listener = AuthListener::OtlpGrpc;
        if let Err(denied) = self.tokens.check(token.as_deref(), Scope::Ingest, listener) {
            let error = match denied {
                Denied::Unauthenticated => IngestError::Unauthenticated,
                Denied::Forbidden => IngestError::Forbidden,
            };
            return Box::pin(async move { Ok(error.grpc_status().into_http()) });
        }
        Box::pin(async move {
            ingest.metrics().grpc_requests.add(1);
            // The request's bytes in the in-flight budget, until its spans are stored.
            let charge = Arc::new(Mutex::new(ingest.inflight().charge()));
            let request =
                request.map(|body| ChargedGrpcBody::new(body, charge.clone(), max_message_size));
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(ExportCodec {
                ingest: ingest.clone(),
                charge: charge.clone(),
            })
            .apply_compression_config(accept, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(Some(max_message_size), None);
            let response = grpc.unary(ExportMethod(ingest), request).await;
            drop(charge);
            Ok(response)
        })
    }
}

struct ExportMethod(Arc<Ingest>);

/// The request's message, still encoded: ingest reads it in place.
impl UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let invalid = |error| format!("body is not an ExportTraceServiceRequest: {error}");
            match ingest.export_protobuf(request.into_inner(), invalid).await {
                Ok(response) => Ok(tonic::Response::new(response)),
                Err(error) => Err(error.grpc_status()),
            }
        })
    }
}

struct ExportCodec {
    ingest: Arc<Ingest>,
    charge: Arc<Mutex<Charge>>,
}

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            ingest: self.ingest.clone(),
            charge: self.charge.clone(),
        }
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("encoding the response: {error}")))
    }
}

struct RequestDecoder {
    ingest: Arc<Ingest>,
    charge: Arc<Mutex<Charge>>,
}

impl Decoder for RequestDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let metrics = self.ingest.metrics();
        metrics.bytes_received.add(src.remaining() as u64);
        // The message as tonic holds it, decompressed: its real size replaces the
        // worst case charged for a compressed message.
        self.charge
            .lock()
            .expect("not poisoned")
            .set(src.remaining())
            .map_err(|error| error.grpc_status())?;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
