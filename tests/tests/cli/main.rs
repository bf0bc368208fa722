//! The binaries as an operator and a device run them: each test starts a
//! stack on port 0 and runs `api-server`, `remote-proxy` or `edge-agent`
//! from the same target directory as a child process.

mod api_server;
mod browser_ui;
mod edge_agent;
mod edgelink;
mod intermediary;
mod metrics;
mod remote_proxy;
