//! The api-server half of device origins (ADR 22): `GET
//! /api/v1/devices/{id}/open` turns the signed-in owner's browser session
//! into a single-use grant for the device's origin and sends the browser
//! there; the relay redeems it. Without `devices_url` it opens the path
//! route instead.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgelink_origins::{AUTH_PATH, DevicesDomain, landing};
use edgelink_store::now_ms;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::principal::UserPrincipal;

/// `?to=` of the open route.
#[derive(Debug, Deserialize)]
pub struct OpenQuery {
    /// Path (and query) on the device to land on; default `/`.
    to: Option<String>,
}

/// `GET /api/v1/devices/{id}/open?to=/path` (browser sessions): `302` to
/// the device origin's grant redemption, or to the path route.
pub async fn open(
    State(state): State<AppState>,
    user: UserPrincipal,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<OpenQuery>,
) -> Result<Response, ApiError> {
    let device = crate::devices::device_of(&state, &user, &id).await?;
    let to = landing(q.to.as_deref());
    let location = match state.devices_domain() {
        None => format!("/api/v1/devices/{}/http{to}", device.id),
        Some(domain) => {
            let grant =
                edgelink_origins::grant::issue(state.store(), &device.id, &user.user.id, &user.session_hash, now_ms())
                    .await?;
            format!(
                "{}{AUTH_PATH}?grant={grant}&to={}",
                domain.origin(&device.id),
                edgelink_protocol::paths::encode_path_value(&to)
            )
        }
    };
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(&location).map_err(ApiError::internal)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

/// The parsed `devices_url`, when set and valid.
pub(crate) fn domain(config: &crate::ApiConfig) -> Option<DevicesDomain> {
    config.devices_url.as_deref().and_then(|u| DevicesDomain::parse(u).ok())
}
