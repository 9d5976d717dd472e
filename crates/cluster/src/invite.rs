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
//!
//! A machine invitation (`cluster invite --machines`, token `ecmac1_...`) is for
//! machines booted over the network, which keep no secret on their disks and so ask at
//! every start: it is not used up. A machine whose network address (MAC) the invitation
//! lists gets the secret at once; any other shows a code on its console and waits until
//! an operator runs `edgecloud cluster approve CODE`, which adds its MAC to the list.

use crate::ClusterError;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "ecinv1_";
/// A machine invitation's tokens: asked with at every boot, MAC-bound or approved.
/// They name other members too (`also`), so that a machine boots while the issuing
/// member is down. (`ecmac1_` tokens, which named one member, are still read.)
const MACHINES_PREFIX: &str = "ecmac2_";
const MACHINES_PREFIX_V1: &str = "ecmac1_";
/// Most members a machine token names besides the issuing one: each takes ~60
/// characters of a kernel command line that holds 2048.
pub const MAX_ALSO: usize = 6;

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
    /// A machine invitation (`ecmac2_`): used at every start, by the machines it admits.
    pub machines: bool,
    /// Other members a machine asks, in order, when the issuing one cannot be reached
    /// (machine invitations only; at most [`MAX_ALSO`]).
    pub also: Vec<Member>,
}

/// A member a token names: where to dial it, and the key it must prove it holds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// Its node-to-node address (HOST:PORT).
    pub addr: String,
    /// Its Ed25519 public key.
    pub node_key: [u8; 32],
}

