//! Finding, decoding and verifying a token; and signing one for `ringway jwt sign`.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use httparse::Header;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::{Algorithm, Config, Credential, Credentials};

/// What the plugin looks at in a request.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a [Header<'a>],
}

/// Where the token was found, so `hide_credentials` can remove it from every place: the
/// same token may come in several. Bit `i` of a set stands for the `i`-th configured
/// name of its kind (`uri_param_names`, `cookie_names`, `header_names`; the config
/// holds at most 64 of each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Locations {
    pub query: u64,
    pub cookie: u64,
    pub header: u64,
}

impl Locations {
    /// The names a set stands for.
    pub fn named(set: u64, names: &[String]) -> impl Iterator<Item = &str> {
        names
            .iter()
            .take(64)
            .enumerate()
            .filter(move |(i, _)| set & (1 << i) != 0)
            .map(|(_, name)| name.as_str())
    }
}

/// A verified token.
#[derive(Debug)]
pub struct Found<'c> {
    pub credential: &'c Credential,
    pub locations: Locations,
}

/// The body of a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureBody {
    /// `{"message": ...}`
    Message(Cow<'static, str>),
    /// Kong's claim errors map, e.g. `{"exp":"token expired"}`.
    Claims(Vec<(&'static str, &'static str)>),
}

/// Why authentication failed: always a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub body: FailureBody,
    /// Whether `WWW-Authenticate` carries ` error="invalid_token"` (every failure but a
    /// missing token).
    pub invalid_token: bool,
}

impl Failure {
    fn message(message: impl Into<Cow<'static, str>>) -> Failure {
        Failure {
            body: FailureBody::Message(message.into()),
            invalid_token: true,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match &self.body {
            FailureBody::Claims(_) => "claims",
            FailureBody::Message(m) => match m.as_ref() {
                "Unauthorized" => "missing",
                "Multiple tokens provided" => "multiple",
                "Invalid signature" => "signature",
                "Invalid algorithm" => "algorithm",
                m if m.starts_with("Bad token") => "malformed",
                m if m.starts_with("No credentials") => "unknown_key",
                _ => "invalid",
            },
        }
    }
}

/// Tokens longer than this are not decoded: a header limit applies before this anyway.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Decoded header and claims up to this size stay on the stack.
const STACK_JSON_BYTES: usize = 2048;

/// Finds the request's token, verifies it against `credentials` and checks its claims.
/// `now` is the Unix time in seconds.
pub fn authenticate<'c>(
    config: &Config,
    request: &RequestParts<'_>,
    credentials: &'c Credentials,
    cache: Option<&Cache>,
    now: u64,
) -> Result<Found<'c>, Failure> {
    let (token, locations) = find_token(config, request)?;
    // A token already verified under this exact config skips decoding and the
    // signature; its time claims are checked again below, against `now`.
    let cached = cache.and_then(|c| c.get(config, &token, credentials));
    let (credential, claims) = match cached {
        Some(hit) => hit,
        None => {
            let (credential, claims) = verify_signature(config, &token, credentials)?;
            if let Some(cache) = cache {
                cache.insert(config, &token, &credential.key, claims);
            }
            (credential, claims)
        }
    };
    check_time_claims(config, claims, now)?;
    Ok(Found {
        credential,
        locations,
    })
}

fn find_token<'a>(
    config: &Config,
    request: &RequestParts<'a>,
) -> Result<(Cow<'a, str>, Locations), Failure> {
    let mut found: Option<Cow<'a, str>> = None;
    let mut locations = Locations::default();
    scan(config, request, &mut locations, |token| match &found {
        None => {
            found = Some(token);
            Ok(())
        }
        Some(existing) if *existing == token => Ok(()),
        Some(_) => Err(Failure::message("Multiple tokens provided")),
    })?;
    match found {
        Some(token) => Ok((token, locations)),
        None => Err(Failure {
            body: FailureBody::Message(Cow::Borrowed("Unauthorized")),
            invalid_token: false,
        }),
    }
}

