//! TLS termination with rustls on ring (the same crypto stack as the JWT code).
//!
//! Each config snapshot carries one `rustls::ServerConfig` whose certificate resolver
//! picks by SNI: an exact name, then a wildcard (`*.example.com`), then the default
//! certificate. A reload builds a new one; connections already up keep theirs, new
//! handshakes use the new. Session resumption uses stateless tickets from one
//! process-wide ticketer (kept across reloads), so no worker waits on another's lock to
//! resume a session.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Which half of a certificate and key pair a problem is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Cert,
    Key,
}

/// What `certified_key` says of a key that is not the certificate's.
pub const KEY_MISMATCH: &str = "the private key does not match the certificate";

/// A certificate and its key, checked to belong together; a problem names its half.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, (Half, String)> {
    let certs = certificates(cert_pem).map_err(|e| (Half::Cert, e))?;
    if key_pem.contains("ENCRYPTED") {
        return Err((
            Half::Key,
            "invalid key: it is encrypted: give it decrypted (openssl pkey -in KEY -out PLAIN)"
                .into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| (Half::Key, format!("invalid key: {e}")))?;
    // ring signs with RSA keys of 2048 bits and more, ECDSA P-256 and P-384, and Ed25519;
    // its own error for another (RSA-1024, P-521, DSA) says only that it failed to parse.
    let signer = provider::sign::any_supported_type(&key).map_err(|_| {
        (
            Half::Key,
            "invalid key: unsupported type: expected RSA of 2048 bits or more, ECDSA P-256 or \
             P-384, or Ed25519"
                .to_owned(),
        )
    })?;
    let certified = CertifiedKey::new(certs, signer);
    // Of the pair, not of either half: said of the certificate, as before.
    if !keys_match(&certified) {
        return Err((Half::Cert, KEY_MISMATCH.to_owned()));
    }
    Ok(Arc::new(certified))
}

/// Whether the key is the certificate's: their public keys compared as DER. The
/// certificate is read as X.509 of any version; rustls' own check reads it as webpki
/// does, which refuses version 1 certificates (`openssl x509 -req -signkey` makes them,
/// and Kong serves them), so that check is only the fallback for a key that cannot say
/// its public key.
fn keys_match(certified: &CertifiedKey) -> bool {
    use x509_cert::der::{Decode, Encode};
    let cert_spki = certified.end_entity_cert().ok().and_then(|der| {
        x509_cert::Certificate::from_der(der)
            .ok()?
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .ok()
    });
    match (certified.key.public_key(), cert_spki) {
        (Some(key), Some(cert)) => key.as_ref() == cert.as_slice(),
        _ => certified.keys_match().is_ok(),
    }
}

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct Certificates {
    /// Lower-cased exact names.
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `example.*` stored as `example`.
    suffix: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// Kong's catch-all SNI `*`: any name nothing else matched.
    any: Vec<Arc<CertifiedKey>>,
    default: Vec<Arc<CertifiedKey>>,
}

impl Certificates {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.wildcard.is_empty()
            && self.suffix.is_empty()
            && self.any.is_empty()
            && self.default.is_empty()
    }

    /// Adds the keys (a certificate and its optional alternate, e.g. ECDSA and RSA) for
    /// one SNI name: as Kong's, a host name, `*.` before one (any first label), `.*`
    /// after one (any last label), or `*` alone (any name).
    pub fn add(&mut self, name: &str, keys: Vec<Arc<CertifiedKey>>) -> Result<(), String> {
        let name = name.to_ascii_lowercase();
        if name == "*" {
            if !self.any.is_empty() {
                return Err("SNI '*' is given twice".into());
            }
            self.any = keys;
            return Ok(());
        }
        let (map, key) = match (name.strip_prefix("*."), name.strip_suffix(".*")) {
            (Some(rest), _) => (&mut self.wildcard, rest.to_owned()),
            (None, Some(rest)) => (&mut self.suffix, rest.to_owned()),
            (None, None) => (&mut self.exact, name.clone()),
        };
        // A host name: dot-separated labels of letters, digits, `-` and `_`; no port,
        // no wildcard but the leading `*.`.
        let host_name = key.len() <= 253
            && key.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !host_name {
            return Err(format!(
                "invalid SNI '{name}': expected a host name, one after '*.' or before '.*', or '*'"
            ));
        }
        // A client never sends an address as a server name (RFC 6066 §3): as Kong.
        if key.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("invalid SNI '{name}': must not be an IP"));
        }
        if map.insert(key, keys).is_some() {
            return Err(format!("SNI '{name}' is given twice"));
        }
        Ok(())
    }

    pub fn set_default(&mut self, keys: Vec<Arc<CertifiedKey>>) {
        self.default = keys;
    }

    pub fn has_default(&self) -> bool {
        !self.default.is_empty()
    }

    fn lookup(&self, name: Option<&str>) -> &[Arc<CertifiedKey>] {
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            if let Some(keys) = self.exact.get(&name) {
                return keys;
            }
            // As Kong: a `*.parent` wildcard for names of three labels or more, so
            // `*.test` never takes `foo.test`.
            if let Some((_, parent)) = name.split_once('.').filter(|(_, p)| p.contains('.')) {
                if let Some(keys) = self.wildcard.get(parent) {
                    return keys;
                }
            }
            if let Some((stem, _)) = name.rsplit_once('.') {
                if let Some(keys) = self.suffix.get(stem) {
                    return keys;
                }
            }
            if !self.any.is_empty() {
                return &self.any;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.lookup(hello.server_name());
        // With an ECDSA and an RSA certificate, ECDSA when the client can verify it (as
        // Kong's `cert_alt` promises), else the first it can, else the first.
        let schemes = hello.signature_schemes();
        let usable = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        keys.iter()
            .filter(usable)
            .find(|k| k.key.algorithm() == rustls::SignatureAlgorithm::ECDSA)
            .or_else(|| keys.iter().find(usable))
            .or_else(|| keys.first())
            .cloned()
    }
}

