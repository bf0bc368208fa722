//! `/api/v1/tokens`: a user's API tokens for programs. The rules (format,
//! scopes, allowlists, expiry) are `edgelink_tokens`'; this is the HTTP
//! edge.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::now_ms;
use edgelink_tokens::{CreateError, CreateRequest, TokenView};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json};
use crate::principal::UserPrincipal;

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Broader(_) => ApiError::new(ErrorCode::InsufficientScope, e.to_string()),
            CreateError::TooMany => ApiError::new(ErrorCode::Conflict, e.to_string()),
            CreateError::Store(s) => s.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// A new token: its description and, this once, its secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    /// The token as it will be listed.
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret (`elk_…`): shown now and never again.
    pub secret: String,
}

/// `POST /api/v1/tokens`: a token with at most the caller's scopes.
pub async fn create(
    State(state): State<AppState>,
    user: UserPrincipal,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let (token, secret) = state.api_tokens().create(&user.user.id, &user.scopes, &req, now_ms()).await?;
    Ok((StatusCode::CREATED, axum::Json(Created { token, secret })))
}

/// The user's tokens.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenList {
    /// Newest first; never a secret.
    pub tokens: Vec<TokenView>,
}

/// `GET /api/v1/tokens`.
pub async fn list(State(state): State<AppState>, user: UserPrincipal) -> Result<axum::Json<TokenList>, ApiError> {
    Ok(axum::Json(TokenList { tokens: state.api_tokens().list(&user.user.id, now_ms()).await? }))
}

/// `DELETE /api/v1/tokens/{id}`: revoked at once on this instance, within
/// `cache_ttl` on the others.
pub async fn revoke(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.len() > 64 || !state.api_tokens().revoke(&user.user.id, &id, now_ms()).await? {
        return Err(ApiError::new(ErrorCode::NotFound, "no such token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
