//! The device-origin listener (ADR 22): `{scheme}://{device-id}.{devices
//! domain}/…` serves that device's web service with paths untouched. The
//! relay redeems api-server's grants for a sealed pass cookie, admits every
//! request against the browser session and the device (edgelink-origins'
//! gatekeeper), and forwards to the tunnel here or on the relay that holds
//! it.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgelink_auth::cookie::CookieKeys;
use edgelink_origins::{AUTH_PATH, DevicesDomain, Gatekeeper, Pass, landing};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::net::{Cidr, client_ip};
use edgelink_protocol::paths;
use edgelink_store::now_ms;

use crate::Relay;
use crate::error::RelayError;

/// What the device listener needs.
pub struct Origins {
    pub(crate) domain: DevicesDomain,
    pub(crate) keys: CookieKeys,
    pub(crate) gate: Gatekeeper,
    api_url: String,
    pub(crate) cookie: &'static str,
    forwarder: edgelink_internal_api::forward::Forwarder,
    /// Load balancers whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<Cidr>,
}

impl Origins {
    /// From the validated settings.
    pub fn new(
        settings: &crate::config::DeviceOriginSettings,
        store: edgelink_store::Store,
        forwarder: edgelink_internal_api::forward::Forwarder,
    ) -> Result<Self, String> {
        let domain = DevicesDomain::parse(&settings.url)?;
        let cookie = edgelink_origins::pass_cookie_name(domain.is_secure());
        Ok(Origins {
            keys: settings.cookie_keys()?,
            gate: Gatekeeper::new(store, settings.cache_ttl),
            api_url: settings.api_url.trim_end_matches('/').to_owned(),
            cookie,
            domain,
            forwarder,
            trusted_proxies: settings.trusted_proxies.clone(),
        })
    }
}

/// The route label of device-origin requests in the request metrics.
pub(crate) const ROUTE: &str = "/{*path}";

/// The device listener's routes: everything, by `Host`.
pub fn router(relay: Relay) -> Router {
    Router::new()
        .fallback(serve)
        .layer(axum::middleware::from_fn_with_state("remote-proxy-devices", edgelink_observe::track))
        .with_state(relay)
}

fn refuse(code: ErrorCode, message: &str, path: &str) -> Response {
    RelayError::client(code, message).into_response_at(path)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn serve(State(relay): State<Relay>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(o) = relay.origins() else {
        return refuse(ErrorCode::NotFound, "device origins are not configured", &path);
    };
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(device_id) = o.domain.device_of_host(host) else {
        return refuse(ErrorCode::NotFound, "no such device origin", &path);
    };
    let origin = o.domain.origin(&device_id);
    if path == AUTH_PATH {
        return redeem(&relay, o, &device_id, req.uri().query().unwrap_or("")).await;
    }
    let now = now_ms();
    let pass = edgelink_origins::cookie(req.headers(), o.cookie).and_then(|v| Pass::open(&o.keys, o.cookie, v, now));
    let admitted = match &pass {
        Some(p) => match o.gate.admits(p, &device_id, now).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a device-origin pass");
                return refuse(ErrorCode::Unavailable, "cannot check your access right now; try again", &path);
            }
        },
        None => false,
    };
    let upgrade = edgelink_hop::headers::is_upgrade(req.headers());
    if !admitted {
        // A browser navigating here is sent to sign in (api-server says 404
        // for a device that is not theirs); anything else is refused.
        if matches!(*req.method(), Method::GET | Method::HEAD) && !upgrade {
            let to = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let open = format!(
                "{}/api/v1/devices/{device_id}/open?to={}",
                o.api_url,
                edgelink_protocol::paths::encode_path_value(to)
            );
            return redirect(StatusCode::FOUND, &open);
        }
        return refuse(ErrorCode::Unauthenticated, "open this device from edgelink first", &path);
    }
    let Some(pass) = pass else {
        return refuse(ErrorCode::Unauthenticated, "open this device from edgelink first", &path);
    };
    if !edgelink_origins::same_origin_ok(req.headers(), req.method(), upgrade, &origin) {
        return refuse(ErrorCode::CsrfRejected, "this request must come from the device's own origin", &path);
    }
    match forward(&relay, o, &pass, &device_id, &origin, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response_at(&path),
    }
}

