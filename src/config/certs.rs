//! Kong's `certificates` and `snis` entities, and the TLS server config they make.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_norway::Value;

use super::entities::{stable_id, Item, Layer};
use super::file::Reference;
use super::{parse_item, Report};
use crate::tls;

/// A `certificates[]` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    #[serde(default, deserialize_with = "super::file::entity_id")]
    id: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    cert_alt: Option<String>,
    key_alt: Option<String>,
    #[serde(default)]
    snis: Vec<SniEntry>,
    #[serde(default, deserialize_with = "super::file::tags")]
    tags: Vec<String>,
    created_at: Option<u64>,
    updated_at: Option<u64>,
}

/// A nested SNI: a name, or Kong's `{name: ...}` object.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected an SNI name, or an object with `name`")]
enum SniEntry {
    Name(String),
    Object(Box<SniFile>),
}

/// An `snis[]` item (or a nested object).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SniFile {
    #[serde(default, deserialize_with = "super::file::entity_id")]
    id: Option<String>,
    name: Option<String>,
    certificate: Option<Reference>,
    #[serde(default, deserialize_with = "super::file::tags")]
    tags: Vec<String>,
    created_at: Option<u64>,
    updated_at: Option<u64>,
}

/// A certificate as the Admin API shows it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub id: String,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    pub snis: Vec<String>,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
    /// A file certificate without an `id` of its own: its id follows its PEM, and a
    /// renewal changes it.
    pub derived_id: bool,
    /// `cert`, `key`, `cert_alt` or `key_alt` as written when it was a vault reference.
    pub references: Vec<(&'static str, String)>,
}

