//! TLS for the replication connection: a rustls client configuration per
//! libpq `sslmode`, and the `tls-server-end-point` channel-binding data that
//! SCRAM-SHA-256-PLUS needs.
//!
//! - `require`: encrypted, the certificate is not checked (but the handshake
//!   signatures are). As in libpq, when a root CA file exists (`sslrootcert`
//!   given, or `~/.postgresql/root.crt` present) `require` behaves as `verify-ca`.
//! - `verify-ca`: the chain must lead to a CA of `sslrootcert`; the host name
//!   is not checked.
//! - `verify-full`: the chain and the host name are checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::pg::conninfo::{ConnConfig, SslMode};
use crate::pg::PgError;

/// How the server certificate is checked. The settings parser has already
/// applied libpq's rules: `sslrootcert` is set for `verify-*` (default
/// `~/.postgresql/root.crt`) and, for the weaker modes, only when the file
/// exists, in which case the chain is checked as with `verify-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verification {
    None,
    Ca(PathBuf),
    Full(PathBuf),
}

fn verification(cfg: &ConnConfig) -> Result<Verification, PgError> {
    let root = || {
        cfg.sslrootcert.clone().ok_or_else(|| {
            PgError::Tls(format!(
                "sslmode={} needs a root certificate file (sslrootcert)",
                cfg.sslmode.as_str()
            ))
        })
    };
    Ok(match cfg.sslmode {
        SslMode::VerifyFull => Verification::Full(root()?),
        SslMode::VerifyCa => Verification::Ca(root()?),
        SslMode::Disable | SslMode::Prefer | SslMode::Require => match &cfg.sslrootcert {
            Some(p) => Verification::Ca(p.clone()),
            None => Verification::None,
        },
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, PgError> {
    std::fs::read(path)
        .map_err(|e| PgError::Tls(format!("cannot read {what} {}: {e}", path.display())))
}

fn load_roots(path: &Path) -> Result<RootCertStore, PgError> {
    // libpq's `sslrootcert=system`: the well-known public CAs (bundled here).
    if path == Path::new("system") {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    }
    let pem = read_file("root certificate file", path)?;
    let mut store = RootCertStore::empty();
    let mut n = 0usize;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| {
            PgError::Tls(format!(
                "cannot parse root certificate file {}: {e}",
                path.display()
            ))
        })?;
        store.add(cert).map_err(|e| {
            PgError::Tls(format!(
                "bad certificate in root certificate file {}: {e}",
                path.display()
            ))
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(PgError::Tls(format!(
            "root certificate file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(store)
}

fn load_client_auth(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PgError> {
    let pem = read_file("client certificate file", cert)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PgError::Tls(format!(
                "cannot parse client certificate file {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(PgError::Tls(format!(
            "client certificate file {} holds no PEM certificate",
            cert.display()
        )));
    }
    let pem = read_file("client key file", key)?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| {
            PgError::Tls(format!(
                "cannot parse client key file {}: {e}",
                key.display()
            ))
        })?
        .ok_or_else(|| {
            PgError::Tls(format!(
                "client key file {} holds no PEM private key",
                key.display()
            ))
        })?;
    Ok((certs, key_der))
}

/// Builds the rustls client configuration for `cfg.sslmode`.
pub(crate) fn client_config(cfg: &ConnConfig) -> Result<Arc<ClientConfig>, PgError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(format!("TLS protocol versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match verification(cfg)? {
        Verification::None => Arc::new(NoCertCheck {
            provider: provider.clone(),
        }),
        Verification::Ca(path) => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(&path)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| {
                PgError::Tls(format!("certificate verifier for {}: {e}", path.display()))
            })?;
            Arc::new(ChainOnly { inner })
        }
        Verification::Full(path) => WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_roots(&path)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| PgError::Tls(format!("certificate verifier for {}: {e}", path.display())))?,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&cfg.sslcert, &cfg.sslkey) {
        (Some(cert), Some(key)) => {
            let (certs, key_der) = load_client_auth(cert, key)?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                PgError::Tls(format!(
                    "client certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
        (Some(cert), None) => {
            return Err(PgError::Tls(format!(
                "sslcert {} is set but sslkey is not",
                cert.display()
            )))
        }
        (None, Some(key)) => {
            return Err(PgError::Tls(format!(
                "sslkey {} is set but sslcert is not",
                key.display()
            )))
        }
        (None, None) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name given to rustls: used for SNI and, in `verify-full`, for
/// the name check. An IP address sends no SNI (as libpq).
fn server_name(host: &str, mode: SslMode) -> Result<ServerName<'static>, PgError> {
    match ServerName::try_from(host.to_string()) {
        Ok(n) => Ok(n),
        Err(e) if mode == SslMode::VerifyFull => Err(PgError::Tls(format!(
            "host name {host:?} cannot be checked against a certificate: {e}"
        ))),
        // The name is not checked in the other modes; any valid placeholder will do.
        Err(_) => Ok(ServerName::try_from("localhost").map_err(|e| PgError::Tls(e.to_string()))?),
    }
}

/// Runs the TLS handshake on a TCP stream whose SSLRequest was accepted.
/// `target` (host:port) names the server in errors.
pub(crate) async fn handshake(
    tcp: TcpStream,
    cfg: &ConnConfig,
    host: &str,
    target: &str,
) -> Result<TlsStream<TcpStream>, PgError> {
    let config = client_config(cfg)?;
    let name = server_name(host, cfg.sslmode)?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| PgError::Tls(format!("handshake with {target} failed: {e}")))
}

/// The `tls-server-end-point` channel-binding data of a replication
/// connection's TLS session (see [`end_point_hash`]).
pub(crate) fn tls_server_end_point(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let cert = stream.get_ref().1.peer_certificates()?.first()?;
    end_point_hash(cert.as_ref())
}

/// RFC 5929 `tls-server-end-point`: the hash of the server certificate with
/// the hash of its signature algorithm (SHA-256 for MD5 and SHA-1). `None`
/// for a signature algorithm without a defined hash (Ed25519, RSA-PSS
/// parameters we do not parse), so SCRAM goes without channel binding.
pub(crate) fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    let alg = signature_algorithm_oid(cert_der)?;
    let hash = match alg {
        // sha256WithRSAEncryption, ecdsa-with-SHA256, and the weaker MD5/SHA-1
        // forms, which RFC 5929 maps to SHA-256.
        OID_SHA256_RSA | OID_ECDSA_SHA256 | OID_MD5_RSA | OID_SHA1_RSA | OID_ECDSA_SHA1 => {
            &digest::SHA256
        }
        OID_SHA384_RSA | OID_ECDSA_SHA384 => &digest::SHA384,
        OID_SHA512_RSA | OID_ECDSA_SHA512 => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(hash, cert_der).as_ref().to_vec())
}

const OID_MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
const OID_SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const OID_SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// One DER element at the start of `buf`: (tag, contents, rest).
fn der_element(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *buf.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, buf.get(header..end)?, buf.get(end..)?))
}

/// The OID of `Certificate.signatureAlgorithm` (RFC 5280: a SEQUENCE of
/// tbsCertificate, signatureAlgorithm, signatureValue).
fn signature_algorithm_oid(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, body, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs, rest) = der_element(body)?;
    let (tag, alg, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_element(alg)?;
    (tag == OID).then_some(oid)
}

/// `sslmode=require`: any certificate is accepted, but the handshake
/// signatures are still verified so that the session key belongs to the
/// presented certificate.
#[derive(Debug)]
struct NoCertCheck {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full WebPKI chain check, minus the host name.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The name check is the last step of webpki's verification: a name
            // error means the chain itself was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_finds_signature_oid() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID 1.2.840.10045.4.3.2 }, BIT STRING }
        let cert = [
            0x30, 0x0f, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04,
            0x03, 0x02, 0x03, 0x01, 0x00,
        ];
        assert_eq!(
            signature_algorithm_oid(&cert),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..])
        );
        assert_eq!(signature_algorithm_oid(&cert[..5]), None);
    }

    #[test]
    fn missing_root_file_is_named() {
        let err = load_roots(Path::new("/nonexistent/walship-root.crt")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/walship-root.crt"),
            "{err}"
        );
    }
}
