//! A device's local web service through api-server:
//! `ANY /api/v1/devices/{id}/http[/{*path}]`.
//!
//! [`DeviceProxy`] finds the relay holding the device's tunnel (the session
//! registry in the store, cached a few seconds: ADR 13, ADR 14), forwards
//! over a pooled keep-alive connection to that relay's internal forward,
//! and resends a bodiless request once when the tunnel turns out to have
//! moved. What passes through is decided by `edgelink_hop`; what only this
//! hop adds (`X-Forwarded-*`, the sandbox CSP, no cookies) is here.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use edgelink_internal_api::forward::{BoxBody, ForwardError, Forwarder};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::paths;
use http_body_util::BodyExt;
use secrecy::SecretString;

use crate::AppState;
use crate::cache::TtlCache;
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::principal::UserPrincipal;

/// Content-Security-Policy on everything a device's web service returns:
/// its pages run in an opaque origin, so their scripts cannot use the
/// user's api-server session (ADR 12).
pub const DEVICE_CSP: &str = "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

/// Where a device's requests go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The device's id as the store has it.
    pub device_id: String,
    /// The internal URL of the relay holding its tunnel.
    pub relay_url: String,
}

/// Reaching devices through the relays that hold their tunnels.
pub struct DeviceProxy {
    /// Streams requests to relays (None without `relay_internal_secret`).
    forwarder: Option<Forwarder>,
    /// The internal secret, for the internal-API clients.
    secret: Option<SecretString>,
    /// How relays' https internal URLs are verified (`relay_ca_file`).
    tls: std::sync::Arc<edgelink_hop::tls::ClientConfig>,
    /// (owner, device) → the relay holding its tunnel (hot path).
    routes: TtlCache<(String, String), Route>,
    /// Internal-API clients by relay URL.
    relay_clients: Mutex<HashMap<String, edgelink_internal_api::Client>>,
}

fn not_configured() -> ApiError {
    ApiError::unavailable("api-server is not configured to reach relays (relay_internal_secret)")
}

impl DeviceProxy {
    /// A proxy with the relay secret, timeout, TLS roots and cache TTL of
    /// `config`; an unreadable `relay_ca_file` is an error.
    pub fn new(config: &ApiConfig) -> Result<Self, String> {
        let secret = config.relay_internal_secret.clone();
        let tls =
            edgelink_hop::tls::client_config(config.relay_ca_file.as_deref()).map_err(|e| format!("relay_{e}"))?;
        Ok(DeviceProxy {
            forwarder: secret.clone().map(|s| Forwarder::new(s, config.device_timeout, tls.clone())),
            secret,
            tls,
            routes: TtlCache::new(config.cache_ttl, 100_000),
            relay_clients: Mutex::new(HashMap::new()),
        })
    }

    /// Drops the cached route of a device (deleted, closed, moved).
    pub fn forget_route(&self, owner_id: &str, device_id: &str) {
        self.routes.remove(&(owner_id.to_owned(), device_id.to_owned()));
    }

    /// The internal-API client for the relay at `url`.
    pub fn relay_client(&self, url: &str) -> Result<edgelink_internal_api::Client, ApiError> {
        let secret = self.secret.clone().ok_or_else(not_configured)?;
        let mut clients = self.relay_clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let client =
            edgelink_internal_api::Client::with_tls(url, secret, Some(self.tls.clone())).map_err(ApiError::internal)?;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    /// What streams requests to relays (None without the relay secret).
    pub(crate) fn forwarder(&self) -> Result<&Forwarder, ApiError> {
        self.forwarder.as_ref().ok_or_else(not_configured)
    }

    /// Where `user`'s device `id` is reached: cached unless `fresh`.
    pub(crate) async fn route(
        &self,
        state: &AppState,
        user: &UserPrincipal,
        id: &str,
        fresh: bool,
    ) -> Result<Route, ApiError> {
        let key = (user.user.id.clone(), id.to_owned());
        if !fresh && let Some(r) = self.routes.get(&key) {
            return Ok(r);
        }
        let device = crate::devices::device_of(state, user, id).await?;
        let session = state
            .store()
            .open_session_for_device(&user.user.id, &device.id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::DeviceUnavailable, "the device is offline"))?;
        let r = Route { device_id: device.id, relay_url: session.relay_url };
        self.routes.insert(key, r.clone());
        Ok(r)
    }
}

