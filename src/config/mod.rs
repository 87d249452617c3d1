//! Configuration: Kong's declarative file plus the `ringway:` node section.
//!
//! Two stages. `file` holds serde structs that mirror the file; this module validates
//! them into the typed model below (`Duration`s, resolved references, compiled regexes),
//! collecting every problem with its path (`services[1].routes[0].paths[2]: ...`) before
//! anything is bound. The model is immutable once built; workers share it through an
//! `Arc` that reload swaps whole.

mod certs;
mod deck;
mod entities;
mod file;
mod lookup;
mod node;
mod upstreams;
mod vault;

pub use certs::{cert_digest, expired_ca};
pub use file::valid_tag;
pub use lookup::Known;
pub use vault::Reading;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::tls;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_norway::Value;
use serde_path_to_error::Segment;
use sha2::{Digest, Sha256};

pub use entities::{
    canonical_key, is_uuid, random_id, stable_id, utf8_name_problem, write_uuid, Chain, Consumer,
    ConsumerGroup, JwtSecret, Keys, Layer, Plugin, PluginConfig, Scope, KNOWN_PLUGINS,
};
pub(crate) use entities::{missing_reference_key, rank};
pub use node::{AccessLog, Driver, Limits, Listen, Node, NodeOverrides, MAX_HEADERS_LIMIT};
pub use upstreams::{
    Active, Algorithm, HashOn, Healthchecks, Passive, StatusSet, Target, Upstream,
};

use entities::Item;
use file::{RouteFile, ServiceFile, Top};

/// Upper bound on the compiled size of one route regex, so a hostile or careless pattern
/// cannot take unbounded memory.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// One problem in a config file, with the path of the value it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// One line per problem, whatever the file held: control characters quoted from it
/// (a `\n` in a host, a key) are written escaped.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn one_line(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
            for c in text.chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    fmt::Write::write_char(f, c)?;
                }
            }
            Ok(())
        }
        if !self.path.is_empty() {
            one_line(f, &self.path)?;
            f.write_str(": ")?;
        }
        one_line(f, &self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems while validating.
#[derive(Default)]
pub(crate) struct Report {
    problems: Vec<Problem>,
    /// What loads but will not work as written (a host that did not resolve, ...).
    warnings: Vec<String>,
    /// The vault references resolved, by the path of the value they stood for: the
    /// reference as written, and the value it resolved to.
    references: HashMap<String, (String, String)>,
    /// Where problems already reported would be reported again, differently: an item
    /// with a field of the wrong type is checked without it, and what the checks then
    /// say about the item as a whole, or about the field's absence, is not news.
    muted: Vec<Muted>,
}

/// A path whose later problems are not reported.
enum Muted {
    /// What the item itself (`services[0].routes[1]`) says about the fields taken out
    /// of it (a message naming one, quoted: `'paths'`), not about anything else.
    Item { path: String, fields: Vec<String> },
    /// A field taken out, and everything under it.
    Field(String),
}

impl Muted {
    fn covers(&self, path: &str, message: Option<&str>) -> bool {
        match self {
            Muted::Item { path: item, fields } => {
                // The item itself, or its parent naming the field through the item (a
                // plugin's check across its `config` names `'config.minute'`).
                let through = if path == item {
                    ""
                } else {
                    match item
                        .strip_prefix(path)
                        .and_then(|rest| rest.strip_prefix('.'))
                    {
                        Some(sub) if !sub.contains(['.', '[']) => sub,
                        _ => return false,
                    }
                };
                message.is_some_and(|message| {
                    fields.iter().any(|field| {
                        let named = if through.is_empty() {
                            format!("'{field}'")
                        } else {
                            format!("'{through}.{field}'")
                        };
                        message.contains(&named)
                    })
                })
            }
            Muted::Field(field) => path.strip_prefix(field.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            }),
        }
    }
}

impl Report {
    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        // A warning has no path to match references by: any resolved value it quotes
        // (a host that did not resolve) is replaced by its reference. Values too short
        // to be told from other text are left alone.
        let mut message = message.into();
        for (reference, value) in self.references.values() {
            if value.len() >= 4 {
                message = message.replace(value.as_str(), reference);
            }
        }
        self.warnings.push(message);
    }

    /// Which of an item's `fields` were vault references, with the reference as
    /// written: what the Admin API shows for them, as Kong's does, not the secret.
    pub(crate) fn references_in(
        &self,
        item: &str,
        fields: &[&'static str],
    ) -> Vec<(&'static str, String)> {
        if self.references.is_empty() {
            return Vec::new();
        }
        fields
            .iter()
            .filter_map(|&field| {
                let (reference, _) = self.references.get(&format!("{item}.{field}"))?;
                Some((field, reference.clone()))
            })
            .collect()
    }

    /// Puts the vault references back into a value as the Admin API shows it (`json`,
    /// whose path in the document is `at`): each field that was a reference shows the
    /// reference as written, as Kong's does, never the value it resolved to.
    pub(crate) fn show_references(&self, at: &str, json: &mut serde_json::Value) {
        if self.references.is_empty() {
            return;
        }
        for (path, (reference, _)) in &self.references {
            let Some(rest) = path.strip_prefix(at) else {
                continue;
            };
            if let Some(slot) = json_at(json, rest) {
                *slot = serde_json::Value::String(reference.clone());
            }
        }
    }

    /// Whether problems at `path` go unreported (see `parse_item`).
    pub(crate) fn is_muted(&self, path: &str) -> bool {
        self.muted.iter().any(|m| m.covers(path, None))
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let (path, mut message) = (path.into(), message.into());
        if self.muted.iter().any(|m| m.covers(&path, Some(&message))) {
            return;
        }
        // A message quoting a value that came from a vault quotes the reference instead:
        // the value may be a secret (`invalid url '...'`).
        let nested = |outer: &str, inner: &str| {
            inner.strip_prefix(outer).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        };
        for (at, (reference, value)) in &self.references {
            if !value.is_empty() && (nested(at, &path) || nested(&path, at)) {
                message = message.replace(value.as_str(), reference);
            }
        }
        self.problems.push(Problem { path, message });
    }
}

/// The value at a document path relative to `json` (`.redis.password`, `.paths[1]`);
/// `None` unless `rest` starts a path below `json` and every step exists.
fn json_at<'j>(
    mut json: &'j mut serde_json::Value,
    rest: &str,
) -> Option<&'j mut serde_json::Value> {
    if rest.is_empty() {
        return None;
    }
    let mut rest = rest;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            json = json.as_object_mut()?.get_mut(&after[..end])?;
            rest = &after[end..];
        } else {
            let after = rest.strip_prefix('[')?;
            let (index, tail) = after.split_once(']')?;
            json = json.as_array_mut()?.get_mut(index.parse::<usize>().ok()?)?;
            rest = tail;
        }
    }
    Some(json)
}

/// The validated configuration: what workers route and proxy with.
#[derive(Debug)]
pub struct Config {
    pub node: Node,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    /// Kong's upstreams: host names services use, balanced over their targets.
    pub upstreams: Vec<Upstream>,
    pub consumers: Vec<Consumer>,
    pub consumer_groups: Vec<ConsumerGroup>,
    pub jwt_secrets: Vec<JwtSecret>,
    /// JWT credentials by key, with their keys prepared.
    pub credentials: crate::plugins::jwt::Credentials,
    pub plugins: Vec<Plugin>,
    /// The plugins that run for each route, precedence applied: over HTTP, then over
    /// HTTPS (a plugin's `protocols` may leave one out). Read through [`Config::chain`].
    pub chains: Vec<[Chain; 2]>,
    /// The plugins that run when no route matched (global ones), over HTTP and HTTPS.
    pub global_chain: [Chain; 2],
    /// Names and ids of every entity.
    pub keys: Keys,
    /// For each kind the Admin API writes, how many items of the combined top-level list
    /// come from the file (admin items follow), so their problems can be told apart.
    pub admin_offsets: HashMap<&'static str, usize>,
    /// Hex digest of the file's bytes, reported as `configuration_hash`.
    pub hash: String,
    /// What loads but will not work as written; logged when the config is adopted and
    /// printed by `ringway check`.
    pub warnings: Vec<String>,
    pub certificates: Vec<certs::Certificate>,
    pub snis: Vec<certs::Sni>,
    /// Kong's `ca_certificates`, as the Admin API shows them.
    pub ca_certificates: Vec<certs::CaCertificate>,
    /// The TLS server config for `ssl` listeners; `None` without certificates.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// An upstream service.
#[derive(Debug)]
pub struct Service {
    pub id: String,
    pub name: Arc<str>,
    pub layer: Layer,
    pub host: String,
    pub port: u16,
    /// The base path requests are joined to; `/` when the service has none.
    pub path: String,
    /// Whether a path was given (`path`, or the url's): shown as given, `/` too, as Kong
    /// shows it; none is shown null.
    pub path_given: bool,
    /// The `Host` header sent upstream: the host, with `:port` unless it is 80.
    pub host_header: String,
    /// The resolved address; `None` when the host did not resolve at load time, or
    /// names an upstream.
    pub addr: Option<SocketAddr>,
    /// The upstream the host names, whose targets take this service's requests.
    pub balancer: Option<usize>,
    /// `addr` as text (the access log's `upstream`).
    pub addr_text: String,
    /// For `https` services: how to speak TLS to it.
    pub tls: Option<UpstreamTls>,
    pub retries: u32,
    pub tags: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub enabled: bool,
    /// The verification settings as written (`null` when not), which the Admin API
    /// shows: a GET'd service written back must not turn verification back on.
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u32>,
    pub ca_certificates: Option<Vec<String>>,
}

/// TLS to an upstream: the name to send and verify, the client config, and the key
/// that keeps its pooled connections apart from plain ones and other settings'.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub config: Arc<rustls::ClientConfig>,
    pub pool_key: u64,
}

