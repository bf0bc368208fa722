//! `ANY /internal/forward/{id}/{*path}`: one request to the device over a
//! new tunnel stream, bodies streamed both ways, upgrades spliced.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::paths;

use crate::Relay;
use crate::error::RelayError;

const PREFIX: &str = "/internal/forward/";

/// Handler for `/internal/forward/{id}[/{*path}]`.
pub async fn forward(State(relay): State<Relay>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    match forward_inner(&relay, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response_at(&path),
    }
}

/// Splits the raw (still percent-encoded) request path into the session id
/// and the device-side path and query.
fn split_target(uri: &axum::http::Uri) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix(PREFIX)?;
    let (id, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, tail),
        None => (rest, ""),
    };
    if id.is_empty() {
        return None;
    }
    let mut target = format!("/{tail}");
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    Some((id.to_owned(), target))
}

async fn forward_inner(relay: &Relay, mut req: Request) -> Result<Response, RelayError> {
    let (id, target) =
        split_target(req.uri()).ok_or_else(|| RelayError::client(ErrorCode::BadRequest, "missing session id"))?;
    if paths::is_control_path(target.split('?').next().unwrap_or_default()) {
        return Err(RelayError::client(ErrorCode::Forbidden, "control paths are not forwarded"));
    }
    // A session id, or a device id for a URL that outlives reconnects.
    let session = relay
        .registry()
        .get(&id)
        .or_else(|| relay.registry().by_device(&id))
        .filter(|s| !s.handle.is_closed())
        .ok_or_else(|| RelayError::client(ErrorCode::SessionNotFound, "no such live session"))?;
    // The caller's credentials for this API are never the device's business.
    let pending = edgelink_hop::prepare(&mut req, &[header::AUTHORIZATION]);
    // A device-origin request another relay passed on: the device app's
    // own Authorization (only a holder of the internal secret gets here).
    if let Some(v) = req.headers_mut().remove(paths::DEVICE_AUTHORIZATION_HEADER) {
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    *req.uri_mut() = target.parse().map_err(|_| RelayError::client(ErrorCode::BadRequest, "bad target path"))?;
    let mut resp = crate::pool::exchange(&session, req, pending, relay.forward_timeout()).await?;
    // Only the relay's own errors carry this marker; a device cannot forge it.
    resp.headers_mut().remove(paths::RELAY_ERROR_HEADER);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_encoding_and_query() {
        let uri: axum::http::Uri = "/internal/forward/s1/a%2Fb/c?x=1&y=%20".parse().unwrap();
        assert_eq!(split_target(&uri), Some(("s1".into(), "/a%2Fb/c?x=1&y=%20".into())));
        let uri: axum::http::Uri = "/internal/forward/s1".parse().unwrap();
        assert_eq!(split_target(&uri), Some(("s1".into(), "/".into())));
        let uri: axum::http::Uri = "/internal/forward/".parse().unwrap();
        assert_eq!(split_target(&uri), None);
    }
}