/// `ANY /api/v1/devices/{id}/http[/{*path}]`: the device's local web
/// service. The caller's cookies and Authorization never reach the device;
/// hop-by-hop headers are dropped (Upgrade kept for WebSocket);
/// `X-Forwarded-*` describe the original request; `/.edgelink/` is refused.
pub async fn http(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    match forward(&state, &user, params.get("id").map(String::as_str).unwrap_or(""), req).await {
        Ok(resp) => resp,
        Err(e) => e.at(&path).into_response(),
    }
}

fn relay_error<B>(resp: &axum::http::Response<B>) -> Option<&str> {
    resp.headers().get(paths::RELAY_ERROR_HEADER).and_then(|v| v.to_str().ok())
}

/// The relay's error code `code` (its `X-Edgelink-Relay-Error`) as this
/// hop's own error, but for `session_not_found` (`None`: the device is
/// looked for again). The relay's own error bodies name its internal paths
/// and are meant for operators: the user gets api-server's.
pub(crate) fn relay_refusal(code: &str, relay_url: &str) -> Option<ApiError> {
    match code {
        "session_not_found" => None,
        "token_missing" | "token_invalid" => {
            tracing::error!(relay = %relay_url, "the relay refused api-server's internal secret");
            Some(ApiError::new(ErrorCode::DeviceUnavailable, "api-server cannot reach this device's relay"))
        }
        "device_timeout" => Some(timed_out()),
        other => {
            tracing::warn!(relay = %relay_url, error = other, "the relay could not forward to the device");
            Some(ApiError::new(ErrorCode::DeviceUnavailable, "the device could not be reached"))
        }
    }
}

/// The device did not answer within the device timeout.
pub(crate) fn timed_out() -> ApiError {
    ApiError::new(ErrorCode::DeviceTimeout, "the device did not answer in time")
}

/// The relay holding the device could not be reached (its route is forgotten).
pub(crate) fn relay_unreachable(relay_url: &str, reason: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(relay = %relay_url, error = %reason, "relay unreachable");
    ApiError::new(ErrorCode::DeviceUnavailable, "the relay holding this device is unreachable")
}

/// The relay no longer holds the device, and the request could not be sent
/// to another one.
pub(crate) fn moved() -> ApiError {
    ApiError::new(
        ErrorCode::DeviceUnavailable,
        "the device is offline or moved to another relay while a streamed request was sent; retry",
    )
}

/// The device path of a request path (`/` for none), refusing the agent's
/// control paths.
pub(crate) fn device_path<'a>(path: &'a str, id: &str) -> Result<&'a str, ApiError> {
    let rest =
        path.strip_prefix("/api/v1/devices/").and_then(|r| r.strip_prefix(id)).and_then(|r| r.strip_prefix("/http"));
    let rest = rest.filter(|r| !r.is_empty()).unwrap_or("/");
    if paths::is_control_path(rest) {
        // Checked after ownership it would leak existence; the path alone
        // decides, for everyone, before any lookup.
        return Err(ApiError::new(ErrorCode::Forbidden, "the agent's control paths are not reachable"));
    }
    Ok(rest)
}

/// The path and query on the device, from the request's raw path.
fn device_target(uri: &axum::http::Uri, id: &str) -> Result<String, ApiError> {
    let mut target = device_path(uri.path(), id)?.to_owned();
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    Ok(target)
}

/// Replaces any `X-Forwarded-*`/`Forwarded` the caller sent with this
/// hop's own account of the original request.
fn set_forwarded(
    headers: &mut axum::http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    origin: &edgelink_protocol::origin::WebOrigin,
    prefix: &str,
) {
    for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "forwarded"] {
        headers.remove(h);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(ip) = peer {
        set("x-forwarded-for", &ip.to_string());
    }
    set("x-forwarded-proto", origin.scheme());
    set("x-forwarded-host", origin.authority());
    set("x-forwarded-prefix", prefix);
}

/// Largest request body api-server keeps so that the request can be resent
/// to the relay that now holds the device's tunnel.
const RESEND_BODY_MAX: usize = 64 * 1024;