/// An SNI as the Admin API shows it.
#[derive(Debug, Clone)]
pub struct Sni {
    pub id: String,
    pub name: String,
    pub certificate: usize,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

/// What the certificates and SNIs of a config amount to.
#[derive(Debug, Default)]
pub struct Built {
    pub certificates: Vec<Certificate>,
    pub snis: Vec<Sni>,
    /// `None` when there is no certificate at all.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Validates the entities and builds the resolver; `default` is `ringway.ssl_cert`.
pub fn build(
    certificates: Vec<Item>,
    snis: Vec<Item>,
    default: Option<Arc<rustls::sign::CertifiedKey>>,
    report: &mut Report,
) -> Built {
    let mut built = Built::default();
    let mut resolver = tls::Certificates::default();
    let mut keys_by_cert: Vec<Vec<Arc<rustls::sign::CertifiedKey>>> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    // Each name's first place and the certificate it names.
    let mut names: HashMap<String, (String, String)> = HashMap::new();
    let mut add_sni = |name: &str,
                       certificate: &str,
                       keys: &[Arc<rustls::sign::CertifiedKey>],
                       path: String,
                       resolver: &mut tls::Certificates,
                       report: &mut Report| {
        let key = name.to_ascii_lowercase();
        if let Some((first, owner)) =
            super::first_seen(&mut names, key, (path.clone(), certificate.to_owned()))
        {
            // In Kong's words: of a certificate's `snis` list, said of the list; of an
            // `snis` item, of its name.
            let list = |p: &str| p.rsplit_once(".snis[").map(|(entity, _)| entity.to_owned());
            let (at, problem) = match list(&path) {
                Some(entity) if list(&first).as_deref() == Some(&*entity) => {
                    (format!("{entity}.snis"), format!("{name} is duplicated"))
                }
                Some(entity) => (
                    format!("{entity}.snis"),
                    format!("{name} already associated with existing certificate '{owner}'"),
                ),
                None => (
                    format!("{path}.name"),
                    format!("{name} already associated with existing certificate '{owner}'"),
                ),
            };
            report.add(at, problem);
            return false;
        }
        if let Err(message) = resolver.add(name, keys.to_vec()) {
            report.add(path, message);
            return false;
        }
        true
    };
    for item in certificates {
        let Some(file) = parse_item::<CertificateFile>(item.value, &item.path, report) else {
            continue;
        };
        let (Some(cert), Some(key)) = (file.cert.clone(), file.key.clone()) else {
            let field = if file.cert.is_none() { "cert" } else { "key" };
            report.add(format!("{}.{field}", item.path), "required field missing");
            continue;
        };
        let mut keys = Vec::new();
        let half = |half: tls::Half, alt: &str| match half {
            tls::Half::Cert => format!("{}.cert{alt}", item.path),
            tls::Half::Key => format!("{}.key{alt}", item.path),
        };
        // Problems of the pair are the certificate entity's, in Kong's words (its
        // `@entity` checks); a problem of one half is that field's.
        // The halves every read shows and the state stores: no private key in them.
        let shown = [
            Some((&cert, "cert")),
            file.cert_alt.as_ref().map(|alt| (alt, "cert_alt")),
        ];
        let with_key = shown.into_iter().flatten().find_map(|(pem, field)| {
            tls::without_private_key(pem)
                .err()
                .map(|message| (field, message))
        });
        if let Some((field, message)) = with_key {
            report.add(format!("{}.{field}", item.path), message);
            continue;
        }
        match tls::certified_key(&cert, &key) {
            Ok(k) => {
                // Loaded as Kong loads it; said, since clients will refuse it.
                if k.end_entity_cert().is_ok_and(|der| expired(der)) {
                    // By id too: one created through the Admin API has no place in the
                    // file to point at.
                    let id = file
                        .id
                        .as_deref()
                        .map(|id| format!(" (id {id})"))
                        .unwrap_or_default();
                    report.warn(format!(
                        "{}.cert{id}: certificate expired, \"Not After\" time is in the past: \
                         clients will refuse it",
                        item.path
                    ));
                }
                keys.push(k)
            }
            Err((_, message)) if message == tls::KEY_MISMATCH => {
                report.add(item.path.clone(), "certificate does not match key");
                continue;
            }
            Err((which, message)) => {
                report.add(half(which, ""), message);
                continue;
            }
        }
        match (&file.cert_alt, &file.key_alt) {
            (None, None) => {}
            (Some(cert_alt), Some(key_alt)) => match tls::certified_key(cert_alt, key_alt) {
                // As Kong: the alternative is for clients the first cannot serve, so of
                // another key type; one of the same type would never be chosen.
                Ok(k) if k.key.algorithm() == keys[0].key.algorithm() => {
                    report.add(
                        item.path.clone(),
                        "certificate and alternative certificate need to have different \
                         type (e.g. RSA and ECDSA), the provided certificates were both of the \
                         same type",
                    );
                    continue;
                }
                Ok(k) => keys.push(k),
                Err((_, message)) if message == tls::KEY_MISMATCH => {
                    report.add(
                        item.path.clone(),
                        "alternative certificate does not match key",
                    );
                    continue;
                }
                Err((which, message)) => {
                    report.add(half(which, "_alt"), message);
                    continue;
                }
            },
            _ => {
                report.add(
                    item.path.clone(),
                    "all or none of these fields must be set: 'cert_alt', 'key_alt'",
                );
                continue;
            }
        }
        let index = built.certificates.len();
        let id = file
            .id
            .clone()
            .unwrap_or_else(|| stable_id("certificate", &cert));
        // Checked before inserting: a duplicate must not repoint the id at an index
        // that is never filled (an `snis` entry naming it would then index past the end).
        if ids.contains_key(&id) {
            report.add(
                format!("{}.id", item.path),
                format!("duplicate certificate id '{id}'"),
            );
            continue;
        }
        ids.insert(id.clone(), index);
        let mut sni_names = Vec::new();
        for (j, sni) in file.snis.into_iter().enumerate() {
            let path = format!("{}.snis[{j}]", item.path);
            let (name, sni_id, tags, created_at) = match sni {
                SniEntry::Name(name) => (name, None, Vec::new(), None),
                SniEntry::Object(object) => {
                    if object.certificate.is_some() {
                        report.add(
                            format!("{path}.certificate"),
                            "a nested SNI takes its certificate from its parent",
                        );
                    }
                    let Some(name) = object.name else {
                        report.add(format!("{path}.name"), "required field missing");
                        continue;
                    };
                    (name, object.id, object.tags, object.created_at)
                }
            };
            if add_sni(&name, &id, &keys, path, &mut resolver, report) {
                built.snis.push(Sni {
                    id: sni_id.unwrap_or_else(|| stable_id("sni", &name)),
                    name: name.clone(),
                    certificate: index,
                    tags,
                    created_at: created_at.unwrap_or(0),
                    layer: item.layer,
                });
                sni_names.push(name);
            }
        }
        let _ = file.updated_at;
        built.certificates.push(Certificate {
            id,
            cert,
            key,
            cert_alt: file.cert_alt,
            key_alt: file.key_alt,
            snis: sni_names,
            tags: file.tags,
            created_at: file.created_at.unwrap_or(0),
            layer: item.layer,
            derived_id: file.id.is_none(),
            references: report
                .references_in(&item.path, super::vault::secret_fields("certificates")),
        });
        keys_by_cert.push(keys);
    }
    for item in snis {
        let Some(file) = parse_item::<SniFile>(item.value, &item.path, report) else {
            continue;
        };
        let Some(name) = file.name else {
            report.add(format!("{}.name", item.path), "required field missing");
            continue;
        };
        let Some(reference) = file.certificate.as_ref().and_then(Reference::key) else {
            report.add(
                format!("{}.certificate", item.path),
                "required field missing",
            );
            continue;
        };
        let Some(&index) = ids.get(reference) else {
            report.add(
                format!("{}.certificate", item.path),
                format!("no certificate with id '{reference}'"),
            );
            continue;
        };
        let _ = file.updated_at;
        let owner = built.certificates[index].id.clone();
        if add_sni(
            &name,
            &owner,
            &keys_by_cert[index],
            item.path.clone(),
            &mut resolver,
            report,
        ) {
            built.certificates[index].snis.push(name.clone());
            built.snis.push(Sni {
                id: file.id.unwrap_or_else(|| stable_id("sni", &name)),
                name,
                certificate: index,
                tags: file.tags,
                created_at: file.created_at.unwrap_or(0),
                layer: item.layer,
            });
        }
    }
    // The default certificate (no SNI, or one no certificate names): ringway.ssl_cert,
    // else the first certificate without SNIs. Without either, such handshakes fail.
    match default {
        Some(key) => resolver.set_default(vec![key]),
        None => {
            let unnamed = built.certificates.iter().position(|c| c.snis.is_empty());
            if let Some(index) = unnamed {
                resolver.set_default(keys_by_cert[index].clone());
            }
        }
    }
    if !resolver.is_empty() {
        match tls::server_config(resolver) {
            Ok(config) => built.tls = Some(config),
            Err(message) => report.add("certificates", message),
        }
    }
    built
}

/// CA certificates by id (Kong's `ca_certificates` entity).
pub type Cas = HashMap<String, Vec<rustls::pki_types::CertificateDer<'static>>>;

/// Kong's `cert_digest`: the SHA-256 of a certificate's DER, in hex.
pub fn cert_digest(der: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(64);
    for byte in ring::digest::digest(&ring::digest::SHA256, der).as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A CA certificate as the Admin API shows it.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    pub id: String,
    pub cert: String,
    /// SHA-256 of the certificate's DER in hex, as Kong's `cert_digest`.
    pub cert_digest: String,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

/// A `ca_certificates[]` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    #[serde(default, deserialize_with = "super::file::entity_id")]
    id: Option<String>,
    cert: Option<String>,
    cert_digest: Option<String>,
    #[serde(default, deserialize_with = "super::file::tags")]
    tags: Vec<String>,
    created_at: Option<u64>,
    updated_at: Option<u64>,
}

/// Why a certificate cannot serve as a CA, as Kong's `ca_certificates` schema says.
enum NoCa {
    /// Expired at the time given.
    Expired,
    /// Signed by another without being marked a CA by its basic constraints. A
    /// self-signed certificate is taken without the mark: listed, it pins itself (the
    /// upstream's own certificate, which ringway trusts as OpenSSL does), where Kong
    /// refuses it.
    NotACa,
}

impl NoCa {
    fn message(&self) -> &'static str {
        match self {
            NoCa::Expired => "certificate expired, \"Not After\" time is in the past",
            NoCa::NotACa => {
                "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint"
            }
        }
    }
}

/// What is wrong with `der` as a CA at `now` (Unix seconds). One X.509 cannot read is
/// left to the TLS library (which may still take it as a trust anchor).
fn ca_problem(der: &[u8], now: u64) -> Option<NoCa> {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::BasicConstraints;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    if tbs.validity.not_after.to_unix_duration().as_secs() < now {
        return Some(NoCa::Expired);
    }
    let is_ca = tbs
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == BasicConstraints::OID)
        .any(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|b| b.ca));
    let self_signed = tbs.issuer == tbs.subject;
    (!is_ca && !self_signed).then_some(NoCa::NotACa)
}

