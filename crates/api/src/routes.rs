//! The route table: every route api-server serves, with the access it
//! requires. [`crate::router`] is built from [`routes`] and nothing else,
//! and wraps every handler in [`principal::gate`] with the declared
//! [`Access`], so a route cannot exist without an access decision, and the
//! all-endpoints test (`tests/tests/e2e/browser_auth.rs`) walks this same
//! list.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::principal::{self, Access, Gate, Need};
use crate::ratelimit::Limit;
use crate::{
    AppState, api_tokens, browser, commands, device_auth, device_proxy, devices, messages, node_api, origins, pairing,
    telemetry, ui,
};
use edgelink_tokens::Scope;

/// One route.
pub struct Route {
    /// HTTP method; `*` for a route that takes every method.
    pub method: Method,
    /// axum path pattern (`{id}` for parameters).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What a token needs to use it (sessions hold every scope).
    pub need: Need,
    /// Which per-client-address limit applies, if any.
    pub limit: Option<Limit>,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn new<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        Route { method, path, access, need: Need::Nothing, limit: None, handler: on(filter, handler) }
    }

    /// A route for every method (`method` reads `*`).
    fn any<H, T>(path: &'static str, access: Access, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let any = Method::from_bytes(b"*").unwrap_or(Method::GET);
        // Every standard method (`any()` would be a fallback, which the
        // access gate cannot wrap as a route layer).
        let all = [
            MethodFilter::DELETE,
            MethodFilter::HEAD,
            MethodFilter::OPTIONS,
            MethodFilter::PATCH,
            MethodFilter::POST,
            MethodFilter::PUT,
            MethodFilter::TRACE,
        ]
        .into_iter()
        .fold(MethodFilter::GET, MethodFilter::or);
        Route { method: any, path, access, need: Need::Nothing, limit: None, handler: on(all, handler) }
    }

    /// The scope a token needs.
    fn scope(mut self, scope: Scope) -> Route {
        self.need = Need::Scope(scope);
        self
    }

    /// `read` for safe methods, `write` for the others.
    fn scopes(mut self, read: Scope, write: Scope) -> Route {
        self.need = Need::ByMethod(read, write);
        self
    }

    /// Browser sessions only.
    fn browser_only(mut self) -> Route {
        self.need = Need::BrowserSession;
        self
    }

    /// Rate limits this route per client address.
    fn limited(mut self, limit: Limit) -> Route {
        self.limit = Some(limit);
        self
    }

    /// The handler wrapped in the access gate.
    pub(crate) fn into_method_router(self, state: &AppState) -> MethodRouter<AppState> {
        let gate = Gate { state: state.clone(), access: self.access, need: self.need, limit: self.limit };
        self.handler.route_layer(axum::middleware::from_fn_with_state(gate, principal::gate))
    }
}

