//! The TLS client settings the agent uses for https and wss: the public
//! web PKI roots plus, optionally, one private CA (`edgelink_hop::tls`).

use std::path::Path;
use std::sync::Arc;

use crate::AgentError;

/// Builds the rustls client config (aws-lc-rs provider).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    edgelink_hop::tls::client_config(ca_file).map_err(|e| AgentError::Config(e.to_string()))
}
