//! TLS for the tunnel port and the internal API (the accept loop itself is
//! `edgelink_hop::listen`, shared with api-server).

use std::path::Path;

use tokio_rustls::TlsAcceptor;

use crate::error::RelayError;

/// Builds a TLS acceptor from PEM files (certificate chain, private key);
/// `field` names the setting in errors.
pub fn tls_acceptor(field: &str, cert: &Path, key: &Path) -> Result<TlsAcceptor, RelayError> {
    edgelink_hop::tls::acceptor(field, cert, key).map_err(|e| RelayError::Internal(e.to_string()))
}
