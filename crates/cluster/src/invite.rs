//! One-time invitation tokens: a way to join without copying the cluster secret.
//!
//! `edgecloud cluster invite` asks a node for a token. The token names that node's
//! node-to-node address, pins its public key, and carries a random one-time secret; the
//! cluster keeps only a hash of that secret, with an expiry, as a replicated record. A
//! new node given the token connects to the address without a certificate (the only
//! thing such a connection may do is redeem a token), checks that the server holds the
//! pinned key (so a man in the middle cannot hand it a cluster of its own), and trades
//! the unused, unexpired token for the cluster secret. From then on it is like any node
//! given the secret: it joins under mutual TLS and keeps the secret in its data folder.

use crate::ClusterError;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "ecinv1_";

/// The node-to-node path a guest (a connection without a certificate) may call.
pub const REDEEM_PATH: &str = "/v1/invite/redeem";

/// What a token holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The issuing node's node-to-node address (HOST:PORT).
    pub addr: String,
    /// The issuing node's Ed25519 public key: the joiner accepts no other server.
    pub node_key: [u8; 32],
    /// The one-time secret; the cluster stores only `secret_hash`.
    pub secret: [u8; 32],
}

/// Never prints the one-time secret.
impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("addr", &self.addr)
            .field("node_key", &codec::hex(&self.node_key))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Invitation {
    /// A fresh invitation from the node at `addr` with public key `node_key`.
    pub fn new(addr: String, node_key: [u8; 32]) -> Result<Invitation, ClusterError> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| ClusterError::NoRandomness)?;
        Ok(Invitation {
            addr,
            node_key,
            secret,
        })
    }

    /// `ecinv1_` and base64url of: public key, secret, address.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(64 + self.addr.len());
        raw.extend_from_slice(&self.node_key);
        raw.extend_from_slice(&self.secret);
        raw.extend_from_slice(self.addr.as_bytes());
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Reads a token; says what is wrong with a damaged one.
    pub fn decode(token: &str) -> Result<Invitation, ClusterError> {
        let bad = |why: &str| {
            ClusterError::Invalid(format!(
                "not an Edgecloud invitation token ({why}): copy the whole line that `edgecloud cluster invite` printed"
            ))
        };
        let body = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with ecinv1_"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("damaged base64"))?;
        if raw.len() <= 64 || raw.len() > 64 + 300 {
            return Err(bad("wrong length"));
        }
        let addr = String::from_utf8(raw[64..].to_vec()).map_err(|_| bad("damaged address"))?;
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(bad("damaged address"));
        }
        Ok(Invitation {
            addr,
            node_key: raw[..32].try_into().expect("32 bytes"),
            secret: raw[32..64].try_into().expect("32 bytes"),
        })
    }

    /// The name of the catalog record that stands for this invitation.
    pub fn record_name(&self) -> String {
        record_name(&self.secret)
    }
}

/// `invite/` and BLAKE3 of the one-time secret: the record can be found from the
/// secret, the secret not from the record.
pub fn record_name(secret: &[u8]) -> String {
    let h = blake3::derive_key("edgecloud 2026 invitation v1", secret);
    format!("invite/{}", codec::hex(&h))
}

/// The replicated record of an invitation (JSON in the catalog's cluster table).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteRecord {
    /// The node that issued it.
    pub issued_by: String,
    /// When it was issued (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it expires (ms since the Unix epoch).
    pub expires_ms: u64,
    /// Set when the token is used: who (address of the connection) and when.
    #[serde(default)]
    pub redeemed_by: Option<String>,
    /// When it was redeemed, if it was.
    #[serde(default)]
    pub redeemed_ms: Option<u64>,
    /// Set when an operator revoked the invitation before it was used.
    #[serde(default)]
    pub revoked_ms: Option<u64>,
}

impl InviteRecord {
    /// "open", "used", "revoked" or "expired" at `now_ms`.
    pub fn state(&self, now_ms: u64) -> &'static str {
        if self.redeemed_by.is_some() {
            "used"
        } else if self.revoked_ms.is_some() {
            "revoked"
        } else if now_ms >= self.expires_ms {
            "expired"
        } else {
            "open"
        }
    }
}

