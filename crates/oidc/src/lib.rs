//! The OpenID Connect relying party behind api-server's browser sign-in.
//!
//! [`Provider`] wraps the `openidconnect` crate with what a server needs
//! around it and the crate leaves to its caller:
//!
//! * **Lazy, retried discovery.** Nothing is fetched in [`Provider::new`];
//!   the first [`Provider::begin`] (or [`Provider::warm_up`] at start)
//!   fetches the discovery document and the JWKS. While the provider is
//!   unreachable every call answers [`OidcError::Unavailable`], so the
//!   server starts and reports a clear 503 instead of refusing to boot.
//!   The metadata is refetched when older than
//!   [`OidcConfig::metadata_max_age`]; a failed refetch keeps the old copy.
//! * **Key rotation.** An ID token whose `kid` is not in the cached JWKS
//!   triggers one JWKS refetch (at most once per
//!   [`OidcConfig::jwks_min_refresh_interval`]) and one more verification.
//! * **Strict ID tokens.** Only asymmetric algorithms are accepted (never
//!   `none`, never HS*, so a token MACed with the provider's public key is
//!   refused); issuer, audience, `azp` when there are several audiences,
//!   expiry, `iat` (not in the future, not older than a pending login can
//!   live) and the nonce are checked.
//! * **A safe HTTP client.** No redirects (a provider document cannot
//!   bounce requests to internal addresses), connect and total timeouts, and
//!   a cap on response size.
//!
//! Public clients (no secret: the token request carries `client_id` and the
//! PKCE verifier) and confidential clients (secret by HTTP Basic or in the
//! form body) are both supported.

mod http;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EmptyAdditionalClaims, IdTokenClaims, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, Scope,
    TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, RwLock};

pub use http::HttpError;

/// How long an ID token may have been issued before we see it. A sign-in
/// that takes longer has outlived its pending-login cookie anyway.
pub const MAX_ID_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);

/// How a confidential client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic authentication.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

/// What the relying party needs to know.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer exactly as the provider publishes it.
    pub issuer: String,
    /// This application's client id at the provider.
    pub client_id: String,
    /// Present for confidential clients; absent for public PKCE-only clients.
    pub client_secret: Option<SecretString>,
    /// How the secret is sent (ignored without a secret).
    pub client_auth: ClientAuth,
    /// Where the provider sends the browser back (`…/api/auth/callback`).
    pub redirect_url: String,
    /// Scopes to ask for; `openid` is always added.
    pub scopes: Vec<String>,
    /// Total time for one request to the provider.
    pub http_timeout: Duration,
    /// Shortest time between two JWKS refetches caused by unknown key ids.
    pub jwks_min_refresh_interval: Duration,
    /// Discovery metadata and keys older than this are refetched.
    pub metadata_max_age: Duration,
    /// Tolerated clock difference with the provider.
    pub clock_skew: Duration,
}

impl OidcConfig {
    /// A configuration with the usual defaults for everything but the
    /// provider and client.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>, redirect_url: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuth::Basic,
            redirect_url: redirect_url.into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            http_timeout: Duration::from_secs(10),
            jwks_min_refresh_interval: Duration::from_secs(10),
            metadata_max_age: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(60),
        }
    }
}

/// Errors in the configuration, found before anything is fetched.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The issuer is not a URL, or plain http off loopback.
    #[error("oidc issuer {0:?} must be an https URL (plain http only on loopback)")]
    Issuer(String),
    /// The redirect URL is not a URL.
    #[error("oidc redirect_url {0:?} is not a URL")]
    RedirectUrl(String),
    /// The client id is empty.
    #[error("oidc client_id must not be empty")]
    ClientId,
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

/// Why a sign-in step failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense; try later.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code (used, expired, wrong verifier…).
    #[error("identity provider refused the authorization code: {0}")]
    CodeRefused(String),
    /// The ID token failed verification.
    #[error("ID token rejected: {0}")]
    InvalidIdToken(String),
    /// The provider did not tell us the user's email address.
    #[error("the identity provider did not return an email address for this user (is the `email` scope granted?)")]
    NoEmail,
}

