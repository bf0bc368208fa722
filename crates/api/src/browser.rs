//! Browser sign-in (OpenID Connect authorization code + PKCE, with
//! api-server as the backend-for-frontend) and the browser sessions it
//! creates.
//!
//! * `GET /api/auth/login?return_to=/path`: pending sign-in cookie, then
//!   302 to the provider.
//! * `GET /api/auth/callback`: state, code exchange, ID token, user upsert,
//!   a NEW session id, 303 to `return_to`.
//! * `GET /api/auth/me`, `POST /api/auth/logout[?all=1]`.
//! * `GET /api/v1/sessions/browser`, `DELETE /api/v1/sessions/browser/{id}`.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use edgelink_auth::secret;
use edgelink_oidc::OidcError;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::now_ms;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, timestamp_ms};
use crate::principal::{Principal, UserPrincipal};

/// How long a started sign-in may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
const MAX_RETURN_TO: usize = 1024;
const MAX_USER_AGENT: usize = 256;
/// Longest `code`/`state`/`error` parameter accepted on the callback.
const MAX_PARAM: usize = 2048;

/// What the pending sign-in cookie carries (sealed: encrypted and
/// authenticated; it lives ≤ 10 minutes and only on the callback path).
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    /// state
    s: String,
    /// nonce
    n: String,
    /// PKCE verifier
    v: String,
    /// return_to
    r: String,
    /// expiry, Unix seconds
    e: i64,
}

/// `return_to` if it is a local path (`/…`, not `//host` or `/\host`),
/// else a 400. Absent or empty means `/`.
pub fn local_return_to(raw: Option<&str>) -> Result<String, ApiError> {
    let r = match raw {
        None | Some("") => return Ok("/".into()),
        Some(r) => r,
    };
    let ok = r.len() <= MAX_RETURN_TO
        && r.starts_with('/')
        && !r.starts_with("//")
        && !r.contains('\\')
        && !r.chars().any(|c| c.is_control());
    if ok { Ok(r.to_owned()) } else { Err(ApiError::bad_request("return_to must be a local path such as /devices")) }
}

fn provider(state: &AppState) -> Result<&edgelink_oidc::Provider, ApiError> {
    state
        .oidc()
        .ok_or_else(|| ApiError::unavailable("browser sign-in is not configured on this server ([oidc] section)"))
}

