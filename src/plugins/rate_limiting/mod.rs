//! `rate-limiting`: Kong's config fields, with a token bucket per key instead of Kong's
//! fixed windows (SPEC §4). The buckets live in [`limiter`]: one shared, lock-free
//! bucket per key, from which each worker leases tokens so that the per-request check
//! touches only the worker's own state. [`redis`] shares the buckets between ringway
//! instances in the background. docs/rate-limiting.md states the guarantees.

pub mod limiter;
pub mod redis;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use limiter::{Decision, Local, Store};

/// Kong's periods, shortest first. Month and year are fixed lengths, as Kong's
/// expiration table has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Period {
    pub const ALL: [Period; 6] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
        Period::Year,
    ];

    pub fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3_600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// The suffix of `X-RateLimit-Limit-<Period>`.
    pub fn title(self) -> &'static str {
        match self {
            Period::Second => "Second",
            Period::Minute => "Minute",
            Period::Hour => "Hour",
            Period::Day => "Day",
            Period::Month => "Month",
            Period::Year => "Year",
        }
    }
}

/// What identifies the client a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    /// The header's value (name lower-cased).
    Header(String),
    /// Requests to exactly this path share a bucket.
    Path(String),
}

/// Where the counts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Local,
    Redis(redis::Settings),
}

/// Kong's `redis` block (its fields are also accepted flat, as the legacy `redis_*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub host: Option<String>,
    #[serde(default = "default_redis_port", deserialize_with = "port_or_default")]
    pub port: u16,
    #[serde(
        default = "default_redis_timeout",
        deserialize_with = "timeout_or_default"
    )]
    pub timeout: u64,
    pub connect_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub database: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl_verify: bool,
    pub server_name: Option<String>,
}

/// Kong's defaults, as a block left out or given empty reads.
impl Default for RedisFile {
    fn default() -> Self {
        RedisFile {
            host: None,
            port: default_redis_port(),
            timeout: default_redis_timeout(),
            connect_timeout: None,
            send_timeout: None,
            read_timeout: None,
            username: None,
            password: None,
            database: 0,
            ssl: false,
            ssl_verify: false,
            server_name: None,
        }
    }
}

fn default_redis_port() -> u16 {
    6379
}
fn default_redis_timeout() -> u64 {
    2000
}

// Kong's exports write `null` for what was left unset (a `policy: local` plugin's
// `redis.port`): read as the default.
fn port_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_else(default_redis_port))
}
fn timeout_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_else(default_redis_timeout))
}
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::deserialize(d)?.unwrap_or_default())
}
fn default_limit_by() -> String {
    "consumer".into()
}
fn default_policy() -> String {
    "local".into()
}
fn default_error_code() -> u16 {
    429
}
fn default_error_message() -> String {
    "API rate limit exceeded".into()
}
fn default_sync_rate() -> f64 {
    -1.0
}
fn yes() -> bool {
    true
}

/// The plugin's `config`, as Kong names and defaults it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(serialize_with = "whole")]
    pub second: Option<f64>,
    #[serde(serialize_with = "whole")]
    pub minute: Option<f64>,
    #[serde(serialize_with = "whole")]
    pub hour: Option<f64>,
    #[serde(serialize_with = "whole")]
    pub day: Option<f64>,
    #[serde(serialize_with = "whole")]
    pub month: Option<f64>,
    #[serde(serialize_with = "whole")]
    pub year: Option<f64>,
    #[serde(default = "default_limit_by")]
    pub limit_by: String,
    pub header_name: Option<String>,
    pub path: Option<String>,
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    #[serde(default = "default_error_code")]
    pub error_code: u16,
    #[serde(default = "default_error_message")]
    pub error_message: String,
    #[serde(default = "default_sync_rate", serialize_with = "whole_or_not")]
    pub sync_rate: f64,
    pub redis: Option<RedisFile>,
    // Kong 2.x / early 3.x spelled the Redis settings flat; still accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_database: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ssl: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ssl_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_server_name: Option<String>,
}

/// Kong's shorthand fields for the `redis` record, and the field each stands for.
pub const REDIS_SHORTHANDS: [(&str, &str); 9] = [
    ("redis_host", "host"),
    ("redis_port", "port"),
    ("redis_username", "username"),
    ("redis_password", "password"),
    ("redis_database", "database"),
    ("redis_timeout", "timeout"),
    ("redis_ssl", "ssl"),
    ("redis_ssl_verify", "ssl_verify"),
    ("redis_server_name", "server_name"),
];