/// Every route, in the order the docs list them.
pub fn routes() -> Vec<Route> {
    use Access::*;
    use Scope::*;
    vec![
        // The web UI (signed-in users; anonymous browsers are sent to sign in).
        Route::new(Method::GET, "/", User, ui::index).browser_only(),
        Route::new(Method::GET, "/ui/app.js", User, ui::app_js).browser_only(),
        Route::new(Method::GET, "/ui/app.css", User, ui::app_css).browser_only(),
        Route::new(Method::GET, "/ui/vendor/uPlot.iife.min.js", User, ui::uplot_js).browser_only(),
        Route::new(Method::GET, "/ui/vendor/uPlot.min.css", User, ui::uplot_css).browser_only(),
        Route::new(Method::GET, "/healthz", Public, crate::health),
        Route::new(Method::GET, "/readyz", Public, crate::ready),
        Route::new(Method::GET, "/.well-known/jwks.json", Public, crate::jwks),
        // Device authentication (the device proves its key; no session yet).
        Route::new(Method::POST, "/api/v1/auth/challenge", Public, device_auth::challenge).limited(Limit::DeviceAuth),
        Route::new(Method::POST, "/api/v1/auth/verify", Public, device_auth::verify).limited(Limit::DeviceAuth),
        Route::new(Method::POST, "/api/v1/auth/refresh", Public, device_auth::refresh).limited(Limit::DeviceAuth),
        // Pairing: the user makes a code, the device exchanges it.
        Route::new(Method::POST, "/api/v1/pairings", User, pairing::create).scope(PairingCreate),
        Route::new(Method::POST, "/api/v1/pairings/exchange", Public, pairing::exchange)
            .limited(Limit::PairingExchange),
        // The user's devices.
        // Devices may list their owner's devices too (discovery).
        Route::new(Method::GET, "/api/v1/devices", UserOrDevice, devices::list).scope(DeviceRead),
        Route::new(Method::GET, "/api/v1/devices/{id}", User, devices::get).scope(DeviceRead),
        Route::new(Method::PATCH, "/api/v1/devices/{id}", User, devices::patch).scope(DeviceWrite),
        Route::new(Method::DELETE, "/api/v1/devices/{id}", User, devices::delete).scope(DeviceDelete),
        Route::new(Method::GET, "/api/v1/devices/{id}/session", User, devices::session).scope(SessionRead),
        // The device's own origin (a grant for this browser), or its path route.
        Route::new(Method::GET, "/api/v1/devices/{id}/open", User, origins::open).browser_only(),
        Route::new(Method::GET, "/api/v1/devices/{id}/metrics", User, telemetry::history).scope(DeviceRead),
        // A device's own heartbeat over REST (devices without the agent).
        Route::new(Method::POST, "/api/v1/devices/{id}/heartbeat", Device, telemetry::heartbeat),
        Route::new(Method::POST, "/api/v1/devices/{id}/session/close", User, devices::close_session)
            .scope(SessionManage),
        Route::new(Method::GET, "/api/v1/devices/{id}/messages", User, messages::device_queue).scope(MessageRead),
        // Store-and-forward messages: users, programs and devices send;
        // the recipient device takes and acknowledges (ADR 20).
        Route::new(Method::POST, "/api/v1/messages", UserOrDevice, messages::send).scope(MessageSend),
        Route::new(Method::GET, "/api/v1/messages/pending", Device, messages::pending),
        Route::new(Method::PUT, "/api/v1/messages/{id}/read", Device, messages::read),
        // The device's web service: every method, with and without a path.
        Route::any("/api/v1/devices/{id}/http", User, device_proxy::http).scopes(DeviceRead, DeviceWrite),
        Route::any("/api/v1/devices/{id}/http/", User, device_proxy::http).scopes(DeviceRead, DeviceWrite),
        Route::any("/api/v1/devices/{id}/http/{*path}", User, device_proxy::http).scopes(DeviceRead, DeviceWrite),
        // Browser sign-in.
        Route::new(Method::GET, "/api/auth/login", Public, browser::login),
        Route::new(Method::GET, "/api/auth/callback", Public, browser::callback),
        Route::new(Method::GET, "/api/auth/me", User, browser::me),
        Route::new(Method::POST, "/api/auth/logout", User, browser::logout).browser_only(),
        Route::new(Method::GET, "/api/v1/sessions/browser", User, browser::list_sessions).scope(SessionRead),
        Route::new(Method::DELETE, "/api/v1/sessions/browser/{id}", User, browser::delete_session).scope(SessionManage),
        // Programs' API tokens.
        Route::new(Method::POST, "/api/v1/tokens", User, api_tokens::create).scope(TokenManage),
        Route::new(Method::GET, "/api/v1/tokens", User, api_tokens::list).scope(TokenManage),
        Route::new(Method::DELETE, "/api/v1/tokens/{id}", User, api_tokens::revoke).scope(TokenManage),
        // Seed 001's intermediaries: registered by users, connected over
        // Socket.IO (namespace /proxy, authenticated by proxyId + apiKey
        // in its handshake), and the commands sent through them.
        Route::new(Method::GET, "/socket.io/", Public, commands::engine_io).limited(Limit::IntermediaryHandshake),
        Route::new(Method::POST, "/socket.io/", Public, commands::engine_io).limited(Limit::IntermediaryHandshake),
        Route::new(Method::POST, "/api/v1/proxies", User, commands::create).scope(ProxyManage),
        Route::new(Method::GET, "/api/v1/proxies", User, commands::list).scope(ProxyManage),
        Route::new(Method::DELETE, "/api/v1/proxies/{id}", User, commands::revoke).scope(ProxyManage),
        Route::new(Method::POST, "/api/v1/proxies/{id}/key", User, commands::rotate).scope(ProxyManage),
        Route::new(Method::POST, "/api/v1/proxies/{id}/commands", User, commands::command_to_one).scope(CommandExecute),
        Route::new(Method::POST, "/api/v1/proxy-groups/{group}/commands", User, commands::command_to_group)
            .scope(CommandExecute),
        Route::new(Method::GET, "/api/v1/commands/{id}", User, commands::get_command).scope(CommandExecute),
        Route::new(Method::POST, "/api/v1/commands/{id}/cancel", User, commands::cancel_command).scope(CommandExecute),
        // Native commands, run by the device's own agent.
        Route::new(Method::POST, "/api/v1/devices/{id}/commands", User, commands::command_to_device)
            .scope(CommandExecute),
        Route::new(Method::GET, "/api/v1/devices/{id}/commands", User, commands::device_commands).scope(CommandExecute),
        // This API, described (any signed-in user or token).
        Route::new(Method::GET, "/api/openapi.json", User, crate::openapi::serve),
        // Seed 000's node API (docs/api.md, "Seed 000 compatibility").
        Route::new(Method::POST, "/api/v1/auth/register", Public, node_api::register).limited(Limit::PairingExchange),
        Route::new(Method::POST, "/api/v1/auth/login", Public, node_api::login).limited(Limit::DeviceAuth),
        Route::new(Method::GET, "/api/v1/nodes", UserOrDevice, node_api::list).scope(DeviceRead),
        Route::new(Method::PUT, "/api/v1/nodes/{id}", Device, node_api::update),
        Route::new(Method::POST, "/api/v1/nodes/{id}/heartbeat", Device, node_api::heartbeat),
        Route::new(Method::POST, "/api/v1/messages/send", UserOrDevice, node_api::send).scope(MessageSend),
        Route::new(Method::GET, "/api/v1/messages/pending/{node_id}", Device, node_api::pending),
        Route::new(Method::GET, "/api/v1/metrics", UserOrDevice, node_api::owner_metrics).scope(DeviceRead),
        Route::new(Method::GET, "/api/v1/health", Public, node_api::health).limited(Limit::DeviceAuth),
    ]
}