fn oidc_error(e: OidcError) -> ApiError {
    match e {
        OidcError::Unavailable(reason) => {
            tracing::warn!(error = %reason, "identity provider unavailable");
            ApiError::unavailable("the identity provider is unreachable; try again shortly")
        }
        OidcError::CodeRefused(reason) => {
            ApiError::new(ErrorCode::SignInFailed, format!("the identity provider refused the sign-in: {reason}"))
        }
        OidcError::InvalidIdToken(reason) => {
            tracing::warn!(error = %reason, "ID token rejected");
            ApiError::new(ErrorCode::SignInFailed, format!("the identity provider's ID token was rejected: {reason}"))
        }
        OidcError::NoEmail => ApiError::new(ErrorCode::SignInFailed, OidcError::NoEmail.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /api/auth/login`.
pub async fn login(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q: LoginQuery =
        Query::try_from_uri(&uri).map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))?;
    let return_to = local_return_to(q.return_to.as_deref())?;
    let req = provider(&state)?.begin().await.map_err(oidc_error)?;
    let pending = PendingLogin {
        s: req.state,
        n: req.nonce,
        v: req.pkce_verifier,
        r: return_to,
        e: now_ms() / 1000 + LOGIN_TTL.as_secs() as i64,
    };
    let policy = state.cookie_policy();
    let payload = serde_json::to_vec(&pending).map_err(ApiError::internal)?;
    let value = state
        .cookie_keys()
        .seal(policy.login_name(), &payload)
        .ok_or_else(|| ApiError::internal("pending login too large"))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, header::HeaderValue::from_str(&req.url).map_err(ApiError::internal)?),
            (header::SET_COOKIE, policy.set_login(&value, LOGIN_TTL)),
            (header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /api/auth/callback`. Any failure clears the pending sign-in and
/// ends on an error page (browsers) or the JSON error body, never a 500
/// for a provider's or attacker's input.
pub async fn callback(State(state): State<AppState>, principal: Option<Principal>, req: Request) -> Response {
    let policy = state.cookie_policy();
    let wants_html =
        req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    let path = req.uri().path().to_owned();
    let (parts, _body) = req.into_parts();
    match finish(&state, principal, &parts).await {
        Ok((cookie, return_to)) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::LOCATION,
                    header::HeaderValue::from_str(&return_to).unwrap_or(header::HeaderValue::from_static("/")),
                ),
                (header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")),
            ],
            [(header::SET_COOKIE, policy.clear_login()), (header::SET_COOKIE, cookie)],
        )
            .into_response(),
        Err(e) => {
            let e = e.at(&path);
            let mut resp = if wants_html { error_page(&e) } else { e.into_response() };
            resp.headers_mut().append(header::SET_COOKIE, policy.clear_login());
            resp
        }
    }
}

async fn finish(
    state: &AppState,
    principal: Option<Principal>,
    req: &axum::http::request::Parts,
) -> Result<(header::HeaderValue, String), ApiError> {
    let policy = state.cookie_policy();
    let q: CallbackQuery =
        Query::try_from_uri(&req.uri).map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))?;
    let too_long = [&q.code, &q.state, &q.error, &q.error_description]
        .iter()
        .any(|p| p.as_ref().is_some_and(|v| v.len() > MAX_PARAM));
    if too_long {
        return Err(ApiError::bad_request("callback parameter too long"));
    }
    let pending = cookies_pending(state, &req.headers)?;
    if let Some(err) = &q.error {
        let mut msg = format!("the identity provider ended the sign-in: {err}");
        if let Some(d) = &q.error_description {
            msg.push_str(&format!(" ({d})"));
        }
        return Err(ApiError::new(ErrorCode::SignInFailed, msg));
    }
    let got_state = q.state.as_deref().ok_or_else(|| ApiError::bad_request("missing state"))?;
    if !secret::ct_eq(got_state.as_bytes(), pending.s.as_bytes()) {
        return Err(ApiError::bad_request("state does not match this browser's sign-in; start again"));
    }
    let code = q.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| ApiError::bad_request("missing code"))?;
    let identity = provider(state)?.complete(code, &pending.v, &pending.n).await.map_err(oidc_error)?;
    let user = state
        .store()
        .upsert_user_by_subject(
            &identity.issuer,
            &identity.subject,
            &identity.email,
            identity.name.as_deref().unwrap_or(&identity.email),
            identity.email_verified || state.config().oidc.as_ref().is_some_and(|o| o.assume_email_verified),
        )
        .await
        .map_err(|e| match e {
            edgelink_store::Error::Conflict => ApiError::new(
                ErrorCode::Conflict,
                "this email address already belongs to another sign-in identity; ask an operator",
            ),
            other => other.into(),
        })?;
    // Rotation: whatever session this browser had is ended; the new one
    // gets a fresh id, so a planted cookie never becomes authenticated.
    if let Some(Principal::User(old)) = principal.filter(|p| matches!(p, Principal::User(u) if u.is_session())) {
        state.sessions().end(&old.user.id, &old.session_hash).await?;
    }
    let cfg = &state.config().session;
    let user_agent: String = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT)
        .collect();
    let ip = req.extensions.get::<crate::client_ip::ClientAddr>().map(|c| c.0.to_string()).unwrap_or_default();
    let id = state.sessions().create(&user.id, crate::sessions::Origin { user_agent, ip }).await?;
    tracing::info!(user_id = %user.id, "browser sign-in");
    let value = state.cookie_keys().sign(policy.session_name(), &id);
    Ok((policy.set_session(&value, cfg.absolute_lifetime), pending.r))
}

fn cookies_pending(state: &AppState, headers: &HeaderMap) -> Result<PendingLogin, ApiError> {
    let policy = state.cookie_policy();
    let missing =
        || ApiError::bad_request("no sign-in in progress in this browser (cookie missing or expired); start again");
    let raw = crate::cookies::get(headers, policy.login_name()).ok_or_else(missing)?;
    let payload = state.cookie_keys().open(policy.login_name(), raw).ok_or_else(missing)?;
    let pending: PendingLogin = serde_json::from_slice(&payload).map_err(|_| missing())?;
    if pending.e <= now_ms() / 1000 {
        return Err(missing());
    }
    Ok(pending)
}

