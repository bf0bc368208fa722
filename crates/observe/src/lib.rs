//! Prometheus metrics for both servers (ADR 21).
//!
//! Crates record through the `metrics` facade (`metrics::counter!` …); this
//! crate installs the one process-wide Prometheus recorder, records every
//! HTTP request by route pattern (never by id: label values stay few), and
//! serves the text format on a listener of its own.
//!
//! Series every binary has: `edgelink_http_requests_total{service, route,
//! method, status}` and `edgelink_http_request_duration_seconds{service,
//! route}` (a histogram). The rest are recorded where they happen
//! (docs/operations.md lists them).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgelink_protocol::error::ErrorCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return
/// the same handle). Metrics recorded before this are lost.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("the latency buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only this crate's view");
        }
        handle
    })
}

/// Which binary's series to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// api-server.
    Api,
    /// remote-proxy.
    Relay,
}

/// Series every binary has, then each one's own: (name, help). Counters
/// end in `_total`, histograms in `_seconds`, the rest are gauges.
const COMMON: &[(&str, &str)] = &[
    ("edgelink_http_requests_total", "HTTP requests by service, route pattern, method and status"),
    ("edgelink_http_request_duration_seconds", "HTTP request latency by service and route pattern"),
    ("edgelink_auth_failures_total", "Requests refused with 401 or 403, by error name"),
    ("edgelink_rate_limited_total", "Requests refused with 429, by error name"),
    ("edgelink_heartbeats_received_total", "Device heartbeats received"),
    ("edgelink_telemetry_batches_total", "Telemetry batches written to the database"),
    ("edgelink_telemetry_samples_written_total", "Device samples written in those batches"),
    ("edgelink_telemetry_batch_write_seconds", "Time to write one telemetry batch"),
    ("edgelink_messages_delivered_total", "Messages handed to devices for the first time"),
    ("edgelink_messages_redelivered_total", "Messages handed to devices again (not acknowledged before)"),
    ("edgelink_messages_read_total", "Messages acknowledged by their device"),
];
const API: &[(&str, &str)] = &[
    ("edgelink_messages_queued_total", "Message deliveries queued (one per recipient)"),
    ("edgelink_messages_refused_total", "Messages refused, by reason"),
    ("edgelink_messages_expired_total", "Message deliveries that expired unread"),
];
const RELAY: &[(&str, &str)] = &[
    ("edgelink_tunnels_open", "Device tunnels open on this relay"),
    ("edgelink_tunnels_accepted_total", "Device tunnels accepted"),
    ("edgelink_tunnels_closed_total", "Device tunnels closed, by reason"),
    ("edgelink_tunnel_streams_open", "Tunnel streams open, by who opened them"),
    ("edgelink_relay_bytes_total", "Bytes relayed through tunnel streams, by direction"),
    ("edgelink_relay_notifies_total", "Notices sent to devices, by result"),
];

/// Installs the recorder and announces `service`'s series with their help
/// text, at zero, so a scrape shows every series from the start.
pub fn announce(service: Service) {
    install();
    let own = match service {
        Service::Api => API,
        Service::Relay => RELAY,
    };
    for &(name, help) in COMMON.iter().chain(own) {
        if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
            // Labelled counters appear with their first label set.
            if !matches!(
                name,
                "edgelink_http_requests_total"
                    | "edgelink_auth_failures_total"
                    | "edgelink_rate_limited_total"
                    | "edgelink_messages_refused_total"
                    | "edgelink_tunnels_closed_total"
                    | "edgelink_relay_bytes_total"
                    | "edgelink_relay_notifies_total"
            ) {
                metrics::counter!(name).increment(0);
            }
        } else if name.ends_with("_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else {
            metrics::describe_gauge!(name, help);
            if name == "edgelink_tunnels_open" {
                metrics::gauge!(name).set(0.0);
            }
        }
    }
    if service == Service::Relay {
        for direction in ["to_device", "from_device"] {
            metrics::counter!("edgelink_relay_bytes_total", "direction" => direction).increment(0);
        }
        for by in ["relay", "device"] {
            metrics::gauge!("edgelink_tunnel_streams_open", "opened_by" => by).increment(0.0);
        }
    }
}

