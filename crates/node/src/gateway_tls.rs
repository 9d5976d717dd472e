//! TLS for the gateways when `--tls-cert`/`--tls-key` (or `--tls-self-signed`) are
//! given: S3, WebDAV and the admin API answer HTTPS (rustls with the ring provider,
//! served by the node's one HTTP loop, `cluster::server`), and FTP requires AUTH TLS
//! with the same pair. The node writes its admin URL and certificate into the data
//! directory so the CLI finds and trusts them (`publish_admin_url`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::NodeError;

/// The server configuration for a certificate chain and its key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, NodeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            NodeError::Settings(format!(
                "cannot read the certificate {}: {e}",
                cert.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            NodeError::Settings(format!(
                "{} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        NodeError::Settings(format!("{} is not a PEM private key: {e}", key.display()))
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| NodeError::startup("TLS", e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        NodeError::Settings(format!(
            "the certificate and key do not form a usable pair: {e}"
        ))
    })?;
    Ok(Arc::new(cfg))
}

/// A self-signed certificate for `--tls-self-signed`, made in `dir` on first start and
/// kept (clients pin it or skip verification; a new one each start would break that).
/// Its names: localhost, 127.0.0.1 and this machine's host name.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), NodeError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(NodeError::file("create", dir))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| NodeError::startup("cannot make a self-signed certificate", e))?;
    cluster::identity::create_private(&key, &made.signing_key.serialize_pem())
        .map_err(|e| NodeError::startup("cannot keep the certificate's key", e))?;
    std::fs::write(&cert, made.cert.pem()).map_err(NodeError::file("write", &cert))?;
    tracing::info!(
        "made a self-signed certificate {} (clients must trust it, or skip verification)",
        cert.display()
    );
    Ok((cert, key))
}

/// Writes where the admin API answers (DATA/admin.url) and, with TLS, the certificate
/// it serves (DATA/admin-cert.pem), so `edgecloud` commands given `--data` find and
/// trust it. Answers the URL.
pub fn publish_admin_url(
    data: &Path,
    addr: std::net::SocketAddr,
    cert: Option<&Path>,
) -> Result<String, NodeError> {
    let mut local = addr;
    if addr.ip().is_unspecified() {
        local.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!(
        "{}://{local}",
        if cert.is_some() { "https" } else { "http" }
    );
    let cert_copy = data.join(admin::CERT_FILE);
    match cert {
        Some(c) => {
            std::fs::copy(c, &cert_copy)
                .map_err(NodeError::file("copy the certificate to", &cert_copy))?;
        }
        None => {
            let _ = std::fs::remove_file(&cert_copy);
        }
    }
    let file = data.join(admin::URL_FILE);
    std::fs::write(&file, format!("{url}\n")).map_err(NodeError::file("write", &file))?;
    Ok(url)
}
