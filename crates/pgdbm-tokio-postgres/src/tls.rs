//! TLS with rustls.
//!
//! Why rustls (through `tokio-postgres-rustls`) and not native-tls: it is pure Rust, so building
//! pgdbm needs no OpenSSL headers or system library (a plain Debian CI image builds it), the
//! behaviour is the same on every platform, and the `ring` provider is selected explicitly so no
//! process-wide crypto provider has to be installed by the application.
//!
//! The modes follow libpq:
//!
//! | `ssl_mode`   | tokio-postgres | certificate check                                              |
//! |--------------|----------------|----------------------------------------------------------------|
//! | `Disable`    | `Disable`      | no TLS                                                         |
//! | `Prefer`     | `Prefer`       | TLS when the server offers it; certificate not verified       |
//! | `Require`    | `Require`      | TLS required; certificate not verified (like libpq)           |
//! | `VerifyCa`   | `Require`      | chain verified against the root certificate; host name not checked |
//! | `VerifyFull` | `Require`      | chain and host name verified                                   |
//!
//! `ssl_cert` + `ssl_key` (PEM) add a client certificate. `verify-ca` / `verify-full` need a
//! root certificate (`ssl_root_cert`, else libpq's `~/.postgresql/root.crt`; checked by
//! `Config::validate`); `ssl_root_cert = "system"` means the bundled Mozilla roots
//! (`webpki-roots`), with `verify-full` only.
//!
//! # How TLS is negotiated
//!
//! tokio-postgres negotiates: pgdbm opens the socket and gives tokio-postgres a `WireShim`
//! over it (inside `Plain`) plus `ShimTls` as its `TlsConnect`. tokio-postgres sends the
//! SSLRequest through the shim; on `'S'` it calls `ShimTls`, which takes the socket out of
//! the shim, performs the rustls handshake (server name = the configured host) and returns a
//! new shim over the *decrypted* stream. So the protocol-aware shim (it sends `execute_many`'s
//! rows with one Sync per chunk and checks `require_auth`; see the crate docs) always sees
//! messages, and tokio-postgres gets the `tls-server-end-point` channel binding from the TLS
//! stream (computed by `tokio-postgres-rustls` from the server certificate), so SCRAM
//! authenticates with `SCRAM-SHA-256-PLUS` when the server offers it (`channel_binding`). On
//! `'N'`, `prefer` continues in plaintext on the first shim (with a warning in the log) and the
//! stricter modes fail. Cancel requests for timed-out statements open a new stream with the
//! same TLS setup (`Target::open`). Unix-socket hosts never use TLS.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pgdbm_core::{Config, Error, Result, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connect::Io;
use crate::wire::WireShim;

/// The tokio-postgres TLS mode for a pgdbm [`SslMode`].
pub(crate) fn pg_ssl_mode(mode: SslMode) -> tokio_postgres::config::SslMode {
    match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls connector for `config`, or `None` when TLS is disabled.
pub(crate) fn connector(config: &Config) -> Result<Option<MakeRustlsConnect>> {
    if config.ssl_mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("ssl_mode", format!("rustls rejected its own defaults: {e}")))?;

    let builder = match config.ssl_mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider))),
        SslMode::VerifyCa => {
            let inner = webpki_verifier(config, provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyChainOnly(inner)))
        }
        SslMode::VerifyFull => builder.with_webpki_verifier(webpki_verifier(config, provider)?),
    };

    let client_config = match (&config.ssl_cert, &config.ssl_key) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(cert, "ssl_cert")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(
                    "ssl_key",
                    format!("cannot read a PEM private key from {}: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::config(
                    "ssl_cert",
                    format!("the client certificate and key do not form a usable pair: {e}"),
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(Error::config(
                "ssl_key",
                "ssl_cert is set but ssl_key is not: set both (PEM files) or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::config(
                "ssl_cert",
                "ssl_key is set but ssl_cert is not: set both (PEM files) or neither",
            ))
        }
    };
    Ok(Some(MakeRustlsConnect::new(client_config)))
}