/// The current metrics in the Prometheus text format (0.0.4).
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// Renders only what `record` records, in a registry of its own (for a
/// tenant's view, which must never show the process-wide series).
pub fn render_local(record: impl FnOnce()) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, record);
    handle.render()
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An axum middleware recording each request under `service` (use with
/// `axum::middleware::from_fn_with_state(service, track)` as a layer on the
/// router, so the matched route is known).
pub async fn track(State(service): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(service, route, method, resp.status().as_u16(), started);
    resp
}

/// Counts one request served outside [`track`] (a front that forwards by
/// heads): the same two series, under the route it stands for.
pub fn record_request(service: &'static str, route: &'static str, method: &str, status: u16, started: Instant) {
    let method = axum::http::Method::from_bytes(method.as_bytes()).map(|m| method_label(&m)).unwrap_or("other");
    record(service, route, method, status, started);
}

fn record(service: &'static str, route: &str, method: &'static str, status: u16, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    // Registering a series (its labels built, hashed and looked up in the
    // recorder) costs more than the rest of forwarding a small request, so
    // each thread keeps the handles it used. Only the installed recorder's
    // handles are kept: before `install` they would be no-ops for good.
    if HANDLE.get().is_none() {
        let (requests, duration) = register(service, route, method, status);
        requests.increment(1);
        duration.record(elapsed);
        return;
    }
    SERIES.with_borrow_mut(|series| {
        // A short list searched in place: route patterns are few, and
        // comparing a handful of lengths costs less than hashing the route.
        let at = match series.iter().position(|(r, _)| r == route) {
            Some(at) => at,
            None => {
                if series.len() >= MAX_KEPT_ROUTES {
                    series.clear();
                }
                series.push((route.to_owned(), Vec::new()));
                series.len() - 1
            }
        };
        let kept = &mut series[at].1;
        let handles = match kept.iter().find(|k| k.service == service && k.method == method && k.status == status) {
            Some(k) => &k.handles,
            None => {
                let handles = register(service, route, method, status);
                kept.push(Kept { service, method, status, handles });
                &kept[kept.len() - 1].handles
            }
        };
        handles.0.increment(1);
        handles.1.record(elapsed);
    });
}

/// The two series of a request: its counter and its duration histogram.
fn register(
    service: &'static str,
    route: &str,
    method: &'static str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    let route = route.to_owned();
    let requests = metrics::counter!("edgelink_http_requests_total", "service" => service, "route" => route.clone(),
        "method" => method, "status" => status.to_string());
    let duration =
        metrics::histogram!("edgelink_http_request_duration_seconds", "service" => service, "route" => route);
    (requests, duration)
}

/// Routes whose handles a thread keeps at most (route patterns are few;
/// this only bounds a router with unusually many).
const MAX_KEPT_ROUTES: usize = 256;

/// One kept pair of handles.
struct Kept {
    service: &'static str,
    method: &'static str,
    status: u16,
    handles: (metrics::Counter, metrics::Histogram),
}

thread_local! {
    /// This thread's handles, by route pattern.
    static SERIES: std::cell::RefCell<Vec<(String, Vec<Kept>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Counts a refused request: `edgelink_auth_failures_total{service,
/// reason}` for 401s and 403s (reason = the error name),
/// `edgelink_rate_limited_total{service, reason}` for 429s. Other errors
/// show in the request counter's status label.
pub fn count_refusal(service: &'static str, code: ErrorCode) {
    match code.status() {
        401 | 403 => metrics::counter!("edgelink_auth_failures_total", "service" => service, "reason" => code.name())
            .increment(1),
        429 => {
            metrics::counter!("edgelink_rate_limited_total", "service" => service, "reason" => code.name()).increment(1)
        }
        _ => {}
    }
}

/// Methods outside the standard set share one label value.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn metrics_text() -> Response {
    let mut resp = render().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// The metrics listener's router: `GET /metrics` (and `/healthz`).
pub fn router() -> Router {
    Router::new().route("/metrics", get(metrics_text)).route("/healthz", get(|| async { "ok" }))
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    install();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    if let Err(e) = axum::serve(listener, router()).with_graceful_shutdown(shutdown).await {
        tracing::warn!(error = %e, "metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern() {
        install();
        let app = Router::new()
            .route("/things/{id}", get(|| async { "x" }))
            .layer(axum::middleware::from_fn_with_state("unit", track));
        for id in ["a", "b"] {
            let req = Request::builder().uri(format!("/things/{id}")).body(axum::body::Body::empty()).unwrap();
            assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
        }
        let text = render();
        let line = text
            .lines()
            .find(|l| l.starts_with("edgelink_http_requests_total{") && l.contains("service=\"unit\""))
            .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
        assert!(line.contains("route=\"/things/{id}\"") && line.ends_with(" 2"), "{line}");
        assert!(!text.contains("/things/a"), "ids must not become labels");
        assert!(text.contains("edgelink_http_request_duration_seconds_bucket{"), "{text}");
    }

    #[test]
    fn kept_handles_count_each_series_apart() {
        install();
        let started = Instant::now();
        for (status, times) in [(200, 3), (504, 1)] {
            for _ in 0..times {
                record_request("kept", "/kept/{*path}", "GET", status, started);
            }
        }
        record_request("kept", "/kept/{*path}", "PATCHY", 200, started);
        let text = render();
        let count = |method: &str, status: u16| {
            text.lines()
                .find(|l| {
                    l.starts_with("edgelink_http_requests_total{")
                        && l.contains("service=\"kept\"")
                        && l.contains(&format!("method=\"{method}\""))
                        && l.contains(&format!("status=\"{status}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(count("GET", 200).as_deref(), Some("3"), "{text}");
        assert_eq!(count("GET", 504).as_deref(), Some("1"), "{text}");
        assert_eq!(count("other", 200).as_deref(), Some("1"), "{text}");
        let histogram = text
            .lines()
            .find(|l| l.starts_with("edgelink_http_request_duration_seconds_count{") && l.contains("service=\"kept\""))
            .unwrap_or_else(|| panic!("no duration histogram in:\n{text}"));
        assert!(histogram.ends_with(" 5"), "{histogram}");
    }
}
