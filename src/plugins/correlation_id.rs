//! `correlation-id`: a request ID in a header, kept when the client sent a non-empty one,
//! generated otherwise (Kong's `uuid`, `uuid#counter` and `tracker` generators), passed
//! upstream, echoed to the client when configured, and carried into generated error
//! bodies (`request_id`) and the access log.

use std::cell::Cell;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

pub(crate) fn default_header() -> String {
    "Kong-Request-ID".into()
}
fn default_generator() -> String {
    "uuid#counter".into()
}

/// The plugin's `config`, as Kong names and defaults it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default = "default_header")]
    pub header_name: String,
    #[serde(default = "default_generator")]
    pub generator: String,
    #[serde(default)]
    pub echo_downstream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    Uuid,
    UuidCounter,
    Tracker,
}

/// A validated `correlation-id` configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub header_name: String,
    /// Lower-cased, for matching the incoming header.
    pub header_lower: String,
    pub generator: Generator,
    pub echo_downstream: bool,
}

/// Headers an ID may not travel in (lower case).
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
    "expect",
];

/// Headers that carry credentials (lower case), never a request ID's.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "kong-admin-token",
];

/// Headers the gateway itself sets on the request it forwards (lower case): under one of
/// them the ID would go upstream beside the gateway's own value.
const FORWARDING_HEADERS: [&str; 13] = [
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "via",
    "x-consumer-id",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-credential-identifier",
    "x-anonymous-consumer",
];

impl ConfigFile {
    /// Why `header_name` may not carry the ID, beyond what `validate` refuses: checks
    /// added after a version saved Admin API state, so that such a state still loads
    /// (with a warning) while a write is refused.
    pub fn header_caution(&self) -> Option<String> {
        let key = crate::http::header_key(&self.header_name);
        // The ID goes into log lines, the access log and error bodies: a credential's
        // header would put the credential there (secrets are never logged).
        if CREDENTIAL_HEADERS.contains(&key.as_str()) {
            return Some(format!(
                "'{}' carries credentials, which the request ID would put in logs; name the ID's own header",
                self.header_name
            ));
        }
        FORWARDING_HEADERS.contains(&key.as_str()).then(|| {
            format!(
                "'{}' is set by the gateway on the forwarded request; name the ID's own header",
                self.header_name
            )
        })
    }

    pub fn validate(self) -> Result<Config, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if self.header_name.is_empty() {
            // Kong's words for an empty string field.
            problems.push(("header_name".into(), "length must be at least 1".into()));
        } else if !self.header_name.bytes().all(crate::http::is_token_byte) {
            problems.push((
                "header_name".into(),
                format!("invalid header name '{}'", self.header_name),
            ));
        }
        // The ID is added to the request and, echoed, to the response: under a name that
        // frames the message or runs the connection it would desynchronise one side (a
        // `Content-Length` beside the real one, a `Transfer-Encoding` beside a length).
        let key = crate::http::header_key(&self.header_name);
        if FRAMING_HEADERS.contains(&key.as_str()) {
            problems.push((
                "header_name".into(),
                format!(
                    "'{}' frames the message or runs the connection; name the ID's own header",
                    self.header_name
                ),
            ));
        }
        let generator = match self.generator.as_str() {
            "uuid" => Some(Generator::Uuid),
            "uuid#counter" => Some(Generator::UuidCounter),
            "tracker" => Some(Generator::Tracker),
            other => {
                problems.push((
                    "generator".into(),
                    format!("expected one of: uuid, uuid#counter, tracker (got '{other}')"),
                ));
                None
            }
        };
        match generator {
            Some(generator) if problems.is_empty() => Ok(Config {
                // The incoming ID is read as Kong's `get_header` reads it; a client's
                // own `X_Req_ID` is not read, so an ID is generated and sent under the
                // configured name.
                header_lower: crate::http::header_key(&self.header_name),
                header_name: self.header_name,
                generator,
                echo_downstream: self.echo_downstream,
            }),
            _ => Err(problems),
        }
    }
}

/// What `tracker` IDs are made of, besides the time.
pub struct TrackerParts<'a> {
    pub server_ip: Option<std::net::IpAddr>,
    pub server_port: &'a str,
    pub connection: u64,
    pub connection_requests: u64,
}