/// The start of a sign-in: send the browser to `url`, remember the rest.
#[derive(Debug)]
pub struct LoginRequest {
    /// The provider's authorization URL with all parameters.
    pub url: String,
    /// `state` echoed back on the callback.
    pub state: String,
    /// `nonce` that must come back inside the ID token.
    pub nonce: String,
    /// PKCE verifier for the code exchange.
    pub pkce_verifier: String,
}

/// Who signed in, from a verified ID token (and userinfo when needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer that vouches for the subject.
    pub issuer: String,
    /// The provider's stable user id.
    pub subject: String,
    /// Email address.
    pub email: String,
    /// Whether the provider says the address is verified.
    pub email_verified: bool,
    /// Display name, when the provider gives one.
    pub name: Option<String>,
}

struct Discovered {
    metadata: ProviderMetadataWithLogout,
    jwks: CoreJsonWebKeySet,
    fetched_at: Instant,
    jwks_fetched_at: Instant,
}

/// One configured OpenID provider.
pub struct Provider {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: http::Http,
    current: RwLock<Option<Arc<Discovered>>>,
    /// Serialises fetches so a burst of logins makes one request.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

fn is_loopback_http(url: &openidconnect::url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(openidconnect::url::Host::Domain(d)) => d == "localhost",
            Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

impl Provider {
    /// Checks the configuration; fetches nothing yet.
    pub fn new(config: OidcConfig) -> Result<Self, ConfigError> {
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|_| ConfigError::Issuer(config.issuer.clone()))?;
        if issuer.url().scheme() != "https" && !is_loopback_http(issuer.url()) {
            return Err(ConfigError::Issuer(config.issuer.clone()));
        }
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|_| ConfigError::RedirectUrl(config.redirect_url.clone()))?;
        if config.client_id.trim().is_empty() {
            return Err(ConfigError::ClientId);
        }
        let http = http::Http::new(config.http_timeout).map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Provider { config, issuer, redirect, http, current: RwLock::new(None), fetching: Mutex::new(()) })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Fetches discovery and keys now; logs instead of failing, so a server
    /// can call it at start whether or not the provider is up.
    pub async fn warm_up(&self) {
        match self.discovered().await {
            Ok(_) => tracing::info!(issuer = %self.config.issuer, "identity provider discovered"),
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "identity provider not reachable yet; sign-in answers 503 until it is")
            }
        }
    }

    /// Whether discovery has succeeded at least once.
    pub async fn is_ready(&self) -> bool {
        self.current.read().await.is_some()
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        if let Some(d) = self.current.read().await.clone()
            && d.fetched_at.elapsed() < self.config.metadata_max_age
        {
            return Ok(d);
        }
        let _guard = self.fetching.lock().await;
        // Someone else may have fetched while we waited.
        let old = self.current.read().await.clone();
        if let Some(d) = &old
            && d.fetched_at.elapsed() < self.config.metadata_max_age
        {
            return Ok(d.clone());
        }
        match ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http).await {
            Ok(metadata) => {
                let now = Instant::now();
                let jwks = metadata.jwks().clone();
                let d = Arc::new(Discovered { metadata, jwks, fetched_at: now, jwks_fetched_at: now });
                *self.current.write().await = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                let reason = describe_discovery_error(&e);
                match old {
                    Some(d) => {
                        tracing::warn!(issuer = %self.config.issuer, error = %reason, "refreshing provider metadata failed; keeping the previous copy");
                        Ok(d)
                    }
                    None => Err(OidcError::Unavailable(reason)),
                }
            }
        }
    }

    /// Refetches the JWKS unless that happened too recently; returns the
    /// state to verify with.
    async fn refresh_jwks(&self, seen: &Arc<Discovered>) -> Option<Arc<Discovered>> {
        let _guard = self.fetching.lock().await;
        let current = self.current.read().await.clone()?;
        if !Arc::ptr_eq(&current, seen) {
            // Refreshed by someone else meanwhile.
            return Some(current);
        }
        if current.jwks_fetched_at.elapsed() < self.config.jwks_min_refresh_interval {
            return None;
        }
        match CoreJsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http).await {
            Ok(jwks) => {
                let d = Arc::new(Discovered {
                    metadata: current.metadata.clone(),
                    jwks,
                    fetched_at: current.fetched_at,
                    jwks_fetched_at: Instant::now(),
                });
                *self.current.write().await = Some(d.clone());
                tracing::info!(issuer = %self.config.issuer, "provider keys refetched after an unknown key id");
                Some(d)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %describe_discovery_error(&e), "refetching provider keys failed");
                None
            }
        }
    }

    fn client_secret(&self) -> Option<ClientSecret> {
        self.config.client_secret.as_ref().map(|s| ClientSecret::new(s.expose_secret().to_owned()))
    }

    /// Starts a sign-in: the authorization URL with PKCE S256, state and nonce.
    pub async fn begin(&self) -> Result<LoginRequest, OidcError> {
        let d = self.discovered().await?;
        let client = CoreClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.client_secret(),
        )
        .set_redirect_uri(self.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.config.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = req.url();
        Ok(LoginRequest {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Finishes a sign-in: exchanges the code and verifies the ID token.
    pub async fn complete(&self, code: &str, pkce_verifier: &str, nonce: &str) -> Result<Identity, OidcError> {
        let d = self.discovered().await?;
        let client = CoreClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.client_secret(),
        )
        .set_redirect_uri(self.redirect.clone())
        .set_auth_type(match self.config.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post => AuthType::RequestBody,
        });
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Unavailable(format!("provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(describe_token_error)?;
        let id_token =
            token.id_token().ok_or_else(|| OidcError::InvalidIdToken("the token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());

        let claims = match self.verify(&d, id_token, &nonce) {
            Err(VerifyError::UnknownKey) => match self.refresh_jwks(&d).await {
                Some(fresh) => self.verify(&fresh, id_token, &nonce),
                None => Err(VerifyError::UnknownKey),
            },
            other => other,
        }
        .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;

        let subject = claims.subject().as_str().to_owned();
        let mut email = claims.email().map(|e| e.as_str().to_owned());
        let mut email_verified = claims.email_verified().unwrap_or(false);
        let mut name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());

        if email.is_none()
            && let Ok(req) = client.user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            // Some providers put email only in userinfo. A failure here is
            // reported as a missing email below.
            match req.request_async::<EmptyAdditionalClaims, _, CoreGenderClaim>(&self.http).await {
                Ok(info) => {
                    email = info.email().map(|e| e.as_str().to_owned());
                    email_verified = info.email_verified().unwrap_or(false);
                    if name.is_none() {
                        name = info.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "userinfo request failed"),
            }
        }
        let email = email.ok_or(OidcError::NoEmail)?;
        Ok(Identity { issuer: self.config.issuer.clone(), subject, email, email_verified, name })
    }

    fn verify<'t>(
        &self,
        d: &Discovered,
        id_token: &'t openidconnect::core::CoreIdToken,
        nonce: &Nonce,
    ) -> Result<&'t IdTokenClaims<EmptyAdditionalClaims, CoreGenderClaim>, VerifyError> {
        let skew = chrono::Duration::from_std(self.config.clock_skew).unwrap_or(chrono::Duration::seconds(60));
        let max_age = chrono::Duration::from_std(MAX_ID_TOKEN_AGE).unwrap_or(chrono::Duration::minutes(10));
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            self.issuer.clone(),
            d.jwks.clone(),
        )
        .set_allowed_algs(ASYMMETRIC_ALGS.iter().cloned())
        .set_issue_time_verifier_fn(move |iat| {
            let now = chrono::Utc::now();
            if iat > now + skew {
                Err(format!("issued in the future ({iat})"))
            } else if iat < now - max_age - skew {
                Err(format!("issued too long ago ({iat})"))
            } else {
                Ok(())
            }
        })
        // Tolerate small clock differences on `exp` too.
        .set_time_fn(move || chrono::Utc::now() - skew);
        id_token.claims(&verifier, nonce).map_err(|e| match e {
            openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            ) => VerifyError::UnknownKey,
            other => {
                let mut msg = other.to_string();
                if let Some(source) = std::error::Error::source(&other) {
                    msg.push_str(&format!(" ({source})"));
                }
                VerifyError::Other(msg)
            }
        })
    }

    /// The provider's RP-initiated logout URL, when it advertises one.
    /// Uses the cached metadata only: logout never waits on the provider.
    pub async fn end_session_url(&self, post_logout_redirect: Option<&str>) -> Option<String> {
        let d = self.current.read().await.clone()?;
        let endpoint = d.metadata.additional_metadata().end_session_endpoint.clone()?;
        let mut req =
            openidconnect::LogoutRequest::from(endpoint).set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Some(uri) =
            post_logout_redirect.and_then(|u| openidconnect::PostLogoutRedirectUrl::new(u.to_owned()).ok())
        {
            req = req.set_post_logout_redirect_uri(uri);
        }
        Some(req.http_get_url().to_string())
    }
}