/// The process-wide ticketer: sessions resume across workers and reloads.
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    TICKETER
        .get_or_init(|| provider::Ticketer::new().ok())
        .clone()
}

/// The server config for a set of certificates: TLS 1.3 and 1.2, ALPN `http/1.1` (and
/// `http/1.0`, which an HTTP/1.0 client such as `curl --http1.0` offers alone, and nginx
/// accepts).
pub fn server_config(certificates: Certificates) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificates));
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    if let Some(ticketer) = ticketer() {
        config.ticketer = ticketer;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(Arc::new(config))
}

/// The server side of a TLS handshake on `stream`. This drives rustls itself rather than
/// through `monoio_rustls::TlsAcceptor`, whose error path writes only the first queued
/// record: a TLS 1.3 failure found after the ServerHello (a client offering only `h2`,
/// say) lost its alert, and the client saw a bare EOF. Here every queued record,
/// the alert included, is written before the error returns (RFC 8446 §6.2,
/// RFC 7301 §3.2: `no_application_protocol`).
pub async fn accept(
    config: Arc<ServerConfig>,
    mut stream: monoio::net::TcpStream,
) -> std::io::Result<monoio_rustls::ServerTlsStream<monoio::net::TcpStream>> {
    use monoio::io::AsyncReadRent;
    use std::io::{Error, ErrorKind};

    let mut conn = rustls::ServerConnection::new(config).map_err(Error::other)?;
    let mut buf = Vec::with_capacity(HANDSHAKE_READ);
    let mut out = Vec::new();
    while conn.is_handshaking() {
        flush(&mut conn, &mut stream, &mut out).await?;
        buf.clear();
        let (read, back) = stream.read(buf).await;
        buf = back;
        if read? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "EOF during the TLS handshake",
            ));
        }
        match take_read(&mut conn, &buf) {
            Ok(()) => {}
            Err(Taken::Io(e)) => return Err(e),
            Err(Taken::Tls(e)) => {
                let _ = flush(&mut conn, &mut stream, &mut out).await;
                return Err(Error::new(ErrorKind::InvalidData, e));
            }
        }
    }
    // The last flight, and any session tickets.
    flush(&mut conn, &mut stream, &mut out).await?;
    Ok(monoio_rustls::ServerTlsStream::new(stream, conn))
}

/// Why rustls refused a read: the bytes themselves, or the TLS in them (which has an
/// alert to send).
enum Taken {
    Io(std::io::Error),
    Tls(rustls::Error),
}

/// Hands one read to rustls, in as many pieces as it takes them. It takes nothing after
/// a `close_notify` (which RFC 8446 §6.1 has ignored): what is left then is dropped,
/// where asking again would spin on a worker that never yields.
fn take_read(conn: &mut rustls::ServerConnection, mut unread: &[u8]) -> Result<(), Taken> {
    while !unread.is_empty() {
        let taken = conn.read_tls(&mut unread).map_err(Taken::Io)?;
        conn.process_new_packets().map_err(Taken::Tls)?;
        if taken == 0 {
            break;
        }
    }
    Ok(())
}

/// How much one read of a handshake takes: a ClientHello and more fit.
const HANDSHAKE_READ: usize = 4096;

