//! The `jwt` plugin: Kong's fields, token sources, checks, messages and upstream headers.
//!
//! Stricter than Kong where the SPEC says so: `exp` and `nbf` are checked whenever a
//! token carries them (`claims_to_verify` makes them mandatory), the token's `alg` must
//! equal the credential's exactly, HMAC tags are compared in constant time, and tokens
//! must be unpadded base64url. Extensions: `leeway` and `hide_credentials`.
//!
//! Hot-path notes: keys are prepared when config loads (one `hmac::Key` per credential);
//! verifying a token decodes into stack buffers and reads claims with a visitor that
//! keeps only `alg`, the key claim, `exp` and `nbf`, so no JSON tree is built.

mod keys;
mod token;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use keys::{rsa_key_problem, VerifyKey};
pub(crate) use token::percent_decode;
pub use token::{
    authenticate, offered, sign, Cache, Failure, FailureBody, Found, Locations, RequestParts,
    TimeClaims,
};

/// The algorithms a credential may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    ES512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 13] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::EdDSA,
    ];

    /// The problem with an algorithm name that is none of [`Algorithm::ALL`].
    pub fn unknown(name: &str) -> String {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        format!("expected one of: {} (got '{name}')", names.join(", "))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Exact, case-sensitive: `hs256` or `HS256 ` are not algorithms.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }
}

fn default_uri_params() -> Vec<String> {
    vec!["jwt".into()]
}
pub(crate) fn default_headers() -> Vec<String> {
    vec!["authorization".into()]
}
fn default_key_claim() -> String {
    "iss".into()
}
fn yes() -> bool {
    true
}

/// The plugin's `config`, as Kong names and defaults it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default = "default_uri_params")]
    pub uri_param_names: Vec<String>,
    #[serde(default)]
    pub cookie_names: Vec<String>,
    #[serde(default = "default_headers")]
    pub header_names: Vec<String>,
    #[serde(default = "default_key_claim")]
    pub key_claim_name: String,
    #[serde(default)]
    pub secret_is_base64: bool,
    #[serde(default)]
    pub claims_to_verify: Option<Vec<String>>,
    #[serde(default)]
    pub maximum_expiration: u64,
    pub anonymous: Option<String>,
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    pub realm: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (ringway's extension).
    #[serde(default)]
    pub leeway: u64,
    /// Remove the token from wherever it was found before proxying (ringway's extension).
    #[serde(default)]
    pub hide_credentials: bool,
}

/// Most names in each of `uri_param_names`, `cookie_names` and `header_names`.
pub const MAX_TOKEN_NAMES: usize = 64;

/// A validated `jwt` configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub uri_param_names: Vec<String>,
    pub cookie_names: Vec<String>,
    /// Lower-cased.
    pub header_names: Vec<String>,
    pub key_claim_name: String,
    pub secret_is_base64: bool,
    pub require_exp: bool,
    pub require_nbf: bool,
    pub maximum_expiration: u64,
    /// The anonymous consumer (username or id) used when authentication fails.
    pub anonymous: Option<String>,
    pub run_on_preflight: bool,
    pub leeway: u64,
    pub hide_credentials: bool,
    /// `Bearer` or `Bearer realm="x"`.
    pub www_authenticate: String,
    /// The same with ` error="invalid_token"`.
    pub www_authenticate_error: String,
}

