//! The JSON error body of every edgelink HTTP endpoint, and its codes.
//!
//! ```json
//! {"code": 401001, "error": "token_missing", "message": "...",
//!  "timestamp": "2026-11-22T10:00:00Z", "path": "/tunnel"}
//! ```
//! `code` is the HTTP status times 1000 plus a number; `error` is the
//! stable machine name. Clients branch on either, never on `message`.

use serde::{Deserialize, Serialize};

/// One error condition with its numeric code, name and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, missing field, bad value).
    BadRequest,
    /// The pairing code does not exist (mistyped?).
    PairingCodeInvalid,
    /// The pairing code's time ran out.
    PairingCodeExpired,
    /// No credentials were presented.
    TokenMissing,
    /// The token is malformed, has wrong claims or an unknown key.
    TokenInvalid,
    /// The token has expired.
    TokenExpired,
    /// A signature (token or device challenge) does not verify.
    SignatureInvalid,
    /// The challenge is unknown, expired, already used, or for another device.
    ChallengeInvalid,
    /// The refresh token is unknown, expired or revoked.
    RefreshTokenInvalid,
    /// The refresh token was already used; its family is now revoked.
    RefreshTokenReused,
    /// Neither a valid session cookie nor a valid token was presented.
    Unauthenticated,
    /// Browser sign-in failed (provider refusal, bad state, ID token rejected).
    SignInFailed,
    /// Authenticated, but not allowed.
    Forbidden,
    /// The token lacks a scope the endpoint needs.
    InsufficientScope,
    /// The device is revoked (or deleted) and may not connect.
    DeviceRevoked,
    /// A cookie-authenticated unsafe request came from another origin.
    CsrfRejected,
    /// An API token used from an address outside its allowlist.
    IpNotAllowed,
    /// No such route or resource.
    NotFound,
    /// No such device (or not yours).
    DeviceNotFound,
    /// No such live tunnel session.
    SessionNotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// The resource already exists.
    Conflict,
    /// The pairing code was already used.
    PairingCodeUsed,
    /// Another owner's device already has this node id.
    NodeIdTaken,
    /// The message's time to live ran out before it was read.
    MessageExpired,
    /// A recipient already holds the allowed number of unread messages.
    MessageQueueFull,
    /// A request (head or body) did not arrive in time.
    RequestTimeout,
    /// The request body is too large.
    PayloadTooLarge,
    /// The request headers are too large.
    HeadersTooLarge,
    /// Too many requests.
    RateLimited,
    /// An unexpected server fault (details are logged, never returned).
    Internal,
    /// The device is offline or its tunnel failed.
    DeviceUnavailable,
    /// A dependency (database, provider) is unavailable.
    Unavailable,
    /// The device did not answer in time.
    DeviceTimeout,
}

impl ErrorCode {
    /// Every code, for docs and tests.
    pub const ALL: [ErrorCode; 34] = [
        ErrorCode::BadRequest,
        ErrorCode::PairingCodeInvalid,
        ErrorCode::PairingCodeExpired,
        ErrorCode::TokenMissing,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::SignatureInvalid,
        ErrorCode::ChallengeInvalid,
        ErrorCode::RefreshTokenInvalid,
        ErrorCode::RefreshTokenReused,
        ErrorCode::Unauthenticated,
        ErrorCode::SignInFailed,
        ErrorCode::Forbidden,
        ErrorCode::InsufficientScope,
        ErrorCode::DeviceRevoked,
        ErrorCode::CsrfRejected,
        ErrorCode::IpNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::DeviceNotFound,
        ErrorCode::SessionNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PairingCodeUsed,
        ErrorCode::NodeIdTaken,
        ErrorCode::MessageExpired,
        ErrorCode::MessageQueueFull,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::HeadersTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::DeviceUnavailable,
        ErrorCode::Unavailable,
        ErrorCode::DeviceTimeout,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::BadRequest => 400001,
            ErrorCode::PairingCodeInvalid => 400002,
            ErrorCode::PairingCodeExpired => 400003,
            ErrorCode::TokenMissing => 401001,
            ErrorCode::TokenInvalid => 401002,
            ErrorCode::TokenExpired => 401003,
            ErrorCode::SignatureInvalid => 401004,
            ErrorCode::ChallengeInvalid => 401005,
            ErrorCode::RefreshTokenInvalid => 401006,
            ErrorCode::RefreshTokenReused => 401007,
            ErrorCode::Unauthenticated => 401008,
            ErrorCode::SignInFailed => 401009,
            ErrorCode::Forbidden => 403001,
            ErrorCode::InsufficientScope => 403002,
            ErrorCode::DeviceRevoked => 403003,
            ErrorCode::CsrfRejected => 403004,
            ErrorCode::IpNotAllowed => 403005,
            ErrorCode::NotFound => 404001,
            ErrorCode::DeviceNotFound => 404002,
            ErrorCode::SessionNotFound => 404003,
            ErrorCode::MethodNotAllowed => 405001,
            ErrorCode::Conflict => 409001,
            ErrorCode::PairingCodeUsed => 409002,
            ErrorCode::NodeIdTaken => 409003,
            ErrorCode::MessageExpired => 410001,
            ErrorCode::MessageQueueFull => 429002,
            ErrorCode::RequestTimeout => 408001,
            ErrorCode::PayloadTooLarge => 413001,
            ErrorCode::HeadersTooLarge => 431001,
            ErrorCode::RateLimited => 429001,
            ErrorCode::Internal => 500001,
            ErrorCode::DeviceUnavailable => 502001,
            ErrorCode::Unavailable => 503001,
            ErrorCode::DeviceTimeout => 504001,
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        (self.code() / 1000) as u16
    }

    /// The stable machine name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PairingCodeInvalid => "pairing_code_invalid",
            ErrorCode::PairingCodeExpired => "pairing_code_expired",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::SignatureInvalid => "signature_invalid",
            ErrorCode::ChallengeInvalid => "challenge_invalid",
            ErrorCode::RefreshTokenInvalid => "refresh_token_invalid",
            ErrorCode::RefreshTokenReused => "refresh_token_reused",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::SignInFailed => "sign_in_failed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::CsrfRejected => "csrf_rejected",
            ErrorCode::IpNotAllowed => "ip_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::DeviceNotFound => "device_not_found",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PairingCodeUsed => "pairing_code_used",
            ErrorCode::NodeIdTaken => "node_id_taken",
            ErrorCode::MessageExpired => "message_expired",
            ErrorCode::MessageQueueFull => "message_queue_full",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal_error",
            ErrorCode::DeviceUnavailable => "device_unavailable",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeviceTimeout => "device_timeout",
        }
    }

    /// The code with this machine name.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Numeric code, e.g. 401001.
    pub code: u32,
    /// Machine name, e.g. `token_missing`.
    pub error: String,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// When, RFC 3339.
    pub timestamp: String,
    /// The request path.
    pub path: String,
    /// Seconds until a refused request may be tried again (`429`; the
    /// same as `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ErrorBody {
    /// Builds the body for `code`; the caller supplies the time so this
    /// crate reads no clock.
    pub fn new(code: ErrorCode, message: impl Into<String>, path: impl Into<String>, timestamp: String) -> Self {
        ErrorBody {
            code: code.code(),
            error: code.name().to_owned(),
            message: message.into(),
            timestamp,
            path: path.into(),
            retry_after: None,
        }
    }

    /// The [`ErrorCode`] this body names, if known.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::from_name(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_match_their_status() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            assert_eq!(ErrorCode::from_name(c.name()), Some(c));
            assert!((400..600).contains(&c.status()));
        }
    }
}
