//! Claims of the device access token (a JWT signed with EdDSA by api-server).

use serde::{Deserialize, Serialize};

/// Issuer written into every device access token.
pub const DEFAULT_ISSUER: &str = "edgelink-api";
/// Audience of device access tokens: only the tunnel accepts them.
pub const TUNNEL_AUDIENCE: &str = "edgelink-tunnel";
/// The one scope a device token carries today.
pub const SCOPE_TUNNEL: &str = "tunnel";

/// What a device access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaims {
    /// The device id.
    pub sub: String,
    /// The id of the user who owns the device.
    pub owner: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Issuer: api-server's configured issuer.
    pub iss: String,
    /// Audience: [`TUNNEL_AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl DeviceClaims {
    /// True when the space-separated `scope` claim contains `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_match_is_by_whole_word() {
        let c = DeviceClaims {
            sub: "d".into(),
            owner: "u".into(),
            scope: "tunnel metrics".into(),
            iss: DEFAULT_ISSUER.into(),
            aud: TUNNEL_AUDIENCE.into(),
            iat: 0,
            exp: 1,
            jti: "j".into(),
        };
        assert!(c.has_scope("tunnel"));
        assert!(c.has_scope("metrics"));
        assert!(!c.has_scope("tun"));
    }
}
