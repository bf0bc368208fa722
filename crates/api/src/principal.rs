//! Who is calling, decided once per request.
//!
//! Every route in [`crate::routes`] declares an [`Access`]; the router wraps
//! each handler in [`gate`], which resolves the caller from the session
//! cookie or a bearer token into one [`Principal`], refuses the request when
//! the route's access level is not met, checks the origin of
//! cookie-authenticated unsafe requests (CSRF), and hands the principal to
//! the handler as a request extension. Handlers never read cookies or
//! `Authorization` for identity themselves; they take [`UserPrincipal`] (or
//! [`Principal`]) as an extractor.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edgelink_auth::token::TokenError;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::User;
use edgelink_tokens::{Scope, Scopes};

use crate::error::ApiError;
use crate::{AppState, cookies};

/// Who a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone. Only the routes in the spec's short list (sign-in, health,
    /// JWKS, device challenge/verify/refresh) may use it; the all-endpoints
    /// test enforces that.
    Public,
    /// A signed-in user (browser session cookie).
    User,
    /// A device with a valid device access token.
    Device,
    /// Either: a user (scopes apply) or a device, which acts for its owner
    /// (discovery of the owner's other devices).
    UserOrDevice,
}

/// A user: signed in with a browser session, or a program with one of
/// their API tokens. Shared, not copied: the session cache, the request
/// and its handler hold the same one (cloning is a reference count).
#[derive(Debug, Clone)]
pub struct UserPrincipal(Arc<AuthenticatedUser>);

impl std::ops::Deref for UserPrincipal {
    type Target = AuthenticatedUser;

    fn deref(&self) -> &AuthenticatedUser {
        &self.0
    }
}

impl From<AuthenticatedUser> for UserPrincipal {
    fn from(user: AuthenticatedUser) -> Self {
        UserPrincipal(Arc::new(user))
    }
}

/// Who a [`UserPrincipal`] is and how it authenticated.
#[derive(Debug)]
pub struct AuthenticatedUser {
    /// The user.
    pub user: User,
    /// Storage hash of the session id that authenticated this request
    /// (empty for a token).
    pub session_hash: String,
    /// Public handle of that session (empty for a token).
    pub session_public_id: String,
    /// How the request authenticated.
    pub via: Via,
    /// What it may do: every scope for a browser session, the token's own
    /// for a token.
    pub scopes: Scopes,
}

/// How a user's request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The browser session cookie.
    Session,
    /// An API token (its id).
    Token(String),
    /// A machine client's access token from the OpenID provider (its
    /// subject).
    Service(String),
}

impl UserPrincipal {
    /// A browser session's principal: every scope.
    pub fn session(user: User, session_hash: String, session_public_id: String) -> Self {
        AuthenticatedUser { user, session_hash, session_public_id, via: Via::Session, scopes: Scopes::all() }.into()
    }

    /// True for a browser session (cookie), false for a token.
    pub fn is_session(&self) -> bool {
        self.via == Via::Session
    }
}

/// Which scope a route needs of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated user, token or session.
    Nothing,
    /// This scope.
    Scope(Scope),
    /// `read` for GET/HEAD/OPTIONS, `write` for other methods (a device's
    /// web service).
    ByMethod(Scope, Scope),
    /// A browser session only (the web UI, logout): tokens are refused.
    BrowserSession,
}

/// A device authenticated by its access token.
#[derive(Debug, Clone)]
pub struct DevicePrincipal {
    /// The device id (`sub`).
    pub device_id: String,
    /// Its owner (`owner`).
    pub owner_id: String,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A browser user by session cookie.
    User(UserPrincipal),
    /// A device by bearer token.
    Device(DevicePrincipal),
}

/// Why no principal could be established from presented credentials.
enum Refusal {
    /// Nothing was presented.
    Missing,
    /// Something was presented and is not valid.
    Invalid(ApiError),
}