/// How a route path matches.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// A plain string prefix (Kong's `^=`): `/api` matches `/apiv2`.
    Prefix(String),
    /// A regex anchored at the start of the path.
    Regex(regex::Regex),
}

/// How a route header value matches.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Case-insensitive equality (stored lower-cased).
    Exact(String),
    /// `~*regex`: a case-insensitive regex.
    Regex(regex::Regex),
}

/// How a route host matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
    /// `example.*`: stored as `example.`.
    Prefix(String),
}

/// A route, with references resolved to service indices.
#[derive(Debug)]
pub struct Route {
    pub id: String,
    pub name: Option<Arc<str>>,
    pub tags: Vec<String>,
    pub layer: Layer,
    pub service: usize,
    pub paths: Vec<PathMatch>,
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatch>,
    /// Lower-cased header names, each with the values any of which must match.
    pub headers: Vec<(String, Vec<ValueMatch>)>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub http: bool,
    pub https: bool,
    /// `https` came before `http` in the protocols given: shown in that order, as Kong
    /// keeps a set's.
    pub https_first: bool,
    pub https_redirect_status_code: u16,
    /// Kong's buffering switches, shown as given: ringway streams either way.
    pub request_buffering: bool,
    pub response_buffering: bool,
}

/// Records where `key` is first seen; for a key seen before, returns that first place
/// (a later repeat does not become the "first" a third one is reported against).
pub(crate) fn first_seen<K: std::hash::Hash + Eq, V: Clone>(
    seen: &mut HashMap<K, V>,
    key: K,
    at: V,
) -> Option<V> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(at);
            None
        }
    }
}

/// The largest config file read: far above any real one (10,000 services take a few
/// MiB), and a bound on what `-c /dev/zero` or a runaway generator can make it hold.
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 << 20;

/// Reads a config file whole, refusing one larger than [`MAX_CONFIG_FILE_BYTES`].
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    read_bounded(std::fs::File::open(path)?)
}

/// `read_file` for the gateway's own config, which it reads again on every SIGHUP: a
/// regular file only. A named pipe would block the read (and with it the signals, a
/// SIGTERM included) until something wrote to it; it is opened without waiting for a
/// writer and refused.
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    read_bounded(file)
}

fn read_bounded(file: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_CONFIG_FILE_BYTES >> 20),
        ));
    }
    Ok(bytes)
}

impl Config {
    /// The plugins that run for a request to `route` (`None`: no route matched) that came
    /// over HTTPS or not.
    pub fn chain(&self, route: Option<usize>, https: bool) -> &Chain {
        let chains = match route {
            Some(route) => &self.chains[route],
            None => &self.global_chain,
        };
        &chains[usize::from(https)]
    }
    /// Reads, parses and validates a config file, applying command-line overrides.
    pub fn load(path: &Path, overrides: &NodeOverrides) -> Result<Config, LoadError> {
        let bytes = read_file(path).map_err(|e| LoadError::Read(path.display().to_string(), e))?;
        Config::from_bytes(&bytes, overrides).map_err(LoadError::Invalid)
    }

    /// Parses and validates a config held in memory.
    pub fn from_bytes(bytes: &[u8], overrides: &NodeOverrides) -> Result<Config, Problems> {
        Config::from_layers(bytes, None, overrides)
    }

    /// Builds the config from its two layers (SPEC §5): the file, and the entities the
    /// Admin API created (`admin`, a document of top-level entity lists that refer to
    /// each other by id). Both go through the same validation; admin entities are
    /// appended after the file's, so their problems have paths past the file's items.
    pub fn from_layers(
        bytes: &[u8],
        admin: Option<&serde_json::Value>,
        overrides: &NodeOverrides,
    ) -> Result<Config, Problems> {
        Config::from_layers_knowing(
            bytes,
            admin,
            overrides,
            &lookup::Known::new(),
            Reading::Anywhere,
        )
    }

    /// `from_layers`, taking the host names in `known` as resolved to what they give
    /// (looking up only the others): an Admin API write, or the second build of a
    /// start, need not wait on the resolver for names just looked up.
    ///
    /// `reading` says where vault references are read: anywhere in a file put in place,
    /// in secret fields only in one the Admin API writes (`POST /config`).
    pub fn from_layers_knowing(
        bytes: &[u8],
        admin: Option<&serde_json::Value>,
        overrides: &NodeOverrides,
        known: &lookup::Known,
        reading: Reading,
    ) -> Result<Config, Problems> {
        let doc = parse_document(bytes)?;
        Config::from_document(doc, admin, overrides, known, reading)
    }

    /// `from_layers_knowing`, from the file's document as [`parse_document`] gave it.
    pub fn from_document(
        doc: Value,
        admin: Option<&serde_json::Value>,
        overrides: &NodeOverrides,
        known: &lookup::Known,
        reading: Reading,
    ) -> Result<Config, Problems> {
        Config::built(doc, admin, overrides, Some(known), reading)
    }

    /// A config checked, its host names not looked up (services and targets without an
    /// address): for an entity validated alone, which nothing will be sent to.
    pub fn checked_without_lookups(
        bytes: &[u8],
        admin: Option<&serde_json::Value>,
        reading: Reading,
    ) -> Result<Config, Problems> {
        let doc = parse_document(bytes)?;
        Config::built(doc, admin, &NodeOverrides::default(), None, reading)
    }

    fn built(
        mut doc: Value,
        admin: Option<&serde_json::Value>,
        overrides: &NodeOverrides,
        known: Option<&lookup::Known>,
        reading: Reading,
    ) -> Result<Config, Problems> {
        let mut report = Report::default();
        // The hash is the content's: the same config in YAML or JSON, in another key
        // order or with other comments, has the same one (as `?check_hash=1` expects).
        // Taken before vault references are resolved, so no secret goes into it.
        let mut digest_input = Vec::new();
        canonical(&doc, &mut digest_input);
        // The file's bookkeeping and decK's header, before the Admin API's items join.
        deck::apply(&mut doc, &mut report);
        let mut admin_from = AdminFrom::default();
        if let (Some(admin), Value::Mapping(map)) = (admin, &mut doc) {
            for kind in ADMIN_KINDS {
                let list = map
                    .entry(Value::String((*kind).into()))
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                if list.is_null() {
                    *list = Value::Sequence(Vec::new());
                }
                let Value::Sequence(list) = list else {
                    continue;
                };
                admin_from.0.insert(kind, list.len());
                // Each item converted once, straight into the list.
                if let Some(items) = admin.get(*kind).and_then(serde_json::Value::as_array) {
                    list.extend(
                        items
                            .iter()
                            .map(|item| serde_norway::to_value(item).unwrap_or(Value::Null)),
                    );
                }
            }
            // An empty admin layer leaves the file's hash as `ringway check` prints it.
            if has_entities(admin) {
                digest_input.extend_from_slice(&serde_json::to_vec(admin).unwrap_or_default());
            }
        }
        // Both layers' references: an Admin API credential may name a secret by
        // reference too, as in Kong.
        vault::resolve(&mut doc, reading, &mut report);
        let config = build(doc, overrides, &admin_from, reading, &mut report);
        match config {
            Some(mut config) if report.problems.is_empty() => {
                // Once it is valid: a config refused needs no addresses.
                if let Some(known) = known {
                    lookup::fill(&mut config, known, &mut report);
                }
                // The default certificate lives in files the config names: a rotation
                // changes the hash as a change in the config would.
                if let Some(certified) = &config.node.default_certificate {
                    for der in &certified.cert {
                        digest_input.extend_from_slice(der.as_ref());
                    }
                }
                config.hash = hex_digest(&digest_input);
                config.warnings = report.warnings;
                Ok(config)
            }
            _ => Err(Problems(report.problems)),
        }
    }
}

/// How deep `[` and `{` may nest in a config: far beyond any real one, and refused
/// before the YAML parser, which takes seconds over a few hundred KiB of brackets.
const MAX_FLOW_DEPTH: usize = 256;

