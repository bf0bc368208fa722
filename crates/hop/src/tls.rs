//! TLS for edgelink's HTTP hops: a listener's server config from PEM files,
//! and the client config every caller uses (the public web PKI roots plus,
//! optionally, one private CA), both on rustls with the aws-lc-rs provider.
//! Certificate files go through rustls' own PEM loader, which reads chains.

use std::path::Path;
use std::sync::Arc;

pub use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A TLS file or setting that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{field} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{field} {}: no certificate found", path.display())));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server's TLS acceptor from PEM files (certificate chain, private
/// key), speaking HTTP/1.1 only. `field` names the setting in errors.
pub fn acceptor(field: &str, cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = certs(field, cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("{field} key {}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("{field}: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The client config for https and wss: web PKI roots, plus the private CA
/// in `ca_file` (PEM, one or more certificates) when given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for c in certs("ca_file", path)? {
            roots.add(c).map_err(|e| TlsError(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("edgelink-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("no certificate"), "{e}");
        let e = acceptor("internal_tls_cert", &dir.join("missing.pem"), &empty).err().unwrap().to_string();
        assert!(e.contains("internal_tls_cert") && e.contains("missing.pem"), "{e}");
        assert!(client_config(None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
