//! Every failure the server answers: a status and `{"error": {"code", "message"}}`.
//! The engine's errors, axum's rejections (malformed JSON, a wrong content type, a
//! body too large, a bad path or query) and the server's own all become an
//! [`ApiError`], so no client ever sees plain text or a stack trace.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{code, ErrorBody, ErrorDetail};

/// A failed request, ready to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code (see [`code`]).
    pub code: &'static str,
    /// What is wrong and the fix.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// Bad input (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message)
    }
}

impl From<flint_core::Error> for ApiError {
    fn from(error: flint_core::Error) -> Self {
        use flint_core::Error as E;
        let message = error.to_string();
        let (status, code) = match error {
            E::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT),
            E::LimitNotFound { key } => {
                // The engine's message names the Python call; say the HTTP one.
                return Self::new(
                    StatusCode::NOT_FOUND,
                    code::LIMIT_NOT_FOUND,
                    format!("no limit is configured for key {key:?}: configure one first with POST /v1/limits {{\"key\": {key:?}, \"rate\": ..., \"per\": ...}} (limiter.limit() in Python)"),
                );
            }
            E::Corrupt { .. } | E::NotFlint { .. } | E::UnsupportedVersion { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, code::CORRUPTED_DATA)
            }
            E::Poisoned { .. } | E::Closed | E::Forked { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, code::STORAGE_ERROR),
        };
        Self::new(status, code, message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::invalid(
                "the body must be JSON: send the header `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(bytes)
                if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                too_large()
            }
            // axum's text names the line, column and field ("missing field `key`",
            // "invalid type: floating point `1.5`, expected u64").
            other => ApiError::invalid(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

/// The answer to a body over the limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over {} KiB: send fewer check-all items (at most {}) or shorter keys",
            crate::app::BODY_LIMIT / 1024,
            flint_core::MAX_CHECK_ALL_ITEMS
        ),
    )
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(format!(
            "invalid key in the path: {}; percent-encode the key as UTF-8",
            rejection.body_text()
        ))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(format!("invalid query: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_owned(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        // The middleware that counts errors by code reads it back from here.
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The code of an error response, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);
