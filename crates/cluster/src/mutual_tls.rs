//! Mutual TLS between nodes: the cluster authority (derived from the cluster secret),
//! this node's certificate under it, and the rustls configurations for both ends.
//!
//! The authority's key is derived from the secret, so every member computes the same
//! trust anchor without any exchange. Each node certifies its own key at start-up; a
//! peer's node id is then read from the public key of the certificate it presented.

use std::sync::Arc;

use crate::ClusterError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::identity::{ClusterSecret, NodeId, NodeKey, ed25519_pkcs8};

/// Every node certificate names this host; clients check it instead of the address they
/// dialled (nodes are reached by IP, and a node's address may change).
const CLUSTER_NAME: &str = "node.edgecloud";

/// The TLS configurations of one node.
#[derive(Clone)]
pub struct NodeTls {
    /// For the node-to-node listener: requires a member's certificate.
    pub server: Arc<rustls::ServerConfig>,
    /// For node-to-node requests: presents this node's certificate.
    pub client: Arc<rustls::ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn authority(secret: &ClusterSecret) -> Result<(CertificateParams, KeyPair), ClusterError> {
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(ed25519_pkcs8(&secret.authority_seed())),
        &PKCS_ED25519,
    )?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "edgecloud cluster authority");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok((params, key))
}

impl NodeTls {
    /// This node's certificate, signed under the cluster secret.
    pub fn new(secret: &ClusterSecret, node: &NodeKey) -> Result<NodeTls, ClusterError> {
        let (ca_params, ca_key) = authority(secret)?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let node_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(node.pkcs8()),
            &PKCS_ED25519,
        )?;
        let id = node.id();
        let mut params = CertificateParams::new(vec![
            CLUSTER_NAME.to_string(),
            format!("{id}.{CLUSTER_NAME}"),
        ])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("edgecloud node {id}"));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&node_key, &Issuer::new(ca_params, ca_key))?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let roots = Arc::new(roots);
        let chain = vec![cert.der().clone()];
        let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node.pkcs8()));

        // A client without a certificate gets through the handshake only to redeem an
        // invitation (`rpc::serve` gives it no other route); a wrong one is refused here.
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| {
                    ClusterError::Invalid(format!("cannot build the peer verifier: {e}"))
                })?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key())?;

        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| ClusterError::Invalid(format!("cannot build the node verifier: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterVerifier(inner)))
            .with_client_auth_cert(chain, key())?;
        Ok(NodeTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The node id of the key a peer's certificate carries.
pub fn peer_node_id(cert: &CertificateDer<'_>) -> Option<NodeId> {
    Some(NodeId::from_public_key(&cert_public_key(cert)?))
}

/// The public key a certificate carries (an Ed25519 key's 32 bytes, for nodes).
pub(crate) fn cert_public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(
        parsed
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .to_vec(),
    )
}

/// Checks a node's certificate chains to the cluster authority and names the cluster,
/// whatever address was dialled. (The standard verifier would match the IP.)
#[derive(Debug)]
struct ClusterVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(CLUSTER_NAME).expect("valid name");
        self.0
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Serves HTTP/1.1 over TLS until `stop` changes (`crate::server::serve` with TLS;
/// `route` sees the client's TLS session).
pub fn serve_https(
    listener: tokio::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    what: &'static str,
    route: impl Fn(&rustls::ServerConnection, std::net::SocketAddr) -> Option<axum::Router>
    + Send
    + Sync
    + 'static,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let listener = crate::server::Listener {
        what,
        tcp: listener,
        tls: Some(cfg),
    };
    crate::server::serve(listener, move |conn, addr| route(conn?, addr), stop)
}