/// Everywhere the request offers a token, good or not: what `hide_credentials` removes
/// when a failed authentication goes on as the anonymous consumer.
pub fn offered(config: &Config, request: &RequestParts<'_>) -> Locations {
    let mut locations = Locations::default();
    let _ = scan(config, request, &mut locations, |_| Ok(()));
    locations
}

/// Hands `offer` each non-empty token the request carries under a configured name, in
/// Kong's order (query, cookies, headers), and marks its place in `locations` once
/// `offer` takes it.
fn scan<'a>(
    config: &Config,
    request: &RequestParts<'a>,
    locations: &mut Locations,
    mut offer: impl FnMut(Cow<'a, str>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    // `at` is the location's bit in its set.
    let mut take = |token: Cow<'a, str>, set: &mut u64, at: usize| -> Result<(), Failure> {
        if token.is_empty() {
            return Ok(());
        }
        offer(token)?;
        // The config holds at most 64 names of a kind; past that there is no bit.
        *set |= 1u64.checked_shl(at as u32).unwrap_or(0);
        Ok(())
    };
    if let Some(query) = request.query {
        for (i, name) in config.uri_param_names.iter().enumerate() {
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                // Names are decoded as values are (`?j%77t=` is `?jwt=`), as Kong reads them.
                if percent_decode(key) == name.as_str() {
                    take(percent_decode(value), &mut locations.query, i)?;
                }
            }
        }
    }
    // nginx's `$cookie_NAME`, which Kong reads: the first cookie of that name.
    for (i, name) in config.cookie_names.iter().enumerate() {
        if let Some(value) = crate::http::cookie(request.headers, name) {
            take(Cow::Borrowed(value), &mut locations.cookie, i)?;
        }
    }
    // `kong.request.get_header`: the first header of each name.
    for (i, name) in config.header_names.iter().enumerate() {
        let Some(header) = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        let Some(token) = std::str::from_utf8(header.value).ok().and_then(bearer) else {
            continue;
        };
        take(Cow::Borrowed(token), &mut locations.header, i)?;
    }
    Ok(())
}

/// Kong's `\s*[Bb]earer\s+(.+)`, unanchored: the token after the first `Bearer` (or
/// `bearer`) that whitespace follows.
fn bearer(value: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = value[from..].find("earer").map(|at| from + at) {
        from = at + 1;
        if at == 0 || !matches!(value.as_bytes()[at - 1], b'B' | b'b') {
            continue;
        }
        let rest = &value[at + "earer".len()..];
        if rest.starts_with([' ', '\t']) {
            let token = rest.trim();
            if !token.is_empty() {
                return Some(token);
            }
        }
    }
    None
}

/// Decodes `%XX` and `+` in a query name or value; borrowed when there is nothing to
/// decode.
pub(crate) fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains(['%', '+']) {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Decodes one base64url part, on the stack when it is small.
fn decode_part<'b>(
    part: &str,
    stack: &'b mut [u8; STACK_JSON_BYTES],
    heap: &'b mut Vec<u8>,
) -> Option<&'b [u8]> {
    let needed = part.len() / 4 * 3 + 3;
    if needed <= stack.len() {
        let n = URL_SAFE_NO_PAD.decode_slice(part, stack).ok()?;
        Some(&stack[..n])
    } else {
        *heap = URL_SAFE_NO_PAD.decode(part).ok()?;
        Some(heap)
    }
}

/// The time claims of a verified token, as the checks need them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeClaims {
    exp: Num,
    nbf: Num,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Missing,
    Number(f64),
    NotANumber,
}

impl From<&Value<'_>> for Num {
    fn from(value: &Value<'_>) -> Num {
        match value {
            Value::Missing => Num::Missing,
            Value::Number(n) => Num::Number(*n),
            _ => Num::NotANumber,
        }
    }
}