/// The algorithms an ID token may be signed with: asymmetric only.
const ASYMMETRIC_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

#[derive(Debug, thiserror::Error)]
enum VerifyError {
    #[error("no key in the provider's JWKS matches the token's key id")]
    UnknownKey,
    #[error("{0}")]
    Other(String),
}

fn describe_discovery_error(e: &openidconnect::DiscoveryError<HttpError>) -> String {
    use openidconnect::DiscoveryError as D;
    match e {
        D::Request(e) => format!("request failed: {e}"),
        D::Response(status, _, msg) => format!("HTTP {status}: {msg}"),
        D::Parse(e) => format!("invalid document: {e}"),
        D::UrlParse(e) => format!("bad URL: {e}"),
        D::Validation(msg) => format!("invalid metadata: {msg}"),
        D::Other(msg) => msg.clone(),
        _ => e.to_string(),
    }
}

type TokenError = openidconnect::RequestTokenError<
    HttpError,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
>;

fn describe_token_error(e: TokenError) -> OidcError {
    use openidconnect::RequestTokenError as R;
    match e {
        R::ServerResponse(body) => {
            let mut msg = body.error().to_string();
            if let Some(d) = body.error_description() {
                msg.push_str(": ");
                msg.push_str(d);
            }
            OidcError::CodeRefused(msg)
        }
        R::Request(e) => OidcError::Unavailable(format!("token request failed: {e}")),
        R::Parse(e, _) => OidcError::Unavailable(format!("invalid token response: {e}")),
        R::Other(msg) => OidcError::Unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_must_be_https_except_on_loopback() {
        let ok = |issuer: &str| Provider::new(OidcConfig::new(issuer, "c", "https://app.example/cb")).is_ok();
        assert!(ok("https://idp.example"));
        assert!(ok("http://127.0.0.1:9000"));
        assert!(ok("http://localhost:9000/realms/x"));
        assert!(ok("http://[::1]:9000"));
        assert!(!ok("http://idp.example"));
        assert!(!ok("not a url"));
        assert!(Provider::new(OidcConfig::new("https://idp.example", " ", "https://a/cb")).is_err());
        assert!(Provider::new(OidcConfig::new("https://idp.example", "c", "::")).is_err());
    }

    #[tokio::test]
    async fn unreachable_provider_is_unavailable_not_a_panic() {
        // Port 9 (discard) on loopback: nothing listens.
        let mut cfg = OidcConfig::new("http://127.0.0.1:9", "c", "http://127.0.0.1/cb");
        cfg.http_timeout = Duration::from_secs(2);
        let p = Provider::new(cfg).unwrap();
        assert!(matches!(p.begin().await, Err(OidcError::Unavailable(_))));
        assert!(!p.is_ready().await);
        assert_eq!(p.end_session_url(None).await, None);
    }
}
