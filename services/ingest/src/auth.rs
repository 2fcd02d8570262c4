//! Authentication of institutions by mutual TLS: each institution holds a client certificate
//! issued by the hub's institutional CA, whose subject common name is its id in the
//! institutions file (`caf-521`, `cd-52`, `france-travail`).

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::institutions::{Institution, Institutions};

/// The metadata key a département sets when it relays a CNAF flux: the file's name.
pub const RELAY_FILE_HEADER: &str = "x-passerelle-relay-file";

/// The institution named by the verified client certificate of the call.
pub fn institution<'a, T>(institutions: &'a Institutions, request: &Request<T>) -> Result<&'a Institution, Status> {
    let certificates = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("no client certificate: institutions connect with mutual TLS (see infra/dev-pki.sh)")
    })?;
    let leaf = certificates.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let name = common_name(leaf.as_ref())
        .ok_or_else(|| Status::unauthenticated("the client certificate names no institution (CN)"))?;
    institutions.get(&name).ok_or_else(|| {
        tracing::warn!(institution = %name, "certificate of an institution not in the institutions file");
        Status::unauthenticated("this institution is not in the institutions file")
    })
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(name)
}

/// The relayed file named by the call, if any (printable, bounded).
pub fn relay_file<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get(RELAY_FILE_HEADER) else { return Ok(None) };
    let text = value.to_str().map_err(|_| Status::invalid_argument(format!("{RELAY_FILE_HEADER} must be ASCII")))?;
    if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "{RELAY_FILE_HEADER} must be a file name of 1 to 255 characters"
        )));
    }
    Ok(Some(text.to_owned()))
}