/// After a shown configuration's vault references were put back in place of their
/// values (at the spelling they were given in): the same reference in the other
/// spelling too, which `shown` filled with the value.
pub fn show_references_in_both_spellings(json: &mut serde_json::Value) {
    for (shorthand, field) in REDIS_SHORTHANDS {
        let is_reference =
            |v: &serde_json::Value| v.as_str().is_some_and(|s| s.starts_with("{vault://"));
        let reference = [&json[shorthand], &json["redis"][field]]
            .into_iter()
            .find(|v| is_reference(v))
            .cloned();
        if let Some(reference) = reference {
            json[shorthand] = reference.clone();
            json["redis"][field] = reference;
        }
    }
}

/// The Redis settings a configuration gives in both spellings with different values as
/// written (a vault reference is not its value: Kong compares what is written, so one
/// spelling cannot hold a secret's value beside the other's reference).
pub fn spellings_disagree(config: &serde_json::Value) -> Vec<&'static str> {
    REDIS_SHORTHANDS
        .iter()
        .filter(|(shorthand, field)| {
            let flat = config.get(*shorthand).filter(|v| !v.is_null());
            let record = config
                .get("redis")
                .and_then(|r| r.get(*field))
                .filter(|v| !v.is_null());
            flat.zip(record)
                .is_some_and(|(flat, record)| flat != record)
        })
        .map(|(_, field)| *field)
        .collect()
}

/// Moves a configuration's (or a PATCH's) shorthand `redis_*` fields into its `redis`
/// record, as Kong stores them.
pub fn fold_shorthands(config: &mut serde_json::Value) {
    let Some(object) = config.as_object_mut() else {
        return;
    };
    for (shorthand, field) in REDIS_SHORTHANDS {
        // Both spellings saying different things stay as they are, to be refused as a
        // create refuses them.
        let differs = object
            .get("redis")
            .and_then(|redis| redis.get(field))
            .zip(object.get(shorthand))
            .is_some_and(|(record, flat)| record != flat);
        if differs {
            continue;
        }
        if let Some(value) = object.remove(shorthand) {
            let redis = object
                .entry("redis")
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !redis.is_object() {
                *redis = serde_json::Value::Object(Default::default());
            }
            if let Some(redis) = redis.as_object_mut() {
                redis.insert(field.into(), value);
            }
        }
    }
}

/// A host as a service's (`config::valid_host`), or an IPv6 address unbracketed.
fn is_host(host: &str) -> bool {
    crate::config::valid_host(host) || host.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Limits print as Kong prints them: `100`, not `100.0`.
fn whole<S: serde::Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => whole_or_not(v, s),
        None => s.serialize_none(),
    }
}

/// A number as Kong prints it: `-1`, `0.5`.
fn whole_or_not<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        s.serialize_i64(*value as i64)
    } else {
        s.serialize_f64(*value)
    }
}

/// One configured period: its limit and the bucket's emission interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub period: Period,
    pub limit: u64,
    /// Nanoseconds between two tokens: the period divided by the limit.
    pub interval: u64,
}

impl Limit {
    pub fn new(period: Period, limit: u64) -> Limit {
        let period_ns = period.seconds() * 1_000_000_000;
        Limit {
            period,
            limit,
            interval: (period_ns / limit.max(1)).max(1),
        }
    }

    /// How far ahead of now the bucket may be drawn: `limit` tokens' worth.
    pub fn capacity(&self) -> u64 {
        self.interval.saturating_mul(self.limit)
    }
}

/// A validated `rate-limiting` configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shortest period first; at least one.
    pub limits: Vec<Limit>,
    pub limit_by: LimitBy,
    pub policy: Policy,
    pub fault_tolerant: bool,
    pub hide_client_headers: bool,
    pub error_code: u16,
    pub error_message: String,
    /// Identifies the plugin instance in bucket keys (derived from the plugin's id, so
    /// it is the same across reloads and on every ringway instance).
    pub instance: u64,
}

/// Kong's plugin-level problem beside a `limit_by` whose field is missing.
const LIMIT_BY_CONDITION: &str =
    "failed conditional validation given value of field 'config.limit_by'";

