//! The web UI: three static files and the uPlot chart library compiled
//! into the binary (no build step, no framework). They are served only to signed-in users; an anonymous
//! browser asking for them is sent to sign in first (see the gate).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
/// uPlot 1.6.32 (MIT, ui/vendor/uPlot.LICENSE): the device chart.
const UPLOT_JS: &str = include_str!("../ui/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../ui/vendor/uPlot.min.css");

/// Scripts and styles only from this origin; never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`.
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    file(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /ui/vendor/uPlot.iife.min.js`.
pub async fn uplot_js() -> Response {
    file(UPLOT_JS, "text/javascript; charset=utf-8")
}

/// `GET /ui/vendor/uPlot.min.css`.
pub async fn uplot_css() -> Response {
    file(UPLOT_CSS, "text/css; charset=utf-8")
}

/// `GET /ui/app.css`.
pub async fn app_css() -> Response {
    file(APP_CSS, "text/css; charset=utf-8")
}
