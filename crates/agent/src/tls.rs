//! The TLS client settings the agent uses for https and wss: the public
//! web PKI roots plus, optionally, one private CA.

use std::path::Path;
use std::sync::Arc;

use crate::AgentError;

/// Builds the rustls client config (aws-lc-rs provider).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| AgentError::Config(format!("ca_file {}: {e}", path.display())))?;
        for c in certs {
            roots.add(c).map_err(|e| AgentError::Config(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