impl ConfigFile {
    /// Validates the config; problems are `(field, message)`.
    pub fn validate(self) -> Result<Config, Vec<(String, String)>> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut limits = Vec::new();
        let given = [
            self.second,
            self.minute,
            self.hour,
            self.day,
            self.month,
            self.year,
        ];
        for (period, value) in Period::ALL.into_iter().zip(given) {
            let Some(value) = value else { continue };
            // Kong's schema check first; then what a bucket of whole tokens needs.
            if value <= 0.0 || value.is_nan() {
                problems.push((period.name().into(), "value must be greater than 0".into()));
                continue;
            }
            if !(value >= 1.0 && value.fract() == 0.0 && value <= 1e15) {
                problems.push((
                    period.name().into(),
                    format!("must be a whole number from 1 to 10^15 (got {value})"),
                ));
                continue;
            }
            limits.push(Limit::new(period, value as u64));
        }
        if limits.is_empty() && problems.is_empty() {
            // Kong's entity check, reported on the plugin itself (an empty field).
            problems.push((
                String::new(),
                "at least one of these fields must be non-empty: 'config.second', \
                 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"
                    .into(),
            ));
        }
        // Kong's record check, on `config` itself, and the first pair out of order only.
        if let Some(pair) = limits.windows(2).find(|pair| pair[1].limit < pair[0].limit) {
            let (shorter, longer) = (pair[0], pair[1]);
            // Kong's words (its `%.1f` of whole numbers).
            problems.push((
                ".".into(),
                format!(
                    "The limit for {}({}.0) cannot be lower than the limit for {}({}.0)",
                    longer.period.name(),
                    longer.limit,
                    shorter.period.name(),
                    shorter.limit
                ),
            ));
        }
        let limit_by = match self.limit_by.as_str() {
            "consumer" => Some(LimitBy::Consumer),
            "credential" => Some(LimitBy::Credential),
            "ip" => Some(LimitBy::Ip),
            "service" => Some(LimitBy::Service),
            "header" => match self.header_name.as_deref() {
                Some(name) if !name.is_empty() && name.bytes().all(crate::http::is_token_byte) => {
                    Some(LimitBy::Header(crate::http::header_key(name)))
                }
                Some(name) if !name.is_empty() => {
                    problems.push((
                        "header_name".into(),
                        format!("invalid header name '{name}'"),
                    ));
                    None
                }
                // Kong's schema says it so: a conditional on `limit_by`, on the plugin,
                // and the field's own problem.
                _ => {
                    problems.push((String::new(), LIMIT_BY_CONDITION.into()));
                    problems.push(("header_name".into(), "required field missing".into()));
                    None
                }
            },
            "path" => match self.path.as_deref() {
                // Compared with the request's path as routing normalized it: one that is
                // not in that form would never match, and every request would count
                // against its address instead.
                Some(path) if path.starts_with('/') => match crate::config::prefix_path(path) {
                    Ok(normal) => Some(LimitBy::Path(normal)),
                    Err(problem) => {
                        problems.push(("path".into(), problem));
                        None
                    }
                },
                Some(path) => {
                    problems.push(("path".into(), format!("must start with '/' (got '{path}')")));
                    None
                }
                None => {
                    problems.push((String::new(), LIMIT_BY_CONDITION.into()));
                    problems.push(("path".into(), "required field missing".into()));
                    None
                }
            },
            other => {
                problems.push((
                    "limit_by".into(),
                    format!(
                        "expected one of: consumer, credential, ip, service, header, path (got '{other}')"
                    ),
                ));
                None
            }
        };
        // The refusal carries a body: a status that cannot (1xx, 204, 304) would frame
        // the connection wrongly (RFC 9112 §6.3).
        if !(200..=599).contains(&self.error_code) || matches!(self.error_code, 204 | 205 | 304) {
            problems.push((
                "error_code".into(),
                format!(
                    "must be an HTTP status between 200 and 599 that carries a body, not 204, 205 or 304 (got {})",
                    self.error_code
                ),
            ));
        }
        // Kong's checks and words; past them, a value must be a duration at all.
        if self.sync_rate != -1.0 {
            let problem = if self.policy != "redis" {
                Some("sync_rate can only be used with the redis policy".to_owned())
            } else if self.sync_rate < 0.02 {
                Some("sync_rate must be greater than 0.02, or -1 to disable".to_owned())
            } else if Duration::try_from_secs_f64(self.sync_rate).is_err() {
                Some(format!("sync_rate {} is not a duration", self.sync_rate))
            } else {
                None
            };
            if let Some(problem) = problem {
                problems.push(("sync_rate".into(), problem));
            }
        }
        let redis = self.redis_settings(&mut problems);
        let policy = match self.policy.as_str() {
            "local" => Some(Policy::Local),
            "redis" => redis.map(Policy::Redis),
            "cluster" => {
                problems.push((
                    "policy".into(),
                    "'cluster' needs Kong's database, which ringway does not have: use 'local' or 'redis'"
                        .into(),
                ));
                None
            }
            other => {
                problems.push((
                    "policy".into(),
                    format!("expected one of: local, redis (got '{other}')"),
                ));
                None
            }
        };
        match (problems.is_empty(), limit_by, policy) {
            (true, Some(limit_by), Some(policy)) => Ok(Config {
                limits,
                limit_by,
                policy,
                fault_tolerant: self.fault_tolerant,
                hide_client_headers: self.hide_client_headers,
                error_code: self.error_code,
                error_message: self.error_message,
                instance: 0,
            }),
            _ => Err(problems),
        }
    }

    /// The `redis` block as it reads: the one given, or Kong's defaults with the legacy
    /// flat fields laid over them; and the fields on which a given block and flat fields
    /// disagree.
    fn redis_block(&self) -> (RedisFile, Vec<&'static str>) {
        // The legacy flat fields fill a missing block; beside a block (a dump taken
        // through Kong's Admin API shows both spellings) they must say the same.
        let given = self.redis.is_some();
        let mut block = self.redis.clone().unwrap_or_default();
        let mut disagree = Vec::new();
        fn merge<T: PartialEq>(
            slot: &mut T,
            flat: Option<T>,
            field: &'static str,
            given: bool,
            disagree: &mut Vec<&'static str>,
        ) {
            match flat {
                Some(flat) if !given => *slot = flat,
                Some(flat) if *slot != flat => disagree.push(field),
                _ => {}
            }
        }
        let d = &mut disagree;
        merge(
            &mut block.host,
            self.redis_host.clone().map(Some),
            "host",
            given,
            d,
        );
        merge(&mut block.port, self.redis_port, "port", given, d);
        merge(
            &mut block.username,
            self.redis_username.clone().map(Some),
            "username",
            given,
            d,
        );
        merge(
            &mut block.password,
            self.redis_password.clone().map(Some),
            "password",
            given,
            d,
        );
        merge(
            &mut block.database,
            self.redis_database,
            "database",
            given,
            d,
        );
        merge(&mut block.timeout, self.redis_timeout, "timeout", given, d);
        merge(&mut block.ssl, self.redis_ssl, "ssl", given, d);
        merge(
            &mut block.ssl_verify,
            self.redis_ssl_verify,
            "ssl_verify",
            given,
            d,
        );
        let server_name = self.redis_server_name.clone().map(Some);
        merge(&mut block.server_name, server_name, "server_name", given, d);
        (block, disagree)
    }

    /// The configuration as the Admin API shows it, as Kong 3.6.1 on shows it: the
    /// `redis` record always whole, given or not, and each shorthand `redis_*` field
    /// beside it with the record's value (decK lines the two spellings up by them).
    pub fn shown(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self).unwrap_or_default();
        let redis = serde_json::to_value(self.redis_block().0).unwrap_or_default();
        if let Some(object) = json.as_object_mut() {
            for (shorthand, field) in REDIS_SHORTHANDS {
                object.insert(shorthand.into(), redis[field].clone());
            }
        }
        json["redis"] = redis;
        json
    }

    /// The Redis settings from the `redis` block or the legacy flat fields; `None` with
    /// a problem when `policy: redis` lacks a host.
    fn redis_settings(&self, problems: &mut Vec<(String, String)>) -> Option<redis::Settings> {
        let (block, disagree) = self.redis_block();
        if !disagree.is_empty() {
            problems.push((
                "redis".into(),
                format!(
                    "the 'redis' block and the legacy 'redis_*' fields disagree on {}",
                    disagree.join(", ")
                ),
            ));
            return None;
        }
        // As Kong's host type: a name or an address, nothing around it (a URL would carry
        // a password into every line that names the server).
        if block
            .host
            .as_deref()
            .is_some_and(|h| !h.is_empty() && !is_host(h))
        {
            // Named where it was written: the shorthand, or the record.
            let field = if self.redis.is_some() || self.redis_host.is_none() {
                "redis.host"
            } else {
                "redis_host"
            };
            problems.push((
                field.into(),
                "must be a host name or an IP address (the port goes in redis.port, \
                 credentials in redis.username and redis.password)"
                    .into(),
            ));
            return None;
        }
        if self.policy != "redis" {
            return None;
        }
        let Some(host) = block.host.clone().filter(|h| !h.is_empty()) else {
            problems.push((
                "redis.host".into(),
                "required when policy is 'redis'".into(),
            ));
            return None;
        };
        if block.ssl {
            problems.push((
                "redis.ssl".into(),
                "TLS to Redis is not supported yet (reach Redis over a private network or a local TLS tunnel)"
                    .into(),
            ));
            return None;
        }
        if block.timeout == 0 || block.timeout > 60_000 {
            problems.push((
                "redis.timeout".into(),
                "must be between 1 and 60000 milliseconds".into(),
            ));
            return None;
        }
        let timeout = |ms: Option<u64>| Duration::from_millis(ms.unwrap_or(block.timeout).max(1));
        // An IPv6 address goes in brackets before its port.
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host
        };
        let health = redis::health(&redis::login(
            &format!("{host}:{}/{}", block.port, block.database),
            block.username.as_deref(),
            block.password.as_deref(),
        ));
        Some(redis::Settings {
            host,
            port: block.port,
            username: block.username,
            password: block.password,
            database: block.database,
            connect_timeout: timeout(block.connect_timeout),
            io_timeout: timeout(block.read_timeout.max(block.send_timeout)),
            // (A value no duration holds is refused beside this.)
            sync_interval: Duration::try_from_secs_f64(self.sync_rate)
                .ok()
                .filter(|interval| !interval.is_zero())
                .unwrap_or(redis::DEFAULT_SYNC_INTERVAL),
            health,
        })
    }
}