/// Whether flow collections nest deeper than [`MAX_FLOW_DEPTH`]. Brackets inside quoted
/// strings and comments are skipped. A quote opens a string only where YAML starts a
/// node (at a line's start, or after `:`, `-`, `?`, `[`, `{` or `,`): inside a plain
/// scalar (`6"2`, `x '`) it is text, so it cannot hide the brackets after it.
/// Double-quoted strings end at a quote no backslash escapes; single-quoted ones at a
/// quote not doubled (`''` reads as leaving and re-entering, which comes to the same).
pub(crate) fn nests_too_deep(text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum In {
        Flow,
        Double { escaped: bool },
        Single,
        Comment,
    }
    let (mut depth, mut state) = (0usize, In::Flow);
    // The last byte outside strings and comments that was not a space or a tab (a
    // line's end counts: a node may start on the next line).
    let mut last = b'\n';
    let mut prev = b'\n';
    let mut closed_single = false;
    for b in text.bytes() {
        // `''` inside a single-quoted string: the previous byte seemed to close it.
        let reopen = std::mem::take(&mut closed_single) && b == b'\'';
        state = match state {
            // A closed string is a node: a quote right after it starts none.
            In::Double { escaped: false } if b == b'"' => {
                last = b;
                In::Flow
            }
            In::Double { escaped } => In::Double {
                escaped: !escaped && b == b'\\',
            },
            In::Single if b == b'\'' => {
                last = b;
                closed_single = true;
                In::Flow
            }
            In::Comment if b == b'\n' => {
                last = b;
                In::Flow
            }
            In::Single | In::Comment => state,
            In::Flow => {
                let node_start = matches!(last, b'\n' | b':' | b'-' | b'?' | b'[' | b'{' | b',');
                let next = match b {
                    b'"' if node_start => In::Double { escaped: false },
                    b'\'' if node_start || reopen => In::Single,
                    b'#' if prev.is_ascii_whitespace() => In::Comment,
                    _ => In::Flow,
                };
                match b {
                    _ if next != In::Flow => {}
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return true;
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if b == b'\n' || !b.is_ascii_whitespace() {
                    last = b;
                }
                next
            }
        };
        prev = b;
    }
    false
}

/// The entity kinds the Admin API writes.
pub const ADMIN_KINDS: &[&str] = &[
    "ca_certificates",
    "certificates",
    "snis",
    "upstreams",
    "targets",
    "services",
    "routes",
    "consumer_groups",
    "consumers",
    "jwt_secrets",
    "plugins",
];

/// Where each kind's admin-layer items start in the combined lists.
#[derive(Debug, Default)]
struct AdminFrom(HashMap<&'static str, usize>);

impl AdminFrom {
    fn layer(&self, kind: &str, index: usize) -> Layer {
        match self.0.get(kind) {
            Some(&from) if index >= from => Layer::Admin,
            _ => Layer::File,
        }
    }
}

/// The rules an Admin API write is held to beyond what a saved state is: the items of
/// `after` new or changed since `before`, each checked at its place in the composed
/// config (`offsets`: where each kind's admin items start), hold vault references only
/// in secret fields (`vault::SECRET_FIELDS`), and a route's name is Kong's `utf8_name`.
/// Items saved before are not looked at: a state an earlier version wrote loads as it
/// did.
pub fn what_a_write_adds(
    before: &serde_json::Value,
    after: &serde_json::Value,
    offsets: &HashMap<&'static str, usize>,
) -> Vec<Problem> {
    let mut report = Report::default();
    for (kind, items) in after.as_object().into_iter().flatten() {
        let old: HashMap<&str, &serde_json::Value> = before
            .get(kind)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| Some((item.get("id")?.as_str()?, item)))
            .collect();
        for (i, item) in items.as_array().into_iter().flatten().enumerate() {
            let unchanged = item
                .get("id")
                .and_then(serde_json::Value::as_str)
                .and_then(|id| old.get(id))
                .is_some_and(|old| *old == item);
            if unchanged {
                continue;
            }
            let Ok(mut value) = serde_norway::to_value(item) else {
                continue;
            };
            let at = offsets.get(kind.as_str()).copied().unwrap_or(0) + i;
            vault::check_secret_fields_only(
                kind,
                &mut value,
                &format!("{kind}[{at}]"),
                &mut report,
            );
            if kind == "routes" {
                if let Some(problem) = item
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .and_then(utf8_name_problem)
                {
                    report.add(format!("routes[{at}].name"), problem);
                }
            }
            let correlation = kind == "plugins"
                && item.get("name").and_then(serde_json::Value::as_str) == Some("correlation-id");
            let caution = correlation
                .then(|| item.get("config").cloned())
                .flatten()
                .and_then(|c| {
                    serde_json::from_value::<crate::plugins::correlation_id::ConfigFile>(c).ok()
                })
                .and_then(|c| c.header_caution());
            if let Some(caution) = caution {
                report.add(format!("plugins[{at}].config.header_name"), caution);
            }
        }
    }
    report.problems
}

/// Whether an admin layer holds any entity (then the configuration_hash covers it).
pub fn has_entities(admin: &serde_json::Value) -> bool {
    admin.as_object().is_some_and(|kinds| {
        kinds
            .values()
            .any(|v| v.as_array().is_some_and(|l| !l.is_empty()))
    })
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    Invalid(Problems),
}

/// A YAML document as JSON with every mapping's keys in order: one text per content.
fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(text) => crate::http::generated::write_json_string(out, text),
        Value::Sequence(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        Value::Mapping(map) => {
            let mut entries: Vec<(Vec<u8>, &Value)> = map
                .iter()
                .map(|(k, v)| {
                    let mut key = Vec::new();
                    canonical(k, &mut key);
                    (key, v)
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(b'{');
            for (i, (key, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Tagged(tagged) => {
            out.extend_from_slice(tagged.tag.to_string().as_bytes());
            canonical(&tagged.value, out);
        }
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Most problems one item reports before the rest of it is left unexamined.
const MAX_ITEM_PROBLEMS: usize = 32;

/// Deserializes one item, reporting every field that fails with its path: a field that
/// does not deserialize (unknown, or of the wrong type) is reported and taken out, and
/// the rest is tried again, so one pass shows all of an item's problems (SPEC §2). The
/// item comes back whenever what remains deserializes, so the caller's own checks
/// report the problems of its other fields too (the config as a whole is refused all
/// the same). After a field of the wrong type, what the checks would say about the
/// field's absence is muted: under the field's own path, and at the item's path where
/// the message names the field (a route "must set at least one of ... 'paths'").
fn parse_item<T: DeserializeOwned>(value: Value, path: &str, report: &mut Report) -> Option<T> {
    parse_fields(value, path, report, false)
}

/// `parse_item` for a section of independent settings (`ringway`): a setting taken out
/// falls back to its default, which nothing else depends on, so nothing is muted.
fn parse_settings<T: DeserializeOwned>(value: Value, path: &str, report: &mut Report) -> Option<T> {
    parse_fields(value, path, report, true)
}

fn parse_fields<T: DeserializeOwned>(
    mut value: Value,
    path: &str,
    report: &mut Report,
    settings: bool,
) -> Option<T> {
    let join = |inner: &str| {
        if inner == "." || inner.is_empty() {
            path.to_owned()
        } else if path.is_empty() {
            inner.to_owned()
        } else {
            format!("{path}.{inner}")
        }
    };
    // Most items are well formed: read them without tracking where the reader is (a
    // fraction of the cost), and only an item with a problem again, to say where it is.
    if let Ok(item) = T::deserialize(&value) {
        return Some(item);
    }
    // (where, field) of every field taken out.
    let mut removed: Vec<(String, String)> = Vec::new();
    let mut mistyped = false;
    for _ in 0..MAX_ITEM_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(item) => {
                if mistyped && !settings {
                    // A field taken out of a map field (`headers.x-c`) names that field too:
                    // the item's "must set ... 'headers'" is about it.
                    let fields = removed.iter().flat_map(|(at, field)| {
                        let top = at.split(['.', '[']).next().filter(|top| !top.is_empty());
                        std::iter::once(field.clone()).chain(top.map(str::to_owned))
                    });
                    report.muted.push(Muted::Item {
                        path: path.to_owned(),
                        fields: fields.collect(),
                    });
                    for (at, field) in &removed {
                        let field = match at.as_str() {
                            "." => field.clone(),
                            at => format!("{at}.{field}"),
                        };
                        report.muted.push(Muted::Field(join(&field)));
                    }
                }
                return Some(item);
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let inner = e.path().to_string();
        let message = kong_entities(kong_types(e.into_inner().to_string()));
        // A required field taken out above now shows up missing: it is reported already.
        if removed.iter().any(|(at, field)| {
            *at == inner && message.starts_with(&format!("missing field `{field}`"))
        }) {
            return None;
        }
        let unknown = message.starts_with("unknown field `");
        mistyped |= !unknown;
        // An unknown field's message quotes names (the field's, the expected ones), no
        // value.
        let secret = !unknown
            && matches!(
                segments.last(),
                Some(Segment::Map { key }) if key == "key" || key == "secret" || key.ends_with("password") || key.ends_with("token")
            );
        report.add(
            join(&inner),
            if secret {
                without_values(&message)
            } else {
                message
            },
        );
        // A list element of the wrong type gives way to a stand-in of a type the list
        // takes, so the other elements are still checked; what the checks would say about
        // the stand-in is muted.
        if matches!(segments.last(), Some(Segment::Seq { .. }))
            && stand_in::<T>(&mut value, &segments, &inner)
        {
            report.muted.push(Muted::Field(join(&inner)));
            mistyped = true;
            continue;
        }
        // The field the problem is in (for an element's, the list holding it) is taken out.
        let field = segments
            .iter()
            .rposition(|s| matches!(s, Segment::Map { .. }))?;
        let (Segment::Map { key }, parents) = (&segments[field], &segments[..field]) else {
            return None;
        };
        if !remove_field(&mut value, parents, key) {
            return None;
        }
        // Where the field was, as a later error's path names it (`.` for the top).
        let at = segments_path(parents);
        removed.push((if at.is_empty() { ".".into() } else { at }, key.clone()));
    }
    None
}

/// Replaces the list element at `segments` (where deserializing failed) with the first
/// plain value of some type after which `value` no longer fails there; false, and the
/// element as it was, when none does.
fn stand_in<T: DeserializeOwned>(value: &mut Value, segments: &[Segment], failed_at: &str) -> bool {
    let candidates = [
        Value::String(String::new()),
        Value::String("x".into()),
        Value::Number(0.into()),
        Value::Bool(false),
        Value::Mapping(Default::default()),
        Value::Sequence(Vec::new()),
    ];
    let Some(original) = element_mut(value, segments).map(|e| e.clone()) else {
        return false;
    };
    // Best, a stand-in the list itself takes too: a list that checks its elements as a
    // whole (`tags`) would otherwise report the stand-in, a problem nobody wrote.
    let list = failed_at.rsplit_once('[').map_or("", |(list, _)| list);
    let mut passable = None;
    for (i, candidate) in candidates.iter().enumerate() {
        if let Some(element) = element_mut(value, segments) {
            *element = candidate.clone();
        }
        match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(_) => return true,
            Err(e) => {
                let at = e.path().to_string();
                if at != failed_at && at != list {
                    return true;
                }
                if at != failed_at && passable.is_none() {
                    passable = Some(i);
                }
            }
        }
    }
    let chosen = match passable {
        Some(i) => candidates[i].clone(),
        None => original,
    };
    if let Some(element) = element_mut(value, segments) {
        *element = chosen;
    }
    passable.is_some()
}

/// The value at `segments` in `value`, when the path leads to one.
fn element_mut<'v>(value: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let mut at = value;
    for segment in segments {
        at = match segment {
            Segment::Map { key } => at.get_mut(key.as_str())?,
            Segment::Seq { index } => at.get_mut(*index)?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(at)
}

/// Kong's entities (and credentials) of plugins or features ringway does not have, as a
/// file or a consumer may list them: refused as what they are, not as a typo.
const KONG_ENTITIES: &[&str] = &[
    "acls",
    "basicauth_credentials",
    "hmacauth_credentials",
    "keyauth_credentials",
    "mtls_auth_credentials",
    "oauth2_credentials",
    "jwt_signer_jwks",
    "keys",
    "key_sets",
    "filter_chains",
    "partials",
    "workspaces",
    "licenses",
    "event_hooks",
    "degraphql_routes",
    "graphql_ratelimiting_advanced_costs",
    "consumer_group_consumers",
    "_plugin_configs",
];

/// An unknown field that is one of [`KONG_ENTITIES`], said as such.
fn kong_entities(message: String) -> String {
    let field = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match field {
        Some(field) if KONG_ENTITIES.contains(&field) => format!(
            "`{field}` are not supported by this version of ringway (Kong entities of a plugin or feature it does not have)"
        ),
        _ => message,
    }
}

/// A type error names what was expected as Kong's schema does (`expected an integer`),
/// not as Rust spells it (`expected u32`). A number out of the type's range says which
/// way it is out (each field's own range is checked after this, with its own message).
fn kong_types(message: String) -> String {
    let Some((given, expected)) = message.rsplit_once(", expected ") else {
        return message;
    };
    // JSON's and YAML's null, which serde calls a unit value.
    let given = given.replace("unit value", "null");
    let unsigned = matches!(expected, "u8" | "u16" | "u32" | "u64" | "usize");
    let expected = match (message.starts_with("invalid value:"), expected) {
        (true, _) if unsigned && given.contains("`-") => "a non-negative integer",
        (true, _) if unsigned => "a smaller integer",
        (_, "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize") => {
            "an integer"
        }
        (_, "f32" | "f64") => "a number",
        (false, "a sequence") => "an array",
        (false, other) if other.starts_with("struct ") => "a record",
        _ => expected,
    };
    // A value where a record or a list belongs is named by what belongs there alone, in
    // Kong's words: what was given may be a whole entity's worth of secrets (a
    // certificate pasted as one PEM string, a Redis URL with its password).
    if given.starts_with("invalid type:") && matches!(expected, "a record" | "an array" | "a map") {
        return format!("expected {expected}");
    }
    format!("{given}, expected {expected}")
}

/// A parse error about a secret field without the value it quotes (serde quotes what it
/// got between backticks: ``invalid type: integer `123`, expected a string``): secrets
/// are never logged, even mistyped.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(if i > 0 { part } else { part.trim_end() });
        }
    }
    out.replace("  ", " ").replace(" ,", ",")
}

/// A path as serde_path_to_error writes one (`routes[0].paths`).
fn segments_path(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Map { key } if path.is_empty() => path.push_str(key),
            Segment::Map { key } => {
                path.push('.');
                path.push_str(key);
            }
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => path.push('?'),
        }
    }
    path
}

/// Takes the field `key` out of the mapping at `parents` in `value`; false when the
/// path does not lead to one (the error came from somewhere a field cannot be removed).
fn remove_field(value: &mut Value, parents: &[Segment], key: &str) -> bool {
    let mut at = value;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    match at {
        Value::Mapping(map) => map.remove(key).is_some(),
        _ => false,
    }
}

fn build(
    doc: Value,
    overrides: &NodeOverrides,
    admin_from: &AdminFrom,
    reading: Reading,
    report: &mut Report,
) -> Option<Config> {
    if !doc.is_mapping() {
        report.add("", "the top level must be a mapping");
        return None;
    }
    let mut top: Top = parse_item(doc, "", report)?;

    let legacy_paths =
        matches!(&top.format_version, Some(Value::String(v)) if v == "2.1" || v == "1.1");
    // Only the file's routes are in its format; the Admin API's are 3.0 routes.
    let parse_route = |value: Value, path: &str, layer: Layer, report: &mut Report| {
        let mut route = parse_item::<RouteFile>(value, path, report)?;
        if legacy_paths && layer == Layer::File {
            migrate_legacy_paths(&mut route, path, report);
        }
        // The Admin API checks the names it writes; a route an earlier version saved
        // without the check loads with a warning rather than stopping the start.
        match route.name.as_deref().and_then(utf8_name_problem) {
            Some(problem) if layer == Layer::Admin => {
                report.warn(format!("{path}.name: {problem}"))
            }
            Some(problem) => report.add(format!("{path}.name"), problem),
            None => {}
        }
        Some(route)
    };
    match top.format_version.as_ref() {
        None => report.add("_format_version", "required field missing (use \"3.0\")"),
        // "1.1" as Kong reads it: like "2.1".
        Some(Value::String(v)) if v == "3.0" || v == "2.1" || v == "1.1" => {}
        // `3.0` unquoted is a YAML number, which Kong's schema refuses too.
        Some(number @ Value::Number(_))
            if ["3.0", "2.1", "1.1"].contains(&yaml_inline(number).as_str()) =>
        {
            report.add(
                "_format_version",
                format!("must be a string: quote it (\"{}\")", yaml_inline(number)),
            )
        }
        Some(other) => report.add(
            "_format_version",
            format!(
                "unsupported version {}; expected \"3.0\", \"2.1\" or \"1.1\"",
                yaml_inline(other)
            ),
        ),
    }

    // A TLS listener's certificate comes from the file (its own `certificates`, or
    // `ssl_cert`): one created through the Admin API would let a reload pass that a
    // restart, which checks the file first, then refuses.
    let file_certificates = top.certificates.len().min(
        admin_from
            .0
            .get("certificates")
            .copied()
            .unwrap_or(usize::MAX),
    );
    let node = node::build(top.ringway, overrides, file_certificates > 0, report);

    if !top.vaults.is_empty() {
        report.add(
            "vaults",
            "`vaults` entities are not supported by this version of ringway (use {vault://env/...} references)",
        );
    }
    let layer = Layer::File;
    let mut keys = Keys::default();
    // Every route the file declares, nested or not: one that is then refused has had its
    // problems reported, and a plugin naming it is not one more.
    // Read in place: a build runs at every reload and Admin API write.
    let nested_routes = top
        .services
        .iter()
        .filter_map(|service| service.get("routes")?.as_sequence())
        .flatten();
    for route in top.routes.iter().chain(nested_routes) {
        for field in ["name", "id"] {
            if let Some(key) = route.get(field).and_then(Value::as_str) {
                keys.declared.insert(("route", key.to_owned()));
            }
        }
    }
    let mut plugin_items: Vec<(Item, Scope)> = top
        .plugins
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            (
                Item {
                    path: format!("plugins[{i}]"),
                    value,
                    layer: admin_from.layer("plugins", i),
                },
                Scope::default(),
            )
        })
        .collect();

    // Services first (nested routes are collected with their service), then top-level
    // routes that refer to a service by name or id.
    let mut services = Vec::new();
    let mut service_keys: HashMap<String, usize> = HashMap::new();
    let mut route_files: Vec<(String, RouteFile, Option<usize>, Layer)> = Vec::new();
    // A CA certificate has expired or not by the clock when the config is built: what
    // the Admin API writes is refused for it; a file put in place only warned, so a CA
    // that expires under a running gateway does not stop its next reload or restart.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expired_refused = reading == Reading::SecretFieldsOnly;
    let (cas, ca_certificates) = certs::build_cas(
        std::mem::take(&mut top.ca_certificates),
        |i| admin_from.layer("ca_certificates", i),
        (now, expired_refused),
        report,
    );
    let layered_item = |kind: &'static str| {
        move |(i, value): (usize, Value)| Item {
            path: format!("{kind}[{i}]"),
            value,
            layer: admin_from.layer(kind, i),
        }
    };
    let (upstreams, upstream_keys) = upstreams::build(
        std::mem::take(&mut top.upstreams)
            .into_iter()
            .enumerate()
            .map(layered_item("upstreams"))
            .collect(),
        std::mem::take(&mut top.targets)
            .into_iter()
            .enumerate()
            .map(layered_item("targets"))
            .collect(),
        report,
    );
    let upstream_names: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (&*u.name, i))
        .collect();
    // The plugins nested in a service or route that is refused: checked all the same,
    // so one pass reports their problems too, then dropped. Each refused parent stands
    // in their scope as an index no entity has, distinct per parent.
    let mut orphans: Vec<(Item, Scope)> = Vec::new();
    let mut refused = usize::MAX;
    let mut orphan = |parent_path: &str, plugins: Vec<Value>, scope: fn(usize) -> Scope| {
        let parent = scope(refused);
        refused -= 1;
        for (j, value) in plugins.into_iter().enumerate() {
            let path = format!("{parent_path}.plugins[{j}]");
            orphans.push((Item { path, value, layer }, parent));
        }
    };
    let in_service = |i| Scope {
        service: Some(i),
        ..Scope::default()
    };
    let in_route = |i| Scope {
        route: Some(i),
        ..Scope::default()
    };
    for (i, value) in top.services.into_iter().enumerate() {
        let path = format!("services[{i}]");
        let service_layer = admin_from.layer("services", i);
        let nested_if_broken = nested_list(&value, "routes");
        let plugins_if_broken = nested_list(&value, "plugins");
        let Some(file) = parse_item::<ServiceFile>(value, &path, report) else {
            // Report the nested routes' own problems too, so one pass shows them all.
            orphan(&path, plugins_if_broken, in_service);
            for (j, route) in nested_if_broken.into_iter().enumerate() {
                let route_path = format!("{path}.routes[{j}]");
                orphan(&route_path, nested_list(&route, "plugins"), in_route);
                if let Some(route) = parse_route(route, &route_path, service_layer, report) {
                    build_route(route, None, &route_path, report);
                }
            }
            continue;
        };
        let index = services.len();
        let nested: Vec<Value> = file.routes.clone();
        let nested_plugins: Vec<Value> = file.plugins.clone();
        if let Some(mut service) = build_service(
            file,
            &path,
            report,
            &mut service_keys,
            index,
            (&cas, &upstream_names),
        ) {
            service.layer = service_layer;
            services.push(service);
            for (j, plugin) in nested_plugins.into_iter().enumerate() {
                let item = Item {
                    path: format!("{path}.plugins[{j}]"),
                    value: plugin,
                    layer,
                };
                plugin_items.push((
                    item,
                    Scope {
                        service: Some(index),
                        ..Scope::default()
                    },
                ));
            }
            for (j, route) in nested.into_iter().enumerate() {
                let route_path = format!("{path}.routes[{j}]");
                let plugins_if_broken = nested_list(&route, "plugins");
                let Some(route) = parse_route(route, &route_path, service_layer, report) else {
                    orphan(&route_path, plugins_if_broken, in_route);
                    continue;
                };
                {
                    if route.service.is_some() {
                        report.add(
                            format!("{route_path}.service"),
                            "a nested route takes its service from its parent",
                        );
                    }
                    route_files.push((route_path, route, Some(index), Layer::File));
                }
            }
        } else {
            // The service is refused: its routes' own problems are reported all the same.
            orphan(&path, nested_plugins, in_service);
            for (j, route) in nested.into_iter().enumerate() {
                let route_path = format!("{path}.routes[{j}]");
                orphan(&route_path, nested_list(&route, "plugins"), in_route);
                if let Some(route) = parse_route(route, &route_path, service_layer, report) {
                    build_route(route, None, &route_path, report);
                }
            }
        }
    }
    for (i, value) in top.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let plugins_if_broken = nested_list(&value, "plugins");
        match parse_route(value, &path, admin_from.layer("routes", i), report) {
            Some(route) => route_files.push((path, route, None, admin_from.layer("routes", i))),
            None => orphan(&path, plugins_if_broken, in_route),
        }
    }

    let mut routes = Vec::new();
    let mut route_names: HashMap<String, String> = HashMap::new();
    let mut route_ids: HashMap<String, String> = HashMap::new();
    for (path, mut file, parent, route_layer) in route_files {
        let nested_plugins = std::mem::take(&mut file.plugins);
        let refused = parent.is_none()
            && file.service.as_ref().is_some_and(|r| {
                r.refuse_disagreement(&service_keys, "service", &format!("{path}.service"), report)
            });
        let service = match parent {
            Some(index) => Some(index),
            None if refused => None,
            None => match file.service.as_ref().and_then(|r| r.key()) {
                None => {
                    report.add(format!("{path}.service"), "required field missing");
                    None
                }

                Some(key) => match service_keys.get(key) {
                    Some(&index) => Some(index),
                    None => {
                        report.add(
                            format!("{path}.service"),
                            format!("no service named '{key}'"),
                        );
                        None
                    }
                },
            },
        };
        if let Some(name) = &file.name {
            if let Some(first) = first_seen(&mut route_names, name.clone(), path.clone()) {
                report.add(
                    format!("{path}.name"),
                    format!("duplicate route name '{name}' (first at {first})"),
                );
            }
        }
        // Two routes under one id: a plugin scoped to that id would guard one of them
        // and leave the other open.
        if let Some(id) = &file.id {
            if let Some(first) = first_seen(&mut route_ids, id.clone(), path.clone()) {
                report.add(
                    format!("{path}.id"),
                    format!("duplicate route id '{id}' (first at {first})"),
                );
            }
        }
        let route_key = file.name.clone().or(file.id.clone());
        let Some(mut route) = build_route(file, service, &path, report) else {
            orphan(&path, nested_plugins, in_route);
            continue;
        };
        {
            route.layer = route_layer;
            let index = routes.len();
            for key in [route_key.as_ref(), Some(&route.id)].into_iter().flatten() {
                keys.routes.insert(key.clone(), index);
            }
            for (j, plugin) in nested_plugins.into_iter().enumerate() {
                let item = Item {
                    path: format!("{path}.plugins[{j}]"),
                    value: plugin,
                    layer,
                };
                plugin_items.push((
                    item,
                    Scope {
                        route: Some(index),
                        ..Scope::default()
                    },
                ));
            }
            routes.push(route);
        }
    }
    keys.services = service_keys;
    keys.upstreams = upstream_keys;

    let item = |kind: &'static str| {
        move |(i, value): (usize, Value)| Item {
            path: format!("{kind}[{i}]"),
            value,
            layer: admin_from.layer(kind, i),
        }
    };
    let (consumer_groups, group_plugins, group_members) = entities::build_groups(
        top.consumer_groups
            .into_iter()
            .enumerate()
            .map(item("consumer_groups"))
            .collect(),
        &mut keys,
        report,
    );
    let (mut consumers, nested_secrets, consumer_plugins) = entities::build_consumers(
        top.consumers
            .into_iter()
            .enumerate()
            .map(item("consumers"))
            .collect(),
        &mut keys,
        report,
    );
    entities::add_nested_members(group_members, &mut consumers, &keys, report);
    // As Kong Enterprise: of a consumer's groups whose plugins tie in precedence, the
    // group first by name wins, whatever order the consumer lists them in.
    for consumer in &mut consumers {
        consumer
            .groups
            .sort_by(|a, b| consumer_groups[*a].name.cmp(&consumer_groups[*b].name));
        consumer.groups.dedup();
    }
    let mut secret_items = nested_secrets;
    secret_items.extend(
        top.jwt_secrets
            .into_iter()
            .enumerate()
            .map(item("jwt_secrets"))
            .map(|i| (i, None)),
    );
    let (jwt_secrets, credentials) = entities::build_secrets(secret_items, &keys, report);
    plugin_items.extend(group_plugins);
    plugin_items.extend(consumer_plugins);
    let scope_ids = entities::ScopeIds {
        services: services.iter().map(|e| e.id.as_str()).collect(),
        routes: routes.iter().map(|e| e.id.as_str()).collect(),
        consumers: consumers.iter().map(|e| e.id.as_str()).collect(),
        groups: consumer_groups.iter().map(|e| e.id.as_str()).collect(),
    };
    let plugins = entities::build_plugins(plugin_items, &keys, &scope_ids, report);
    entities::build_plugins(orphans, &keys, &scope_ids, report);
    for plugin in &plugins {
        let PluginConfig::Jwt(jwt) = &plugin.config else {
            continue;
        };
        if let Some(anonymous) = &jwt.anonymous {
            if !keys.consumers.contains_key(anonymous) {
                report.warn(format!("jwt plugin {}: anonymous consumer '{anonymous}' does not exist; failed authentications get 500", plugin.id));
            }
        }
    }
    // A request ID goes into log lines, the access log and answers: read from a header
    // a jwt plugin takes its token from, it would carry the token there.
    // Both sides are `http::header_key`s: `X_JWT` is the header `x-jwt` too.
    let token_headers: std::collections::HashSet<&str> = plugins
        .iter()
        .filter_map(|p| match &p.config {
            PluginConfig::Jwt(jwt) => Some(jwt.header_names.iter()),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect();
    for plugin in &plugins {
        if let PluginConfig::CorrelationId(id) = &plugin.config {
            if token_headers.contains(id.header_lower.as_str()) {
                let at = format!("{}.config.header_name", plugin.path);
                let problem = format!(
                    "'{}' is where a jwt plugin reads its token, which the request ID would put in logs; name the ID's own header",
                    id.header_name
                );
                // Admin API state an earlier version saved loads with a warning.
                match plugin.layer {
                    Layer::File => report.add(at, problem),
                    Layer::Admin => report.warn(format!("{at}: {problem}")),
                }
            }
        }
    }
    let (chains, global_chain) = entities::resolve_chains(&routes, &plugins);

    let certificate_items = top
        .certificates
        .into_iter()
        .enumerate()
        .map(item("certificates"))
        .collect();
    let sni_items = top.snis.into_iter().enumerate().map(item("snis")).collect();
    let default_certificate = node.as_ref().and_then(|n| n.default_certificate.clone());
    let tls = certs::build(certificate_items, sni_items, default_certificate, report);

    Some(Config {
        node: node?,
        services,
        routes,
        upstreams,
        consumers,
        consumer_groups,
        jwt_secrets,
        credentials,
        plugins,
        chains,
        global_chain,
        keys,
        admin_offsets: admin_from.0.clone(),
        hash: String::new(),
        warnings: Vec::new(),
        certificates: tls.certificates,
        snis: tls.snis,
        ca_certificates,
        tls: tls.tls,
    })
}

/// The raw list an item nests under `key` (a service's `routes`), if it has one.
fn nested_list(item: &Value, key: &str) -> Vec<Value> {
    match item.get(key) {
        Some(Value::Sequence(list)) => list.clone(),
        _ => Vec::new(),
    }
}

fn yaml_inline(value: &Value) -> String {
    serde_norway::to_string(value)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

fn build_service(
    file: ServiceFile,
    path: &str,
    report: &mut Report,
    keys: &mut HashMap<String, usize>,
    index: usize,
    (cas, upstreams): (&certs::Cas, &HashMap<&str, usize>),
) -> Option<Service> {
    let before = report.problems.len();
    let file_id = file.id.clone();
    let name = match &file.name {
        Some(name) => {
            if let Some(problem) = utf8_name_problem(name) {
                report.add(format!("{path}.name"), problem);
            }
            name.clone()
        }
        // Kong allows a service without a name (its routes nested under it): it goes by
        // its id, derived from its place in the file when it has none.
        None => match &file.id {
            Some(id) => id.clone(),
            None => stable_id("service", path),
        },
    };
    // One key space for names and ids, as references name either: a name that is
    // another service's id would make a reference to it ambiguous.
    for (field, key) in [("name", &file.name), ("id", &file.id)] {
        let Some(key) = key else { continue };
        if keys.insert(key.clone(), index).is_some() {
            report.add(
                format!("{path}.{field}"),
                format!("duplicate service '{key}': another service has it as its name or id"),
            );
        }
    }

    let (mut protocol, mut host, mut port, mut base) = (
        file.protocol.clone(),
        file.host.clone(),
        file.port,
        file.path.clone(),
    );
    // A url whose reference did not resolve had its problem said; its text is no url.
    let url = file
        .url
        .as_ref()
        .filter(|_| !report.is_muted(&format!("{path}.url")));
    if let Some(url) = url {
        match parse_url(url) {
            Ok(parts) => {
                // As Kong: the url's parts, and a path it leaves out given on its own.
                // Stricter: a part given both ways must agree (Kong takes the url's).
                let scheme_port = if parts.0 == "https" { 443 } else { 80 };
                let disagree = [
                    (
                        "protocol",
                        file.protocol
                            .as_ref()
                            .is_some_and(|p| !p.eq_ignore_ascii_case(&parts.0)),
                    ),
                    (
                        "host",
                        file.host
                            .as_ref()
                            .is_some_and(|h| !h.eq_ignore_ascii_case(&parts.1)),
                    ),
                    (
                        "port",
                        file.port
                            .is_some_and(|p| p != parts.2.unwrap_or(scheme_port)),
                    ),
                    (
                        "path",
                        parts.3.is_some() && file.path.is_some() && file.path != parts.3,
                    ),
                ];
                for (field, differs) in disagree {
                    if differs {
                        report.add(
                            format!("{path}.{field}"),
                            format!("disagrees with url '{url}'"),
                        );
                    }
                }
                protocol = Some(parts.0);
                host = Some(parts.1);
                port = parts.2;
                base = parts.3.or_else(|| file.path.clone());
            }
            Err(message) => report.add(format!("{path}.url"), message),
        }
    }
    // A `url` that did not parse (or was of the wrong type) is the problem, not the host
    // it would have given.
    let url_refused =
        (file.url.is_some() && host.is_none()) || report.is_muted(&format!("{path}.url"));
    let protocol = protocol.unwrap_or_else(|| "http".to_owned());
    let https = match protocol.as_str() {
        "http" => false,
        "https" => true,
        other => {
            report.add(
                format!("{path}.protocol"),
                format!("unsupported protocol '{other}' (expected http or https)"),
            );
            false
        }
    };
    // The service's CA certificates, by id.
    let mut service_cas = Vec::new();
    for (i, id) in file.ca_certificates.iter().flatten().enumerate() {
        match cas.get(id) {
            Some(certs) => service_cas.extend(certs.iter().cloned()),
            None => report.add(
                format!("{path}.ca_certificates[{i}]"),
                format!("no CA certificate with id '{id}'"),
            ),
        }
    }
    if protocol == "http" {
        // As Kong's schema: verification settings on a plain service would only make
        // an operator believe its traffic is verified.
        for (field, given) in [
            ("tls_verify", file.tls_verify.is_some()),
            ("tls_verify_depth", file.tls_verify_depth.is_some()),
            ("ca_certificates", file.ca_certificates.is_some()),
        ] {
            if given {
                report.add(
                    format!("{path}.{field}"),
                    "value must be null: only an https service verifies its upstream",
                );
            }
        }
    }
    if file.tls_verify_depth.is_some_and(|depth| depth > 64) {
        report.add(
            format!("{path}.tls_verify_depth"),
            "value should be between 0 and 64",
        );
    }
    if file.client_certificate.is_some() {
        report.add(
            format!("{path}.client_certificate"),
            "client certificates are not supported by this version of ringway",
        );
    }
    let host = match host.as_deref().map(|h| (canonical_host(h), h)) {
        Some((Some(canonical), _)) => canonical,
        Some((None, host)) => {
            report.add(format!("{path}.host"), format!("invalid host '{host}'"));
            String::new()
        }
        None if url_refused => String::new(),
        None => {
            report.add(format!("{path}.host"), "required field missing");
            String::new()
        }
    };
    let port = port.unwrap_or(if https { 443 } else { 80 });
    if port == 0 {
        report.add(format!("{path}.port"), "must be between 1 and 65535");
    }
    let path_given = base.is_some();
    let base = match base {
        None => "/".to_owned(),
        // Bytes a request target cannot carry raw (UTF-8, `"`...) are sent encoded.
        Some(p)
            if p.starts_with('/')
                && !p.contains("//")
                && !p.contains(['?', '#', ' '])
                && !p.bytes().any(|b| b.is_ascii_control())
                && well_escaped(&p) =>
        {
            crate::route::encoded_route_path(&p).into_owned()
        }
        Some(p) if !well_escaped(&p) => {
            report.add(
                format!("{path}.path"),
                format!("invalid path '{p}': bad percent-encoding"),
            );
            "/".to_owned()
        }
        Some(p) if p.bytes().any(|b| b.is_ascii_control()) => {
            // Sent as it stands, a CR or LF would split the upstream request line.
            report.add(
                format!("{path}.path"),
                format!("invalid path {p:?}: must not contain a control character"),
            );
            "/".to_owned()
        }
        Some(p) => {
            report.add(format!("{path}.path"), format!("invalid path '{p}': must start with '/' and have no empty segments, query or fragment"));
            "/".to_owned()
        }
    };
    if file.retries > 32_767 {
        report.add(format!("{path}.retries"), "must be between 0 and 32767");
    }
    let timeout = |field: &str, ms: u64, report: &mut Report| {
        if ms == 0 || ms > (1 << 31) - 2 {
            report.add(
                format!("{path}.{field}"),
                "must be between 1 and 2147483646",
            );
        }
        Duration::from_millis(ms)
    };
    let tls = if https && valid_host(&host) {
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| {
                report.add(
                    format!("{path}.host"),
                    format!("'{host}' is not a valid TLS server name"),
                )
            })
            .ok();
        let verify = file.tls_verify.unwrap_or(true);
        match tls::client_config(&service_cas, verify, file.tls_verify_depth) {
            Ok(config) => server_name.map(|server_name| {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                // The CAs' content, not only their ids: a reload that changes what a CA
                // id holds must not keep connections verified against the old one.
                let cas: Vec<&[u8]> = service_cas.iter().map(|c| c.as_ref()).collect();
                (&host, verify, file.tls_verify_depth, cas).hash(&mut hasher);
                UpstreamTls {
                    server_name,
                    config,
                    pool_key: hasher.finish() | 1,
                }
            }),
            Err(message) => {
                report.add(format!("{path}.ca_certificates"), message);
                None
            }
        }
    } else {
        None
    };
    let connect_timeout = timeout("connect_timeout", file.connect_timeout, report);
    let read_timeout = timeout("read_timeout", file.read_timeout, report);
    let write_timeout = timeout("write_timeout", file.write_timeout, report);
    if report.problems.len() > before {
        return None;
    }

    let balancer = upstreams.get(host.as_str()).copied();
    // A name is looked up once the whole config is built (`lookup::fill`).
    let addr = if balancer.is_some() {
        None
    } else {
        lookup::literal(&host, port)
    };
    // RFC 9110 §7.2, as Kong: no port when it is the scheme's default.
    let host_header = if port == if https { 443 } else { 80 } {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let id = file_id.unwrap_or_else(|| match file.name {
        Some(_) => stable_id("service", &name),
        None => name.clone(),
    });
    // References by id must work for derived ids too.
    keys.entry(id.clone()).or_insert(index);
    Some(Service {
        id,
        layer: Layer::File,
        name: name.into(),
        host,
        port,
        path: base,
        path_given,
        host_header,
        addr_text: addr.map(|a| a.to_string()).unwrap_or_default(),
        addr,
        balancer,
        tls,
        retries: file.retries,
        tags: file.tags,
        connect_timeout,
        read_timeout,
        write_timeout,
        enabled: file.enabled,
        tls_verify: file.tls_verify,
        tls_verify_depth: file.tls_verify_depth,
        ca_certificates: file.ca_certificates,
    })
}

impl Config {
    /// The host names this config looked up at load, with what each resolved to (`None`:
    /// it did not), for a rebuild that keeps them (`from_layers_knowing`): an Admin API
    /// write looks up only names the running config does not know, so it never waits on
    /// a resolver for them (a name that failed would make every write wait its
    /// timeout); a reload looks every name up again.
    pub fn resolved_names(&self) -> lookup::Known {
        let services = self
            .services
            .iter()
            .filter(|s| s.balancer.is_none())
            .map(|s| ((s.host.clone(), s.port), s.addr));
        let targets = self
            .upstreams
            .iter()
            .flat_map(|u| &u.targets)
            .map(|t| ((t.host.clone(), t.port), t.addr));
        services.chain(targets).collect()
    }
}

/// A host as ringway keeps it: lower case, and a dotted quad in plain decimal, as Kong
/// reads one (`010.0.0.1` is 10.0.0.1, where the C library's resolver would read octal
/// and reach 8.0.0.1). `None` for what is no host, including four numbers that are no
/// IPv4 address (`1.2.3.256`). A dotted quad loses the root dot it may end in
/// (`1.2.3.4.`): no resolver would read it another way.
pub(crate) fn canonical_host(host: &str) -> Option<String> {
    if !valid_host(host) {
        return None;
    }
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(host).split('.').collect();
    if labels.len() != 4 || !labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Some(host.to_ascii_lowercase());
    }
    let mut octets = [0u8; 4];
    for (octet, label) in octets.iter_mut().zip(&labels) {
        *octet = label.parse().ok()?;
    }
    Some(std::net::Ipv4Addr::from(octets).to_string())
}

pub(crate) fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && (host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            // No empty label (`a..b`, `.a`), none longer than DNS allows; one trailing
            // dot (the root) is fine.
            && host
                .strip_suffix('.')
                .unwrap_or(host)
                .split('.')
                .all(|label| (1..=63).contains(&label.len()))
            || (host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()))
}