async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Principal, Refusal> {
    // Only a Bearer token is a credential here; other schemes (a browser's
    // Basic auth meant for a device's own page) are ignored, never forwarded.
    // Each lookup below is boxed: this runs in the gate of every request,
    // and with the store's futures inline the gate's own future was several
    // KiB, allocated and copied per request whichever branch ran.
    let bearer = edgelink_protocol::bearer::token(headers);
    if let Some(token) = bearer
        && edgelink_tokens::secret::looks_like_token(token)
    {
        use edgelink_tokens::AuthError;
        return match Box::pin(state.api_tokens().authenticate(token, client_ip, edgelink_store::now_ms())).await {
            Ok(a) => Ok(Principal::User(
                AuthenticatedUser {
                    user: a.owner,
                    session_hash: String::new(),
                    session_public_id: String::new(),
                    via: Via::Token(a.token_id),
                    scopes: a.scopes,
                }
                .into(),
            )),
            Err(AuthError::Invalid) => {
                Err(Refusal::Invalid(ApiError::new(ErrorCode::TokenInvalid, "unknown or revoked API token")))
            }
            Err(AuthError::Expired) => {
                Err(Refusal::Invalid(ApiError::new(ErrorCode::TokenExpired, "API token expired; create a new one")))
            }
            Err(AuthError::IpNotAllowed { token_id }) => {
                let refused = state.count_ip_refusal();
                tracing::warn!(token_id = %token_id, client_ip = ?client_ip, refused_total = refused, "API token used from outside its allowlist");
                Err(Refusal::Invalid(ApiError::new(
                    ErrorCode::IpNotAllowed,
                    "this API token may not be used from this address",
                )))
            }
            Err(AuthError::Store(e)) => Err(Refusal::Invalid(e.into())),
        };
    }
    if let Some(token) = bearer
        && let Some(service) = Box::pin(service_principal(state, token)).await
    {
        return service;
    }
    if let Some(token) = bearer {
        return match state.token_verifier().verify(token) {
            Ok(claims) => {
                // A deleted device's tokens stop working at once, not at expiry.
                let creds = Box::pin(state.store().device_credentials(&claims.sub))
                    .await
                    .map_err(|e| Refusal::Invalid(e.into()))?;
                match creds {
                    Some(c) if c.revoked_at.is_none() && c.owner_id == claims.owner => {
                        Ok(Principal::Device(DevicePrincipal { device_id: claims.sub, owner_id: claims.owner }))
                    }
                    _ => Err(Refusal::Invalid(ApiError::new(ErrorCode::DeviceRevoked, "device revoked or deleted"))),
                }
            }
            Err(TokenError::Expired) => Err(Refusal::Invalid(ApiError::new(ErrorCode::TokenExpired, "token expired"))),
            Err(e) => Err(Refusal::Invalid(ApiError::new(ErrorCode::TokenInvalid, e.to_string()))),
        };
    }
    let policy = state.cookie_policy();
    let Some(value) = cookies::get(headers, policy.session_name()) else {
        return Err(Refusal::Missing);
    };
    let session_expired =
        || Refusal::Invalid(ApiError::new(ErrorCode::Unauthenticated, "session expired or signed out; sign in again"));
    match Box::pin(state.sessions().resolve_cookie(state.cookie_keys(), policy.session_name(), value)).await {
        Ok(Some(principal)) => Ok(Principal::User(principal)),
        Ok(None) => Err(session_expired()),
        Err(e) => Err(Refusal::Invalid(e.into())),
    }
}

/// A machine client, when `token` is an access token of the configured
/// provider for `oidc.service_audience`: it acts as its own user (found or
/// made by issuer and subject; no email) with the scopes of its `scope`
/// claim. None when service clients are off or the token is not one of
/// theirs (then it may still be a device token).
async fn service_principal(state: &AppState, token: &str) -> Option<Result<Principal, Refusal>> {
    let audience = state.config().oidc.as_ref()?.service_audience.as_deref()?;
    let provider = state.oidc()?;
    // A device token is signed by api-server's own key: not a service one.
    if edgelink_auth::token::TokenVerifier::kid_of(token).is_some_and(|kid| state.token_verifier().knows(&kid)) {
        return None;
    }
    if let Some(p) = state.service_cache().get(&token.to_owned()) {
        return Some(Ok(Principal::User(p)));
    }
    use edgelink_oidc::service::ServiceTokenError;
    let verified = match provider.verify_access_token(token, audience).await {
        Ok(v) => v,
        Err(ServiceTokenError::Unavailable(e)) => {
            tracing::warn!(error = %e, "cannot verify a service token: provider unavailable");
            return Some(Err(Refusal::Invalid(ApiError::unavailable(
                "the identity provider is unreachable; try again",
            ))));
        }
        Err(ServiceTokenError::Invalid(reason)) => {
            tracing::debug!(reason = %reason, "bearer token is not a service token");
            return Some(Err(Refusal::Invalid(ApiError::new(ErrorCode::TokenInvalid, "token invalid"))));
        }
    };
    let issuer = provider.issuer().to_owned();
    let name = format!("service {}", verified.subject);
    // Machine clients have no mailbox: a placeholder no one can verify.
    let email = format!("{}@service.invalid", verified.subject);
    let user = match state.store().upsert_user_by_subject(&issuer, &verified.subject, &email, &name, false).await {
        Ok(u) => u,
        Err(e) => return Some(Err(Refusal::Invalid(e.into()))),
    };
    let p: UserPrincipal = AuthenticatedUser {
        user,
        session_hash: String::new(),
        session_public_id: String::new(),
        via: Via::Service(verified.subject),
        scopes: Scopes::from_text(&verified.scopes.join(" ")),
    }
    .into();
    state.service_cache().insert(token.to_owned(), p.clone());
    Some(Ok(Principal::User(p)))
}

