//! Errors of the console/REST API, mapped to HTTP in exactly one place.
//!
//! Policy: handlers return `Result<_, ApiError>`. Client mistakes carry a message that says what
//! was wrong and what to do, and the field at fault. Anything unexpected (database down, I/O) is
//! an `Internal`: its cause is logged here and the client gets a 500 with a generic message —
//! never a 400, never the inner error text. Slave-protocol errors are a separate type
//! (`ws::slave::ProtocolError`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_shared::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Invalid {
        field: Option<&'static str>,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    /// A name already in use (409), naming the field that holds it (a release name, say).
    #[error("{message}")]
    Taken {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(String),
    /// Signed in, may see the thing, but may not do this (403). Things a person may not see are
    /// `NotFound`, never this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed sign-ins (429); the message says how long to wait.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    InsufficientStorage(String),
    /// Over a configured limit (`master.limits`): 413, the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The database is away (503); the master is reconnecting.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // The database is not there (or did not answer in time): the client may retry.
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(format!(
                "the database is unavailable ({e}); the master is reconnecting, try again shortly"
            )),
            e => ApiError::Internal(e.into()),
        }
    }
}

/// The stable code of an error body, by HTTP status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::INSUFFICIENT_STORAGE => "insufficient_storage",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return ApiError::InsufficientStorage(
                "the master's storage is full (No space left on device); free space and retry"
                    .into(),
            );
        }
        ApiError::Internal(e.into())
    }
}

impl From<crate::objects::StoreError> for ApiError {
    fn from(e: crate::objects::StoreError) -> Self {
        match e {
            crate::objects::StoreError::Io(e) => e.into(),
            // A row whose bytes are gone from the bucket: as a missing file would be.
            crate::objects::StoreError::Object(object_store::Error::NotFound { path, .. }) => {
                tracing::warn!("object {path} is missing from the artifact store");
                ApiError::NotFound(
                    "the artifact's bytes are missing from the artifact store".into(),
                )
            }
            // The store's answer (or silence) is the master's business: logged, a 500.
            crate::objects::StoreError::Object(e) => ApiError::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, field) = match &self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            ApiError::Invalid { field, .. } => (StatusCode::BAD_REQUEST, *field),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, None),
            ApiError::Taken { field, .. } => (StatusCode::CONFLICT, Some(*field)),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, None),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, None),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error while serving a request");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let message = match &self {
            ApiError::Internal(_) => "internal error; the master's log has the details".to_string(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: message,
            code: code_for(status).to_string(),
            field: field.map(str::to_string),
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
