//! Kong's `upstreams` and `targets`: a virtual host name that services use as their
//! `host`, balanced over a list of `host:port` targets, with Kong's health checks.
//!
//! Everything here is validated the way the rest of the file is (every problem with its
//! path); the result is the immutable [`Upstream`] model the balancer reads. Health
//! state is not part of the model: each target holds an `Arc` to the process-wide
//! [`balance::Health`] of its `(upstream, target)` pair, which outlives reloads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::entities::{stable_id, Item, Layer};
use super::file::Reference;
use super::{canonical_host, parse_item, valid_host, Report};
use crate::balance::{self, Health};

/// Kong's default port of a target given without one.
const DEFAULT_TARGET_PORT: u16 = 8000;
const DEFAULT_WEIGHT: u32 = 100;
const DEFAULT_SLOTS: u32 = 10_000;

/// A balanced upstream.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    pub name: Arc<str>,
    pub algorithm: Algorithm,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    /// The hashing fields as given (Kong keeps and shows them whether or not the
    /// `hash_on` / `hash_fallback` chosen uses them).
    pub hash_fields: HashFieldsGiven,
    /// The `Host` sent upstream instead of the target's own.
    pub host_header: Option<String>,
    pub slots: u32,
    pub targets: Vec<Target>,
    /// The consistent-hashing ring: sorted points, each naming a target.
    pub ring: Vec<(u64, u32)>,
    pub checks: Healthchecks,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

/// An upstream's `hash_on_*` / `hash_fallback_*` fields as given.
#[derive(Debug, Clone, Default)]
pub struct HashFieldsGiven {
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    pub hash_on_cookie_path: Option<String>,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
}

impl Upstream {
    /// Whether any health check can change a target's state.
    pub fn checks_on(&self) -> bool {
        self.checks.passive.enabled() || self.checks.active.probes()
    }
}

/// One `host:port` of an upstream.
#[derive(Debug)]
pub struct Target {
    pub id: String,
    /// As written (`10.0.0.1:8080`), with Kong's default port added when missing.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// The resolved address; `None` when the host did not resolve at load time.
    pub addr: Option<SocketAddr>,
    pub addr_text: String,
    pub weight: u32,
    /// The `Host` header for requests to it: the target's host and `:port` (left out for
    /// the scheme's default port as it is sent).
    pub host_header: String,
    /// The name to send and verify over TLS (an `https` service), as Kong's SNI: the
    /// upstream's `host_header` host, else the target's host (an IP for an IP target).
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    pub health: Arc<Health>,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    ConsistentHashing,
    LeastConnections,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::ConsistentHashing => "consistent-hashing",
            Algorithm::LeastConnections => "least-connections",
        }
    }
}

/// What a consistent-hashing upstream hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    None,
    Consumer,
    Ip,
    /// A request header (name lower-cased).
    Header(String),
    /// A cookie; when the request has none, one is generated and set on the response.
    Cookie {
        name: String,
        path: String,
    },
    Path,
    QueryArg(String),
}

/// Kong's `healthchecks`, as the balancer applies them.
#[derive(Debug, Clone)]
pub struct Healthchecks {
    pub passive: Passive,
    pub active: Active,
    /// Percentage of the total target weight that must be healthy for the upstream to
    /// take traffic at all.
    pub threshold: f64,
}

/// Passive checks: the outcome of proxied requests.
#[derive(Debug, Clone, Default)]
pub struct Passive {
    /// `type: tcp`: statuses count for nothing, only connection failures and timeouts.
    pub tcp_only: bool,
    pub healthy_statuses: StatusSet,
    pub successes: u32,
    pub unhealthy_statuses: StatusSet,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub http_failures: u32,
}

impl Passive {
    pub fn enabled(&self) -> bool {
        self.tcp_failures > 0 || self.timeouts > 0 || self.http_failures > 0 || self.successes > 0
    }
}

/// Active checks: probes sent by the gateway itself.
#[derive(Debug, Clone)]
pub struct Active {
    pub tcp_only: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub http_path: String,
    pub headers: Vec<(String, String)>,
    /// Kong's `https` probe settings, kept as given: inert, since probes here are
    /// `http` or `tcp`, as Kong ignores them for those.
    pub https_sni: Option<String>,
    pub https_verify_certificate: bool,
    /// Probe interval of healthy targets; zero: healthy targets are not probed.
    pub healthy_interval: Duration,
    pub healthy_statuses: StatusSet,
    pub successes: u32,
    /// Probe interval of unhealthy targets; zero: they are not probed.
    pub unhealthy_interval: Duration,
    pub unhealthy_statuses: StatusSet,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub http_failures: u32,
}