/// A config file's bytes as the document the config is built from: UTF-8, then
/// [`document`].
pub fn parse_document(bytes: &[u8]) -> Result<Value, Problems> {
    let problem = |message: String| {
        let mut report = Report::default();
        report.add("", message);
        Problems(report.problems)
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| problem(format!("the file is not valid UTF-8: {e}")))?;
    document(text).map_err(problem)
}

/// A parsed document kept as compact JSON, to be read back by [`from_compact`] many
/// times faster than the YAML it came from (which the parser turns into an event list of
/// about twenty times its size first), at a fraction of the tree's memory. `None` when
/// JSON cannot hold the document exactly (a key that is not a string, a NaN): it is
/// read back and compared before it is trusted.
pub fn compact(doc: &Value) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(doc).ok()?;
    (from_compact(&json).as_ref() == Some(doc)).then_some(json)
}

/// The document a [`compact`] form holds.
pub fn from_compact(json: &[u8]) -> Option<Value> {
    serde_json::from_slice(json).ok()
}

/// A config file's document as Kong's YAML loader reads it: parsed (deep nesting refused
/// first), merge keys expanded, YAML 1.1 booleans read in boolean fields, tags dropped.
pub fn document(text: &str) -> Result<Value, String> {
    let mut doc = yaml_document(text)?;
    // What `GET /config` answers in JSON (`{"config": {...}}`), or Kong's own answer
    // (`{"config": "<the YAML>"}`), saved as a file: the config it wraps, one level (a
    // wrapper inside is a config's own field, refused as such). No config has `config` as
    // its only key.
    if let Some(map) = doc
        .as_mapping_mut()
        .filter(|map| map.len() == 1)
        .filter(|map| {
            matches!(
                map.get("config"),
                Some(Value::Mapping(_) | Value::String(_))
            )
        })
    {
        doc = match map.remove("config") {
            Some(Value::String(text)) => yaml_document(&text)?,
            Some(config) => config,
            None => Value::Null,
        };
    }
    yaml11_booleans(&mut doc);
    untag(&mut doc);
    Ok(doc)
}