fn load_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
        Error::config(
            field,
            format!("cannot read PEM certificates from {}: {e}", path.display()),
        )
    })?;
    let certs = iter
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::config(
                field,
                format!("invalid PEM certificate in {}: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            field,
            format!("{} contains no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn webpki_verifier(
    config: &Config,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    let path = match &config.ssl_root_cert {
        Some(p) if p.as_os_str() == pgdbm_core::SYSTEM_ROOT_CERT => None,
        Some(p) => Some(p.clone()),
        // libpq's default; `Config::validate` already refused a missing one.
        None => Config::default_root_cert(),
    };
    match &path {
        Some(path) => {
            for cert in load_certs(path, "ssl_root_cert")? {
                roots.add(cert).map_err(|e| {
                    Error::config(
                        "ssl_root_cert",
                        format!("{} holds an unusable CA certificate: {e}", path.display()),
                    )
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| {
            Error::config(
                "ssl_root_cert",
                format!("cannot build a certificate verifier: {e}"),
            )
        })
}

/// The stream under the first shim of a connection: the socket, until [`ShimTls`] takes it to
/// run TLS over it.
pub(crate) struct Plain(Option<Box<dyn Io>>);

impl Plain {
    /// Wraps an open socket.
    pub(crate) fn new(stream: Box<dyn Io>) -> Self {
        Plain(Some(stream))
    }

    fn stream(&mut self) -> io::Result<&mut Box<dyn Io>> {
        self.0
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the socket moved to TLS"))
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The rustls stream of `tokio-postgres-rustls` over a socket (it computes the channel
/// binding).
pub(crate) type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Box<dyn Io>>>::Stream;

/// pgdbm's `TlsConnect` for tokio-postgres (see the [module docs](self)): the rustls handshake
/// on the socket under the first shim, then a shim over the TLS stream.
pub(crate) struct ShimTls {
    make: Option<MakeRustlsConnect>,
    host: String,
    used: Arc<AtomicBool>,
}

impl ShimTls {
    /// A connector for `host` (the TLS server name); `used` is set once a handshake succeeded.
    /// `make` is `None` only with `ssl_mode = disable`, where tokio-postgres never calls it.
    pub(crate) fn new(make: Option<MakeRustlsConnect>, host: &str, used: Arc<AtomicBool>) -> Self {
        ShimTls {
            make,
            host: host.to_string(),
            used,
        }
    }
}

impl TlsConnect<WireShim<Plain>> for ShimTls {
    type Stream = WireShim<RustlsStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Stream>> + Send>>;

    fn connect(self, mut shim: WireShim<Plain>) -> Self::Future {
        Box::pin(async move {
            let Some(mut make) = self.make else {
                return Err(io::Error::other(
                    "the server accepted TLS but no TLS connector is configured (ssl_mode = disable)",
                ));
            };
            let carry = shim.carry()?;
            let socket = shim.get_mut().0.take().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the socket moved to TLS")
            })?;
            let connect =
                match MakeTlsConnect::<Box<dyn Io>>::make_tls_connect(&mut make, &self.host) {
                    Ok(c) => c,
                    Err(never) => match never {},
                };
            let stream = TlsConnect::connect(connect, socket).await?;
            self.used.store(true, Ordering::Release);
            Ok(WireShim::resume(stream, carry))
        })
    }
}

/// `require` / `prefer`: encrypt without verifying the certificate, like libpq.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct VerifyChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for VerifyChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: SslMode) -> Config {
        let mut c = Config::default();
        c.ssl_mode = mode;
        c
    }

    #[test]
    fn disable_means_no_connector_and_modes_map_to_tokio_postgres() {
        assert!(connector(&cfg(SslMode::Disable)).unwrap().is_none());
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            let mut c = cfg(mode);
            c.ssl_root_cert = Some(pgdbm_core::SYSTEM_ROOT_CERT.into());
            assert!(connector(&c).unwrap().is_some(), "{mode:?}");
        }
        assert_eq!(
            pg_ssl_mode(SslMode::Prefer),
            tokio_postgres::config::SslMode::Prefer
        );
        assert_eq!(
            pg_ssl_mode(SslMode::VerifyFull),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            pg_ssl_mode(SslMode::Disable),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn bad_files_are_configuration_errors_naming_the_field() {
        let mut c = cfg(SslMode::VerifyFull);
        c.ssl_root_cert = Some("/nonexistent/ca.pem".into());
        match connector(&c) {
            Err(Error::Configuration { field, message }) => {
                assert_eq!(field, "ssl_root_cert");
                assert!(message.contains("/nonexistent/ca.pem"), "{message}");
            }
            other => panic!("{:?}", other.map(|o| o.is_some())),
        }
        let mut c = cfg(SslMode::Require);
        c.ssl_cert = Some("/nonexistent/client.pem".into());
        assert!(
            matches!(connector(&c), Err(Error::Configuration { field, .. }) if field == "ssl_key")
        );
        let dir = std::env::temp_dir().join(format!("pgdbm-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let mut c = cfg(SslMode::VerifyCa);
        c.ssl_root_cert = Some(empty);
        assert!(
            matches!(connector(&c), Err(Error::Configuration { field, .. }) if field == "ssl_root_cert")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