/// Decodes the token, finds its credential and checks its signature.
fn verify_signature<'c>(
    config: &Config,
    token: &str,
    credentials: &'c Credentials,
) -> Result<(&'c Credential, TimeClaims), Failure> {
    const INVALID_JSON: &str = "Bad token; invalid JSON";
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Failure::message(INVALID_JSON));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::message(INVALID_JSON));
    };
    let key_claim = config.key_claim_name.as_str();

    let mut header_stack = [0u8; STACK_JSON_BYTES];
    let mut header_heap = Vec::new();
    let header_json = decode_part(header_b64, &mut header_stack, &mut header_heap)
        .ok_or(Failure::message(INVALID_JSON))?;
    let header = parse_fields(header_json, key_claim).ok_or(Failure::message(INVALID_JSON))?;

    let mut claims_stack = [0u8; STACK_JSON_BYTES];
    let mut claims_heap = Vec::new();
    let claims_json = decode_part(claims_b64, &mut claims_stack, &mut claims_heap)
        .ok_or(Failure::message(INVALID_JSON))?;
    let claims = parse_fields(claims_json, key_claim).ok_or(Failure::message(INVALID_JSON))?;

    let alg = match &header.alg {
        Value::Str(name) => Algorithm::parse(name),
        _ => None,
    }
    .ok_or(Failure::message("Bad token; invalid alg"))?;
    let mut signature = [0u8; 512];
    let signature = match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut signature) {
        Ok(n) => &signature[..n],
        Err(_) => return Err(Failure::message("Bad token; invalid signature")),
    };

    let absent = |value: &Value<'_>| matches!(value, Value::Missing | Value::False);
    let key = match (&claims.key, &header.key) {
        (claim, value) if absent(claim) => Some(value).filter(|value| !absent(value)),
        (claim, _) => Some(claim),
    };
    let key = match key {
        None => {
            return Err(Failure::message(format!(
                "No mandatory '{key_claim}' in claims"
            )))
        }
        Some(Value::Str(key)) if key.is_empty() => {
            return Err(Failure::message(format!("Invalid '{key_claim}' in claims")))
        }
        Some(Value::Str(key)) => key,
        // Kong looks any other value up as a key and finds no credential: keys are
        // strings.
        Some(_) => {
            return Err(Failure::message(format!(
                "No credentials found for given '{key_claim}'"
            )))
        }
    };
    let credential = credentials
        .get(key.as_ref())
        .ok_or_else(|| Failure::message(format!("No credentials found for given '{key_claim}'")))?;
    if credential.algorithm != alg {
        return Err(Failure::message("Invalid algorithm"));
    }
    let verify_key = credential
        .key_for(config.secret_is_base64)
        .ok_or(Failure::message("Invalid key/secret"))?;
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    if !verify_key.verify(signed.as_bytes(), signature) {
        return Err(Failure::message("Invalid signature"));
    }

    Ok((
        credential,
        TimeClaims {
            exp: Num::from(&claims.exp),
            nbf: Num::from(&claims.nbf),
        },
    ))
}

/// `exp` and `nbf`, against `now` and the plugin's leeway and requirements.
fn check_time_claims(config: &Config, claims: TimeClaims, now: u64) -> Result<(), Failure> {
    let mut errors = Vec::new();
    let leeway = config.leeway as f64;
    let now_f = now as f64;
    match claims.exp {
        Num::Number(exp) => {
            // Kong: expired once exp <= now; the leeway moves that edge.
            if exp + leeway <= now_f {
                errors.push(("exp", "token expired"));
            } else if config.maximum_expiration > 0
                && exp - now_f > config.maximum_expiration as f64
            {
                errors.push(("exp", "exceeds maximum allowed expiration"));
            }
        }
        Num::Missing if !config.require_exp => {}
        _ => errors.push(("exp", "must be a number")),
    }
    match claims.nbf {
        Num::Number(nbf) => {
            if nbf - leeway > now_f {
                errors.push(("nbf", "token not valid yet"));
            }
        }
        Num::Missing if !config.require_nbf => {}
        _ => errors.push(("nbf", "must be a number")),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            body: FailureBody::Claims(errors),
            invalid_token: true,
        })
    }
}