/// Writes out everything rustls has queued.
async fn flush(
    conn: &mut rustls::ServerConnection,
    stream: &mut monoio::net::TcpStream,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    use monoio::io::AsyncWriteRentExt;
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    if out.is_empty() {
        return Ok(());
    }
    let (written, back) = stream.write_all(std::mem::take(out)).await;
    *out = back;
    out.clear();
    written.map(drop)
}

/// How an upstream's certificate is checked: by webpki against the roots (at most
/// `depth` intermediates when set), or not at all (`tls_verify: false`). Handshake
/// signatures are always checked against the certificate presented.
#[derive(Debug)]
struct UpstreamVerifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    depth: Option<usize>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The service's own `ca_certificates`, when it names any.
    cas: Vec<CertificateDer<'static>>,
}

impl UpstreamVerifier {
    /// A self-signed certificate made the usual way (`openssl req -x509`) is a CA
    /// certificate, and webpki refuses a CA as the server's own certificate. OpenSSL (so
    /// Kong) accepts one that is itself among the trusted certificates: so does this,
    /// for the exact certificate the service lists, still checking the name. The
    /// refusal comes after webpki checked the validity period, so that holds too.
    fn trusts_pinned_ca(
        &self,
        refusal: &rustls::Error,
        end_entity: &CertificateDer<'_>,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> bool {
        let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = refusal
        else {
            return false;
        };
        let ca_as_leaf = matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        );
        ca_as_leaf
            && self.cas.iter().any(|ca| ca.as_ref() == end_entity.as_ref())
            && rustls::server::ParsedCertificate::try_from(end_entity)
                .and_then(|cert| rustls::client::verify_server_name(&cert, server_name))
                .is_ok()
    }
}

impl rustls::client::danger::ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        if self.depth.is_some_and(|depth| intermediates.len() > depth) {
            // A certificate refusal like any other (a 502 at once, not retried).
            let why: Box<dyn std::error::Error + Send + Sync> =
                "certificate chain longer than tls_verify_depth".into();
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::from(why))),
            ));
        }
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(refusal) if self.trusts_pinned_ca(&refusal, end_entity, server_name) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// Refuses a certificate entity's PEM that holds a private key too: the entity is shown
/// by every read and stored as given, so the key would be published with it (its own
/// field, `key`, is where a private key goes). A file named by `ssl_cert` may hold both.
pub fn without_private_key(pem: &str) -> Result<(), String> {
    if holds_private_key(pem) {
        return Err("invalid certificate: holds a private key; give the certificate alone".into());
    }
    Ok(())
}

/// Whether a PEM holds a private key (of any kind: PKCS#8, RSA, EC, encrypted).
pub fn holds_private_key(pem: &str) -> bool {
    pem.contains("PRIVATE KEY-----")
}

/// PEM certificates (a chain, or a CA bundle). Problems read as Kong's (`invalid
/// certificate: ...`), as do the key's in `certified_key` (`invalid key: ...`).
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if certs.is_empty() {
        return Err("invalid certificate: no certificate in the PEM".into());
    }
    Ok(certs)
}

