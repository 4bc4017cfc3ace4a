//! TLS to the stores: the trusted roots for `rediss://` and `amqps://` (`redis.ca_file`,
//! `amqp.ca_file`) and the wording of a failed certificate check.
//!
//! The roots are the platform's (rustls-native-certs: the system's CA bundle, `SSL_CERT_FILE`
//! or `SSL_CERT_DIR` when set) plus, when the key is set, every certificate of the PEM file it
//! names, so a managed service signed by a private CA is trusted without touching the system
//! store. The server's name is always checked against the host of the URL (a DNS name or an IP
//! address in the certificate's subjectAltName). Only ring is used as the crypto provider, as
//! for MySQL (sqlx) and SMTP (lettre).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificates of a PEM file, at least one; an error in words naming the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        ));
    }
    // Each must parse as a trust anchor, or the roots would be silently smaller.
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "CA file {}: certificate #{} is not usable as a root: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// The CA file's certificates as the PEM text lapin takes (`OwnedTLSConfig::cert_chain`),
/// after checking them like [`read_ca_file`].
pub fn read_ca_pem(key: &str, path: &Path) -> anyhow::Result<String> {
    read_ca_file(path).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{key}: cannot read CA file {}: {e}", path.display()))
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3, no client certificate) trusting the
/// platform's roots and the certificates of `ca_file`. `key` names the setting in errors.
pub fn client_config(key: &str, ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(error = %error, "a platform root certificate could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in read_ca_file(path).map_err(|e| anyhow::anyhow!("{key}: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("{key}: {}: {e}", path.display()))?;
        }
    } else if added == 0 {
        anyhow::bail!(
            "no platform root certificates found for TLS (install ca-certificates or set {key})"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether an error's text says the server's certificate was refused.
pub fn is_certificate_error(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("certificate") || text.contains("unknownissuer") || text.contains("badsignature")
}

/// `reason`, prefixed with a plain statement when it is a refused certificate: which URL,
/// and which key to check.
pub fn explain(reason: &str, redacted_url: &str, ca_key: &str) -> String {
    if is_certificate_error(reason) {
        format!(
            "TLS certificate verification failed for {redacted_url} (is the server's CA in {ca_key} \
             or the platform's roots, and does its certificate name this host?): {reason}"
        )
    } else {
        reason.to_owned()
    }
}