/// Tokens verified by one worker, so a client that reuses its token (the usual case)
/// costs one hash lookup instead of a decode and an HMAC or RSA check per request.
///
/// Only successful verifications are kept, keyed by the exact token and the plugin
/// config they were checked under; the time claims are checked on every use. The owner
/// must `clear` it whenever the config (and so any credential) changes. Bounded: when
/// full it is emptied, which costs one verification per token afterwards.
#[derive(Default)]
pub struct Cache {
    entries: std::cell::RefCell<std::collections::HashMap<Box<str>, Verified>>,
}

/// A cache entry: the identity of the plugin config the token was verified under, its
/// credential's key and its time claims.
type Verified = (usize, Box<str>, TimeClaims);

impl Cache {
    /// Entries kept per worker.
    pub const MAX_ENTRIES: usize = 4096;

    fn get<'c>(
        &self,
        config: &Config,
        token: &str,
        credentials: &'c Credentials,
    ) -> Option<(&'c Credential, TimeClaims)> {
        let entries = self.entries.borrow();
        match entries.get(token) {
            Some((owner, key, claims)) if *owner == config as *const Config as usize => credentials
                .get(&**key)
                .map(|credential| (credential, *claims)),
            _ => None,
        }
    }

    fn insert(&self, config: &Config, token: &str, key: &str, claims: TimeClaims) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            token.into(),
            (config as *const Config as usize, key.into(), claims),
        );
    }

    /// Forgets everything (the config changed).
    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A JSON value as far as the plugin cares.
#[derive(Debug, Default)]
enum Value<'de> {
    #[default]
    Missing,
    Str(Cow<'de, str>),
    Number(f64),
    /// JSON `false`: for the key claim, absent, as Kong's `claims[k] or header[k]` reads it.
    False,
    Other,
}

/// The fields read from a token's header or claims.
#[derive(Debug, Default)]
struct Fields<'de> {
    alg: Value<'de>,
    key: Value<'de>,
    exp: Value<'de>,
    nbf: Value<'de>,
}

/// Parses a JSON object, keeping only the fields above. A duplicated field the plugin
/// reads is an error (RFC 7519 §4: reject, never guess which one counts).
fn parse_fields<'de>(json: &'de [u8], key_claim: &str) -> Option<Fields<'de>> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let fields = FieldsSeed { key_claim }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(fields)
}

struct FieldsSeed<'k> {
    key_claim: &'k str,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Fields<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<Name<'de>>()? {
            let slot = match name.0.as_ref() {
                n if n == self.key_claim => &mut fields.key,
                "alg" => &mut fields.alg,
                "exp" => &mut fields.exp,
                "nbf" => &mut fields.nbf,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if !matches!(slot, Value::Missing) {
                return Err(de::Error::custom("duplicate field"));
            }
            *slot = map.next_value::<AnyValue<'de>>()?.0;
        }
        Ok(fields)
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Any JSON value, reduced to what `Value` distinguishes.
struct AnyValue<'de>(Value<'de>);

impl<'de> de::Deserialize<'de> for AnyValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Str(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Number(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Number(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Number(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AnyValue(if v { Value::Other } else { Value::False }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyValue(Value::Other))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyValue(Value::Other))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyValue(Value::Other))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Signs `claims` (a JSON object) with an HS* secret; the token `ringway jwt sign` prints.
pub fn sign(
    algorithm: Algorithm,
    secret: &[u8],
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let alg = match algorithm {
        Algorithm::HS256 => ring::hmac::HMAC_SHA256,
        Algorithm::HS384 => ring::hmac::HMAC_SHA384,
        Algorithm::HS512 => ring::hmac::HMAC_SHA512,
        other => {
            return Err(format!(
                "signing supports HS256, HS384 and HS512, not {}",
                other.name()
            ))
        }
    };
    let header = serde_json::json!({ "alg": algorithm.name(), "typ": "JWT" });
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|e| e.to_string())?);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|e| e.to_string())?));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(alg, secret), token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    Ok(token)
}
