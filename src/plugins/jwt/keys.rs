//! Credential keys: HMAC secrets and PEM public keys, prepared once when config loads.

use base64::Engine;
use ring::{hmac, signature};

use super::Algorithm;

/// A key ready to verify signatures of one algorithm.
pub enum VerifyKey {
    Hmac(hmac::Key),
    /// The key bytes ring expects: an RSAPublicKey (PKCS#1) or an uncompressed EC point.
    Public(signature::UnparsedPublicKey<Vec<u8>>),
    /// ES512: P-521, which ring does not have.
    P521(Box<p521::ecdsa::VerifyingKey>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            VerifyKey::Hmac(_) => "VerifyKey::Hmac(..)",
            VerifyKey::Public(_) => "VerifyKey::Public(..)",
            VerifyKey::P521(_) => "VerifyKey::P521(..)",
        })
    }
}

impl VerifyKey {
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            // Constant-time comparison of the tags.
            VerifyKey::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            VerifyKey::Public(key) => key.verify(message, signature).is_ok(),
            // JWS's fixed-width R || S (RFC 7518 §3.4), 66 bytes each; SHA-512.
            VerifyKey::P521(key) => {
                use p521::ecdsa::signature::Verifier;
                p521::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify(message, &signature).is_ok())
            }
        }
    }
}

/// Builds the HMAC key of an HS* credential.
pub fn hmac_key(algorithm: Algorithm, secret: &[u8]) -> VerifyKey {
    let alg = match algorithm {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    VerifyKey::Hmac(hmac::Key::new(alg, secret))
}

/// Decodes a base64 secret in the standard or URL-safe alphabet, padded or not.
pub fn decode_base64_secret(secret: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let trimmed = secret.trim();
    standard
        .decode(trimmed)
        .ok()
        .or_else(|| url_safe.decode(trimmed).ok())
}

/// Builds the verification key of an RS* / PS* / ES* / EdDSA credential from its PEM
/// public key: a
/// `PUBLIC KEY` (SubjectPublicKeyInfo), or for RSA a PKCS#1 `RSA PUBLIC KEY`, which
/// OpenSSL (and so Kong) loads too.
pub fn public_key(algorithm: Algorithm, pem: &str) -> Result<VerifyKey, String> {
    // The field is shown by every read and stored as given: a private key kept beside
    // the public one in the same PEM would be published with it.
    if crate::tls::holds_private_key(pem) {
        return Err(
            "rsa_public_key: holds a private key; give the public key alone (openssl pkey -pubout)"
                .into(),
        );
    }
    let pkcs1;
    let (oid, key) = if let Some(der) = pem_body(pem, "RSA PUBLIC KEY") {
        pkcs1 = der;
        if !is_rsa_public_key(&pkcs1) {
            return Err("rsa_public_key: not a valid PKCS#1 RSA public key".into());
        }
        (RSA_OID, &pkcs1[..])
    } else {
        let der = pem_body(pem, "PUBLIC KEY")
            .ok_or("rsa_public_key: not a PEM 'PUBLIC KEY' or 'RSA PUBLIC KEY'")?;
        pkcs1 = der;
        spki(&pkcs1).ok_or("rsa_public_key: not a valid SubjectPublicKeyInfo")?
    };
    // ring's algorithm, or None for ES512 (ring has no P-521).
    type Ring = Option<&'static dyn signature::VerificationAlgorithm>;
    let (expected_oid, alg): (&[u8], Ring) = match algorithm {
        Algorithm::RS256 => (RSA_OID, Some(&signature::RSA_PKCS1_2048_8192_SHA256)),
        Algorithm::RS384 => (RSA_OID, Some(&signature::RSA_PKCS1_2048_8192_SHA384)),
        Algorithm::RS512 => (RSA_OID, Some(&signature::RSA_PKCS1_2048_8192_SHA512)),
        Algorithm::ES256 => (EC_OID, Some(&signature::ECDSA_P256_SHA256_FIXED)),
        Algorithm::ES384 => (EC_OID, Some(&signature::ECDSA_P384_SHA384_FIXED)),
        Algorithm::ES512 => (EC_OID, None),
        Algorithm::PS256 => (RSA_OID, Some(&signature::RSA_PSS_2048_8192_SHA256)),
        Algorithm::PS384 => (RSA_OID, Some(&signature::RSA_PSS_2048_8192_SHA384)),
        Algorithm::PS512 => (RSA_OID, Some(&signature::RSA_PSS_2048_8192_SHA512)),
        Algorithm::EdDSA => (ED25519_OID, Some(&signature::ED25519)),
        _ => return Err("algorithm: not a public-key algorithm".into()),
    };
    if oid != expected_oid {
        return Err(format!(
            "rsa_public_key: the key does not fit algorithm {}",
            algorithm.name()
        ));
    }
    if expected_oid == RSA_OID && !(256..=1100).contains(&key.len()) {
        return Err("rsa_public_key: RSA keys must be 2048 to 8192 bits".into());
    }
    if algorithm == Algorithm::ES256 && key.len() != 65
        || algorithm == Algorithm::ES384 && key.len() != 97
        || algorithm == Algorithm::ES512 && key.len() != 133
        || algorithm == Algorithm::EdDSA && key.len() != 32
    {
        return Err(format!(
            "rsa_public_key: the EC key does not fit algorithm {}",
            algorithm.name()
        ));
    }
    match alg {
        Some(alg) => Ok(VerifyKey::Public(signature::UnparsedPublicKey::new(
            alg,
            key.to_vec(),
        ))),
        // The point is checked to be on the curve now, not at the first token.
        None => p521::ecdsa::VerifyingKey::from_sec1_bytes(key)
            .map(|key| VerifyKey::P521(Box::new(key)))
            .map_err(|_| "rsa_public_key: not a valid P-521 public key (ES512)".to_owned()),
    }
}

/// rsaEncryption, 1.2.840.113549.1.1.1.
const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// id-Ed25519, 1.3.101.112 (EdDSA: Kong's keys are Ed25519).
const ED25519_OID: &[u8] = &[0x2b, 0x65, 0x70];

/// The base64 body between `-----BEGIN {label}-----` and `-----END {label}-----`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Reads one DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Whether `input` is exactly an RSAPublicKey: a SEQUENCE of two INTEGERs (the
/// modulus and the exponent), nothing after it.
fn is_rsa_public_key(input: &[u8]) -> bool {
    rsa_integers(input, der).is_some()
}

/// A DER element reader: (tag, contents, rest).
type ReadElement = fn(&[u8]) -> Option<(u8, &[u8], &[u8])>;

/// An RSAPublicKey's modulus and exponent INTEGERs, read with `element` (`der`, or
/// `der_strict` for DER's length rule), when `input` is exactly one.
fn rsa_integers(input: &[u8], element: ReadElement) -> Option<(&[u8], &[u8])> {
    let (0x30, body, []) = element(input)? else {
        return None;
    };
    let (0x02, modulus, rest) = element(body)? else {
        return None;
    };
    let (0x02, exponent, []) = element(rest)? else {
        return None;
    };
    Some((modulus, exponent))
}

/// What makes an RSA credential's key one no token can be verified with, if anything:
/// an RSAPublicKey (PKCS#1, or inside a SubjectPublicKeyInfo) that is not exactly two
/// positive, minimally encoded INTEGERs, or an exponent ring does not take (odd, 3 to
/// 2^33 - 1). Checked apart from [`public_key`]: a credential an earlier version saved
/// with such a key still loads (with a warning) rather than stopping the gateway.
pub fn rsa_key_problem(pem: &str) -> Option<&'static str> {
    let key = match pem_body(pem, "RSA PUBLIC KEY") {
        Some(key) => key,
        None => {
            let info = pem_body(pem, "PUBLIC KEY")?;
            let (oid, key) = spki(&info)?;
            if oid != RSA_OID {
                return None;
            }
            key.to_vec()
        }
    };
    let parts = rsa_integers(&key, der_strict)
        .and_then(|(modulus, exponent)| Some((positive(modulus)?, positive(exponent)?)));
    let Some((modulus, exponent)) = parts else {
        return Some("not a valid RSA public key (expected a DER SEQUENCE of two INTEGERs)");
    };
    // ring's RSA_PKCS1_2048_8192 verifiers: an odd modulus of 2048 to 8192 bits.
    let bits = modulus.len() * 8 - modulus[0].leading_zeros() as usize;
    if !(2048..=8192).contains(&bits) || modulus[modulus.len() - 1] % 2 == 0 {
        return Some("RSA keys must have an odd modulus of 2048 to 8192 bits");
    }
    let usable = exponent.len() <= 8 && {
        let e = exponent.iter().fold(0u64, |e, &b| e << 8 | u64::from(b));
        e >= 3 && e % 2 == 1 && e < 1 << 33
    };
    (!usable).then_some("the RSA public exponent must be odd, at least 3 and below 2^33")
}