/// A worker's ID generator: a small, fast PRNG seeded from the system's (IDs are unique
/// labels, not secrets), and the worker's own UUID for `uuid#counter`.
pub struct Ids {
    state: Cell<u64>,
    worker_uuid: String,
    counter: Cell<u64>,
}

impl Default for Ids {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Ids {
            state: Cell::new(u64::from_le_bytes(seed)),
            worker_uuid: crate::config::random_id(),
            counter: Cell::new(0),
        }
    }
}

impl Ids {
    /// splitmix64.
    fn next(&self) -> u64 {
        let mut z = self.state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A version 4 UUID.
    fn write_uuid(&self, out: &mut String) {
        let (a, b) = (self.next(), self.next());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        crate::config::write_uuid(out, bytes);
    }

    /// Appends a new ID from `generator` to `out`.
    pub fn write(&self, generator: Generator, tracker: &TrackerParts<'_>, out: &mut String) {
        match generator {
            Generator::Uuid => self.write_uuid(out),
            Generator::UuidCounter => {
                let n = self.counter.get() + 1;
                self.counter.set(n);
                let _ = write!(out, "{}#{n}", self.worker_uuid);
            }
            Generator::Tracker => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                if let Some(ip) = tracker.server_ip {
                    let _ = write!(out, "{ip}");
                }
                let _ = write!(
                    out,
                    "-{}-{}-{}-{}-{}.{:03}",
                    tracker.server_port,
                    std::process::id(),
                    tracker.connection,
                    tracker.connection_requests,
                    now.as_secs(),
                    now.subsec_millis()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> TrackerParts<'static> {
        TrackerParts {
            server_ip: Some([10, 0, 0, 1].into()),
            server_port: "8000",
            connection: 7,
            connection_requests: 2,
        }
    }

    impl Ids {
        fn generate(&self, generator: Generator, tracker: &TrackerParts<'_>) -> String {
            let mut id = String::new();
            self.write(generator, tracker, &mut id);
            id
        }
    }

    #[test]
    fn generators_make_kongs_shapes() {
        let ids = Ids::default();
        let uuid = ids.generate(Generator::Uuid, &parts());
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert!(crate::config::is_uuid(&uuid), "{uuid}");
        assert_eq!(&uuid[14..15], "4", "version 4: {uuid}");
        assert_ne!(uuid, ids.generate(Generator::Uuid, &parts()));
        let first = ids.generate(Generator::UuidCounter, &parts());
        let second = ids.generate(Generator::UuidCounter, &parts());
        assert!(
            first.ends_with("#1") && second.ends_with("#2"),
            "{first} {second}"
        );
        assert_eq!(first[..36], second[..36], "one UUID per worker");
        let tracker = ids.generate(Generator::Tracker, &parts());
        let fields: Vec<&str> = tracker.split('-').collect();
        assert_eq!(fields[..2], ["10.0.0.1", "8000"], "{tracker}");
        assert_eq!(fields[3..5], ["7", "2"], "{tracker}");
    }

    #[test]
    fn validation() {
        let parse = |yaml: &str| {
            serde_norway::from_str::<ConfigFile>(yaml)
                .unwrap()
                .validate()
        };
        let c = parse("{}").unwrap();
        assert_eq!(c.header_name, "Kong-Request-ID");
        assert_eq!(c.generator, Generator::UuidCounter);
        assert!(!c.echo_downstream);
        assert!(parse("generator: counter").is_err());
        assert!(parse("header_name: 'bad header'").is_err());
        for framing in [
            "Content-Length",
            "transfer_encoding",
            "Connection",
            "Host",
            "TE",
        ] {
            assert!(
                parse(&format!("header_name: {framing}")).is_err(),
                "{framing}"
            );
        }
        let caution = |yaml: &str| {
            serde_norway::from_str::<ConfigFile>(yaml)
                .unwrap()
                .header_caution()
                .unwrap_or_default()
        };
        for ours in ["X-Real-IP", "x-forwarded-for", "Via", "X-Consumer-ID"] {
            let said = caution(&format!("header_name: {ours}"));
            assert!(said.contains("set by the gateway"), "{said}");
        }
        assert_eq!(caution("{}"), "");
        for credentials in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Kong-Admin-Token",
        ] {
            let said = caution(&format!("header_name: {credentials}"));
            assert!(said.contains("carries credentials"), "{said}");
        }
        assert!(serde_norway::from_str::<ConfigFile>("colour: red").is_err());
    }
}
