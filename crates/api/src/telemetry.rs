//! Device telemetry at the HTTP edge: a device's heartbeat over REST (for
//! devices without the agent) and a device's metrics history. The rules
//! and the batching are `edgelink_telemetry`'s.

use axum::extract::{Path, Query, State};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::heartbeat::{Heartbeat, HeartbeatAck};
use edgelink_store::now_ms;
use edgelink_telemetry::{Point, Step};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json, timestamp_ms};
use crate::principal::{DevicePrincipal, UserPrincipal};

/// `POST /api/v1/devices/{id}/heartbeat` (the device itself, by its access
/// token): the body of docs/protocol.md §5, answered like the relay does.
pub async fn heartbeat(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Path(id): Path<String>,
    Json(beat): Json<Heartbeat>,
) -> Result<axum::Json<HeartbeatAck>, ApiError> {
    if id != device.device_id {
        return Err(ApiError::new(ErrorCode::Forbidden, "a device can only send its own heartbeat"));
    }
    if let Some(problem) = beat.problem() {
        return Err(ApiError::bad_request(format!("bad heartbeat: {problem}")));
    }
    let now = now_ms();
    state.telemetry().record(&device.device_id, &device.owner_id, now, beat);
    Ok(axum::Json(HeartbeatAck {
        session: String::new(),
        server_time: timestamp_ms(now),
        interval_secs: Some(state.config().heartbeat_interval.as_secs()),
    }))
}

/// `GET /api/v1/devices/{id}/metrics` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// RFC 3339; default: a day ago for `1m`, 30 days ago for `1h`.
    since: Option<String>,
    /// `1m` (the last day) or `1h` (the last 30 days); default `1m`.
    step: Option<String>,
}

/// A device's history.
#[derive(Debug, Serialize, Deserialize)]
pub struct Metrics {
    /// The device.
    pub device_id: String,
    /// `1m` or `1h`.
    pub step: String,
    /// Oldest first; each the last sample of its minute or hour.
    pub points: Vec<Point>,
}

/// `GET /api/v1/devices/{id}/metrics?since=&step=` (device:read).
pub async fn history(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Result<axum::Json<Metrics>, ApiError> {
    let step =
        Step::parse(q.step.as_deref().unwrap_or("1m")).ok_or_else(|| ApiError::bad_request("step must be 1m or 1h"))?;
    let kept = match step {
        Step::Minute => edgelink_telemetry::MINUTES_KEPT,
        Step::Hour => edgelink_telemetry::HOURS_KEPT,
    };
    let since = match q.since.as_deref() {
        None => now_ms() - kept.as_millis() as i64,
        Some(s) => edgelink_protocol::time::parse_rfc3339(s)
            .ok_or_else(|| ApiError::bad_request("since must be an RFC 3339 time"))?,
    };
    if state.store().active_device(&user.user.id, &id).await?.is_none() {
        return Err(crate::devices::not_found());
    }
    let points = state.telemetry().history(&user.user.id, &id, step, since).await?;
    Ok(axum::Json(Metrics { device_id: id, step: step.as_str().into(), points }))
}