fn error_page(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
         <body><main><h1>Sign-in failed</h1><p>{}</p><p><code>{}</code></p>\
         <p><a href=\"/api/auth/login\">Try again</a></p></main></body></html>",
        html_escape(&e.message),
        e.code.name()
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The signed-in user.
#[derive(Debug, Serialize, Deserialize)]
pub struct Me {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Whether the provider verified it (an unverified one is never used
    /// to find this user: operators cannot provision to it).
    pub email_verified: bool,
    /// Display name.
    pub name: String,
    /// Public id of the current browser session.
    pub session_id: String,
}

/// `GET /api/auth/me`.
pub async fn me(user: UserPrincipal) -> axum::Json<Me> {
    axum::Json(Me {
        id: user.user.id.clone(),
        email: user.user.email.clone(),
        email_verified: user.user.email_verified,
        name: user.user.name.clone(),
        session_id: user.session_public_id.clone(),
    })
}

#[derive(Debug, Deserialize)]
pub struct LogoutQuery {
    all: Option<String>,
}

/// Answer to a logout.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogoutResponse {
    /// Sessions ended.
    pub ended_sessions: u64,
    /// The provider's logout URL to send the browser to, when it has one.
    pub end_session_url: Option<String>,
}

/// `POST /api/auth/logout[?all=1]`.
pub async fn logout(State(state): State<AppState>, user: UserPrincipal, uri: Uri) -> Result<Response, ApiError> {
    let q: LogoutQuery =
        Query::try_from_uri(&uri).map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))?;
    let all = matches!(q.all.as_deref(), Some("1" | "true"));
    let ended = if all {
        state.sessions().end_all(&user.user.id).await?
    } else {
        u64::from(state.sessions().end(&user.user.id, &user.session_hash).await?)
    };
    let end_session_url = match state.oidc() {
        Some(p) => p.end_session_url(Some(&state.config().post_logout_redirect())).await,
        None => None,
    };
    tracing::info!(user_id = %user.user.id, ended, all, "browser sign-out");
    Ok((
        [(header::SET_COOKIE, state.cookie_policy().clear_session())],
        axum::Json(LogoutResponse { ended_sessions: ended, end_session_url }),
    )
        .into_response())
}

/// One browser session as its user sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BrowserSession {
    /// Handle for `DELETE /api/v1/sessions/browser/{id}`.
    pub id: String,
    /// Whether this is the session making the request.
    pub current: bool,
    /// Sign-in time, RFC 3339.
    pub created_at: String,
    /// Last activity (to within a minute), RFC 3339.
    pub last_seen_at: String,
    /// When it ends unless used, RFC 3339.
    pub expires_at: String,
    /// Browser at sign-in.
    pub user_agent: String,
    /// Address at sign-in.
    pub ip: String,
}

/// The list.
#[derive(Debug, Serialize, Deserialize)]
pub struct BrowserSessions {
    /// Newest first.
    pub sessions: Vec<BrowserSession>,
}

/// `GET /api/v1/sessions/browser`.
pub async fn list_sessions(
    State(state): State<AppState>,
    user: UserPrincipal,
) -> Result<axum::Json<BrowserSessions>, ApiError> {
    let rows = state.sessions().list(&user.user.id).await?;
    let sessions = rows
        .into_iter()
        .map(|s| BrowserSession {
            current: s.id_hash == user.session_hash,
            id: s.public_id,
            created_at: timestamp_ms(s.created_at),
            last_seen_at: timestamp_ms(s.last_seen_at),
            expires_at: timestamp_ms(s.idle_expires_at.min(s.absolute_expires_at)),
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(axum::Json(BrowserSessions { sessions }))
}

/// `DELETE /api/v1/sessions/browser/{id}`: 204, or 404 when the user has no
/// such session.
pub async fn delete_session(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.len() > 64 || !state.sessions().end_by_public_id(&user.user.id, &id).await? {
        return Err(ApiError::new(ErrorCode::NotFound, "no such session"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_local_only() {
        for ok in ["/", "/devices", "/devices?x=1#y", "/a/b%2Fc"] {
            assert_eq!(local_return_to(Some(ok)).unwrap(), ok);
        }
        assert_eq!(local_return_to(None).unwrap(), "/");
        for bad in ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "/a\nb", "javascript:alert(1)"]
        {
            assert!(local_return_to(Some(bad)).is_err(), "{bad}");
        }
        assert!(local_return_to(Some(&format!("/{}", "a".repeat(2000)))).is_err());
    }

    #[test]
    fn error_pages_escape_provider_text() {
        let page = error_page(&ApiError::new(ErrorCode::SignInFailed, "<script>x</script>"));
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
        let _ = page;
        assert_eq!(html_escape("<a href=\"x\">"), "&lt;a href=&quot;x&quot;&gt;");
    }
}
