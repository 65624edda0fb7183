//! Turning results into HTTP answers: status codes and the two error-body styles.
//!
//! Cloud Hypervisor endpoints (`/api/v1/vm.*`, `/api/v1/vmm.*`, unknown paths) answer errors
//! with a JSON array of strings, outermost message first, as Cloud Hypervisor does; its
//! clients treat every failed action as 500 except malformed input (400). `sandbox.*`
//! endpoints answer `{"code": "INVALID_STATE", "message": ..., "causes": [...]}` with a status
//! per code, so shims can branch on the code.

use hyper::StatusCode;
use serde::Serialize;
use vmm::api::{ApiError, ErrorCode, Response};

/// Which error style an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    CloudHypervisor,
    Sandbox,
}

/// A finished answer: status, optional JSON body, optional `Allow` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: StatusCode,
    pub body: Option<Vec<u8>>,
    pub allow: Option<&'static str>,
}

impl HttpReply {
    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            allow: None,
        }
    }

    /// 200 with `value` as JSON (500 if it cannot be encoded, which typed values never do).
    pub fn json(value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status: StatusCode::OK,
                body: Some(body),
                allow: None,
            },
            Err(e) => Self::error(
                Family::CloudHypervisor,
                &ApiError::new(
                    ErrorCode::Internal,
                    format!("cannot encode the answer: {e}"),
                ),
            ),
        }
    }

    pub fn from_response(response: Response) -> Self {
        match response {
            Response::Empty => Self::no_content(),
            Response::Json(value) => Self::json(&value),
        }
    }

    pub fn from_result(family: Family, result: Result<Response, ApiError>) -> Self {
        match result {
            Ok(response) => Self::from_response(response),
            Err(e) => Self::error(family, &e),
        }
    }

    /// An error in `family`'s style.
    pub fn error(family: Family, error: &ApiError) -> Self {
        let status = status_of(family, error.code);
        let body = match family {
            Family::CloudHypervisor => serde_json::to_vec(&error.chain()),
            Family::Sandbox => serde_json::to_vec(&SandboxErrorBody {
                code: error.code,
                message: &error.message,
                causes: &error.causes,
            }),
        };
        Self {
            status,
            // Encoding strings cannot fail; an empty body still carries the status.
            body: Some(body.unwrap_or_default()),
            allow: None,
        }
    }

    /// Status code override (HTTP-level errors: 404, 405, 408, 413).
    pub fn http_error(family: Family, status: StatusCode, message: String) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
            _ => ErrorCode::InvalidArgument,
        };
        Self {
            status,
            ..Self::error(family, &ApiError::new(code, message))
        }
    }
}

#[derive(Serialize)]
struct SandboxErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
    causes: &'a [String],
}

fn status_of(family: Family, code: ErrorCode) -> StatusCode {
    match (family, code) {
        (_, ErrorCode::InvalidArgument) => StatusCode::BAD_REQUEST,
        (_, ErrorCode::Unsupported) => StatusCode::NOT_IMPLEMENTED,
        (_, ErrorCode::NotFound) => StatusCode::NOT_FOUND,
        (Family::CloudHypervisor, _) => StatusCode::INTERNAL_SERVER_ERROR,
        (Family::Sandbox, ErrorCode::InvalidState) => StatusCode::CONFLICT,
        (Family::Sandbox, ErrorCode::Busy) => StatusCode::TOO_MANY_REQUESTS,
        (Family::Sandbox, ErrorCode::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        (Family::Sandbox, ErrorCode::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_errors_are_string_arrays() {
        let mut e = ApiError::new(ErrorCode::InvalidState, "vm.boot: no VM");
        e.causes.push("because".into());
        let reply = HttpReply::error(Family::CloudHypervisor, &e);
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: Vec<String> = serde_json::from_slice(&reply.body.unwrap()).unwrap();
        assert_eq!(body, ["vm.boot: no VM", "because"]);
    }

    #[test]
    fn sandbox_errors_carry_a_stable_code() {
        for (code, status, name) in [
            (ErrorCode::InvalidArgument, 400, "INVALID_ARGUMENT"),
            (ErrorCode::InvalidState, 409, "INVALID_STATE"),
            (ErrorCode::NotFound, 404, "NOT_FOUND"),
            (ErrorCode::Busy, 429, "BUSY"),
            (ErrorCode::Timeout, 504, "TIMEOUT"),
            (ErrorCode::Internal, 500, "INTERNAL"),
        ] {
            let reply = HttpReply::error(Family::Sandbox, &ApiError::new(code, "m"));
            assert_eq!(reply.status.as_u16(), status);
            let body: serde_json::Value = serde_json::from_slice(&reply.body.unwrap()).unwrap();
            assert_eq!(body["code"], name);
            assert_eq!(body["message"], "m");
        }
    }
}