/// The client config for TLS to one upstream: `cas` (the service's `ca_certificates`)
/// or the bundled Mozilla roots, verification on unless `verify` is false.
pub fn client_config(
    cas: &[CertificateDer<'static>],
    verify: bool,
    depth: Option<u32>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(provider::default_provider());
    let webpki = if verify {
        let mut roots = rustls::RootCertStore::empty();
        if cas.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for ca in cas {
                roots
                    .add(ca.clone())
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Some(verifier)
    } else {
        None
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamVerifier {
            webpki,
            depth: depth.map(|d| d as usize),
            provider,
            cas: cas.to_vec(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh self-signed P-256 certificate for `name` and its key, as PEM.
    pub(crate) fn generate(name: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        (
            std::fs::read_to_string(cert).unwrap(),
            std::fs::read_to_string(key).unwrap(),
        )
    }

    /// A version 1 certificate (no extensions: `openssl x509 -req -signkey` makes them)
    /// is served with its key, and refused with another.
    #[test]
    fn version_1_certificates_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&["genrsa", "-out", "k.pem", "2048"]);
        openssl(&[
            "req",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/CN=v1.test",
            "-out",
            "r.csr",
        ]);
        openssl(&[
            "x509", "-req", "-in", "r.csr", "-signkey", "k.pem", "-days", "2", "-out", "c.pem",
        ]);
        let cert = std::fs::read_to_string(path("c.pem")).unwrap();
        let key = std::fs::read_to_string(path("k.pem")).unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE"));
        assert!(
            certified_key(&cert, &key).is_ok(),
            "{:?}",
            certified_key(&cert, &key).err()
        );
        let (_, other) = generate("other.test");
        assert_eq!(
            certified_key(&cert, &other).unwrap_err(),
            (
                Half::Cert,
                "the private key does not match the certificate".to_owned()
            )
        );
    }

    /// A client's last flight, its `close_notify` and more than rustls buffers at once,
    /// in one read: the read is taken as far as rustls takes it, and then left.
    #[test]
    fn a_read_past_close_notify_is_dropped_not_spun_on() {
        let (cert, key) = generate("a.test");
        let mut certificates = Certificates::default();
        certificates.set_default(vec![certified_key(&cert, &key).unwrap()]);
        let mut server =
            rustls::ServerConnection::new(server_config(certificates).unwrap()).unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config(&[], false, None).unwrap(), name).unwrap();
        let mut wire = Vec::new();
        while client.is_handshaking() {
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if !server.is_handshaking() {
                break;
            }
            assert!(take_read(&mut server, &wire).is_ok());
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            client.read_tls(&mut &back[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire.extend(std::iter::repeat_n(0x17, 40_000));
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let taken = take_read(&mut server, &wire).is_ok();
            let _ = done.send((taken, server.is_handshaking()));
        });
        let (taken, handshaking) = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("take_read returned");
        assert!(taken && !handshaking);
    }

    #[test]
    fn keys_must_match_and_names_resolve() {
        let (a_cert, a_key) = generate("a.test");
        let (_, b_key) = generate("b.test");
        assert!(certified_key(&a_cert, &a_key).is_ok());
        assert_eq!(
            certified_key(&a_cert, &b_key).unwrap_err(),
            (
                Half::Cert,
                "the private key does not match the certificate".to_owned()
            )
        );
        // A problem with one half is said of that half.
        assert_eq!(certified_key("nonsense", &a_key).unwrap_err().0, Half::Cert);
        // A key pasted beside an entity's certificate would be shown with it: refused
        // there; a file may hold both (one server.pem for ssl_cert and ssl_cert_key).
        let bundle = format!("{a_cert}{a_key}");
        let refused = without_private_key(&bundle).unwrap_err();
        assert!(refused.contains("holds a private key"), "{refused}");
        assert!(certified_key(&bundle, &bundle).is_ok());
        assert_eq!(certified_key(&a_cert, "nonsense").unwrap_err().0, Half::Key);
        assert_eq!(certified_key(&a_cert, &a_cert).unwrap_err().0, Half::Key);
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let (half, message) = certified_key(&a_cert, encrypted).unwrap_err();
        assert_eq!(half, Half::Key);
        assert!(message.contains("encrypted"), "{message}");

        let key = certified_key(&a_cert, &a_key).unwrap();
        let mut set = Certificates::default();
        set.add("api.example.com", vec![key.clone()]).unwrap();
        let refused = set.add("127.0.0.1", vec![key.clone()]).unwrap_err();
        assert!(refused.contains("must not be an IP"), "{refused}");
        set.add("*.example.org", vec![key.clone()]).unwrap();
        assert!(set.add("API.example.com", vec![key.clone()]).is_err());
        assert!(set.add("*.*.x", vec![key.clone()]).is_err());
        for bad in [
            "a b",
            "a/b",
            "a..b",
            "x.test:443",
            "a\r\nb",
            "",
            "*.",
            "a.*.test",
            "b.",
        ] {
            assert!(set.add(bad, vec![key.clone()]).is_err(), "{bad:?}");
        }
        assert_eq!(set.lookup(Some("api.example.com")).len(), 1);
        assert_eq!(set.lookup(Some("API.Example.COM")).len(), 1);
        assert_eq!(set.lookup(Some("x.example.org")).len(), 1);
        assert_eq!(
            set.lookup(Some("a.b.example.org")).len(),
            0,
            "one label only"
        );
        assert_eq!(set.lookup(Some("example.org")).len(), 0);
        // A wildcard of one label takes no name of two (Kong's rule).
        set.add("*.test", vec![key.clone()]).unwrap();
        assert_eq!(set.lookup(Some("foo.test")).len(), 0);
        assert_eq!(set.lookup(Some("foo.bar.test")).len(), 0, "one label only");
        assert_eq!(set.lookup(None).len(), 0);
        set.set_default(vec![key]);
        assert_eq!(set.lookup(Some("other.test")).len(), 1);
        assert!(server_config(set).is_ok());
    }
}
