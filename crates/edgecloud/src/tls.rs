//! TLS for the gateways when `--tls-cert`/`--tls-key` (or `--tls-self-signed`) are given:
//! S3, WebDAV and the admin API answer HTTPS (rustls with the ring provider, served by
//! the node's one HTTP loop, `cluster::server`), and FTP requires AUTH TLS with the same
//! pair. The CLI finds the admin API's URL and certificate in the data directory
//! (`publish_admin_url`, `admin_client_config`).

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

/// A self-signed certificate for `--tls-self-signed`, made in `dir` on first start and
/// kept (clients pin it or skip verification; a new one each start would break that).
/// Its names: localhost, 127.0.0.1 and this machine's host name.
pub fn self_signed(dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let made = rcgen::generate_simple_self_signed(names)
        .context("cannot make a self-signed certificate")?;
    cluster::identity::create_private(&key, &made.signing_key.serialize_pem())?;
    std::fs::write(&cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    eprintln!(
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
) -> anyhow::Result<String> {
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
            std::fs::copy(c, &cert_copy).with_context(|| {
                format!("cannot copy {} to {}", c.display(), cert_copy.display())
            })?;
        }
        None => {
            let _ = std::fs::remove_file(&cert_copy);
        }
    }
    let file = data.join(admin::URL_FILE);
    std::fs::write(&file, format!("{url}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(url)
}

/// What the CLI trusts for an `https://` admin API: a certificate in `ca` (a PEM file:
/// the node's own certificate, pinned byte for byte, which also covers self-signed ones
/// that no path check accepts), or one that a certificate in it signed.
pub fn admin_client_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the admin API's certificate {}", ca.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs.iter().cloned());
    let signed = (!roots.is_empty())
        .then(|| {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
        })
        .transpose()
        .context("cannot build a verifier from the admin API's certificate")?;
    let verifier = PinnedOrSigned {
        pinned: certs,
        signed,
        provider: provider.clone(),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(cfg)
}

#[derive(Debug)]
struct PinnedOrSigned {
    pinned: Vec<CertificateDer<'static>>,
    signed: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            // The handshake signature (checked below) proves the server holds its key.
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match &self.signed {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::General(
                "the admin API's certificate is not the one given with --admin-ca".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