/// Cross-site request check for cookie-authenticated unsafe methods: the
/// `Origin` must be our public origin; without `Origin`, `Sec-Fetch-Site`
/// must say same-origin. A request with neither is refused: every browser
/// that could be tricked into sending the cookie sends one of them.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().is_ok_and(|o| state.public_origin().matches(o));
    }
    headers.get("sec-fetch-site").is_some_and(|v| v == "same-origin")
}

/// A WebSocket handshake (`Upgrade: websocket`). Browsers send cookies
/// with it from any page and the same-origin policy does not apply to
/// WebSockets, so a cookie-authenticated one must carry our `Origin`
/// (ASVS 5.0 V4.4); every browser sends `Origin` on a handshake.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

fn origin_is_ours(state: &AppState, headers: &HeaderMap) -> bool {
    headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|o| state.public_origin().matches(o))
}

/// A top-level browser navigation (GET asking for HTML).
fn wants_page(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds).
fn rate_headers(headers: &mut HeaderMap, d: edgelink_ratelimit::Decision) {
    for (name, value) in rate_limit_headers(&d) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The `X-RateLimit-*` headers of a decision, as names and values (for a
/// front that writes heads itself too).
pub(crate) fn rate_limit_headers(d: &edgelink_ratelimit::Decision) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", d.reset_at.to_string()),
    ]
}

/// The same three headers as lines of a head written to `out` (the
/// forwarding path's answers: no strings made).
pub(crate) fn put_rate_limit_headers(out: &mut Vec<u8>, d: &edgelink_ratelimit::Decision) {
    let mut n = itoa::Buffer::new();
    edgelink_hop::h1::put_header(out, b"x-ratelimit-limit", n.format(d.limit).as_bytes());
    edgelink_hop::h1::put_header(out, b"x-ratelimit-remaining", n.format(d.remaining).as_bytes());
    edgelink_hop::h1::put_header(out, b"x-ratelimit-reset", n.format(d.reset_at).as_bytes());
}

/// A `429` with `Retry-After`, and the decision for the rate-limit headers.
fn limited(e: ApiError, d: edgelink_ratelimit::Decision) -> Refused {
    Refused::Error(e.retry_after(std::time::Duration::from_secs(d.retry_after)), Some(d))
}

/// Why a user's request may not use this route: a token where only a
/// browser session will do, or a token without the scope the route needs.
fn scope_refusal(need: Need, user: &UserPrincipal, method: &Method) -> Option<ApiError> {
    let scope = match need {
        Need::Nothing => return None,
        Need::BrowserSession if user.is_session() => return None,
        Need::BrowserSession => {
            return Some(ApiError::new(ErrorCode::Forbidden, "only a browser session can use this endpoint"));
        }
        Need::Scope(s) => s,
        Need::ByMethod(read, _) if is_safe(method) => read,
        Need::ByMethod(_, write) => write,
    };
    (!user.scopes.allows(scope)).then(|| {
        ApiError::new(ErrorCode::InsufficientScope, format!("this token lacks the scope {scope} this endpoint needs"))
    })
}

/// Middleware state: the app and the route's declared access.
#[derive(Clone)]
pub struct Gate {
    pub(crate) state: AppState,
    pub(crate) access: Access,
    pub(crate) need: Need,
    pub(crate) limit: Option<crate::ratelimit::Limit>,
}