/// A YAML parse error as one problem line, which starts with the path when the parser
/// knows one (`services[0]: invalid YAML: duplicate entry with key "url" ...`), as every
/// other problem does.
fn yaml_problem(e: serde_norway::Error) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b)) =>
        {
            format!("{path}: invalid YAML: {rest}")
        }
        _ => format!("invalid YAML: {text}"),
    }
}

/// A YAML text parsed (deep nesting refused first), merge keys expanded.
fn yaml_document(text: &str) -> Result<Value, String> {
    if nests_too_deep(text) {
        return Err(format!(
            "invalid YAML: nests deeper than {MAX_FLOW_DEPTH} levels"
        ));
    }
    // A byte order mark (as some editors save UTF-8) is no part of the document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // One document; empty ones after it (a file that ends in `---`) are nothing, where
    // Kong's loader would read the first and drop any other unread.
    let mut documents = serde_norway::Deserializer::from_str(text);
    let first = match documents.next() {
        Some(first) => <Value as serde::Deserialize>::deserialize(first).map_err(yaml_problem)?,
        None => Value::Null,
    };
    for later in documents {
        let later = <Value as serde::Deserialize>::deserialize(later).map_err(yaml_problem)?;
        if !later.is_null() {
            return Err(
                "invalid YAML: more than one document (a config is one, with no `---` \
                 between parts)"
                    .to_owned(),
            );
        }
    }
    let mut doc = match first {
        Value::Null => Value::Mapping(Default::default()),
        doc => doc,
    };
    // `<<: *defaults` merge keys, which Kong's YAML loader expands; a merged mapping may
    // hold merge keys of its own (an anchor on a mapping that merges another), which the
    // next pass expands.
    for _ in 0..MAX_MERGE_DEPTH {
        doc.apply_merge().map_err(yaml_problem)?;
        if !has_merge_key(&doc) {
            break;
        }
    }
    Ok(doc)
}

