//! The device loop: get a token, dial, serve streams, send heartbeats,
//! refresh tokens, and reconnect with backoff when the tunnel drops.

use std::sync::Arc;
use std::time::Duration;

use edgelink_auth::agent_key::AgentKey;
use edgelink_protocol::heartbeat::Heartbeat;
use edgelink_protocol::paths;
use edgelink_tunnel::{DialError, Ended, Handle, Session, SessionEnd};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{AgentConfig, local_authority};
use crate::credentials::{AuthClient, AuthError, Tokens};
use crate::inbox::Inbox;
use crate::serve::{StreamContext, spawn_stream};
use crate::{AgentError, Status};

/// Runs until `shutdown` (Ok) or a permanent refusal (Err).
pub async fn run(
    config: AgentConfig,
    key: AgentKey,
    status: watch::Sender<Status>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate().map_err(AgentError::Config)?;
    let device_id = config.device_id.clone().unwrap_or_default();
    let authority = local_authority(&config.local_service).unwrap_or_default();
    let tls = crate::tls::client_config(config.ca_file.as_deref())?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let auth = AuthClient::new(http, &config.api_url, &device_id);
    let prefix = crate::config::local_base_path(&config.local_service);
    // Announced when dialing: a relay that takes it writes requests for the
    // local service, and streams are then spliced to it (protocol §5).
    let offer = format!("{authority}{prefix}");
    let ctx = Arc::new(StreamContext::new(&device_id, authority, prefix, config.request_timeout));
    let handler = config.message_handler();
    if handler.is_none() {
        tracing::info!("no message_command or message_url: messages for this device stay queued");
    }
    let key = Arc::new(key);
    let commands =
        config.command_config().map(|c| Arc::new(crate::commands::Runner::new(c, Arc::clone(&key), ctx.wake.clone())));
    let inbox = (handler.is_some() || commands.is_some())
        .then(|| Arc::new(Inbox::new(handler, commands, config.message_timeout, ctx.wake.clone())));
    let tunnel_cfg = config.tunnel_config();
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut tokens: Option<Tokens> = None;

    loop {
        let _ = status.send(Status::Connecting);
        let attempt = async {
            let t = match auth.ensure(&key, tokens.take()).await {
                Ok(t) => t,
                Err(AuthError::Permanent(e)) => return Err(Some(AgentError::Refused(e))),
                Err(e @ (AuthError::Transient(_) | AuthError::Stale(_))) => {
                    tracing::warn!(error = %e, "could not get a token");
                    return Err(None);
                }
            };
            let ctx_in = ctx.clone();
            let dialled = edgelink_tunnel::dial_with(
                &config.tunnel_url,
                t.access.expose_secret(),
                Some(&offer),
                tls.clone(),
                config.request_timeout,
                &tunnel_cfg,
                move |splice| {
                    if splice {
                        tracing::debug!("the relay writes requests for the local service: streams are spliced");
                    }
                    move |s| spawn_stream(ctx_in.clone(), s, splice)
                },
            )
            .await;
            match dialled {
                Ok(session) => Ok((session, t)),
                Err(e @ (DialError::Forbidden(_) | DialError::BadUrl(_))) => {
                    Err(Some(AgentError::Refused(e.to_string())))
                }
                Err(DialError::Unauthorized(e)) => {
                    tracing::warn!(error = %e, "tunnel refused the token; authenticating again");
                    Err(None)
                }
                Err(DialError::Transient(e)) => {
                    tracing::warn!(error = %e, "could not reach the relay");
                    tokens = Some(t);
                    Err(None)
                }
            }
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return stopped(&status),
            r = attempt => r,
        };
        let (session, t) = match outcome {
            Ok(x) => x,
            Err(Some(fatal)) => {
                let _ = status.send(Status::Stopped(fatal.to_string()));
                return Err(fatal);
            }
            Err(None) => {
                if wait_backoff(&mut backoff, &status, &shutdown).await {
                    return stopped(&status);
                }
                continue;
            }
        };

        let Session { handle, ended } = session;
        tracing::info!("tunnel up");
        let _ = status.send(Status::Connected);
        backoff.reset();
        let inbox = inbox.clone().map(|i| tokio::spawn(i.run(handle.clone(), config.message_poll_interval)));
        let (end, new_tokens) = connected(&config, &auth, &key, &handle, ended, t, &shutdown).await;
        if let Some(task) = inbox {
            task.abort();
        }
        tokens = new_tokens;
        if shutdown.is_cancelled() {
            return stopped(&status);
        }
        tracing::info!(?end, "tunnel down");
        if end.remote_reason().is_some_and(|r| !r.should_reconnect()) {
            let e = AgentError::Refused("the relay closed the tunnel: device revoked".into());
            let _ = status.send(Status::Stopped(e.to_string()));
            return Err(e);
        }
        if wait_backoff(&mut backoff, &status, &shutdown).await {
            return stopped(&status);
        }
    }
}

