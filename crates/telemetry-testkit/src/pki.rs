//! A test PKI: a CA made by rcgen for one test run, a server certificate for `127.0.0.1` and
//! `localhost` that it signed, and the rustls configurations of both ends.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a server certificate for `127.0.0.1` and `localhost` signed by it, a rustls server
/// configuration that presents that certificate, and a rustls client that trusts only the CA.
pub struct TestPki {
    /// The CA certificate, PEM: what a client must trust to talk to a server of this PKI.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// The server's certificate, PEM (for a server that reads it from a file).
    pub cert_pem: String,
    /// The server's certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The server's private key, PEM (for a server that reads it from a file).
    pub key_pem: String,
    /// The server's private key, PKCS#8 DER.
    key_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl TestPki {
    /// A new PKI whose CA is called `{name} test CA`. Each call makes new keys.
    pub fn generate(name: &str) -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

        let key_der = leaf_key.serialize_der();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(key_der.clone().into()),
            )
            .unwrap();
        TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_pem: leaf.pem(),
            cert_der: leaf.der().clone(),
            key_pem: leaf_key.serialize_pem(),
            key_der,
            server: Arc::new(server),
            client: client_config_trusting(ca.der().clone()),
        }
    }

    /// The server side: the certificate signed by the CA, and its key, with rustls' defaults
    /// (no ALPN).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// A rustls client that trusts this PKI's CA and nothing else.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client)
    }

    /// The server's private key, for a server that builds its own rustls configuration.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// A rustls client that trusts exactly `ca`.
pub fn client_config_trusting(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
