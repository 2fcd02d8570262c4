//! Connecting to the ingestion API as an institution: mutual TLS with the institution's client
//! certificate. Used by the importers, the demo and the tests.

use std::{path::Path, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// An institution's credentials: the hub's CA and the institution's certificate and key (PEM).
#[derive(Clone)]
pub struct Credentials {
    pub institution: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("institution", &self.institution).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `ca.pem`, `<institution>.pem` and `<institution>.key` from a credentials directory
    /// (what `passerelle dev pki` writes).
    pub fn from_dir(dir: &Path, institution: &str) -> Result<Self, String> {
        let read = |name: String| {
            let path = dir.join(&name);
            std::fs::read(&path).map_err(|e| {
                format!("cannot read {}: {e} (issue development credentials with infra/dev-pki.sh)", path.display())
            })
        };
        Ok(Self {
            institution: institution.to_owned(),
            ca_pem: read("ca.pem".into())?,
            cert_pem: read(format!("{institution}.pem"))?,
            key_pem: read(format!("{institution}.key"))?,
        })
    }
}

/// Opens a mutual-TLS channel to the hub at `endpoint` (`https://host:port`).
pub async fn connect(endpoint: &str, credentials: &Credentials) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(Identity::from_pem(&credentials.cert_pem, &credentials.key_pem))
        .domain_name("localhost");
    Endpoint::from_shared(endpoint.to_owned())?.tls_config(tls)?.connect_timeout(Duration::from_secs(5)).connect().await
}