/// `GET /.edgelink/auth?grant=…&to=…`: spends the grant, sets the pass
/// and sends the browser where it was going.
async fn redeem(relay: &Relay, o: &Origins, device_id: &str, query: &str) -> Response {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let grant = param("grant").unwrap_or_default();
    let now = now_ms();
    let redeemed = match edgelink_origins::grant::redeem(relay.store(), &grant, now).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot redeem a device-origin grant");
            return refuse(ErrorCode::Unavailable, "cannot check your access right now; try again", AUTH_PATH);
        }
    };
    // A grant for another device's origin is spent and refused.
    let Some(g) = redeemed.filter(|g| g.device_id == device_id) else {
        return refuse(
            ErrorCode::Forbidden,
            "this link was already used, has expired or is for another device; open the device again from edgelink",
            AUTH_PATH,
        );
    };
    let pass = Pass { session_hash: g.session_hash, user_id: g.user_id, device_id: g.device_id, issued_at: now };
    let Some(value) = pass.seal(&o.keys, o.cookie) else {
        return refuse(ErrorCode::Internal, "cannot issue a pass", AUTH_PATH);
    };
    let to = landing(param("to").as_deref());
    let mut resp = redirect(StatusCode::SEE_OTHER, &to);
    if let Ok(v) = HeaderValue::from_str(&Pass::set_cookie(&value, o.cookie, o.domain.is_secure())) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

async fn forward(
    relay: &Relay,
    o: &Origins,
    pass: &Pass,
    device_id: &str,
    origin: &str,
    mut req: Request,
) -> Result<Response, RelayError> {
    let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    if paths::is_control_path(&target) {
        return Err(RelayError::client(ErrorCode::NotFound, "no such path"));
    }
    // The pass is the user's credential for edgelink: never the device's.
    edgelink_origins::strip_pass(req.headers_mut());
    req.headers_mut().remove(paths::DEVICE_AUTHORIZATION_HEADER);
    let forwarded_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin).to_owned();
    let proto = if o.domain.is_secure() { "https" } else { "http" };
    // The device learns who is asking from the connection the relay saw,
    // or the address a trusted load balancer names (what a browser sends in
    // these headers is not believed).
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| {
        let forwarded = || req.headers().get_all("x-forwarded-for").iter().map(|v| v.as_bytes());
        client_ip(&o.trusted_proxies, c.0.ip(), forwarded)
    });
    {
        let h = req.headers_mut();
        h.remove("x-forwarded-for");
        h.remove("forwarded");
        if let Some(ip) = peer
            && let Ok(v) = HeaderValue::from_str(&ip.to_string())
        {
            h.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(&forwarded_host) {
            h.insert("x-forwarded-host", v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    let pending = edgelink_hop::prepare(&mut req, &[]);
    let mut resp = match relay.registry().by_device(device_id).filter(|s| !s.handle.is_closed()) {
        Some(session) => {
            *req.uri_mut() =
                target.parse().map_err(|_| RelayError::client(ErrorCode::BadRequest, "bad target path"))?;
            crate::pool::exchange(&session, req, pending, relay.forward_timeout()).await?
        }
        None => {
            // Held by another relay (several behind one address): its
            // internal API forwards it.
            let session = relay
                .store()
                .open_session_for_device(&pass.user_id, device_id)
                .await?
                .ok_or_else(|| RelayError::client(ErrorCode::DeviceUnavailable, "the device is offline"))?;
            let (mut parts, body) = req.into_parts();
            // The internal API's Authorization is the relays' secret; the
            // device app's own travels beside it and is given back there.
            let app_authorization = {
                let mut all = parts.headers.get_all(header::AUTHORIZATION).iter();
                match (all.next(), all.next()) {
                    (Some(v), None) => Some(v.clone()),
                    _ => None,
                }
            };
            parts.headers.remove(header::AUTHORIZATION);
            if let Some(v) = app_authorization {
                parts.headers.insert(paths::DEVICE_AUTHORIZATION_HEADER, v);
            }
            let body: edgelink_internal_api::forward::BoxBody = http_body_util::BodyExt::boxed_unsync(
                http_body_util::BodyExt::map_err(body, |e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }),
            );
            let out = Request::from_parts(parts, body);
            let resp =
                o.forwarder.forward(&session.relay_url, device_id, &target, out, pending).await.map_err(|e| {
                    use edgelink_internal_api::forward::ForwardError;
                    match e {
                        ForwardError::Timeout(_) => RelayError::DeviceTimeout,
                        other => RelayError::Device(other.to_string()),
                    }
                })?;
            resp.map(Body::new)
        }
    };
    resp.headers_mut().remove(paths::RELAY_ERROR_HEADER);
    // Cookies only for this origin; the pass is not the device's to set.
    let dropped = edgelink_origins::rewrite_device_cookies(resp.headers_mut());
    if dropped > 0 {
        tracing::info!(device_id, dropped, "device tried to set an edgelink cookie; dropped");
    }
    let cookies: Vec<HeaderValue> = resp.headers().get_all(header::SET_COOKIE).iter().cloned().collect();
    edgelink_hop::headers::allow_device_response(resp.headers_mut());
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}