fn stopped(status: &watch::Sender<Status>) -> Result<(), AgentError> {
    let _ = status.send(Status::Stopped("shutdown".into()));
    Ok(())
}

/// Waits the next backoff delay; true when shutdown came first.
async fn wait_backoff(backoff: &mut Backoff, status: &watch::Sender<Status>, shutdown: &CancellationToken) -> bool {
    let delay = backoff.next_delay();
    let _ = status.send(Status::Backoff(delay));
    tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting after a delay");
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// While the tunnel is up: heartbeats and token refresh. Returns how the
/// session ended and the freshest tokens.
async fn connected(
    config: &AgentConfig,
    auth: &AuthClient,
    key: &AgentKey,
    handle: &Handle,
    mut ended: Ended,
    mut tokens: Tokens,
    shutdown: &CancellationToken,
) -> (SessionEnd, Option<Tokens>) {
    let mut beat = tokio::time::interval(config.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = std::time::Instant::now();
    let mut sampler = crate::host::Sampler::default();
    let told_interval = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let refresh_at = tokens.refresh_at();
        tokio::select! {
            end = &mut ended => return (end, Some(tokens)),
            _ = shutdown.cancelled() => {
                handle.close(1000, "agent shutting down");
                let end = tokio::time::timeout(Duration::from_secs(5), &mut ended).await;
                let end = end.unwrap_or(SessionEnd::Local(None));
                return (end, Some(tokens));
            }
            _ = beat.tick() => {
                let h = handle.clone();
                let sample = sampler.sample(started.elapsed().as_secs());
                let told = told_interval.clone();
                tokio::spawn(async move {
                    // A refused heartbeat (the relay may not have registered
                    // a brand-new session yet) is tried again soon, not a
                    // whole interval later.
                    for attempt in 0..3 {
                        match send_heartbeat(&h, &sample).await {
                            Ok(Some(secs)) => {
                                told.store(secs, std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, attempt, "heartbeat failed");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                // The relay says how often it wants them (5 s to 1 h).
                let secs = told_interval.load(std::sync::atomic::Ordering::Relaxed);
                if (5..=3600).contains(&secs) && Duration::from_secs(secs) != beat.period() {
                    beat = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(secs), Duration::from_secs(secs));
                    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
            }
            _ = tokio::time::sleep_until(refresh_at) => {
                tokens = match auth.ensure(key, Some(tokens)).await {
                    Ok(t) => t,
                    Err(e) => {
                        // The tunnel stays up; the next dial authenticates anew.
                        tracing::warn!(error = %e, "token refresh failed");
                        match auth.authenticate(key).await {
                            Ok(t) => t,
                            Err(_) => return (ended.await, None),
                        }
                    }
                };
            }
        }
    }
}

/// Sends one heartbeat on a stream of its own; returns the interval the
/// relay asks for, if it says.
pub async fn send_heartbeat(handle: &Handle, beat: &Heartbeat) -> Result<Option<u64>, String> {
    let stream = handle.open_stream().await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(beat).map_err(|e| e.to_string())?;
    let req = http::Request::post(paths::HEARTBEAT)
        .header(http::header::HOST, "relay")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "heartbeat timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if !status.is_success() {
        return Err(format!("relay answered {status}"));
    }
    let ack: Option<edgelink_protocol::heartbeat::HeartbeatAck> = serde_json::from_slice(&body).ok();
    Ok(ack.and_then(|a| a.interval_secs))
}
