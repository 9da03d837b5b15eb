use std::time::Duration;

use bytes::Bytes;
use callwatch_storage::StoreError;
use http::StatusCode;

/// Why an export request was not taken. Mapped to a gRPC status and to an HTTP response here,
/// and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body does not decode as an `ExportTraceServiceRequest`.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("unsupported Content-Type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported Content-Encoding {0:?}: send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Decoded, the request alone would take more than the whole in-flight budget: it can
    /// never be taken as it is.
    #[error(
        "decoded, the request takes more than the in-flight budget of {limit} bytes: send fewer spans per request"
    )]
    DecodedTooLarge { limit: usize },
    /// Request bodies being decoded at once already fill the in-flight byte budget.
    #[error("request bodies being decoded fill the in-flight budget of {limit} bytes; retry later")]
    InflightFull { limit: usize, retry_after: Duration },
    #[error("a token with the ingest scope is needed: Authorization: Bearer <token>")]
    Unauthenticated,
    #[error("this token may not send spans: it lacks the ingest scope")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("converting spans failed: {0}")]
    Convert(#[from] arrow::error::ArrowError),
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl IngestError {
    /// Faults of the sender, as opposed to faults (or load) here.
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            Self::InvalidRequest(_)
                | Self::UnsupportedContentType(_)
                | Self::UnsupportedEncoding(_)
                | Self::TooLarge { .. }
                | Self::DecodedTooLarge { .. }
        )
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::InflightFull { retry_after, .. } => Some(*retry_after),
            Self::Store(error) => error.retry_after(),
            _ => None,
        }
    }

    /// The message a client sees: the error itself for its own faults and for load, a generic
    /// one for internal faults (whose details go to the log).
    fn public_message(&self) -> String {
        match self {
            Self::Store(
                StoreError::QueueFull { .. }
                | StoreError::MemoryFull { .. }
                | StoreError::ResidentFull { .. }
                | StoreError::ShuttingDown,
            ) => self.to_string(),
            Self::Store(_) | Self::Convert(_) => {
                tracing::error!(error = %self, "export failed");
                "internal error while storing spans; see the callwatch log".into()
            }
            _ => self.to_string(),
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        use tonic_types::{ErrorDetails, StatusExt};
        let code = match self {
            Self::InvalidRequest(_)
            | Self::UnsupportedContentType(_)
            | Self::UnsupportedEncoding(_) => Code::InvalidArgument,
            Self::TooLarge { .. } | Self::DecodedTooLarge { .. } => Code::OutOfRange,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::InflightFull { .. } | Self::Store(StoreError::QueueFull { .. }) => {
                Code::ResourceExhausted
            }
            Self::Store(
                StoreError::MemoryFull { .. }
                | StoreError::ResidentFull { .. }
                | StoreError::ShuttingDown,
            ) => Code::Unavailable,
            Self::Store(_) | Self::Convert(_) => Code::Internal,
        };
        let message = self.public_message();
        match self.retry_after() {
            // OTLP clients retry RESOURCE_EXHAUSTED only when RetryInfo says when.
            Some(delay) => tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(code, message),
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedContentType(_) | Self::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::TooLarge { .. } | Self::DecodedTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::InflightFull { .. } | Self::Store(StoreError::QueueFull { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Store(
                StoreError::MemoryFull { .. }
                | StoreError::ResidentFull { .. }
                | StoreError::ShuttingDown,
            ) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) | Self::Convert(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The HTTP response: status, `Retry-After` when waiting helps, and a `google.rpc.Status`
    /// body in the request's encoding (`json` or protobuf).
    pub fn http_response(&self, json: bool) -> http::Response<Bytes> {
        let status = self.http_status();
        let message = self.public_message();
        let grpc_code = self.grpc_status().code() as i32;
        let (content_type, body) = if json {
            let body = serde_json::json!({ "code": grpc_code, "message": message });
            ("application/json", Bytes::from(body.to_string()))
        } else {
            let body = RpcStatus {
                code: grpc_code,
                message,
            };
            (
                "application/x-protobuf",
                Bytes::from(prost::Message::encode_to_vec(&body)),
            )
        };
        let mut response = http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type);
        if let Some(delay) = self.retry_after() {
            response = response.header(http::header::RETRY_AFTER, delay.as_secs().max(1));
        }
        response.body(body).expect("valid response parts")
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    fn retry_delay(status: &tonic::Status) -> Option<Duration> {
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
    }

    #[test]
    fn load_refusals_carry_retry_hints_on_both_transports() {
        let queue_full = IngestError::Store(StoreError::QueueFull {
            depth: 8,
            retry_after: Duration::from_secs(1),
        });
        let status = queue_full.grpc_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(1)));
        let response = queue_full.http_response(false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        let body = <RpcStatus as prost::Message>::decode(response.into_body()).unwrap();
        assert_eq!(body.code, tonic::Code::ResourceExhausted as i32);
        assert!(body.message.contains("ingest queue is full"));

        let memory_full = IngestError::Store(StoreError::MemoryFull {
            limit_bytes: 1,
            retry_after: Duration::from_secs(5),
        });
        let status = memory_full.grpc_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(5)));
        let response = memory_full.http_response(true);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "5");

        let resident_full = IngestError::Store(StoreError::ResidentFull {
            resident_bytes: 3 << 30,
            limit_bytes: 2 << 30,
            retry_after: Duration::from_secs(1),
        });
        let status = resident_full.grpc_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(1)));
        assert!(
            status
                .message()
                .contains("resident memory of 3221225472 bytes")
        );
        let response = resident_full.http_response(true);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    }

    #[test]
    fn internal_faults_hide_their_details_and_client_faults_do_not() {
        let internal = IngestError::Store(StoreError::Corrupt("secret path /data/x".into()));
        let status = internal.grpc_status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
        assert_eq!(retry_delay(&status), None);

        let invalid = IngestError::InvalidRequest("traceId: \"zz\" is not hex".into());
        assert_eq!(invalid.grpc_status().code(), tonic::Code::InvalidArgument);
        assert!(invalid.grpc_status().message().contains("is not hex"));
        assert_eq!(invalid.http_status(), StatusCode::BAD_REQUEST);
    }
}
