//! HTTPS for the WebDAV gateway when `--tls-cert`/`--tls-key` are given (the same pair
//! FTP uses for AUTH TLS): rustls with the ring provider, HTTP/1.1 through hyper
//! (the same server loop as the node-to-node API, `cluster::tls::serve_https`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and key do not form a usable pair")?;
    Ok(Arc::new(cfg))
}

/// Serves `app` over TLS until `stop` changes; a failed handshake only ends that connection.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: Arc<rustls::ServerConfig>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    cluster::tls::serve_https(listener, cfg, "HTTPS", move |_, _| Some(app.clone()), stop)
}