fn full(bytes: axum::body::Bytes) -> BoxBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Keeps a device's redirect on this device's pages: a path-absolute
/// `Location` outside the prefix gets the prefix (as a reverse proxy
/// rewrites it), anything that then resolves outside `origin` + `prefix`
/// (another site, api-server's own pages) is removed.
fn confine_location(
    headers: &mut axum::http::HeaderMap,
    origin: &edgelink_protocol::origin::WebOrigin,
    prefix: &str,
    request_path: &str,
) {
    let Some(value) = headers.get(header::LOCATION) else {
        return;
    };
    match confine(value, origin, prefix, request_path) {
        Some(v) => {
            headers.insert(header::LOCATION, v);
        }
        None => {
            headers.remove(header::LOCATION);
        }
    }
}

/// A device's `Location` confined as [`confine_location`] says; `None`
/// when it leads away.
pub(crate) fn confine(
    value: &HeaderValue,
    origin: &edgelink_protocol::origin::WebOrigin,
    prefix: &str,
    request_path: &str,
) -> Option<HeaderValue> {
    let within = |path: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let v = value.to_str().ok()?;
    let v = if v.starts_with('/') && !v.starts_with("//") && !within(v.split(['?', '#']).next().unwrap_or(v)) {
        format!("{prefix}{v}")
    } else {
        v.to_owned()
    };
    let base = url::Url::parse(&format!("{origin}{request_path}")).ok()?;
    let resolved = base.join(&v).ok()?;
    if !origin.matches(resolved.origin().ascii_serialization().as_str()) || !within(resolved.path()) {
        return None;
    }
    let mut local = resolved.path().to_owned();
    if let Some(q) = resolved.query() {
        local.push('?');
        local.push_str(q);
    }
    if let Some(f) = resolved.fragment() {
        local.push('#');
        local.push_str(f);
    }
    HeaderValue::from_str(&local).ok()
}

