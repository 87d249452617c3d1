//! The `ringway:` node section: listeners, workers, limits and timeouts.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use log::LevelFilter;
use serde_norway::Value;

use super::file::NodeFile;
use super::{parse_settings, Report};

pub const DEFAULT_PROXY_LISTEN: &str = "0.0.0.0:8000";
pub const DEFAULT_PROXY_LISTEN_SSL: &str = "0.0.0.0:8443 ssl";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8001";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_MAX_CONNECTIONS: u64 = 100_000;
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: u64 = 100_000;
pub const DEFAULT_METRICS_LABEL_LIMIT: u64 = 1_000;
pub const DEFAULT_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_UPSTREAM_KEEPALIVE_MAX_IDLE: u64 = 256;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_CLIENT_BODY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
/// nginx's `send_timeout`: between two writes of a response to a client.
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: u64 = 8192;
pub const DEFAULT_MAX_HEADER_LINE_BYTES: u64 = 8192;
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32_768;
pub const DEFAULT_MAX_HEADERS: u64 = 100;
/// The parser keeps header slots on the stack; more than this cannot be configured.
pub const MAX_HEADERS_LIMIT: u64 = 512;
/// A head larger than this is never buffered, whatever the config says.
pub const MAX_HEAD_BYTES_LIMIT: u64 = 1 << 20;

/// Which io driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel supports it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub backlog: u32,
    /// A TLS listener (`ssl` flag, as in Kong).
    pub ssl: bool,
}

/// The access log's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    File(PathBuf),
}

/// Request-head limits, enforced before a request is parsed further.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_line_bytes: usize,
    pub max_header_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// Validated node settings.
#[derive(Debug, Clone)]
pub struct Node {
    pub proxy_listen: Vec<Listen>,
    pub admin_listen: SocketAddr,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub trusted_ips: Vec<IpNet>,
    pub max_connections: usize,
    /// How many rate-limiting buckets (plugin instance × client) the process keeps.
    pub rate_limit_max_keys: usize,
    /// Distinct values a metrics label (consumer, service, route) takes before the rest
    /// fold into `other`.
    pub metrics_label_limit: usize,
    /// Add `X-Kong-Upstream-Latency` and `X-Kong-Proxy-Latency` to proxied responses.
    pub latency_headers: bool,
    /// Where access log lines go; `None` is off.
    pub access_log: Option<AccessLog>,
    /// `ssl_cert` + `ssl_cert_key`: the certificate for handshakes no SNI matches.
    pub default_certificate: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
    pub upstream_keepalive_idle_timeout: Duration,
    pub upstream_keepalive_max_idle: usize,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// A client that takes no response bytes for this long is closed (nginx's
    /// `send_timeout`).
    pub send_timeout: Duration,
    pub drain_timeout: Duration,
    pub limits: Limits,
    pub log_level: LevelFilter,
    pub driver: Driver,
}

impl Node {
    /// Whether a client address is in `trusted_ips`.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_ips.iter().any(|net| net.contains(&ip))
    }
}

/// Command-line flags that override the file's `ringway:` section.
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    pub proxy_listen: Vec<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<u64>,
    pub data_dir: Option<String>,
    pub log_level: Option<String>,
    /// `--takeover`: bind next to a running ringway (binary upgrade), not a setting.
    pub takeover: bool,
}