impl Active {
    /// Whether any target is probed at all.
    pub fn probes(&self) -> bool {
        !self.healthy_interval.is_zero() || !self.unhealthy_interval.is_zero()
    }
}

/// A set of HTTP statuses (100–999), one bit each, and the list it was given as (Kong's
/// `set`: each status once, in the order given), which is what is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 16],
    listed: Vec<u16>,
}

impl StatusSet {
    pub fn of(statuses: &[u16]) -> StatusSet {
        let mut set = StatusSet::default();
        for &s in statuses.iter().filter(|&&s| s < 1024) {
            if !set.contains(s) {
                set.bits[usize::from(s / 64)] |= 1 << (s % 64);
                set.listed.push(s);
            }
        }
        set
    }

    pub fn contains(&self, status: u16) -> bool {
        status < 1024 && self.bits[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }

    /// The statuses in the order given.
    pub fn listed(&self) -> &[u16] {
        &self.listed
    }
}

// --- the file's shapes ---------------------------------------------------------------

/// Checks decK's `_info.defaults.upstream` / `.target` values (`kind` `upstream` or
/// `target`) as fields of those entities, reporting at `path`; whether they are fine.
pub(super) fn defaults_fit(kind: &str, fields: Value, path: &str, report: &mut Report) -> bool {
    match kind {
        "upstream" => parse_item::<UpstreamFile>(fields, path, report).is_some(),
        _ => parse_item::<TargetFile>(fields, path, report).is_some(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UpstreamFile {
    #[serde(default, deserialize_with = "super::file::entity_id")]
    id: Option<String>,
    name: Option<String>,
    algorithm: Option<String>,
    hash_on: Option<String>,
    hash_fallback: Option<String>,
    hash_on_header: Option<String>,
    hash_fallback_header: Option<String>,
    hash_on_cookie: Option<String>,
    hash_on_cookie_path: Option<String>,
    hash_on_query_arg: Option<String>,
    hash_fallback_query_arg: Option<String>,
    hash_on_uri_capture: Option<String>,
    hash_fallback_uri_capture: Option<String>,
    slots: Option<u32>,
    healthchecks: Option<HealthchecksFile>,
    host_header: Option<String>,
    client_certificate: Option<Value>,
    use_srv_name: Option<bool>,
    /// Kong 3.11's sticky sessions: its dumps write both on every upstream.
    sticky_sessions_cookie: Option<String>,
    sticky_sessions_cookie_path: Option<String>,
    #[serde(default, deserialize_with = "super::file::tags")]
    tags: Vec<String>,
    created_at: Option<u64>,
    updated_at: Option<u64>,
    #[serde(default)]
    targets: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TargetFile {
    #[serde(default, deserialize_with = "super::file::entity_id")]
    id: Option<String>,
    target: Option<String>,
    /// Signed, so a negative weight is refused in Kong's words, not the parser's.
    weight: Option<i64>,
    upstream: Option<Reference>,
    #[serde(default, deserialize_with = "super::file::tags")]
    tags: Vec<String>,
    created_at: Option<f64>,
    updated_at: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthchecksFile {
    #[serde(default)]
    active: ActiveFile,
    #[serde(default)]
    passive: PassiveFile,
    threshold: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    timeout: Option<f64>,
    concurrency: Option<u32>,
    http_path: Option<String>,
    https_sni: Option<String>,
    https_verify_certificate: Option<bool>,
    headers: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    healthy: ActiveHealthyFile,
    #[serde(default)]
    unhealthy: ActiveUnhealthyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveHealthyFile {
    interval: Option<f64>,
    http_statuses: Option<Vec<u16>>,
    successes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveUnhealthyFile {
    interval: Option<f64>,
    http_statuses: Option<Vec<u16>>,
    tcp_failures: Option<u32>,
    timeouts: Option<u32>,
    http_failures: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PassiveFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    healthy: PassiveHealthyFile,
    #[serde(default)]
    unhealthy: PassiveUnhealthyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PassiveHealthyFile {
    http_statuses: Option<Vec<u16>>,
    successes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PassiveUnhealthyFile {
    http_statuses: Option<Vec<u16>>,
    tcp_failures: Option<u32>,
    timeouts: Option<u32>,
    http_failures: Option<u32>,
}

// Kong's defaults (kong/db/schema/entities/upstreams.lua).
const ACTIVE_HEALTHY: &[u16] = &[200, 302];
const ACTIVE_UNHEALTHY: &[u16] = &[429, 404, 500, 501, 502, 503, 504, 505];
const PASSIVE_HEALTHY: &[u16] = &[
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308,
];
const PASSIVE_UNHEALTHY: &[u16] = &[429, 500, 503];

/// Kong's counter limit for health-check thresholds.
const MAX_COUNTER: u32 = 255;

// --- building ------------------------------------------------------------------------

/// Builds every upstream (with its nested targets) and the top-level targets, returning
/// the upstreams and a map from their names and ids to indices.
pub fn build(
    upstreams: Vec<Item>,
    targets: Vec<Item>,
    report: &mut Report,
) -> (Vec<Upstream>, HashMap<String, usize>) {
    let mut built = Vec::new();
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut target_items: Vec<(String, Value, Option<usize>, Layer)> = Vec::new();
    for item in upstreams {
        let path = item.path;
        let layer = item.layer;
        let nested_if_broken = nested_targets(&item.value);
        let Some(file) = parse_item::<UpstreamFile>(item.value, &path, report) else {
            check_orphans(&path, nested_if_broken, report);
            continue;
        };
        let index = built.len();
        let nested = file.targets.clone();
        let names = [
            file.name.as_deref().map(str::to_ascii_lowercase),
            file.id.clone(),
        ];
        // Checked whether or not this upstream is refused for something else, so every
        // problem is reported at once.
        for key in names.iter().flatten() {
            if !seen.insert(key.clone()) {
                report.add(
                    format!("{path}.name"),
                    format!("duplicate upstream '{key}'"),
                );
            }
        }
        let Some(mut upstream) = build_upstream(file, &path, report) else {
            check_orphans(&path, nested, report);
            continue;
        };
        upstream.layer = layer;
        for key in names.into_iter().flatten() {
            keys.entry(key).or_insert(index);
        }
        keys.entry(upstream.id.clone()).or_insert(index);
        for (j, target) in nested.into_iter().enumerate() {
            target_items.push((format!("{path}.targets[{j}]"), target, Some(index), layer));
        }
        built.push(upstream);
    }
    for item in targets {
        target_items.push((item.path, item.value, None, item.layer));
    }
    for (path, value, parent, layer) in target_items {
        let Some(file) = parse_item::<TargetFile>(value, &path, report) else {
            continue;
        };
        let index = match (parent, file.upstream.as_ref().and_then(|r| r.key())) {
            (Some(_), Some(_)) => {
                report.add(
                    format!("{path}.upstream"),
                    "a nested target takes its upstream from its parent",
                );
                continue;
            }
            (Some(index), None) => index,
            (None, None) => {
                report.add(format!("{path}.upstream"), "required field missing");
                continue;
            }
            (None, Some(key)) => match keys.get(key) {
                Some(&index) => index,
                None => {
                    report.add(
                        format!("{path}.upstream"),
                        format!("no upstream named '{key}'"),
                    );
                    continue;
                }
            },
        };
        let upstream = &mut built[index];
        if let Some(mut target) = build_target(file, upstream, &path, report) {
            target.layer = layer;
            upstream.targets.push(target);
        }
    }
    for upstream in &mut built {
        if upstream.algorithm == Algorithm::ConsistentHashing {
            upstream.ring = ring(&upstream.targets, upstream.slots);
        }
    }
    (built, keys)
}

/// The raw `targets` list of an upstream item, if it has one.
fn nested_targets(upstream: &Value) -> Vec<Value> {
    match upstream.get("targets") {
        Some(Value::Sequence(targets)) => targets.clone(),
        _ => Vec::new(),
    }
}

/// A target's weight out of range, in Kong's words (its schema's `between`).
const WEIGHT_RANGE: &str = "value should be between 0 and 65535";

/// Checks the shape of a broken upstream's targets, so one pass reports them too.
fn check_orphans(path: &str, targets: Vec<Value>, report: &mut Report) {
    let mut seen = std::collections::HashSet::new();
    for (j, target) in targets.into_iter().enumerate() {
        let target_path = format!("{path}.targets[{j}]");
        if let Some(file) = parse_item::<TargetFile>(target, &target_path, report) {
            if file.weight.is_some_and(|w| !(0..=65_535).contains(&w)) {
                report.add(format!("{target_path}.weight"), WEIGHT_RANGE);
            }
            match file.target.as_deref() {
                None => report.add(format!("{target_path}.target"), "required field missing"),
                Some(text) => match split_host_port(text) {
                    None => report.add(format!("{target_path}.target"), invalid_target(text)),
                    Some((host, port)) if !seen.insert(format!("{host}:{port}")) => report.add(
                        format!("{target_path}.target"),
                        format!("duplicate target '{host}:{port}' in this upstream"),
                    ),
                    Some(_) => {}
                },
            }
        }
    }
}

fn build_upstream(file: UpstreamFile, path: &str, report: &mut Report) -> Option<Upstream> {
    let before = report.problems.len();
    let name = match &file.name {
        // Kong's words: a name, never an address (an upstream named `127.0.0.1` would
        // take every service whose host is that address) or one with a port.
        Some(name) if is_address(name) => {
            report.add(
                format!("{path}.name"),
                "Invalid name; no ip addresses allowed",
            );
            String::new()
        }
        Some(name) if name.contains(':') => {
            report.add(format!("{path}.name"), "Invalid name; no port allowed");
            String::new()
        }
        Some(name) if valid_host(name) => name.to_ascii_lowercase(),
        Some(name) => {
            report.add(
                format!("{path}.name"),
                format!("invalid name '{name}': must be a host name"),
            );
            String::new()
        }
        None => {
            report.add(format!("{path}.name"), "required field missing");
            String::new()
        }
    };
    // As Kong: without an algorithm, hashing on something means consistent hashing
    // (files from before `algorithm` existed say only `hash_on`).
    let hashing = file.hash_on.as_deref().is_some_and(|on| on != "none");
    let default_algorithm = if hashing {
        "consistent-hashing"
    } else {
        "round-robin"
    };
    let algorithm = match file.algorithm.as_deref().unwrap_or(default_algorithm) {
        "round-robin" => Algorithm::RoundRobin,
        "consistent-hashing" => Algorithm::ConsistentHashing,
        "least-connections" => Algorithm::LeastConnections,
        unsupported @ ("latency" | "sticky-sessions") => {
            report.add(
                format!("{path}.algorithm"),
                format!(
                    "the '{unsupported}' algorithm is not supported by this version of ringway"
                ),
            );
            Algorithm::RoundRobin
        }
        other => {
            report.add(
                format!("{path}.algorithm"),
                format!("unknown algorithm '{other}' (expected round-robin, consistent-hashing or least-connections)"),
            );
            Algorithm::RoundRobin
        }
    };
    if let Some(cookie_path) = file.hash_on_cookie_path.as_deref() {
        let at = format!("{path}.hash_on_cookie_path");
        if !cookie_path.starts_with('/') {
            report.add(at, "should start with: /");
        } else if cookie_path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b';' || b == b',' || b == b' ')
        {
            report.add(at, format!("invalid cookie path '{cookie_path}'"));
        }
    }
    let hash_on = hash_input(
        "hash_on",
        file.hash_on.as_deref(),
        HashFields {
            header: ("hash_on_header", file.hash_on_header.as_deref()),
            query_arg: ("hash_on_query_arg", file.hash_on_query_arg.as_deref()),
            cookie: file.hash_on_cookie.as_deref(),
            cookie_path: file.hash_on_cookie_path.as_deref(),
        },
        path,
        report,
    );
    let hash_fallback = hash_input(
        "hash_fallback",
        file.hash_fallback.as_deref(),
        HashFields {
            header: ("hash_fallback_header", file.hash_fallback_header.as_deref()),
            query_arg: (
                "hash_fallback_query_arg",
                file.hash_fallback_query_arg.as_deref(),
            ),
            // Kong's fallback cookie is `hash_on_cookie`.
            cookie: file.hash_on_cookie.as_deref(),
            cookie_path: file.hash_on_cookie_path.as_deref(),
        },
        path,
        report,
    );
    // Kong's rules: hashing needs the consistent-hashing algorithm, the fallback needs a
    // primary, a cookie has no fallback, and the fallback differs from the primary.
    if hash_on != HashOn::None && algorithm != Algorithm::ConsistentHashing {
        report.add(
            format!("{path}.hash_on"),
            "hashing needs algorithm 'consistent-hashing'",
        );
    }
    if hash_fallback != HashOn::None {
        if matches!(hash_on, HashOn::None | HashOn::Cookie { .. }) {
            report.add(
                format!("{path}.hash_fallback"),
                "a fallback needs hash_on other than 'none' or 'cookie'",
            );
        } else if hash_fallback == hash_on {
            report.add(format!("{path}.hash_fallback"), "must differ from hash_on");
        }
    }
    let slots = file.slots.unwrap_or(DEFAULT_SLOTS);
    if !(10..=65_536).contains(&slots) {
        report.add(
            format!("{path}.slots"),
            "value should be between 10 and 65536",
        );
    }
    if let Some(host) = &file.host_header {
        let valid = match split_host_port(host) {
            // `split_host_port` adds Kong's target port; a host header need not have one.
            Some(_) => !host.ends_with(':'),
            None => false,
        };
        if !valid {
            report.add(
                format!("{path}.host_header"),
                format!("invalid host '{host}': expected host[:port]"),
            );
        }
    }
    if file.client_certificate.is_some() {
        report.add(
            format!("{path}.client_certificate"),
            "client certificates are not supported by this version of ringway",
        );
    }
    // Their defaults (no cookie, `/`) are what any dump spells out; a cookie is sticky
    // sessions, which this version does not have.
    if file.sticky_sessions_cookie.is_some() {
        report.add(
            format!("{path}.sticky_sessions_cookie"),
            "sticky sessions are not supported by this version of ringway",
        );
    }
    if let Some(cookie_path) = file.sticky_sessions_cookie_path.as_deref() {
        if cookie_path != "/" {
            report.add(
                format!("{path}.sticky_sessions_cookie_path"),
                "sticky sessions are not supported by this version of ringway",
            );
        }
    }
    if file.use_srv_name == Some(true) {
        report.add(
            format!("{path}.use_srv_name"),
            "SRV names are not supported by this version of ringway",
        );
    }
    let checks = healthchecks(
        file.healthchecks.unwrap_or_default(),
        &format!("{path}.healthchecks"),
        report,
    );
    if report.problems.len() > before {
        return None;
    }
    let id = file.id.unwrap_or_else(|| stable_id("upstream", &name));
    Some(Upstream {
        id,
        name: name.into(),
        algorithm,
        hash_on,
        hash_fallback,
        hash_fields: HashFieldsGiven {
            hash_on_header: file.hash_on_header,
            hash_fallback_header: file.hash_fallback_header,
            hash_on_cookie: file.hash_on_cookie,
            hash_on_cookie_path: file.hash_on_cookie_path,
            hash_on_query_arg: file.hash_on_query_arg,
            hash_fallback_query_arg: file.hash_fallback_query_arg,
        },
        host_header: file.host_header,
        slots,
        targets: Vec::new(),
        ring: Vec::new(),
        checks,
        tags: file.tags,
        created_at: file.created_at.unwrap_or(0),
        layer: Layer::File,
    })
}

/// Whether an upstream name is an address as Kong's `hostname_type` reads it: any text
/// of digits and dots (`1234` too), or an IPv6 address, bracketed or not.
fn is_address(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || bare.parse::<std::net::Ipv6Addr>().is_ok()
}

/// The fields `hash_on` / `hash_fallback` may need, with the names of their own.
struct HashFields<'a> {
    header: (&'static str, Option<&'a str>),
    query_arg: (&'static str, Option<&'a str>),
    cookie: Option<&'a str>,
    cookie_path: Option<&'a str>,
}

/// An HTTP token (RFC 9110 §5.6.2): header, cookie and argument names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One of `hash_on` / `hash_fallback` (`which`) with the field it needs; a problem with
/// that field is said of it.
fn hash_input(
    which: &str,
    kind: Option<&str>,
    fields: HashFields<'_>,
    upstream: &str,
    report: &mut Report,
) -> HashOn {
    let needs = |(field, value): (&str, Option<&str>), what: &str, report: &mut Report| {
        let at = format!("{upstream}.{field}");
        match value {
            Some(v) if is_token(v) => v.to_owned(),
            Some(v) => {
                report.add(at, format!("invalid {what} name '{v}'"));
                String::new()
            }
            None => {
                report.add(at, format!("required field missing ({which} is '{what}')"));
                String::new()
            }
        }
    };
    match kind.unwrap_or("none") {
        "none" => HashOn::None,
        "consumer" => HashOn::Consumer,
        "ip" => HashOn::Ip,
        "path" => HashOn::Path,
        "header" => HashOn::Header(needs(fields.header, "header", report).to_ascii_lowercase()),
        "query_arg" => HashOn::QueryArg(needs(fields.query_arg, "query_arg", report)),
        "cookie" => HashOn::Cookie {
            name: needs(("hash_on_cookie", fields.cookie), "cookie", report),
            path: fields.cookie_path.unwrap_or("/").to_owned(),
        },
        "uri_capture" => {
            report.add(
                format!("{upstream}.{which}"),
                "hashing on 'uri_capture' is not supported by this version of ringway",
            );
            HashOn::None
        }
        other => {
            report.add(
                format!("{upstream}.{which}"),
                format!("unknown value '{other}' (expected none, consumer, ip, header, cookie, path or query_arg)"),
            );
            HashOn::None
        }
    }
}

fn healthchecks(file: HealthchecksFile, path: &str, report: &mut Report) -> Healthchecks {
    let counter = |value: Option<u32>, field: &str, report: &mut Report| {
        let value = value.unwrap_or(0);
        if value > MAX_COUNTER {
            report.add(
                format!("{path}.{field}"),
                format!("value should be between 0 and {MAX_COUNTER}"),
            );
        }
        value
    };
    let statuses = |value: Option<Vec<u16>>, default: &[u16], field: &str, report: &mut Report| {
        let list = value.unwrap_or_else(|| default.to_vec());
        for (i, s) in list.iter().enumerate() {
            if !(100..=999).contains(s) {
                report.add(
                    format!("{path}.{field}[{i}]"),
                    "value should be between 100 and 999",
                );
            }
        }
        StatusSet::of(&list)
    };
    let seconds = |value: Option<f64>, default: f64, field: &str, report: &mut Report| {
        let value = value.unwrap_or(default);
        if !(0.0..=65_535.0).contains(&value) {
            report.add(
                format!("{path}.{field}"),
                "value should be between 0 and 65535",
            );
            return Duration::ZERO;
        }
        Duration::from_secs_f64(value)
    };

    let p = file.passive;
    let tcp_only = match p.kind.as_deref().unwrap_or("http") {
        "http" => false,
        "tcp" => true,
        other => {
            report.add(
                format!("{path}.passive.type"),
                format!("unsupported type '{other}' (expected http or tcp)"),
            );
            false
        }
    };
    let passive = Passive {
        tcp_only,
        healthy_statuses: statuses(
            p.healthy.http_statuses,
            PASSIVE_HEALTHY,
            "passive.healthy.http_statuses",
            report,
        ),
        successes: counter(p.healthy.successes, "passive.healthy.successes", report),
        unhealthy_statuses: statuses(
            p.unhealthy.http_statuses,
            PASSIVE_UNHEALTHY,
            "passive.unhealthy.http_statuses",
            report,
        ),
        tcp_failures: counter(
            p.unhealthy.tcp_failures,
            "passive.unhealthy.tcp_failures",
            report,
        ),
        timeouts: counter(p.unhealthy.timeouts, "passive.unhealthy.timeouts", report),
        http_failures: counter(
            p.unhealthy.http_failures,
            "passive.unhealthy.http_failures",
            report,
        ),
    };

    let a = file.active;
    let tcp_only = match a.kind.as_deref().unwrap_or("http") {
        "http" => false,
        "tcp" => true,
        other => {
            report.add(
                format!("{path}.active.type"),
                format!(
                    "unsupported type '{other}' (this version of ringway probes with http or tcp)"
                ),
            );
            false
        }
    };
    let http_path = a.http_path.unwrap_or_else(|| "/".to_owned());
    if !http_path.starts_with('/') || http_path.bytes().any(|b| b == b' ' || b.is_ascii_control()) {
        report.add(
            format!("{path}.active.http_path"),
            format!("invalid path {http_path:?}"),
        );
    }
    let mut headers = Vec::new();
    for (name, values) in a.headers.unwrap_or_default() {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
        let bad_value = |v: &String| v.bytes().any(|b| b.is_ascii_control() && b != b'\t');
        if !valid || values.iter().any(bad_value) {
            report.add(
                format!("{path}.active.headers.{name}"),
                "invalid header name or value",
            );
        }
        for value in values {
            headers.push((name.clone(), value));
        }
    }
    let concurrency = a.concurrency.unwrap_or(10);
    if concurrency == 0 {
        report.add(format!("{path}.active.concurrency"), "must be at least 1");
    }
    let timeout = seconds(a.timeout, 1.0, "active.timeout", report);
    if timeout.is_zero() && a.timeout.is_some_and(|t| t == 0.0) {
        report.add(format!("{path}.active.timeout"), "must be greater than 0");
    }
    if concurrency > 64 {
        report.add(
            format!("{path}.active.concurrency"),
            "must be between 1 and 64 in this version of ringway",
        );
    }
    let active = Active {
        tcp_only,
        timeout,
        concurrency: concurrency.clamp(1, 64) as usize,
        http_path,
        headers,
        https_sni: a.https_sni,
        https_verify_certificate: a.https_verify_certificate.unwrap_or(true),
        healthy_interval: seconds(a.healthy.interval, 0.0, "active.healthy.interval", report),
        healthy_statuses: statuses(
            a.healthy.http_statuses,
            ACTIVE_HEALTHY,
            "active.healthy.http_statuses",
            report,
        ),
        successes: counter(a.healthy.successes, "active.healthy.successes", report),
        unhealthy_interval: seconds(
            a.unhealthy.interval,
            0.0,
            "active.unhealthy.interval",
            report,
        ),
        unhealthy_statuses: statuses(
            a.unhealthy.http_statuses,
            ACTIVE_UNHEALTHY,
            "active.unhealthy.http_statuses",
            report,
        ),
        tcp_failures: counter(
            a.unhealthy.tcp_failures,
            "active.unhealthy.tcp_failures",
            report,
        ),
        timeouts: counter(a.unhealthy.timeouts, "active.unhealthy.timeouts", report),
        http_failures: counter(
            a.unhealthy.http_failures,
            "active.unhealthy.http_failures",
            report,
        ),
    };
    let threshold = file.threshold.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&threshold) {
        report.add(
            format!("{path}.threshold"),
            "value should be between 0 and 100",
        );
    }
    Healthchecks {
        passive,
        active,
        threshold,
    }
}

fn build_target(
    file: TargetFile,
    upstream: &Upstream,
    path: &str,
    report: &mut Report,
) -> Option<Target> {
    let Some(text) = file.target.as_deref() else {
        report.add(format!("{path}.target"), "required field missing");
        return None;
    };
    let Some((host, port)) = split_host_port(text) else {
        report.add(format!("{path}.target"), invalid_target(text));
        return None;
    };
    let weight = file.weight.map_or(Ok(DEFAULT_WEIGHT), u32::try_from);
    let Some(weight) = weight.ok().filter(|w| *w <= 65_535) else {
        report.add(format!("{path}.weight"), WEIGHT_RANGE);
        return None;
    };
    let target = format!("{host}:{port}");
    if upstream.targets.iter().any(|t| t.target == target) {
        report.add(
            format!("{path}.target"),
            format!(
                "duplicate target '{target}' in upstream '{}'",
                upstream.name
            ),
        );
        return None;
    }
    // A name is looked up once the whole config is built (`lookup::fill`).
    let addr = super::lookup::literal(&host, port);
    // With its port always: whether the port goes out depends on the scheme of the
    // service sending to it, known per request.
    let host_header = format!("{host}:{port}");
    let id = file
        .id
        .unwrap_or_else(|| stable_id("target", &format!("{}/{target}", upstream.name)));
    let tls_host = upstream
        .host_header
        .as_deref()
        .and_then(split_host_port)
        .map_or_else(|| host.clone(), |(h, _)| h);
    let server_name = rustls::pki_types::ServerName::try_from(
        tls_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .ok();
    // By ids: a reload keeps a target's health, a target (or upstream) deleted and
    // created again starts healthy, as Kong's does.
    let health = balance::health_of(&upstream.id, &id);
    Some(Target {
        id,
        server_name,
        health,
        addr_text: addr.map(|a| a.to_string()).unwrap_or_default(),
        addr,
        target,
        host,
        port,
        weight,
        host_header,
        tags: file.tags,
        created_at: file.created_at.map_or(0, |t| t as u64),
        layer: Layer::File,
    })
}

/// What is said of a target `split_host_port` does not take.
fn invalid_target(text: &str) -> String {
    format!("invalid target '{text}': expected host[:port], a port from 1 to 65535")
}

/// `host[:port]` with Kong's default port; IPv6 in brackets.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    // As Kong: an IPv6 address without brackets is a target with the default port.
    if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
        return Some((format!("[{ip}]"), DEFAULT_TARGET_PORT));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{ip}]"), port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        }
    };
    let port = match port {
        None => DEFAULT_TARGET_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    Some((canonical_host(&host)?, port))
}

/// The most points a ring holds (16 bytes each): hundreds of targets at the largest
/// weights would otherwise take gigabytes, rebuilt at every config change.
const MAX_RING_POINTS: u64 = 1 << 20;

/// The consistent-hashing ring, as ketama builds one: each target gets points in
/// proportion to its own weight (160 at the default weight of 100, at most `slots`),
/// placed by hashing `target#n`. A target's points do not depend on the others', so
/// adding or removing one moves only the keys of its points, unless the ring would
/// exceed [`MAX_RING_POINTS`]: then every target's share is scaled down alike.
fn ring(targets: &[Target], slots: u32) -> Vec<(u64, u32)> {
    let points_of = |t: &Target| {
        (u64::from(t.weight) * 160)
            .div_ceil(100)
            .min(u64::from(slots))
    };
    let total: u64 = targets.iter().map(points_of).sum();
    let mut ring = Vec::with_capacity(total.min(MAX_RING_POINTS) as usize);
    for (i, t) in targets.iter().enumerate() {
        if t.weight == 0 {
            continue;
        }
        let mut points = points_of(t);
        if total > MAX_RING_POINTS {
            points = (points * MAX_RING_POINTS / total).max(1);
        }
        let mut key = format!("{}#", t.target);
        let stem = key.len();
        for n in 0..points {
            key.truncate(stem);
            key.push_str(itoa::Buffer::new().format(n));
            ring.push((balance::hash64(key.as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_to_kong_port_and_take_ipv6() {
        assert_eq!(split_host_port("10.0.0.1"), Some(("10.0.0.1".into(), 8000)));
        assert_eq!(
            split_host_port("a.example:81"),
            Some(("a.example".into(), 81))
        );
        assert_eq!(split_host_port("[::1]:9000"), Some(("[::1]".into(), 9000)));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]".into(), 8000)));
        assert_eq!(split_host_port("a:0"), None);
        assert_eq!(split_host_port("a:x"), None);
        assert_eq!(split_host_port("a b:80"), None);
        assert_eq!(split_host_port("[::1]x"), None);
        // As Kong: a bare IPv6 address takes the default port; a dotted quad is read in
        // decimal whatever its zeros (the C resolver would read `010` as octal).
        assert_eq!(split_host_port("::1"), Some(("[::1]".into(), 8000)));
        assert_eq!(
            split_host_port("012.034.056.078"),
            Some(("12.34.56.78".into(), 8000))
        );
        assert_eq!(
            split_host_port("01.02.03.04:123"),
            Some(("1.2.3.4".into(), 123))
        );
        assert_eq!(split_host_port("1.2.3.256"), None);
        assert_eq!(
            split_host_port("Pool.EXAMPLE:81"),
            Some(("pool.example".into(), 81))
        );
    }

    #[test]
    fn status_sets_hold_exactly_their_members() {
        let set = StatusSet::of(&[429, 500, 503]);
        assert!(set.contains(500) && set.contains(429) && set.contains(503));
        assert!(!set.contains(502) && !set.contains(200) && !set.contains(1023));
        assert!(!set.contains(5000));
    }
}