/// A u64 derived from a plugin's id, stable across restarts and instances.
pub fn instance_of(plugin_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(plugin_id.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The rate-limit headers of one request, written into the response head (or the
/// rejection). Fixed-size so a routed exchange carries it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headers {
    count: u8,
    periods: [u8; 6],
    limits: [u64; 6],
    remaining: [u64; 6],
    /// Index (into the arrays) of the most restrictive period.
    tightest: u8,
    /// Seconds until the tightest bucket is full again.
    reset: u64,
    /// Seconds until a token is available (rejections only).
    retry_after: u64,
}

impl Headers {
    pub fn push(&mut self, period: Period, limit: u64, remaining: u64) {
        let i = usize::from(self.count);
        if i >= 6 {
            return;
        }
        self.periods[i] = period as u8;
        self.limits[i] = limit;
        self.remaining[i] = remaining;
        self.count += 1;
    }

    /// Marks the most restrictive period: the lowest remaining, ties going to the
    /// longer period (they are pushed shortest first).
    pub fn finish(&mut self, reset: impl Fn(usize) -> u64, retry_after: u64) {
        let mut best = 0;
        for i in 1..usize::from(self.count) {
            if self.remaining[i] <= self.remaining[best] {
                best = i;
            }
        }
        self.tightest = best as u8;
        self.reset = reset(best).max(1);
        self.retry_after = retry_after.max(1);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn retry_after(&self) -> u64 {
        self.retry_after
    }

    /// Appends the header lines (each ending in CRLF).
    pub fn write(&self, out: &mut Vec<u8>, rejected: bool) {
        use crate::http::generated::write_u64;
        for i in 0..usize::from(self.count) {
            let title = Period::ALL[usize::from(self.periods[i])].title();
            out.extend_from_slice(b"X-RateLimit-Limit-");
            out.extend_from_slice(title.as_bytes());
            out.extend_from_slice(b": ");
            write_u64(out, self.limits[i]);
            out.extend_from_slice(b"\r\nX-RateLimit-Remaining-");
            out.extend_from_slice(title.as_bytes());
            out.extend_from_slice(b": ");
            write_u64(out, self.remaining[i]);
            out.extend_from_slice(b"\r\n");
        }
        if self.count == 0 {
            return;
        }
        let t = usize::from(self.tightest);
        out.extend_from_slice(b"RateLimit-Limit: ");
        write_u64(out, self.limits[t]);
        out.extend_from_slice(b"\r\nRateLimit-Remaining: ");
        write_u64(out, self.remaining[t]);
        out.extend_from_slice(b"\r\nRateLimit-Reset: ");
        write_u64(out, self.reset);
        out.extend_from_slice(b"\r\n");
        if rejected {
            out.extend_from_slice(b"Retry-After: ");
            write_u64(out, self.retry_after);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Whether an upstream response header is one the plugin sets (and so replaces).
pub fn is_rate_limit_header(name: &str) -> bool {
    let lower = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    lower("x-ratelimit-") || lower("ratelimit-")
}