async fn forward(state: &AppState, user: &UserPrincipal, id: &str, mut req: Request) -> Result<Response, ApiError> {
    if id.len() > 64 {
        return Err(crate::devices::not_found());
    }
    let target = device_target(req.uri(), id)?;
    let prefix = format!("/api/v1/devices/{id}/http");
    let request_path = req.uri().path().to_owned();
    let proxy = state.device_proxy();
    let mut route = Box::pin(proxy.route(state, user, id, false)).await?;
    let forwarder = proxy.forwarder()?;

    // A request whose body is small and of known length is kept so it can
    // be sent again, whole, if the cached route turns out stale (the tunnel
    // moved to another relay); a streamed (chunked or large) body is sent
    // once. Decided before the hop strips Transfer-Encoding.
    let resendable = !req.headers().contains_key(header::TRANSFER_ENCODING)
        && !edgelink_hop::headers::is_upgrade(req.headers())
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .map_or(Some(0), |v| v.to_str().ok().and_then(|v| v.parse::<usize>().ok()))
            .is_some_and(|n| n <= RESEND_BODY_MAX);
    let peer = req.extensions().get::<crate::client_ip::ClientAddr>().map(|c| c.0);
    let mut pending = edgelink_hop::prepare(&mut req, &[header::COOKIE, header::AUTHORIZATION]);
    req.headers_mut().remove(paths::DEVICE_AUTHORIZATION_HEADER);
    set_forwarded(req.headers_mut(), peer, state.public_origin(), &prefix);
    let (parts, body) = req.into_parts();
    // Taken on use: a request is resent at most once.
    let mut resend = None;
    let body: BoxBody = if resendable {
        let bytes = axum::body::to_bytes(body, RESEND_BODY_MAX)
            .await
            .map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        resend = Some((parts.method.clone(), parts.uri.clone(), parts.headers.clone(), bytes.clone()));
        full(bytes)
    } else {
        body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync()
    };
    let mut out = axum::http::Request::from_parts(parts, body);

    let resp = loop {
        // A resent request is never an upgrade: the first send takes it.
        let sent = forwarder.forward(&route.relay_url, &route.device_id, &target, out, std::mem::take(&mut pending));
        let resp = sent.await.map_err(|e| match e {
            ForwardError::Timeout(_) => timed_out(),
            ForwardError::Relay(reason) => {
                proxy.forget_route(&user.user.id, id);
                relay_unreachable(&route.relay_url, &reason)
            }
            ForwardError::Target(reason) => ApiError::internal(reason),
        })?;
        let Some(code) = relay_error(&resp) else { break resp };
        if let Some(e) = relay_refusal(code, &route.relay_url) {
            return Err(e);
        }
        // The relay no longer holds the device: look again, and resend
        // once if the request can be resent.
        proxy.forget_route(&user.user.id, id);
        if let Some((method, uri, headers, body)) = resend.take()
            && let Ok(fresh) = Box::pin(proxy.route(state, user, id, true)).await
            && fresh.relay_url != route.relay_url
        {
            route = fresh;
            out = axum::http::Request::new(full(body));
            *out.method_mut() = method;
            *out.uri_mut() = uri;
            *out.headers_mut() = headers;
            continue;
        }
        return Err(moved());
    };
    let mut resp = resp.map(Body::new);
    let headers = resp.headers_mut();
    // The answer is on api-server's origin: only content headers pass
    // (no cookies, CORS, NEL, HSTS, …; the relay's marker neither), a
    // redirect stays under this device's prefix, and nothing is cached
    // outside this user's browser session, 101 answers included.
    edgelink_hop::headers::allow_device_response(headers);
    confine_location(headers, state.public_origin(), &prefix, &request_path);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEVICE_CSP));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_are_this_hops_own() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        let origin = edgelink_protocol::origin::WebOrigin::parse("https://edge.example.com").unwrap();
        set_forwarded(&mut h, Some([10, 0, 0, 1].into()), &origin, "/api/v1/devices/d/http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "edge.example.com");
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn target_keeps_encoding_and_query_and_refuses_control_paths() {
        let uri: axum::http::Uri = "/api/v1/devices/d1/http/a%2Fb?x=1".parse().unwrap();
        assert_eq!(device_target(&uri, "d1").unwrap(), "/a%2Fb?x=1");
        let uri: axum::http::Uri = "/api/v1/devices/d1/http".parse().unwrap();
        assert_eq!(device_target(&uri, "d1").unwrap(), "/");
        let uri: axum::http::Uri = "/api/v1/devices/d1/http/.edgelink/v1/info".parse().unwrap();
        assert!(device_target(&uri, "d1").is_err());
    }

    #[test]
    fn device_redirects_stay_under_the_device_prefix() {
        let origin = edgelink_protocol::origin::WebOrigin::parse("https://edge.example.com").unwrap();
        let prefix = "/api/v1/devices/d1/http";
        let confine = |location: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
            confine_location(&mut h, &origin, prefix, "/api/v1/devices/d1/http/app/page");
            h.get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned())
        };
        let p = |s: &str| Some(format!("{prefix}{s}"));
        assert_eq!(confine("/login?next=%2F"), p("/login?next=%2F"));
        assert_eq!(confine("/api/v1/devices/d1/http/ok#top"), p("/ok#top"));
        assert_eq!(confine("other"), p("/app/other"));
        assert_eq!(confine("https://edge.example.com/api/v1/devices/d1/http/x"), p("/x"));
        assert_eq!(confine("https://edge.example.com:443/api/v1/devices/d1/http"), Some(prefix.to_owned()));
        for away in [
            "https://evil.example/",
            "//evil.example/x",
            "https://edge.example.com/api/v1/devices/d2/http/x",
            "https://edge.example.com/api/auth/logout",
            "../../../../d2/http/x",
            "javascript:alert(1)",
        ] {
            assert_eq!(confine(away), None, "{away}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_device_location_ends_under_its_prefix_or_is_removed(location in "\\PC{0,80}") {
            let origin = edgelink_protocol::origin::WebOrigin::parse("https://edge.example.com").unwrap();
            let prefix = "/api/v1/devices/d1/http";
            let mut h = axum::http::HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            confine_location(&mut h, &origin, prefix, "/api/v1/devices/d1/http/a/b");
            if let Some(v) = h.get(header::LOCATION) {
                let v = v.to_str().unwrap();
                let resolved = url::Url::parse("https://edge.example.com/").unwrap().join(v).unwrap();
                proptest::prop_assert_eq!(resolved.origin().ascii_serialization(), "https://edge.example.com");
                proptest::prop_assert!(resolved.path() == prefix || resolved.path().starts_with("/api/v1/devices/d1/http/"), "{}", v);
            }
        }
    }
}
