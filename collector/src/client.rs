//! An OTLP/gRPC client that sends export requests as encoded bytes, so a caller can send
//! what it encoded once (or bytes no SDK would send). Load generation, the demo, replay and
//! the tests speak to collectors through it; the attribute helpers build what they send.

use crate::grpc::EXPORT_PATH;
use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// A string attribute, for building requests by hand.
pub fn text_attribute(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

/// An int attribute, for building requests by hand.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

pub(crate) fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

#[derive(Debug, Clone)]
pub struct OtlpClient {
    grpc: tonic::client::Grpc<Channel>,
    /// `authorization: Bearer …`, sent with every request.
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl OtlpClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
            authorization: None,
        }
    }

    /// The client, sending `token` with every request.
    pub fn with_token(mut self, token: &str) -> Result<Self, String> {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "a token is printable ASCII".to_string())?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// The client, sending its requests gzip-compressed.
    pub fn gzip(mut self) -> Self {
        self.grpc = self
            .grpc
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        self
    }

    /// Connects to an OTLP/gRPC endpoint such as `http://127.0.0.1:4317`.
    pub async fn connect(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self::new(channel))
    }

    pub async fn export(
        &mut self,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        self.export_bytes(Bytes::from(request.encode_to_vec()))
            .await
    }

    /// Sends an encoded `ExportTraceServiceRequest`.
    pub async fn export_bytes(
        &mut self,
        body: Bytes,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        let mut request = tonic::Request::new(body);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        self.grpc
            .unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Encodes bytes as they are; decodes the response with prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::internal(format!("undecodable response: {error}")))
    }
}