/// The only request headers [`admit`] reads: a front that decides outside
/// axum hands it a map of these alone.
pub(crate) const GATE_HEADERS: [header::HeaderName; 6] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::ORIGIN,
    header::HeaderName::from_static("sec-fetch-site"),
    header::ACCEPT,
    header::HeaderName::from_static("x-forwarded-for"),
];

/// What the gate admitted a request as.
pub(crate) struct Admitted {
    /// The caller (`None` on a public route without credentials).
    pub principal: Option<Principal>,
    /// The rate limit checked last, for the answer's headers.
    pub decision: Option<edgelink_ratelimit::Decision>,
    /// The client's address (trusted proxies resolved).
    pub client_ip: Option<std::net::IpAddr>,
}

/// Why the gate refused a request.
pub(crate) enum Refused {
    /// An error answer; the decision of a rate limit that refused it.
    Error(ApiError, Option<edgelink_ratelimit::Decision>),
    /// A signed-out browser asking for a page: sent to sign in, then back
    /// to this target.
    SignIn(String),
}

impl Refused {
    fn into_response(self, path: &str) -> Response {
        match self {
            Refused::Error(e, decision) => {
                let mut resp = e.at(path).into_response();
                if let Some(d) = decision {
                    rate_headers(resp.headers_mut(), d);
                }
                resp
            }
            Refused::SignIn(target) => {
                let login =
                    format!("/api/auth/login?return_to={}", edgelink_protocol::paths::encode_path_value(&target));
                (
                    axum::http::StatusCode::FOUND,
                    [(header::LOCATION, login), (header::CACHE_CONTROL, "no-store".to_owned())],
                )
                    .into_response()
            }
        }
    }
}

/// Resolves the caller of a request to `path` (`query` its query) and
/// enforces `gate`'s access, scope, rate limits and, for a browser
/// session, the same-origin rule. Reads only [`GATE_HEADERS`].
pub(crate) async fn admit(
    gate: &Gate,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<Admitted, Refused> {
    let client_ip = gate.state.client_ip(peer, headers);
    let now = edgelink_store::now_ms();
    let mut decision = None;
    if let Some(limit) = gate.limit.filter(|l| l.counts(query)) {
        let ip = client_ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let key = format!("ip:{}:{}", limit.name(), crate::ratelimit::bucket_key(ip));
        let d = gate.state.limiter().check(&key, gate.state.per_minute(limit), MINUTE, now);
        if !d.allowed {
            return Err(limited(
                ApiError::new(ErrorCode::RateLimited, "too many requests from this address; slow down"),
                d,
            ));
        }
        decision = Some(d);
    }
    let resolved = resolve(&gate.state, headers, client_ip).await;
    let principal = match (gate.access, resolved) {
        // Public routes get a principal when one is presented and valid,
        // and are never refused for a bad one.
        (Access::Public, Ok(p)) => Some(p),
        (Access::Public, Err(_)) => None,
        // A browser navigating to a page while signed out is sent to sign
        // in and brought back (API clients still get the 401 below).
        (Access::User, Err(_)) if wants_page(method, headers) => {
            let mut target = path.to_owned();
            if let Some(q) = query {
                target.push('?');
                target.push_str(q);
            }
            return Err(Refused::SignIn(target));
        }
        (_, Err(Refusal::Missing)) => {
            let (code, msg) = match gate.access {
                Access::Device => (ErrorCode::TokenMissing, "device bearer token required"),
                _ => (ErrorCode::Unauthenticated, "sign in first: no session cookie or bearer token"),
            };
            return Err(Refused::Error(ApiError::new(code, msg), None));
        }
        (_, Err(Refusal::Invalid(e))) => return Err(Refused::Error(e, None)),
        (Access::User, Ok(p @ Principal::User(_))) => Some(p),
        (Access::UserOrDevice, Ok(p)) => Some(p),
        (Access::Device, Ok(p @ Principal::Device(_))) => Some(p),
        (Access::User, Ok(Principal::Device(_))) => {
            return Err(Refused::Error(
                ApiError::new(ErrorCode::Forbidden, "device tokens cannot use this endpoint"),
                None,
            ));
        }
        (Access::Device, Ok(Principal::User(_))) => {
            return Err(Refused::Error(
                ApiError::new(ErrorCode::Forbidden, "only devices can use this endpoint"),
                None,
            ));
        }
    };
    if let Some(Principal::User(user)) = &principal
        && gate.access != Access::Public
        && let Some(refusal) = scope_refusal(gate.need, user, method)
    {
        return Err(Refused::Error(refusal, None));
    }
    if gate.access != Access::Public
        && let Some(p) = &principal
    {
        let limits = &gate.state.config().rate_limits;
        let (key, per_hour) = match p {
            // Joined, not formatted: this runs on every request.
            Principal::User(u) => match &u.via {
                Via::Token(id) => (["tok:", id.as_str()].concat(), limits.token_per_hour),
                Via::Service(sub) => (["svc:", sub.as_str()].concat(), limits.service_per_hour),
                Via::Session => (["user:", u.user.id.as_str()].concat(), limits.session_per_hour),
            },
            Principal::Device(d) => (["dev:", d.device_id.as_str()].concat(), limits.device_per_hour),
        };
        let d = gate.state.limiter().check(&key, per_hour, HOUR, now);
        if !d.allowed {
            return Err(limited(
                ApiError::new(ErrorCode::RateLimited, "rate limit reached for this hour; see Retry-After"),
                d,
            ));
        }
        decision = Some(d);
    }
    if matches!(&principal, Some(Principal::User(u)) if u.is_session()) && gate.access != Access::Public {
        let cross_site = if is_websocket_upgrade(headers) {
            !origin_is_ours(&gate.state, headers)
        } else {
            !is_safe(method) && !same_origin(&gate.state, headers)
        };
        if cross_site {
            return Err(Refused::Error(
                ApiError::new(ErrorCode::CsrfRejected, "cross-site request refused: Origin must be this site"),
                None,
            ));
        }
    }
    Ok(Admitted { principal, decision, client_ip })
}

/// What the gate adds to an answer of an admitted request: the rate-limit
/// headers and, on a route that is not public, `Cache-Control: private,
/// no-store` unless the answer says otherwise (whatever a signed-in user
/// gets is theirs alone: never stored by a shared cache or the browser's
/// disk cache).
pub(crate) fn finish(headers: &mut HeaderMap, access: Access, decision: Option<edgelink_ratelimit::Decision>) {
    if let Some(d) = decision {
        rate_headers(headers, d);
    }
    if access != Access::Public && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("private, no-store"));
    }
}

