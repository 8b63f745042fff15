//! Typed errors of the client library.

use std::time::Duration;

use purgecast_proto::api::PurgeStatus;
use tonic::Code;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    #[error("invalid token: it must be printable ASCII")]
    InvalidToken,

    /// Connecting failed; `detail` carries the whole source chain, because
    /// tonic's top-level transport error only says "transport error".
    #[error("cannot connect to {endpoint}: {detail}")]
    Transport { endpoint: String, detail: String },

    /// The server (or the channel on its behalf) answered with a gRPC status.
    #[error("{}: {message}", code_name(*.code))]
    Status { code: Code, message: String },

    /// The purge did not complete in time; `last` is the last status seen,
    /// so callers can still report who is pending.
    #[error("purge {id} not complete after {waited:?}")]
    Timeout { id: String, waited: Duration, last: Option<Box<PurgeStatus>> },
}

impl ClientError {
    /// The gRPC code, for status errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn transport(endpoint: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        ClientError::Transport { endpoint: endpoint.to_string(), detail: error_chain(err) }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let mut message = status.message().to_string();
        // A status made from a transport failure has an empty or generic
        // message; the useful part (e.g. "connection refused") is a source.
        if let Some(src) = std::error::Error::source(&status) {
            let chain = error_chain(src);
            if !chain.is_empty() && !message.contains(&chain) {
                message = if message.is_empty() { chain } else { format!("{message}: {chain}") };
            }
        }
        ClientError::Status { code: status.code(), message }
    }
}

/// Joins an error and its sources with ": ", skipping repeats.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Source chains are short; the bound only guards against a cyclic one.
    for _ in 0..16 {
        let Some(e) = cur else { break };
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The canonical upper-case name of a gRPC code, as in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_error_displays_code_name_and_message() {
        let err = ClientError::from(tonic::Status::invalid_argument("selector 0: url \"ftp://x\" bad"));
        assert_eq!(err.to_string(), "INVALID_ARGUMENT: selector 0: url \"ftp://x\" bad");
        assert_eq!(err.code(), Some(Code::InvalidArgument));
    }

    #[test]
    fn code_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = (0..=16).map(|i| code_name(Code::from_i32(i))).collect();
        assert_eq!(names.len(), 17);
    }
}