/// The short id an operator sees for an invitation record: the first 12 hex
/// characters of its hash (enough to tell invitations apart, useless to redeem one).
pub fn record_id(record_name: &str) -> &str {
    let h = record_name.strip_prefix("invite/").unwrap_or(record_name);
    &h[..h.len().min(12)]
}

/// What a guest sends to redeem a token, and what it gets back.
#[derive(Serialize, Deserialize)]
pub struct RedeemRequest {
    /// The one-time secret, hex.
    pub secret: String,
}

/// What a node that redeems an invitation gets.
#[derive(Serialize, Deserialize)]
pub struct RedeemAnswer {
    /// The cluster secret, sealed for the redeeming node.
    pub cluster_secret: String,
}

/// Neither side of a redemption prints its secret.
impl std::fmt::Debug for RedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedeemRequest { secret: <redacted> }")
    }
}

impl std::fmt::Debug for RedeemAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedeemAnswer { cluster_secret: <redacted> }")
    }
}

/// A TLS client configuration without a certificate, which accepts only a server
/// whose certificate carries `node_key`.
pub fn guest_tls(node_key: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedKey { node_key, provider }))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts a server certificate only if its public key is the pinned one; the
/// handshake signature then proves the server holds the private key.
#[derive(Debug)]
struct PinnedKey {
    node_key: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = crate::mutual_tls::cert_public_key(end_entity)
            .ok_or_else(|| rustls::Error::General("unreadable server certificate".into()))?;
        if key != self.node_key {
            return Err(rustls::Error::General(
                "the node does not hold the key the invitation names (wrong address, or someone in between)".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// Trades a token for the cluster secret at the node that issued it. `local` is the
/// address to connect from (`--bind`).
pub async fn redeem(
    inv: &Invitation,
    local: Option<std::net::IpAddr>,
) -> Result<crate::ClusterSecret, ClusterError> {
    let http = reqwest::Client::builder()
        .local_address(local)
        .tls_backend_preconfigured((*guest_tls(inv.node_key)?).clone())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = format!("https://{}{REDEEM_PATH}", inv.addr);
    let resp = http
        .post(&url)
        .json(&RedeemRequest {
            secret: codec::hex(&inv.secret),
        })
        .send()
        .await
        .map_err(|e| {
            // The TLS layer's reason (e.g. a key that is not the pinned one) is deep in
            // the chain; show all of it.
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            ClusterError::Peer(format!(
                "cannot redeem the invitation at {}: {why} (is the node that printed it running, and reachable from here?)",
                inv.addr
            ))
        })?;
    let status = resp.status();
    if !status.is_success() {
        let msg = resp.text().await.unwrap_or_default();
        return Err(ClusterError::Peer(format!(
            "{} refused the invitation ({status}): {msg}",
            inv.addr
        )));
    }
    let answer: RedeemAnswer = resp.json().await?;
    crate::ClusterSecret::new(answer.cluster_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_damage_is_named() {
        let inv = Invitation::new("127.0.0.11:9420".into(), [7; 32]).unwrap();
        let t = inv.encode();
        assert!(t.starts_with(PREFIX));
        assert_eq!(Invitation::decode(&format!("  {t}\n")).unwrap(), inv);
        assert_eq!(
            inv.record_name(),
            Invitation::decode(&t).unwrap().record_name()
        );
        let e = Invitation::decode("hello").unwrap_err().to_string();
        assert!(e.contains("ecinv1_"), "{e}");
        let e = Invitation::decode(&t[..40]).unwrap_err().to_string();
        assert!(e.contains("wrong length") || e.contains("base64"), "{e}");
        let e = Invitation::decode(&format!("{t}!"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
        // A different secret is a different record.
        let other = Invitation::new(inv.addr.clone(), inv.node_key).unwrap();
        assert_ne!(other.record_name(), inv.record_name());
    }
}