/// `certificates` says whether the file declares `certificates` (a TLS listener needs
/// them or `ssl_cert`).
///
/// A setting a flag overrides is still checked as the file has it, as `ringway check`
/// (which takes no flags) does: otherwise a reload or `POST /config` would take, and
/// write, a file that the next start without the flag refuses.
pub(super) fn build(
    value: Option<Value>,
    overrides: &NodeOverrides,
    certificates: bool,
    report: &mut Report,
) -> Option<Node> {
    let replaced: Vec<&str> = [
        (!overrides.proxy_listen.is_empty()).then_some("ringway.proxy_listen"),
        overrides
            .admin_listen
            .is_some()
            .then_some("ringway.admin_listen"),
        overrides.workers.is_some().then_some("ringway.workers"),
        overrides.log_level.is_some().then_some("ringway.log_level"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if replaced.is_empty() {
        return build_with(value, overrides, certificates, report);
    }
    let mut own = Report::default();
    build_with(
        value.clone(),
        &NodeOverrides::default(),
        certificates,
        &mut own,
    );
    let before = report.problems.len();
    let node = build_with(value, overrides, certificates, report);
    let mut file_problem = false;
    for problem in own.problems {
        let at_replaced = replaced.iter().any(|key| {
            problem
                .path
                .strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('['))
        });
        if at_replaced && !report.problems[before..].contains(&problem) {
            file_problem = true;
            report.add(
                problem.path,
                format!(
                    "{} (the file's own value, which a flag replaces: a start without the flag would refuse it)",
                    problem.message
                ),
            );
        }
    }
    node.filter(|_| !file_problem)
}

fn build_with(
    value: Option<Value>,
    overrides: &NodeOverrides,
    certificates: bool,
    report: &mut Report,
) -> Option<Node> {
    let before = report.problems.len();
    let mut file: NodeFile = match value {
        None | Some(Value::Null) => NodeFile::default(),
        Some(mut value) => {
            // `trusted_ips` may be one comma-separated string, as in kong.conf.
            if let Some(Value::String(list)) = value.get_mut("trusted_ips") {
                let items = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()));
                let items = items.collect();
                value["trusted_ips"] = Value::Sequence(items);
            }
            parse_settings(value, "ringway", report)?
        }
    };

    // Without proxy_listen, 8000; and, as Kong, 8443 with TLS when there is a
    // certificate to serve.
    let has_certificate = certificates || (file.ssl_cert.is_some() && file.ssl_cert_key.is_some());
    let listen_strings = if !overrides.proxy_listen.is_empty() {
        overrides.proxy_listen.clone()
    } else {
        file.proxy_listen
            .take()
            .map(|l| l.into_vec())
            .unwrap_or_else(|| {
                let mut listens = vec![DEFAULT_PROXY_LISTEN.to_owned()];
                if has_certificate {
                    listens.push(DEFAULT_PROXY_LISTEN_SSL.to_owned());
                }
                listens
            })
    };
    // A value from a flag is named by the flag in messages, not by the file's key.
    let listen_name = |i: usize| match overrides.proxy_listen.get(i) {
        Some(entry) => format!("--proxy-listen {entry}"),
        None => format!("ringway.proxy_listen[{i}]"),
    };
    let admin_name = match overrides.admin_listen {
        Some(_) => "--admin-listen",
        None => "ringway.admin_listen",
    };
    let mut proxy_listen = Vec::new();
    // Each parsed entry's place in the list, for messages.
    let mut entry_of = Vec::new();
    for (i, entry) in listen_strings.iter().enumerate() {
        match parse_listen(entry) {
            Ok(listen) => {
                proxy_listen.push(listen);
                entry_of.push(i);
            }
            Err(message) => report.add(listen_name(i), message),
        }
    }
    if listen_strings.is_empty() {
        report.add("ringway.proxy_listen", "must list at least one address");
    }

    let admin_string = overrides
        .admin_listen
        .clone()
        .or(file.admin_listen)
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
    let admin_listen = match parse_addr(&admin_string) {
        Ok(addr) => Some(addr),
        Err(message) => {
            report.add(admin_name, message);
            None
        }
    };
    // Two sockets on one address cannot both bind: found here, `check` says so before
    // `run` fails on it.
    let overlapped = |addr: SocketAddr, among: &[Listen]| {
        let j = among.iter().position(|l| overlaps(l.addr, addr))?;
        Some(format!(
            "{addr} overlaps {} ({})",
            listen_name(entry_of[j]),
            among[j].addr
        ))
    };
    for (i, listen) in proxy_listen.iter().enumerate() {
        if let Some(message) = overlapped(listen.addr, &proxy_listen[..i]) {
            report.add(listen_name(entry_of[i]), message);
        }
    }
    if let Some(message) = admin_listen.and_then(|admin| overlapped(admin, &proxy_listen)) {
        report.add(admin_name, message);
    }
    let admin_token = file.admin_token.filter(|t| !t.is_empty());
    // A token goes in a header, whose value loses its outer whitespace on the way and
    // may hold no control character: such a token could never be presented.
    if admin_token
        .as_deref()
        .is_some_and(|t| t.trim() != t || t.chars().any(|c| c.is_control() && c != '\t'))
    {
        report.add(
            "ringway.admin_token",
            "must not start or end with whitespace or hold control characters (it is sent in a header)",
        );
    }
    if let Some(addr) = admin_listen {
        if !addr.ip().is_loopback() && admin_token.is_none() {
            report.add(
                admin_name,
                format!("{addr} is not a loopback address: set ringway.admin_token to expose the Admin API"),
            );
        }
    }

    let workers = overrides.workers.or(file.workers).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1)
    });
    if workers == 0 || workers > 1024 {
        let name = match overrides.workers {
            Some(_) => "--workers",
            None => "ringway.workers",
        };
        report.add(name, "must be between 1 and 1024");
    }

    let mut trusted_ips = Vec::new();
    for (i, cidr) in file.trusted_ips.unwrap_or_default().iter().enumerate() {
        match cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => trusted_ips.push(net),
            Err(_) => report.add(
                format!("ringway.trusted_ips[{i}]"),
                format!("invalid CIDR '{cidr}'"),
            ),
        }
    }

    let mut positive = |key: &str, value: Option<u64>, default: u64, max: u64| -> u64 {
        let v = value.unwrap_or(default);
        if v == 0 || v > max {
            report.add(
                format!("ringway.{key}"),
                format!("must be between 1 and {max}"),
            );
        }
        v
    };
    const MAX_MS: u64 = 86_400_000;
    let max_connections = positive(
        "max_connections",
        file.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        10_000_000,
    );
    let rate_limit_max_keys = positive(
        "rate_limit_max_keys",
        file.rate_limit_max_keys,
        DEFAULT_RATE_LIMIT_MAX_KEYS,
        100_000_000,
    );
    let metrics_label_limit = positive(
        "metrics_label_limit",
        file.metrics_label_limit,
        DEFAULT_METRICS_LABEL_LIMIT,
        1_000_000,
    );
    let upstream_idle = positive(
        "upstream_keepalive_idle_timeout",
        file.upstream_keepalive_idle_timeout,
        DEFAULT_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT_MS,
        MAX_MS,
    );
    let upstream_max_idle = file
        .upstream_keepalive_max_idle
        .unwrap_or(DEFAULT_UPSTREAM_KEEPALIVE_MAX_IDLE);
    let header_timeout = positive(
        "client_header_timeout",
        file.client_header_timeout,
        DEFAULT_CLIENT_HEADER_TIMEOUT_MS,
        MAX_MS,
    );
    let body_timeout = positive(
        "client_body_timeout",
        file.client_body_timeout,
        DEFAULT_CLIENT_BODY_TIMEOUT_MS,
        MAX_MS,
    );
    let keepalive_timeout = positive(
        "keepalive_timeout",
        file.keepalive_timeout,
        DEFAULT_KEEPALIVE_TIMEOUT_MS,
        MAX_MS,
    );
    let send_timeout = positive(
        "send_timeout",
        file.send_timeout,
        DEFAULT_SEND_TIMEOUT_MS,
        MAX_MS,
    );
    let drain_timeout = positive(
        "drain_timeout",
        file.drain_timeout,
        DEFAULT_DRAIN_TIMEOUT_MS,
        MAX_MS,
    );
    let request_line = positive(
        "max_request_line_bytes",
        file.max_request_line_bytes,
        DEFAULT_MAX_REQUEST_LINE_BYTES,
        MAX_HEAD_BYTES_LIMIT,
    );
    let header_line = positive(
        "max_header_line_bytes",
        file.max_header_line_bytes,
        DEFAULT_MAX_HEADER_LINE_BYTES,
        MAX_HEAD_BYTES_LIMIT,
    );
    let header_bytes = positive(
        "max_header_bytes",
        file.max_header_bytes,
        DEFAULT_MAX_HEADER_BYTES,
        MAX_HEAD_BYTES_LIMIT,
    );
    let max_headers = positive(
        "max_headers",
        file.max_headers,
        DEFAULT_MAX_HEADERS,
        MAX_HEADERS_LIMIT,
    );
    if upstream_max_idle > 1_000_000 {
        report.add(
            "ringway.upstream_keepalive_max_idle",
            "must be at most 1000000",
        );
    }

    let level_name = overrides
        .log_level
        .clone()
        .or(file.log_level)
        .unwrap_or_else(|| "info".to_owned());
    let log_level = match crate::logging::parse_level(&level_name) {
        Some(level) => level,
        None => {
            let name = match overrides.log_level {
                Some(_) => "--log-level",
                None => "ringway.log_level",
            };
            report.add(
                name,
                format!("unknown level '{level_name}' (error, warn, info, debug, trace)"),
            );
            LevelFilter::Info
        }
    };
    let driver = match file.driver.as_deref().unwrap_or("auto") {
        "auto" => Driver::Auto,
        "io_uring" => Driver::IoUring,
        "epoll" => Driver::Epoll,
        other => {
            report.add(
                "ringway.driver",
                format!("unknown driver '{other}' (auto, io_uring, epoll)"),
            );
            Driver::Auto
        }
    };
    // The default certificate, from files: read now so a missing file is a config error.
    let mut default_certificate = None;
    // Each file given is read, so one that cannot be is said even when its pair is
    // missing.
    let read = |field: &str, path: &Option<String>, report: &mut Report| {
        let path = path.as_deref()?;
        std::fs::read_to_string(path)
            .map_err(|e| {
                report.add(
                    format!("ringway.{field}"),
                    format!("cannot read {path}: {e}"),
                )
            })
            .ok()
    };
    let cert_pem = read("ssl_cert", &file.ssl_cert, report);
    let key_pem = read("ssl_cert_key", &file.ssl_cert_key, report);
    match (&file.ssl_cert, &file.ssl_cert_key) {
        (None, None) => {}
        (Some(_), Some(_)) => {
            if let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) {
                match crate::tls::certified_key(&cert_pem, &key_pem) {
                    Ok(key) => default_certificate = Some(key),
                    Err((crate::tls::Half::Cert, message)) => {
                        report.add("ringway.ssl_cert", message)
                    }
                    Err((crate::tls::Half::Key, message)) => {
                        report.add("ringway.ssl_cert_key", message)
                    }
                }
            }
        }
        (Some(_), None) => report.add("ringway.ssl_cert_key", "required with ssl_cert"),
        (None, Some(_)) => report.add("ringway.ssl_cert", "required with ssl_cert_key"),
    }

    if !certificates && file.ssl_cert.is_none() {
        for (i, listen) in proxy_listen.iter().enumerate() {
            if listen.ssl {
                report.add(
                    listen_name(entry_of[i]),
                    "a TLS listener needs a certificate in the file (certificates, or ringway.ssl_cert and ssl_cert_key; one created through the Admin API does not count, as a restart reads the file alone first)",
                );
            }
        }
    }

    let access_log = match file.access_log.as_deref() {
        None | Some("off") => None,
        Some("stdout") => Some(AccessLog::Stdout),
        Some(path) if path.starts_with('/') || path.starts_with('.') => {
            Some(AccessLog::File(PathBuf::from(path)))
        }
        Some(other) => {
            report.add(
                "ringway.access_log",
                format!("expected off, stdout or a file path starting with / or . (got '{other}')"),
            );
            None
        }
    };
    let data_dir = match (&overrides.data_dir, file.data_dir) {
        (Some(given), _) if given.is_empty() => {
            report.add("--data-dir", "must not be empty");
            String::new()
        }
        (Some(given), _) => given.clone(),
        (None, Some(given)) if given.is_empty() => {
            report.add("ringway.data_dir", "must not be empty");
            String::new()
        }
        (None, given) => given.unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()),
    };
    if report.problems.len() > before {
        return None;
    }
    Some(Node {
        proxy_listen,
        admin_listen: admin_listen?,
        workers: workers as usize,
        data_dir: PathBuf::from(data_dir),
        admin_token,
        trusted_ips,
        max_connections: max_connections as usize,
        rate_limit_max_keys: rate_limit_max_keys as usize,
        metrics_label_limit: metrics_label_limit as usize,
        latency_headers: file.latency_headers.unwrap_or(true),
        access_log,
        default_certificate,
        upstream_keepalive_idle_timeout: Duration::from_millis(upstream_idle),
        upstream_keepalive_max_idle: upstream_max_idle as usize,
        client_header_timeout: Duration::from_millis(header_timeout),
        client_body_timeout: Duration::from_millis(body_timeout),
        keepalive_timeout: Duration::from_millis(keepalive_timeout),
        send_timeout: Duration::from_millis(send_timeout),
        drain_timeout: Duration::from_millis(drain_timeout),
        limits: Limits {
            max_request_line_bytes: request_line as usize,
            max_header_line_bytes: header_line as usize,
            max_header_bytes: header_bytes as usize,
            max_headers: max_headers as usize,
        },
        log_level,
        driver,
    })
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("invalid address '{text}': expected HOST:PORT"))
}