/// Resolves the principal and enforces the route's [`Access`] ([`admit`]).
pub async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let admitted = match admit(&gate, req.method(), &path, req.uri().query(), req.headers(), peer).await {
        Ok(a) => a,
        Err(refused) => return refused.into_response(&path),
    };
    if let Some(ip) = admitted.client_ip {
        req.extensions_mut().insert(crate::client_ip::ClientAddr(ip));
    }
    if let Some(p) = admitted.principal {
        req.extensions_mut().insert(p);
    }
    let mut resp = next.run(req).await;
    finish(resp.headers_mut(), gate.access, admitted.decision);
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for UserPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::User(u)) => Ok(u.clone()),
            // Only reachable if a handler asks for a user on a route that
            // does not declare `Access::User`: refuse rather than guess.
            _ => Err(ApiError::new(ErrorCode::Unauthenticated, "sign in first").at(parts.uri.path())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DevicePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Device(d)) => Ok(d.clone()),
            _ => Err(ApiError::new(ErrorCode::TokenMissing, "device bearer token required").at(parts.uri.path())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "sign in first").at(parts.uri.path()))
    }
}

impl Principal {
    /// The user whose data this request may see: the user, or the device's
    /// owner.
    pub fn owner_id(&self) -> &str {
        match self {
            Principal::User(u) => &u.user.id,
            Principal::Device(d) => &d.owner_id,
        }
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_header_lines_say_what_the_header_strings_say() {
        for (limit, remaining, reset_at) in [(0, 0, 0), (60, 59, 1_767_225_600), (u32::MAX, 7, -1), (1, 0, i64::MAX)] {
            let d = edgelink_ratelimit::Decision { allowed: true, limit, remaining, reset_at, retry_after: 1 };
            let mut lines = Vec::new();
            put_rate_limit_headers(&mut lines, &d);
            let expected: String = rate_limit_headers(&d).iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
            assert_eq!(String::from_utf8(lines).unwrap(), expected);
        }
    }
}