/// Drops YAML tags (`!custom foo` is `foo`), as the loader reads tagged values: what
/// `GET /config` shows then loads again.
fn untag(value: &mut Value) {
    match value {
        Value::Tagged(tagged) => {
            let inner = std::mem::replace(&mut tagged.value, Value::Null);
            *value = inner;
            untag(value);
        }
        Value::Mapping(map) => map.iter_mut().for_each(|(_, field)| untag(field)),
        Value::Sequence(items) => items.iter_mut().for_each(untag),
        _ => {}
    }
}

/// Merge keys inside merged mappings are expanded this many levels deep at most; one
/// left beyond is then an unknown field, reported as such.
const MAX_MERGE_DEPTH: usize = 16;

/// Whether a `<<` key is left anywhere in `value`.
fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => map
            .iter()
            .any(|(key, field)| key.as_str() == Some("<<") || has_merge_key(field)),
        Value::Sequence(items) => items.iter().any(has_merge_key),
        Value::Tagged(tagged) => has_merge_key(&tagged.value),
        _ => false,
    }
}

/// The fields that hold a boolean, in any entity or plugin config.
const BOOLEAN_FIELDS: &[&str] = &[
    "ai_metrics",
    "bandwidth_metrics",
    "echo_downstream",
    "enabled",
    "fault_tolerant",
    "hide_client_headers",
    "hide_credentials",
    "https_verify_certificate",
    "latency_headers",
    "latency_metrics",
    "per_consumer",
    "preserve_host",
    "redis_ssl",
    "redis_ssl_verify",
    "request_buffering",
    "response_buffering",
    "run_on_preflight",
    "secret_is_base64",
    "ssl",
    "ssl_verify",
    "status_code_metrics",
    "strip_path",
    "tls_verify",
    "upstream_health_metrics",
    "use_srv_name",
    "wasm_metrics",
];

