//! Development credentials: a CA for the hub, a server certificate for `localhost`, and one
//! client certificate per institution of the institutions file, its common name the
//! institution's id. Production uses certificates from the institutions' own PKI or an
//! operator's CA; only the file layout below matters to the hub.
//!
//! Layout of the output directory: `ca.pem` `ca.key` `server.pem` `server.key`
//! `<institution>.pem` `<institution>.key`, and the development token issuer's
//! `oidc-dev-key.der` and `oidc-dev-jwks.json`.

use std::path::Path;

use anyhow::Context as _;
use passerelle_ingest::institutions::Institutions;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

fn write(dir: &Path, name: &str, content: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if name.ends_with(".key") || name.ends_with(".idkey") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Issues the development PKI into `out` (overwriting it). Returns the institutions issued.
pub fn issue_dev_pki(out: &Path, institutions: &Institutions) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "Passerelle development CA");
    ca_params.distinguished_name.push(DnType::OrganizationName, "Passerelle (development only)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    write(out, "ca.key", &ca_key.serialize_pem())?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write(out, "ca.pem", &ca.pem())?;

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server_params.distinguished_name.push(DnType::CommonName, "passerelle hub");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params.signed_by(&server_key, &ca)?;
    write(out, "server.pem", &server.pem())?;
    write(out, "server.key", &server_key.serialize_pem())?;

    let mut issued = Vec::new();
    for institution in institutions.iter() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, institution.id.as_str());
        if let Some(name) = &institution.name {
            params.distinguished_name.push(DnType::OrganizationName, name.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let certificate = params.signed_by(&key, &ca)?;
        write(out, &format!("{}.pem", institution.id), &certificate.pem())?;
        write(out, &format!("{}.key", institution.id), &key.serialize_pem())?;
        // The key of the fact ids its files' importer derives (kept across reissues: another
        // key gives other ids, and a re-import would no longer be recognised).
        let id_key = out.join(format!("{}.idkey", institution.id));
        if !id_key.exists() {
            write(
                out,
                &format!("{}.idkey", institution.id),
                &passerelle_eventlog::secrets::SecretKey::generate().to_hex(),
            )?;
        }
        issued.push(institution.id.clone());
    }
    issued.sort();
    issue_dev_oidc(out)?;
    Ok(issued)
}

/// The development token issuer: `oidc-dev-key.der` (PKCS#8 P-256, for `passerelle dev token`)
/// and `oidc-dev-jwks.json` (its public key set, for the hub's `api.jwks_file`).
pub fn issue_dev_oidc(out: &Path) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let keys =
        passerelle_api::auth::DevKeys::new(key.serialize_der(), key.public_key_raw()).map_err(anyhow::Error::msg)?;
    let path = out.join("oidc-dev-key.der");
    std::fs::write(&path, &keys.pkcs8_der).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    write(out, "oidc-dev-jwks.json", &serde_json::to_string_pretty(&keys.jwks)?)
}