/// Whether two listening addresses contend for one port: the same address (an
/// IPv4-mapped one is its IPv4 address), an IPv4 wildcard and any IPv4 address, or an
/// IPv6 wildcard and any address (listeners are dual-stack). Port 0 never contends.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && a.port() != 0 && (x == y || covers(x, y) || covers(y, x))
}

/// Parses a Kong-style listen entry: `ADDR [ssl] [reuseport] [backlog=N]`.
fn parse_listen(entry: &str) -> Result<Listen, String> {
    let mut words = entry.split_whitespace();
    let addr = parse_addr(words.next().ok_or("empty listen entry")?)?;
    let mut backlog = 16_384;
    let mut ssl = false;
    for word in words {
        match word {
            "reuseport" => {}
            "ssl" => ssl = true,
            // Kong's default `proxy_listen` has it: said plainly rather than as unknown.
            "http2" => {
                return Err(format!(
                    "'{entry}': HTTP/2 is not supported by this version of ringway (drop `http2`: listeners serve HTTP/1.1)"
                ))
            }
            _ => match word.strip_prefix("backlog=") {
                Some(n) => match n.parse::<i32>() {
                    // listen(2) takes an int; the kernel caps it at somaxconn.
                    Ok(n) if n > 0 => backlog = n as u32,
                    _ => {
                        return Err(format!(
                            "'{entry}': backlog must be a whole number from 1 to 2147483647 (got '{n}')"
                        ))
                    }
                },
                None => return Err(format!("'{entry}': unknown listen flag '{word}'")),
            },
        }
    }
    Ok(Listen { addr, backlog, ssl })
}