/// Reads YAML 1.1's other spellings of booleans (`yes`, `off`, ...) in boolean fields as
/// booleans, as Kong's YAML loader does (this parser follows YAML 1.2, where they are
/// strings), so a Kong file that writes `strip_path: no` loads as it does there.
fn yaml11_booleans(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (key, field) in map.iter_mut() {
                let boolean = key.as_str().is_some_and(|k| BOOLEAN_FIELDS.contains(&k));
                match field {
                    Value::String(word) if boolean => {
                        let truth = match word.as_str() {
                            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
                            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
                            _ => None,
                        };
                        if let Some(truth) = truth {
                            *field = Value::Bool(truth);
                        }
                    }
                    // Route `headers` map header names to values: any name, none a field.
                    _ if key.as_str() == Some("headers") => {}
                    _ => yaml11_booleans(field),
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(yaml11_booleans),
        Value::Tagged(tagged) => yaml11_booleans(&mut tagged.value),
        _ => {}
    }
}

/// A prefix path (a route's, a rate limit's `path`) as request paths are compared with
/// it: in the form routing normalizes a request path to, or the problem that no request
/// could ever match it as written.
pub fn prefix_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        Err(format!(
            "invalid path '{p}': must start with '/' (or '~/' for a regex)"
        ))
    } else if p.contains("//") {
        Err(format!("invalid path '{p}': must not have empty segments"))
    } else if p.contains('\\') {
        // A request path with a raw backslash is a 400, so no request could match; most
        // likely a Kong 2.x regex that lost its `~` on the way to "3.0".
        Err(format!(
            "invalid path '{p}': a prefix path cannot hold a raw '\\' (for a regex, write '~{p}')"
        ))
    } else if p.contains(['?', '#']) || p.bytes().any(|b| b.is_ascii_control()) {
        Err(format!(
            "invalid path '{}': must not contain a query, fragment or control character",
            p.escape_debug()
        ))
    } else {
        // As Kong: a prefix must be what a request path normalizes to. Kong writes what a
        // request path cannot carry raw decoded (`/a b`, `/café`); request paths are
        // matched here with it encoded (`/a%20b`, `/caf%C3%A9`): either spelling is
        // taken, as the latter.
        let encoded = crate::route::encoded_route_path(p);
        match crate::route::normalize(&encoded) {
            Ok(normal) if normal == encoded => Ok(normal.into_owned()),
            Ok(normal) => Err(format!(
                "non-normalized path, consider use '{normal}' instead"
            )),
            Err(_) => Err(format!(
                "invalid path '{p}': bad percent-encoding or '..' above the root"
            )),
        }
    }
}

/// Whether every `%` in `text` starts an escape of two hex digits.
fn well_escaped(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// A url as a problem may quote it: any `user:password@` (after the scheme, or at the
/// start) as `***@`.
fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// Splits `scheme://host[:port][/path]` into its parts.
pub(crate) fn parse_url(
    url: &str,
) -> Result<(String, String, Option<u16>, Option<String>), String> {
    // Problems quote the url, its credentials (which are refused) hidden.
    let given = url;
    let shown = without_userinfo(given);
    let url = &*shown;
    let (scheme, rest) = given
        .split_once("://")
        .ok_or_else(|| format!("invalid url '{url}': expected scheme://host[:port][/path]"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err(format!(
            "invalid url '{url}': credentials in the url are not supported"
        ));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("invalid url '{url}'"))?;
        let host = format!("[{}]", &stripped[..end]);
        let after = &stripped[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port in url '{url}'"))?,
            ),
            None if after.is_empty() => None,
            None => return Err(format!("invalid url '{url}'")),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("invalid port in url '{url}'"))?,
                ),
            ),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("invalid url '{url}': no host"));
    }
    let port = port.or(match scheme.as_str() {
        "https" => Some(443),
        _ => None,
    });
    Ok((scheme, host, port, path))
}