impl ConfigFile {
    /// Validates the config; problems are `(field, message)`.
    pub fn validate(self) -> Result<Config, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let (mut require_exp, mut require_nbf) = (false, false);
        for (i, claim) in self.claims_to_verify.iter().flatten().enumerate() {
            match claim.as_str() {
                "exp" => require_exp = true,
                "nbf" => require_nbf = true,
                other => problems.push((
                    format!("claims_to_verify[{i}]"),
                    format!("expected one of: exp, nbf (got '{other}')"),
                )),
            }
        }
        if self.maximum_expiration > 31_536_000 {
            problems.push((
                "maximum_expiration".into(),
                "value should be between 0 and 31536000".into(),
            ));
        }
        if self.maximum_expiration > 0 && !require_exp {
            problems.push((
                "maximum_expiration".into(),
                "requires 'exp' in claims_to_verify".into(),
            ));
        }
        if self.key_claim_name.is_empty() {
            problems.push(("key_claim_name".into(), "must not be empty".into()));
        }
        if self.leeway > 86_400 {
            problems.push((
                "leeway".into(),
                "must be between 0 and 86400 seconds".into(),
            ));
        }
        // `hide_credentials` keeps where a token was found as one bit per name.
        for (field, names) in [
            ("uri_param_names", &self.uri_param_names),
            ("cookie_names", &self.cookie_names),
            ("header_names", &self.header_names),
        ] {
            if names.len() > MAX_TOKEN_NAMES {
                problems.push((field.to_owned(), format!("at most {MAX_TOKEN_NAMES} names")));
            }
        }
        for (i, name) in self.header_names.iter().enumerate() {
            if name.is_empty() || !name.bytes().all(crate::http::is_token_byte) {
                problems.push((
                    format!("header_names[{i}]"),
                    format!("invalid header name '{name}'"),
                ));
            }
        }
        // The realm goes into a response header: a line break in it would add headers of
        // its own to every 401.
        if let Some(realm) = &self.realm {
            if realm.chars().any(char::is_control) {
                problems.push(("realm".into(), "must not contain control characters".into()));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Auth-params are comma-separated (RFC 9110 §11.2): `Bearer realm="x",
        // error="invalid_token"`; the realm is a quoted-string, `"` and `\` escaped.
        let (www_authenticate, www_authenticate_error) = match &self.realm {
            Some(realm) => {
                let realm = realm.replace('\\', "\\\\").replace('"', "\\\"");
                (
                    format!("Bearer realm=\"{realm}\""),
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
                )
            }
            None => (
                "Bearer".to_owned(),
                "Bearer error=\"invalid_token\"".to_owned(),
            ),
        };
        Ok(Config {
            uri_param_names: self.uri_param_names,
            cookie_names: self.cookie_names,
            header_names: self
                .header_names
                .iter()
                .map(|h| crate::http::header_key(h))
                .collect(),
            key_claim_name: self.key_claim_name,
            secret_is_base64: self.secret_is_base64,
            require_exp,
            require_nbf,
            maximum_expiration: self.maximum_expiration,
            anonymous: self.anonymous.filter(|a| !a.is_empty()),
            run_on_preflight: self.run_on_preflight,
            leeway: self.leeway,
            hide_credentials: self.hide_credentials,
            www_authenticate,
            www_authenticate_error,
        })
    }
}

/// A JWT credential (Kong's `jwt_secrets` entity) with its key prepared.
#[derive(Debug)]
pub struct Credential {
    pub id: String,
    pub key: String,
    pub algorithm: Algorithm,
    pub consumer: usize,
    /// For HS*: the secret as given.
    verify: Option<VerifyKey>,
    /// For HS*: the secret base64-decoded, used by plugins with `secret_is_base64`.
    verify_base64: Option<VerifyKey>,
}

impl Credential {
    /// Prepares a credential; the error is `(field, message)`.
    pub fn new(
        id: String,
        key: String,
        algorithm: Algorithm,
        secret: Option<&str>,
        rsa_public_key: Option<&str>,
        consumer: usize,
    ) -> Result<Credential, (String, String)> {
        let (verify, verify_base64) = if algorithm.is_hmac() {
            let secret =
                secret.ok_or(("secret".to_owned(), "required for HS algorithms".to_owned()))?;
            let decoded =
                keys::decode_base64_secret(secret).map(|bytes| keys::hmac_key(algorithm, &bytes));
            (Some(keys::hmac_key(algorithm, secret.as_bytes())), decoded)
        } else {
            let pem = rsa_public_key.ok_or((
                "rsa_public_key".to_owned(),
                format!("required for algorithm {}", algorithm.name()),
            ))?;
            let key = keys::public_key(algorithm, pem).map_err(|e| {
                let (field, message) = e.split_once(": ").unwrap_or(("rsa_public_key", &e));
                (field.to_owned(), message.to_owned())
            })?;
            (Some(key), None)
        };
        Ok(Credential {
            id,
            key,
            algorithm,
            consumer,
            verify,
            verify_base64,
        })
    }

    fn key_for(&self, secret_is_base64: bool) -> Option<&VerifyKey> {
        if self.algorithm.is_hmac() && secret_is_base64 {
            self.verify_base64.as_ref()
        } else {
            self.verify.as_ref()
        }
    }
}

/// Credentials by `key`, as the key claim names them.
pub type Credentials = HashMap<String, Credential>;

#[cfg(test)]
mod tests;