/// Never prints the one-time secret.
impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("addr", &self.addr)
            .field("node_key", &codec::hex(&self.node_key))
            .field("secret", &"<redacted>")
            .field("also", &self.also)
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
            machines: false,
            also: Vec::new(),
        })
    }

    /// Every member to ask, the issuing one first.
    pub fn members(&self) -> Vec<Member> {
        let first = Member {
            addr: self.addr.clone(),
            node_key: self.node_key,
        };
        std::iter::once(first).chain(self.also.clone()).collect()
    }

    /// `ecinv1_` and base64url of: public key, secret, address. For machines `ecmac2_`
    /// and base64url of: public key, secret, the number of members (one byte), each
    /// member's address (its length in one byte, then it), the other members' keys.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(64 + self.addr.len());
        raw.extend_from_slice(&self.node_key);
        raw.extend_from_slice(&self.secret);
        if !self.machines {
            raw.extend_from_slice(self.addr.as_bytes());
            return format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        }
        let also = &self.also[..self.also.len().min(MAX_ALSO)];
        raw.push(1 + also.len() as u8);
        for a in std::iter::once(&self.addr).chain(also.iter().map(|m| &m.addr)) {
            let a = &a.as_bytes()[..a.len().min(255)];
            raw.push(a.len() as u8);
            raw.extend_from_slice(a);
        }
        for m in also {
            raw.extend_from_slice(&m.node_key);
        }
        format!("{MACHINES_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Reads a token; says what is wrong with a damaged one.
    pub fn decode(token: &str) -> Result<Invitation, ClusterError> {
        let bad = |why: &str| {
            ClusterError::Invalid(format!(
                "not an Edgecloud invitation token ({why}): copy the whole line that `edgecloud cluster invite` printed"
            ))
        };
        let token = token.trim();
        let (body, machines, listed) = if let Some(b) = token.strip_prefix(PREFIX) {
            (b, false, false)
        } else if let Some(b) = token.strip_prefix(MACHINES_PREFIX) {
            (b, true, true)
        } else if let Some(b) = token.strip_prefix(MACHINES_PREFIX_V1) {
            (b, true, false)
        } else {
            return Err(bad("it does not start with ecinv1_ or ecmac2_"));
        };
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("damaged base64"))?;
        let longest = if listed {
            64 + 1 + (1 + MAX_ALSO) * (1 + 255) + MAX_ALSO * 32
        } else {
            64 + 300
        };
        if raw.len() <= 64 || raw.len() > longest {
            return Err(bad("wrong length"));
        }
        let address = |b: &[u8]| {
            let a = String::from_utf8(b.to_vec()).map_err(|_| bad("damaged address"))?;
            if a.parse::<std::net::SocketAddr>().is_err() && !a.contains(':') {
                return Err(bad("damaged address"));
            }
            Ok(a)
        };
        let (addr, also) = if listed {
            // How many members, their length-prefixed addresses, then the keys of all
            // but the first.
            let (&count, mut rest) = raw[64..].split_first().expect("longer than 64");
            let count = count as usize;
            if count == 0 || count > 1 + MAX_ALSO {
                return Err(bad("wrong number of members"));
            }
            let mut addrs = Vec::with_capacity(count);
            for _ in 0..count {
                let Some((&n, tail)) = rest.split_first() else {
                    return Err(bad("wrong length"));
                };
                if tail.len() < n as usize {
                    return Err(bad("wrong length"));
                }
                addrs.push(address(&tail[..n as usize])?);
                rest = &tail[n as usize..];
            }
            if rest.len() != (count - 1) * 32 {
                return Err(bad("wrong length"));
            }
            let also = addrs[1..]
                .iter()
                .zip(rest.chunks_exact(32))
                .map(|(a, k)| Member {
                    addr: a.clone(),
                    node_key: k.try_into().expect("32 bytes"),
                })
                .collect();
            (addrs.swap_remove(0), also)
        } else {
            (address(&raw[64..])?, Vec::new())
        };
        Ok(Invitation {
            addr,
            node_key: raw[..32].try_into().expect("32 bytes"),
            secret: raw[32..64].try_into().expect("32 bytes"),
            machines,
            also,
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
    /// A machine invitation: not used up; admits the machines in `macs`, and others
    /// once an operator approves them.
    #[serde(default)]
    pub machines: bool,
    /// The MAC addresses (lowercase, colon-separated) a machine invitation admits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
}

impl InviteRecord {
    /// "open", "used", "revoked" or "expired" at `now_ms`.
    pub fn state(&self, now_ms: u64) -> &'static str {
        if self.machines {
            // Admitted machines come back at every boot until it is revoked; expiry
            // ends only the approval of new ones.
            return match (self.revoked_ms, now_ms >= self.expires_ms) {
                (Some(_), _) => "revoked",
                (None, true) if self.macs.is_empty() => "expired",
                _ => "open",
            };
        }
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
#[derive(Serialize, Deserialize, Default)]
pub struct RedeemRequest {
    /// The one-time secret, hex.
    pub secret: String,
    /// With a machine invitation: the asking machine's MAC addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    /// With a machine invitation: the code its console shows, which an operator
    /// approves (`edgecloud cluster approve CODE`) if no MAC of it is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The answer (202 Accepted, JSON) to a machine that waits for an operator.
#[derive(Serialize, Deserialize, Debug)]
pub struct Waiting {
    /// What the operator runs to let it in.
    pub approve_with: String,
}

/// A fresh approval code: eight letters and digits that read unambiguously aloud
/// and on a console (no 0/O, 1/I/L), as `XXXX-XXXX`; about 39 random bits.
pub fn new_code() -> Result<String, ClusterError> {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let mut raw = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| ClusterError::NoRandomness)?;
    let chars: String = raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}-{}", &chars[..4], &chars[4..]))
}

/// Whether `code` has the shape [`new_code`] gives.
pub fn is_code(code: &str) -> bool {
    code.len() == 9
        && code.bytes().enumerate().all(|(i, b)| match i {
            4 => b == b'-',
            _ => b.is_ascii_uppercase() || b.is_ascii_digit(),
        })
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, or None if `mac` is no MAC address.
pub fn normal_mac(mac: &str) -> Option<String> {
    let mac = mac.trim().to_ascii_lowercase().replace('-', ":");
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(mac)
}

/// This machine's MAC addresses (its network interfaces but loopback), sorted.
pub fn machine_macs() -> Vec<String> {
    let mut macs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .filter_map(|m| normal_mac(&m))
        .filter(|m| m != "00:00:00:00:00:00")
        .collect();
    macs.sort();
    macs.dedup();
    macs
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

/// Trades a token for the cluster secret at the node that issued it, or (a machine
/// invitation) at the next member it names when one cannot be reached. `local` is the
/// address to connect from (`--bind`). With a machine invitation it sends this
/// machine's MACs and a code, and waits (saying so on standard error, which a booted
/// machine's console shows) until an operator approves the code. Returns the secret
/// and the address of the member that gave it (the one to join through).
pub async fn redeem(
    inv: &Invitation,
    local: Option<std::net::IpAddr>,
) -> Result<(crate::ClusterSecret, String), ClusterError> {
    let mut request = RedeemRequest {
        secret: codec::hex(&inv.secret),
        ..Default::default()
    };
    if inv.machines {
        request.macs = machine_macs();
        request.code = Some(new_code()?);
    }
    let members = inv.members();
    let mut unreachable = Vec::new();
    let mut waiting_at = None;
    for member in &members {
        let http = reqwest::Client::builder()
            .local_address(local)
            .tls_backend_preconfigured((*guest_tls(member.node_key)?).clone())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let url = format!("https://{}{REDEEM_PATH}", member.addr);
        loop {
            let resp = match http.post(&url).json(&request).send().await {
                Ok(resp) => resp,
                Err(e) => {
                    // The TLS layer's reason (e.g. a key that is not the pinned one) is
                    // deep in the chain; show all of it. Then ask the next member.
                    let mut why = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        why = format!("{why}: {s}");
                        src = s.source();
                    }
                    unreachable.push(format!("{}: {why}", member.addr));
                    break;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::ACCEPTED {
                if waiting_at.as_ref() != Some(&member.addr) {
                    let waiting: Waiting = resp.json().await?;
                    eprintln!(
                        "waiting to be let into the cluster: on the member {} run\n  {}\n(this machine: {})",
                        member.addr,
                        waiting.approve_with,
                        request.macs.join(", ")
                    );
                    waiting_at = Some(member.addr.clone());
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                // It cannot decide now (no majority on its side): ask the next one.
                let msg = resp.text().await.unwrap_or_default();
                unreachable.push(format!("{}: {msg}", member.addr));
                break;
            }
            if !status.is_success() {
                let msg = resp.text().await.unwrap_or_default();
                return Err(ClusterError::Peer(format!(
                    "{} refused the invitation ({status}): {msg}",
                    member.addr
                )));
            }
            let answer: RedeemAnswer = resp.json().await?;
            return Ok((
                crate::ClusterSecret::new(answer.cluster_secret)?,
                member.addr.clone(),
            ));
        }
    }
    Err(ClusterError::Peer(format!(
        "cannot redeem the invitation: no member it names could answer ({}); is the node that printed it running, and reachable from here?",
        unreachable.join("; ")
    )))
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
        let machines = Invitation {
            machines: true,
            ..inv.clone()
        };
        let t = machines.encode();
        assert!(t.starts_with("ecmac2_"), "{t}");
        assert_eq!(Invitation::decode(&t).unwrap(), machines);
        // A machine token names other members to ask, with their keys.
        let listed = Invitation {
            also: (0..MAX_ALSO as u8 + 2)
                .map(|i| Member {
                    addr: format!("10.0.0.{i}:9420"),
                    node_key: [i; 32],
                })
                .collect(),
            ..machines.clone()
        };
        let t = listed.encode();
        let back = Invitation::decode(&t).unwrap();
        assert_eq!(
            back.also,
            listed.also[..MAX_ALSO],
            "at most MAX_ALSO others"
        );
        assert_eq!(back.members()[0].addr, inv.addr);
        assert!(
            t.len() < 700,
            "{} characters on a kernel command line",
            t.len()
        );
        for cut in [1, 32, t.len() - 70] {
            let e = Invitation::decode(&t[..t.len() - cut])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("length") || e.contains("base64") || e.contains("members"),
                "{e}"
            );
        }
        // A token of the first format (one member) is still read.
        let mut raw = inv.node_key.to_vec();
        raw.extend_from_slice(&inv.secret);
        raw.extend_from_slice(inv.addr.as_bytes());
        let v1 = format!("ecmac1_{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(Invitation::decode(&v1).unwrap(), machines);
        // A different secret is a different record.
        let other = Invitation::new(inv.addr.clone(), inv.node_key).unwrap();
        assert_ne!(other.record_name(), inv.record_name());
    }

    #[test]
    fn codes_and_macs_have_one_shape() {
        let code = new_code().unwrap();
        assert!(is_code(&code), "{code}");
        assert_ne!(new_code().unwrap(), code);
        for bad in ["", "ABCD1234", "abcd-1234", "ABCD-12345", "ABCD_1234"] {
            assert!(!is_code(bad), "{bad}");
        }
        assert_eq!(
            normal_mac(" 52-54-00-AB-cd-01\n").as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0g", "5254.00ab.cd01"] {
            assert_eq!(normal_mac(bad), None, "{bad}");
        }
        assert!(
            machine_macs()
                .iter()
                .all(|m| normal_mac(m).as_deref() == Some(m))
        );
    }
}