/// Kong 1.x and 2.x wrote regex paths bare; for a `_format_version` "2.1" (or "1.1") file Kong's
/// loader reads any path with a character a plain path does not have (outside
/// `A-Za-z0-9._~/%-`) as a regex, `~`-prefixed, with its percent-escapes decoded one
/// last time (3.0 matches regex paths against the undecoded path): a reserved character
/// stays escaped, a regex metacharacter is decoded escaped. Each rewrite is a warning.
/// A path that already starts with `~` is taken as a regex as written.
fn migrate_legacy_paths(route: &mut RouteFile, path: &str, report: &mut Report) {
    const RESERVED: &[u8] = b"!#$%&'()*+,/:;=?@[]";
    const REGEX_META: &[u8] = b".^-{}\\|";
    for (i, p) in route.paths.iter_mut().enumerate() {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-~/%".contains(&b);
        // A path already marked `~` was written for 3.0: left as it is.
        if p.starts_with('~') || p.bytes().all(plain) {
            continue;
        }
        let bytes = p.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(b'~');
        let mut at = 0;
        while at < bytes.len() {
            let escape = bytes
                .get(at + 1..at + 3)
                .filter(|hex| bytes[at] == b'%' && hex.iter().all(u8::is_ascii_hexdigit));
            let Some(hex) = escape else {
                out.push(bytes[at]);
                at += 1;
                continue;
            };
            let byte = hex.iter().fold(0u8, |n, &h| {
                n * 16 + (h as char).to_digit(16).unwrap_or(0) as u8
            });
            if RESERVED.contains(&byte) || !byte.is_ascii() {
                // A non-ASCII byte alone is not text the regex could hold: kept escaped.
                out.push(b'%');
                out.extend(hex.to_ascii_uppercase());
            } else {
                if REGEX_META.contains(&byte) {
                    out.push(b'\\');
                }
                out.push(byte);
            }
            at += 3;
        }
        // Only ASCII was decoded into bytes that were UTF-8 to begin with.
        let migrated = String::from_utf8(out).unwrap_or_default();
        report.warn(format!(
            "{path}.paths[{i}]: '{p}' is read as the regex '{migrated}' (a Kong 2.x format; write it with '~' in a \"3.0\" file)"
        ));
        *p = migrated;
    }
}

fn build_route(
    file: RouteFile,
    service: Option<usize>,
    path: &str,
    report: &mut Report,
) -> Option<Route> {
    let before = report.problems.len();
    let mut http = true;
    let mut https = true;
    let mut https_first = false;
    if let Some(protocols) = &file.protocols {
        http = false;
        https = false;
        for (i, p) in protocols.iter().enumerate() {
            match p.as_str() {
                "http" => http = true,
                "https" => {
                    https_first |= !http;
                    https = true;
                }
                other => report.add(
                    format!("{path}.protocols[{i}]"),
                    format!("unsupported protocol '{other}' (expected http or https)"),
                ),
            }
        }
        if protocols.is_empty() {
            report.add(format!("{path}.protocols"), "must not be empty");
        }
    }
    if file.paths.is_empty()
        && file.methods.is_empty()
        && file.hosts.is_empty()
        && file.headers.is_empty()
    {
        report.add(
            path.to_owned(),
            "must set at least one of 'methods', 'hosts', 'headers' or 'paths'",
        );
    }
    let mut paths = Vec::new();
    for (i, p) in file.paths.iter().enumerate() {
        let field = format!("{path}.paths[{i}]");
        if let Some(pattern) = p.strip_prefix('~') {
            if !pattern.starts_with('/') {
                report.add(
                    field,
                    format!("invalid regex path '{p}': must start with '~/'"),
                );
                continue;
            }
            // As Kong's router: the pattern reads escapes decoded, as it reads paths.
            let Ok(pattern) = crate::route::regex_for_matching(pattern) else {
                report.add(
                    field,
                    format!(
                        "invalid regex path '{p}': its escapes decode to bytes that are not UTF-8"
                    ),
                );
                continue;
            };
            match regex::RegexBuilder::new(&format!("^(?:{pattern})"))
                .size_limit(REGEX_SIZE_LIMIT_BYTES)
                .build()
            {
                Ok(re) => paths.push(PathMatch::Regex(re)),
                Err(e) => report.add(
                    field,
                    format!(
                        "invalid regex: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                ),
            }
        } else {
            match prefix_path(p) {
                Ok(normal) => paths.push(PathMatch::Prefix(normal)),
                Err(problem) => report.add(field, problem),
            }
        }
    }
    let mut methods = Vec::new();
    for (i, m) in file.methods.iter().enumerate() {
        if !crate::http::is_served_method(m) {
            report.add(
                format!("{path}.methods[{i}]"),
                format!("invalid method '{m}': must be upper-case letters"),
            );
        } else {
            methods.push(m.clone());
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in file.hosts.iter().enumerate() {
        match parse_host_match(h) {
            Ok(m) => hosts.push(m),
            Err(message) => report.add(format!("{path}.hosts[{i}]"), message),
        }
    }
    let mut headers = Vec::new();
    for (name, values) in file.headers {
        let field = format!("{path}.headers.{name}");
        let lower = crate::http::header_key(&name);
        if lower == "host" {
            report.add(field, "cannot match on 'host': use 'hosts'");
            continue;
        }
        if lower.is_empty() || !lower.bytes().all(crate::http::is_token_byte) {
            report.add(field, format!("invalid header name '{name}'"));
            continue;
        }
        let values = values.into_vec();
        if values.is_empty() {
            report.add(field, "must list at least one value");
            continue;
        }
        let mut matches = Vec::new();
        for value in values {
            if let Some(pattern) = value.strip_prefix("~*") {
                match regex::RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT_BYTES)
                    .build()
                {
                    Ok(re) => matches.push(ValueMatch::Regex(re)),
                    Err(e) => report.add(
                        field.clone(),
                        format!(
                            "invalid regex: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    ),
                }
            } else {
                matches.push(ValueMatch::Exact(value.to_ascii_lowercase()));
            }
        }
        // Every value was refused, each with its reason: nothing to match on.
        if matches.is_empty() {
            continue;
        }
        headers.push((lower, matches));
    }
    if let Some(handling) = &file.path_handling {
        if handling != "v0" {
            report.add(
                format!("{path}.path_handling"),
                format!(
                    "unsupported path_handling '{handling}' (only v0, Kong 3's default router's)"
                ),
            );
        }
    }
    let https_redirect_status_code = file.https_redirect_status_code.unwrap_or(426);
    if ![426, 301, 302, 307, 308].contains(&https_redirect_status_code) {
        report.add(
            format!("{path}.https_redirect_status_code"),
            "must be one of 426, 301, 302, 307, 308",
        );
    }
    if !file.snis.is_empty() {
        report.add(
            format!("{path}.snis"),
            "SNI matching is not supported by this version of ringway",
        );
    }
    for (field, given) in [
        ("sources", &file.sources),
        ("destinations", &file.destinations),
    ] {
        if !given.is_empty() {
            report.add(
                format!("{path}.{field}"),
                "stream routes (sources/destinations) are not supported",
            );
        }
    }
    if file.expression.is_some() || file.priority.is_some_and(|p| p != 0) {
        let field = if file.expression.is_some() {
            "expression"
        } else {
            "priority"
        };
        report.add(
            format!("{path}.{field}"),
            "expression routes (Kong's expressions router) are not supported",
        );
    }
    if report.problems.len() > before {
        return None;
    }
    let id = file
        .id
        .clone()
        .unwrap_or_else(|| stable_id("route", file.name.as_deref().unwrap_or(path)));
    Some(Route {
        id,
        layer: Layer::File,
        name: file.name.map(Arc::from),
        tags: file.tags,
        service: service?,
        paths,
        methods,
        hosts,
        headers,
        strip_path: file.strip_path,
        preserve_host: file.preserve_host,
        regex_priority: file.regex_priority,
        http,
        https,
        https_first,
        https_redirect_status_code,
        request_buffering: file.request_buffering.unwrap_or(true),
        response_buffering: file.response_buffering.unwrap_or(true),
    })
}

fn parse_host_match(host: &str) -> Result<HostMatch, String> {
    // A request's Host loses its root dot before routing, so the route's does too:
    // `example.com.` matches both spellings of the name.
    let lower = crate::route::without_root_dot(&host.to_ascii_lowercase()).into_owned();
    let stars = lower.matches('*').count();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']')
            })
            && port_is_valid(s)
    };
    if stars == 0 {
        return if valid(&lower) {
            Ok(HostMatch::Exact(lower))
        } else {
            Err(format!("invalid host '{host}'"))
        };
    }
    if stars > 1 {
        return Err(format!(
            "invalid host '{host}': only one wildcard is allowed"
        ));
    }
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
    }
    if let Some(rest) = lower.strip_suffix(".*") {
        if valid(rest) {
            return Ok(HostMatch::Prefix(format!("{rest}.")));
        }
    }
    Err(format!(
        "invalid wildcard host '{host}': the wildcard must be the leftmost or rightmost label"
    ))
}

/// A route host's optional `:port` (after a name, or after an `[IPv6]` literal) is a
/// port number up to 65535 (Kong's bound), and no other colon stands outside the
/// brackets, which hold an IPv6 address's characters.
fn port_is_valid(host: &str) -> bool {
    let port = if let Some(literal) = host.strip_prefix('[') {
        let Some((address, rest)) = literal.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
        rest.strip_prefix(':')
    } else {
        if host.contains(['[', ']']) {
            return false;
        }
        match host.split_once(':') {
            None => return true,
            Some((name, port)) if !name.is_empty() => Some(port),
            Some(_) => None,
        }
    };
    port.is_some_and(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    })
}

#[cfg(test)]
mod tests;