/// [`der`], holding the length to DER's rule: the long form only past 127, in as few
/// bytes as it takes. (`der` itself is lenient: keys an earlier version took that way
/// verify, and a saved one must still load.)
fn der_strict(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let element = der(input)?;
    let header = input.len() - element.1.len() - element.2.len();
    let minimal = match header {
        2 => true,
        _ => element.1.len() >= 0x80 && input[2] != 0 && header == 2 + byte_count(element.1.len()),
    };
    minimal.then_some(element)
}

/// How many bytes `n` takes written big-endian.
fn byte_count(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()).div_ceil(8) as usize
}

/// The digits of a positive DER INTEGER: no sign bit, a leading zero only before one.
fn positive(integer: &[u8]) -> Option<&[u8]> {
    match integer {
        [0, next, ..] if next & 0x80 != 0 => Some(&integer[1..]),
        [first, ..] if *first != 0 && first & 0x80 == 0 => Some(integer),
        _ => None,
    }
}

/// SubjectPublicKeyInfo → (algorithm OID, subjectPublicKey bits).
fn spki(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, spki, _) = der(input)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der(spki)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    let (0x03, bits, _) = der(rest)? else {
        return None;
    };
    // A BIT STRING starts with the count of unused bits, which must be zero here.
    let (&0, key) = bits.split_first()? else {
        return None;
    };
    Some((oid, key))
}
