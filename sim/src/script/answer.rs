//! How the script judges an answer: a success, a refusal with its error code, or a
//! transport failure.

use crate::net::http::{HttpError, Response};
use serde::Deserialize;
use std::time::Instant;

/// Too many requests (`rate_limited`): worth retrying after a pause.
const STATUS_TOO_MANY_REQUESTS: u16 = 429;
/// A full job queue or connection table (`busy`, `unavailable`): worth retrying.
const STATUS_UNAVAILABLE: u16 = 503;
/// The lobby's answer to `start` while no play server runs: a fact, not a passing load,
/// so retrying it would only repeat it.
pub(super) const NO_CAPACITY: &str = "no_capacity";

/// Why a step failed.
#[derive(Debug)]
pub(super) struct Failure {
    /// The error code recorded: the server's `error` field, or a transport code.
    pub(super) code: String,
    /// The HTTP status, if an answer arrived at all.
    pub(super) status: Option<u16>,
    /// Retry-After of an error answer, in seconds.
    pub(super) retry_after_s: Option<u64>,
    /// Whether the connection was refused or reset.
    pub(super) refused_or_reset: bool,
    /// A human description, for start-up errors.
    pub(super) detail: String,
}

impl Failure {
    /// A 2xx answer whose body is not what the contract says.
    pub(super) fn bad_response(detail: String) -> Failure {
        Failure {
            code: "bad_response".to_string(),
            status: None,
            retry_after_s: None,
            refused_or_reset: false,
            detail,
        }
    }

    /// Whether the server asked the client to come back later: 429, or 503 other than
    /// `no_capacity`.
    pub(super) fn is_retryable(&self) -> bool {
        match self.status {
            Some(STATUS_TOO_MANY_REQUESTS) => true,
            Some(STATUS_UNAVAILABLE) => self.code != NO_CAPACITY,
            _ => false,
        }
    }
}

/// The body of every CatWar error answer.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// A 2xx response, or the failure that came instead.
pub(super) fn successful(result: Result<Response, HttpError>) -> Result<Response, Failure> {
    let response = result.map_err(|e| Failure {
        code: e.code().to_string(),
        status: None,
        retry_after_s: None,
        refused_or_reset: e.is_refused_or_reset(),
        detail: crate::error_chain(&e),
    })?;
    if (200..300).contains(&response.status) {
        return Ok(response);
    }
    let code = serde_json::from_slice::<ErrorBody>(&response.body)
        .map(|body| body.error)
        .unwrap_or_else(|_| format!("http_{}", response.status));
    Err(Failure {
        detail: format!("HTTP {} {code}", response.status),
        status: Some(response.status),
        retry_after_s: response.header("retry-after").and_then(|v| v.parse().ok()),
        refused_or_reset: false,
        code,
    })
}

/// The last answer to a request, after any retries, with the time of that last attempt.
#[derive(Debug)]
pub(super) struct Reply {
    /// When the last attempt was sent.
    pub(super) started: Instant,
    /// When its answer (or failure) arrived.
    pub(super) done: Instant,
    /// The answer.
    pub(super) result: Result<Response, Failure>,
}

/// How a request that the server should have refused turned out.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Refused with the expected code.
    Expected,
    /// Served: the server answered 2xx.
    Served(Response),
    /// Refused with another code.
    OtherCode,
    /// No answer at all (connection or timeout).
    NoAnswer,
}

impl Refusal {
    /// Whether the server answered, so that an invariant about its answer can be checked.
    pub(super) fn answered(&self) -> bool {
        !matches!(self, Refusal::NoAnswer)
    }

    /// Whether the server served the request it should have refused.
    pub(super) fn served(&self) -> bool {
        matches!(self, Refusal::Served(_))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A response with `Retry-After: 1`.
    pub(in crate::script) fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("retry-after".to_string(), "1".to_string())],
            body: body.into(),
        }
    }

    #[test]
    fn error_answers_yield_their_code() {
        let unavailable = successful(Ok(response(
            503,
            r#"{"error": "unavailable", "detail": "x"}"#,
        )));
        let failure = unavailable.unwrap_err();
        assert_eq!(failure.code, "unavailable");
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.retry_after_s, Some(1));
        let opaque = successful(Ok(response(502, "<html>"))).unwrap_err();
        assert_eq!(opaque.code, "http_502");
        let timeout = successful(Err(HttpError::Timeout)).unwrap_err();
        assert_eq!((timeout.code.as_str(), timeout.status), ("timeout", None));
        assert!(successful(Ok(response(204, ""))).is_ok());
    }

    #[test]
    fn busy_and_rate_limited_are_retried_but_not_no_capacity() {
        let failure = |status, code: &str| {
            let body = format!(r#"{{"error": "{code}"}}"#);
            successful(Ok(response(status, &body))).unwrap_err()
        };
        assert!(failure(503, "busy").is_retryable());
        assert!(failure(429, "rate_limited").is_retryable());
        assert!(!failure(503, NO_CAPACITY).is_retryable());
        assert!(!failure(401, "login_failed").is_retryable());
        assert!(!successful(Err(HttpError::Timeout))
            .unwrap_err()
            .is_retryable());
    }
}