/// Kong's refusal of a CA certificate PEM already expired when it is written (a write
/// of that entity through the Admin API); `None` for one still valid, or one that does
/// not read (its write says why).
pub fn expired_ca(pem: &str) -> Option<&'static str> {
    let der = tls::certificates(pem).ok()?.into_iter().next()?;
    expired(&der).then(|| NoCa::Expired.message())
}

/// Whether a certificate's "Not After" is past (one X.509 cannot read is not).
fn expired(der: &[u8]) -> bool {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der).is_ok_and(|cert| {
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs()
            < crate::control::unix_now()
    })
}

/// Parses the CA certificates services may refer to.
/// `now`: Unix seconds, against which a CA has expired; then a problem when
/// `expired_refused`, else a warning.
pub fn build_cas(
    values: Vec<Value>,
    layer: impl Fn(usize) -> Layer,
    (now, expired_refused): (u64, bool),
    report: &mut Report,
) -> (Cas, Vec<CaCertificate>) {
    let mut cas = Cas::new();
    let mut shown = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let path = format!("ca_certificates[{i}]");
        let Some(file) = parse_item::<CaFile>(value, &path, report) else {
            continue;
        };
        // Kong's digest is its own to compute: a given one is not taken.
        let _ = (&file.cert_digest, file.updated_at);
        let Some(cert) = file.cert else {
            report.add(format!("{path}.cert"), "required field missing");
            continue;
        };
        // As Kong's loader, an id is made up when the file gives none (from the PEM, so
        // it stays the same across loads); only a service that names it needs one given.
        let id = file
            .id
            .unwrap_or_else(|| stable_id("ca_certificate", &cert));
        match tls::without_private_key(&cert).and_then(|()| tls::certificates(&cert)) {
            // As Kong's entity: one CA per item, so that each is trusted by its own id.
            Ok(certs) if certs.len() > 1 => report.add(
                format!("{path}.cert"),
                "please submit only one certificate at a time",
            ),
            Ok(certs) => {
                let from = layer(i);
                // Refused, but kept by its id: the services naming it are not also told
                // it does not exist.
                // A CA the Admin API holds that has expired since it was written only
                // warns: it is not what a write is writing (its own write refuses one
                // already expired, see `expired_ca`).
                let written = expired_refused && from == Layer::File;
                match certs.first().and_then(|c| ca_problem(c, now)) {
                    Some(NoCa::Expired) if !written => report.warn(format!(
                        "{path}.cert: {}; a write through the Admin API would be refused",
                        NoCa::Expired.message()
                    )),
                    Some(problem) => report.add(format!("{path}.cert"), problem.message()),
                    None => {}
                }
                let digest = certs
                    .first()
                    .map_or_else(String::new, |der| cert_digest(der));
                // As Kong's unique `cert_digest`: one entity per CA certificate. The Admin
                // API refuses a second when it is written; one an earlier version saved
                // loads with a warning.
                if let Some(same) = shown
                    .iter()
                    .find(|c: &&CaCertificate| c.cert_digest == digest)
                {
                    let problem = format!("the same certificate as CA certificate '{}'", same.id);
                    // Refused when the file is one of the two (it is what a load or a
                    // reload writes); two the Admin API holds only warn.
                    match (same.layer, from) {
                        (Layer::Admin, Layer::Admin) => {
                            report.warn(format!("{path}.cert: {problem}"))
                        }
                        _ => report.add(format!("{path}.cert"), problem),
                    }
                }
                if cas.insert(id.clone(), certs).is_some() {
                    report.add(
                        format!("{path}.id"),
                        format!("duplicate CA certificate id '{id}'"),
                    );
                }
                shown.push(CaCertificate {
                    id,
                    cert,
                    cert_digest: digest,
                    tags: file.tags,
                    created_at: file.created_at.unwrap_or(0),
                    layer: from,
                });
            }
            Err(message) => report.add(format!("{path}.cert"), message),
        }
    }
    (cas, shown)
}

#[cfg(test)]
mod tests {
    /// A server certificate past its "Not After" loads with a warning (see `build`).
    #[test]
    fn expiry_is_read_from_the_certificate() {
        let der = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
            let pem = std::fs::read_to_string(path.join(name)).unwrap();
            crate::tls::certificates(&pem).unwrap().remove(0)
        };
        assert!(super::expired(&der("expired-ca.pem")));
        assert!(!super::expired(&der("self-signed-leaf.pem")));
        assert!(!super::expired(b"not a certificate"));
    }
}
