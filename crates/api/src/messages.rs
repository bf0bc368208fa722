//! Messages at the HTTP edge: send (users, programs, devices), a device's
//! pending messages and acknowledgement over REST, and a device's queue for
//! its owner. The rules are `edgelink_messages`'; delivery is ADR 20.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use edgelink_messages::{Ack, Message, Outgoing, SendError, Sender, Sent};
use edgelink_protocol::error::ErrorCode;
use edgelink_store::now_ms;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json};
use crate::principal::{DevicePrincipal, Principal, UserPrincipal, Via};

/// A list of messages.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageList {
    /// Pending: highest priority first, then oldest. A device's queue:
    /// newest first.
    pub messages: Vec<Message>,
}

/// The sender a principal sends as.
pub(crate) fn sender_of(principal: &Principal) -> Sender {
    match principal {
        Principal::Device(d) => Sender::Device(d.device_id.clone()),
        Principal::User(u) => user_sender(u),
    }
}

/// The sender a user (by session, token or service client) sends as.
pub(crate) fn user_sender(u: &crate::principal::UserPrincipal) -> Sender {
    match &u.via {
        Via::Session => Sender::User(u.user.id.clone()),
        Via::Token(id) => Sender::Token(id.clone()),
        Via::Service(subject) => Sender::Service(subject.clone()),
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Invalid(m) => ApiError::bad_request(m),
            // Another owner's device and a missing one look the same.
            SendError::UnknownDevice(d) => ApiError::new(ErrorCode::DeviceNotFound, format!("no such device: {d}")),
            e @ SendError::QueueFull { .. } => ApiError::new(ErrorCode::MessageQueueFull, e.to_string())
                .retry_after(std::time::Duration::from_secs(60)),
            SendError::Store(e) => e.into(),
        }
    }
}

/// Persists `out` from `principal` and tells the recipients' relays.
pub(crate) async fn send_as(state: &AppState, principal: &Principal, out: Outgoing) -> Result<Sent, ApiError> {
    let sent = state.messages().send(principal.owner_id(), &sender_of(principal), out, now_ms()).await?;
    notify_recipients(state, principal.owner_id(), &sent.recipients);
    Ok(sent)
}

/// `POST /api/v1/messages` (users with `message:send`, devices): 201
/// `{message_id, recipients, expires_at}` once persisted.
pub async fn send(
    State(state): State<AppState>,
    principal: Principal,
    Json(out): Json<Outgoing>,
) -> Result<(StatusCode, axum::Json<Sent>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(send_as(&state, &principal, out).await?)))
}

/// Asks the relay holding each online recipient to tell its device that
/// messages wait (in the background: the send is already durable, and the
/// agent also fetches on connect and periodically).
pub(crate) fn notify_recipients(state: &AppState, owner_id: &str, recipients: &[String]) {
    let state = state.clone();
    let owner_id = owner_id.to_owned();
    let recipients = recipients.to_vec();
    tokio::spawn(async move {
        for device_id in recipients {
            let session = match state.store().open_session_for_device(&owner_id, &device_id).await {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(device_id, error = %e, "cannot look up the device's tunnel to notify it");
                    continue;
                }
            };
            match state.device_proxy().relay_client(&session.relay_url) {
                Ok(client) => {
                    if let Err(e) = client.notify(&session.id, "messages").await {
                        tracing::debug!(device_id, error = %e, "could not notify the device (it will fetch later)");
                    }
                }
                Err(e) => tracing::debug!(device_id, error = %e.message, "cannot reach the device's relay"),
            }
        }
    });
}

/// `?limit=` of the pending list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingQuery {
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

/// `GET /api/v1/messages/pending` (the device itself): its unread
/// messages, handed over again until acknowledged.
pub async fn pending(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Query(q): Query<PendingQuery>,
) -> Result<axum::Json<MessageList>, ApiError> {
    let messages = state.messages().take(&device.device_id, q.limit.unwrap_or(100), now_ms()).await?;
    Ok(axum::Json(MessageList { messages }))
}

/// The answer to an acknowledgement.
#[derive(Debug, Serialize, Deserialize)]
pub struct Acked {
    /// The message.
    pub id: String,
    /// `read`.
    pub status: String,
}

/// Marks `id` read for `device_id`, or says why not.
pub(crate) async fn ack_as(state: &AppState, device_id: &str, id: &str) -> Result<Acked, ApiError> {
    match state.messages().ack(device_id, id, now_ms()).await? {
        Ack::Read => Ok(Acked { id: id.to_owned(), status: "read".into() }),
        Ack::Expired => Err(ApiError::new(ErrorCode::MessageExpired, "this message expired before it was read")),
        Ack::Unknown => Err(ApiError::new(ErrorCode::NotFound, "no such message for this device")),
    }
}

/// `PUT /api/v1/messages/{id}/read` (the recipient device): idempotent.
pub async fn read(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<Acked>, ApiError> {
    Ok(axum::Json(ack_as(&state, &device.device_id, &id).await?))
}

/// `?status=&limit=` of a device's queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// `pending`, `delivered`, `read` or `expired`.
    status: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

/// `GET /api/v1/devices/{id}/messages?status=` (the owner, `message:read`).
pub async fn device_queue(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Query(q): Query<QueueQuery>,
) -> Result<axum::Json<MessageList>, ApiError> {
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = status
        && !edgelink_messages::STATUSES.contains(&s)
    {
        return Err(ApiError::bad_request("status must be pending, delivered, read or expired"));
    }
    if state.store().active_device(&user.user.id, &id).await?.is_none() {
        return Err(crate::devices::not_found());
    }
    let messages = state.messages().list(&user.user.id, &id, status, q.limit.unwrap_or(100), now_ms()).await?;
    Ok(axum::Json(MessageList { messages }))
}
