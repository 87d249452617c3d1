//! Consumers, consumer groups, JWT credentials and plugins: validated, references
//! resolved, and each plugin's precedence decided once per route.

use std::collections::HashMap;
use std::sync::Arc;

use serde_norway::Value;
use sha2::{Digest, Sha256};

use super::file::{ConsumerFile, ConsumerGroupFile, JwtSecretFile, PluginFile, Reference};
use super::{first_seen, parse_item, Report, Route};
use crate::plugins::{correlation_id, jwt, prometheus, rate_limiting};

/// Which layer an entity belongs to (SPEC §5): the config file, or the Admin API's
/// state in `data_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    File,
    Admin,
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub groups: Vec<usize>,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
}

/// A JWT credential as stored (the prepared verifier lives in `Config::credentials`).
#[derive(Debug, Clone)]
pub struct JwtSecret {
    pub id: String,
    pub key: String,
    pub secret: Option<String>,
    pub algorithm: jwt::Algorithm,
    pub rsa_public_key: Option<String>,
    pub consumer: usize,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
    /// `secret` or `rsa_public_key` as written when it was a vault reference.
    pub references: Vec<(&'static str, String)>,
}

/// Where a plugin applies; `None` is "any".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    pub service: Option<usize>,
    pub route: Option<usize>,
    pub consumer: Option<usize>,
    pub group: Option<usize>,
}

/// A plugin's validated configuration.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    Jwt(Arc<jwt::Config>),
    RateLimiting(Arc<rate_limiting::Config>),
    CorrelationId(Arc<correlation_id::Config>),
    Prometheus(Arc<prometheus::Config>),
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    pub instance_name: Option<String>,
    pub enabled: bool,
    pub scope: Scope,
    pub protocols: Vec<String>,
    pub config: PluginConfig,
    /// The config with every default filled in, as the Admin API shows it.
    pub config_json: serde_json::Value,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub layer: Layer,
    /// Where it is in the config (`plugins[2]`), for problems found across plugins.
    pub path: String,
}

/// The plugins that run for one route (or for requests no route matched), with Kong's
/// precedence already applied.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub correlation_id: Option<Arc<correlation_id::Config>>,
    pub jwt: Option<Arc<jwt::Config>>,
    pub rate_limiting: Scoped<rate_limiting::Config>,
}

/// A plugin that may also be scoped to consumers or consumer groups: the config that
/// applies without a consumer, and the ones that override it for particular consumers
/// and groups, each with its precedence rank (lower wins). Which one runs is known once
/// the consumer is: [`Scoped::select`].
#[derive(Debug, Clone)]
pub struct Scoped<T> {
    pub default: Option<(u8, Arc<T>)>,
    pub consumers: HashMap<usize, (u8, Arc<T>)>,
    pub groups: HashMap<usize, (u8, Arc<T>)>,
}

impl<T> Default for Scoped<T> {
    fn default() -> Self {
        Scoped {
            default: None,
            consumers: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl<T> Scoped<T> {
    /// The config for a request by `consumer` (its index and groups), if any applies.
    pub fn select(&self, consumer: Option<(usize, &[usize])>) -> Option<&Arc<T>> {
        let mut best = self.default.as_ref();
        if let Some((index, groups)) = consumer {
            let candidates = self
                .consumers
                .get(&index)
                .into_iter()
                .chain(groups.iter().filter_map(|g| self.groups.get(g)));
            for candidate in candidates {
                if best.is_none_or(|b| candidate.0 < b.0) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, config)| config)
    }

    fn offer(&mut self, scope: &Scope, rank: u8, config: &Arc<T>) {
        let slot = match (scope.consumer, scope.group) {
            (Some(c), _) => self.consumers.get_mut(&c),
            (None, Some(g)) => self.groups.get_mut(&g),
            (None, None) => self.default.as_mut(),
        };
        match slot {
            Some(current) if current.0 <= rank => {}
            Some(current) => *current = (rank, config.clone()),
            None => {
                let entry = (rank, config.clone());
                match (scope.consumer, scope.group) {
                    (Some(c), _) => {
                        self.consumers.insert(c, entry);
                    }
                    (None, Some(g)) => {
                        self.groups.insert(g, entry);
                    }
                    (None, None) => self.default = Some(entry),
                }
            }
        }
    }
}

/// A UUID-shaped id derived from an entity's kind and name, so entities declared without
/// an `id` keep the same one across restarts and reloads.
pub fn stable_id(kind: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("ringway:{kind}:{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// A random (version 4) UUID.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    write_uuid(&mut out, *b);
    out
}

/// Appends `bytes` in a UUID's textual form (the caller sets version and variant).
pub fn write_uuid(out: &mut String, bytes: [u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// A key that names an entity by id or by name, as ids are kept: a UUID in lower case
/// (Kong's check ignores case and its database stores the canonical form), anything
/// else as given.
pub fn canonical_key(mut key: String) -> String {
    if is_uuid(&key) {
        key.make_ascii_lowercase();
    }
    key
}

/// Whether a string is a UUID in Kong's textual form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Name and id lookups for every kind of entity, used to resolve references.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    pub services: HashMap<String, usize>,
    pub routes: HashMap<String, usize>,
    pub consumers: HashMap<String, usize>,
    /// Consumers by `custom_id`, apart: a custom_id may read as another's username.
    pub custom_ids: HashMap<String, usize>,
    pub groups: HashMap<String, usize>,
    pub upstreams: HashMap<String, usize>,
    /// Entities declared, by kind and name or id, whether or not they were refused: a
    /// reference to a refused one (its problems reported) is not one more problem.
    pub declared: std::collections::HashSet<(&'static str, String)>,
}

fn resolve(
    map: &HashMap<String, usize>,
    declared: &std::collections::HashSet<(&'static str, String)>,
    reference: Option<&Reference>,
    kind: &'static str,
    path: &str,
    report: &mut Report,
) -> Option<Option<usize>> {
    let Some(reference) = reference else {
        return Some(None);
    };
    if reference.refuse_disagreement(map, kind, path, report) {
        return None;
    }
    let Some(key) = reference.key() else {
        // An object with every key null (`{username: null}`) names nothing at all.
        report.add(
            path.to_owned(),
            format!("names no {kind}: give its name or id"),
        );
        return None;
    };
    match map.get(key) {
        Some(&index) => Some(Some(index)),
        None if declared.contains(&(kind, key.to_owned())) => None,
        None => {
            report.add(path.to_owned(), missing_reference(kind, key));
            None
        }
    }
}

/// `resolve` for a consumer, which a reference may also name by its `custom_id`.
fn resolve_consumer(
    keys: &Keys,
    reference: Option<&Reference>,
    path: &str,
    report: &mut Report,
) -> Option<Option<usize>> {
    match reference.and_then(Reference::custom_id) {
        Some(custom_id) => match keys.custom_ids.get(custom_id) {
            Some(&index) => Some(Some(index)),
            None => {
                report.add(
                    path.to_owned(),
                    format!("no consumer with custom_id '{custom_id}'"),
                );
                None
            }
        },
        None => resolve(
            &keys.consumers,
            &keys.declared,
            reference,
            "consumer",
            path,
            report,
        ),
    }
}

/// The problem of a reference to a `kind` entity named `key` that does not exist.
pub(crate) fn missing_reference(kind: &str, key: &str) -> String {
    format!("no {kind} named '{key}'")
}

/// The key a [`missing_reference`] problem about a `kind` entity names, if it is one.
pub(crate) fn missing_reference_key<'m>(message: &'m str, kind: &str) -> Option<&'m str> {
    message
        .strip_prefix("no ")?
        .strip_prefix(kind)?
        .strip_prefix(" named '")?
        .strip_suffix('\'')
}

/// An entity item with where it came from.
pub struct Item {
    pub path: String,
    pub value: Value,
    pub layer: Layer,
}

/// Consumer groups first (consumers refer to them).
/// Members a group lists (decK's form): where each is, whom it names, and the group.
pub type NestedMembers = Vec<(String, Reference, usize)>;

pub fn build_groups(
    items: Vec<Item>,
    keys: &mut Keys,
    report: &mut Report,
) -> (Vec<ConsumerGroup>, Vec<(Item, Scope)>, NestedMembers) {
    let mut groups = Vec::new();
    let mut nested_plugins = Vec::new();
    let mut members = Vec::new();
    for item in items {
        let Some(file) = parse_item::<ConsumerGroupFile>(item.value, &item.path, report) else {
            continue;
        };
        let Some(name) = file.name.filter(|n| !n.is_empty()) else {
            report.add(format!("{}.name", item.path), "required field missing");
            continue;
        };
        let index = groups.len();
        let id = file
            .id
            .unwrap_or_else(|| stable_id("consumer_group", &name));
        // One problem per group: a repeated name would also repeat the id derived from it.
        if keys.groups.contains_key(&name) {
            report.add(
                format!("{}.name", item.path),
                format!("duplicate consumer group '{name}'"),
            );
            continue;
        }
        if keys.groups.contains_key(&id) {
            report.add(
                format!("{}.id", item.path),
                format!("duplicate consumer group id '{id}'"),
            );
            continue;
        }
        keys.groups.insert(name.clone(), index);
        keys.groups.insert(id.clone(), index);
        for (i, plugin) in file.plugins.into_iter().enumerate() {
            let scope = Scope {
                group: Some(index),
                ..Scope::default()
            };
            nested_plugins.push((
                Item {
                    path: format!("{}.plugins[{i}]", item.path),
                    value: plugin,
                    layer: item.layer,
                },
                scope,
            ));
        }
        for (i, member) in file.consumers.into_iter().enumerate() {
            members.push((format!("{}.consumers[{i}]", item.path), member, index));
        }
        groups.push(ConsumerGroup {
            id,
            name,
            tags: file.tags,
            created_at: file.created_at.unwrap_or(0),
            layer: item.layer,
        });
    }
    (groups, nested_plugins, members)
}

/// Adds the memberships groups list to their consumers (once the consumers are built).
pub fn add_nested_members(
    members: NestedMembers,
    consumers: &mut [Consumer],
    keys: &Keys,
    report: &mut Report,
) {
    for (path, member, group) in members {
        if let Some(Some(consumer)) = resolve_consumer(keys, Some(&member), &path, report) {
            if let Some(consumer) = consumers.get_mut(consumer) {
                consumer.groups.push(group);
            }
        }
    }
}

/// Consumers, their nested credentials (with the consumer's index) and their nested
/// plugins (with the consumer's scope).
pub type BuiltConsumers = (
    Vec<Consumer>,
    Vec<(Item, Option<usize>)>,
    Vec<(Item, Scope)>,
);

/// A value sent upstream in a header (a consumer's `username` and `custom_id` in
/// `X-Consumer-*`, a credential's `key` in `X-Credential-Identifier`) has no control
/// character: a CR or LF there would end the header and start another, or a request.
fn header_safe(value: &str, path: &str, report: &mut Report) {
    if value.chars().any(char::is_control) {
        report.add(path, "must not contain control characters (CR, LF, ...)");
    }
}

/// Consumers, collecting their nested credentials and plugins.
pub fn build_consumers(items: Vec<Item>, keys: &mut Keys, report: &mut Report) -> BuiltConsumers {
    let mut consumers = Vec::new();
    let mut secrets = Vec::new();
    let mut nested_plugins = Vec::new();
    let mut custom_ids: HashMap<String, String> = HashMap::new();
    // Usernames shaped as a UUID, with where they are: checked against every id below,
    // without regard to case (ids are found so).
    let mut uuid_usernames: Vec<(usize, String, String, Layer)> = Vec::new();
    for item in items {
        let Some(file) = parse_item::<ConsumerFile>(item.value, &item.path, report) else {
            continue;
        };
        let before = report.problems.len();
        if file.username.as_deref().unwrap_or("").is_empty()
            && file.custom_id.as_deref().unwrap_or("").is_empty()
        {
            report.add(
                item.path.clone(),
                "at least one of these fields must be non-empty: 'custom_id', 'username'",
            );
            continue;
        }
        for (field, value) in [("username", &file.username), ("custom_id", &file.custom_id)] {
            if let Some(value) = value {
                header_safe(value, &format!("{}.{field}", item.path), report);
            }
        }
        let index = consumers.len();
        let id = file.id.clone().unwrap_or_else(|| {
            stable_id(
                "consumer",
                file.username
                    .as_deref()
                    .or(file.custom_id.as_deref())
                    .unwrap_or_default(),
            )
        });
        // Usernames and ids share one lookup, so a username shaped as a UUID may not be
        // another consumer's id (nor an id another's username).
        if let Some(username) = &file.username {
            if super::is_uuid(username) {
                uuid_usernames.push((index, item.path.clone(), username.clone(), item.layer));
            }
            if let Some(other) = keys.consumers.insert(username.clone(), index) {
                let problem = if consumers
                    .get(other)
                    .is_some_and(|c: &Consumer| c.id == *username)
                {
                    format!("'{username}' is the id of another consumer")
                } else {
                    format!("duplicate consumer '{username}'")
                };
                report.add(format!("{}.username", item.path), problem);
            }
        }
        // An id derived from a duplicated username or custom_id is a duplicate already
        // reported; only an id written in the file is reported as one.
        if let Some(other) = keys.consumers.insert(id.clone(), index) {
            if file.id.is_some() {
                let problem = if consumers.get(other).is_some_and(|c: &Consumer| c.id != id) {
                    format!("'{id}' is the username of another consumer")
                } else {
                    format!("duplicate consumer id '{id}'")
                };
                report.add(format!("{}.id", item.path), problem);
            }
        }
        if let Some(custom_id) = &file.custom_id {
            if let Some(first) = first_seen(&mut custom_ids, custom_id.clone(), item.path.clone()) {
                report.add(
                    format!("{}.custom_id", item.path),
                    format!("duplicate custom_id '{custom_id}' (first at {first})"),
                );
            }
            keys.custom_ids.entry(custom_id.clone()).or_insert(index);
        }
        let mut groups = Vec::new();
        for (i, group) in file.groups.iter().enumerate() {
            if let super::file::GroupRef::Object(object) = group {
                let at = format!("{}.groups[{i}]", item.path);
                if object.refuse_disagreement(&keys.groups, "consumer group", &at, report) {
                    continue;
                }
            }
            match group.key().and_then(|k| keys.groups.get(k)) {
                // A warning, not a problem: a state saved before this was checked may
                // hold one, and refusing it would stop an upgraded gateway's start.
                Some(&g) if groups.contains(&g) => report.warn(format!(
                    "{}.groups[{i}]: group '{}' is listed twice; once is kept",
                    item.path,
                    group.key().unwrap_or("")
                )),
                Some(&g) => groups.push(g),
                None => report.add(
                    format!("{}.groups[{i}]", item.path),
                    format!("no consumer group named '{}'", group.key().unwrap_or("")),
                ),
            }
        }
        for (i, secret) in file.jwt_secrets.into_iter().enumerate() {
            secrets.push((
                Item {
                    path: format!("{}.jwt_secrets[{i}]", item.path),
                    value: secret,
                    layer: item.layer,
                },
                Some(index),
            ));
        }
        for (i, plugin) in file.plugins.into_iter().enumerate() {
            let scope = Scope {
                consumer: Some(index),
                ..Scope::default()
            };
            nested_plugins.push((
                Item {
                    path: format!("{}.plugins[{i}]", item.path),
                    value: plugin,
                    layer: item.layer,
                },
                scope,
            ));
        }
        if report.problems.len() > before {
            // Keep the index stable for nested items; the config is invalid anyway.
        }
        consumers.push(Consumer {
            id,
            username: file.username,
            custom_id: file.custom_id,
            groups,
            tags: file.tags,
            created_at: file.created_at.unwrap_or(0),
            layer: item.layer,
        });
    }
    if !uuid_usernames.is_empty() {
        let ids: HashMap<String, usize> = consumers
            .iter()
            .enumerate()
            .map(|(i, c): (usize, &Consumer)| (c.id.to_ascii_lowercase(), i))
            .collect();
        for (index, path, username, layer) in uuid_usernames {
            let other = ids.get(&username.to_ascii_lowercase());
            // Exactly equal was said above, as the lookup found it. The Admin API refuses
            // the rest when it writes them; one an earlier version saved loads with a
            // warning.
            if other.is_some_and(|&o| o != index && consumers[o].id != username) {
                let at = format!("{path}.username");
                let problem = format!("'{username}' is the id of another consumer");
                match layer {
                    Layer::File => report.add(at, problem),
                    Layer::Admin => report.warn(format!("{at}: {problem}")),
                }
            }
        }
    }
    (consumers, secrets, nested_plugins)
}

/// JWT credentials, nested (consumer known) or top level (`consumer:` reference).
pub fn build_secrets(
    items: Vec<(Item, Option<usize>)>,
    keys: &Keys,
    report: &mut Report,
) -> (Vec<JwtSecret>, jwt::Credentials) {
    let mut secrets = Vec::new();
    let mut credentials = jwt::Credentials::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut keys_seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (item, parent) in items {
        let Some(file) = parse_item::<JwtSecretFile>(item.value, &item.path, report) else {
            continue;
        };
        // Not yet a reason to stop: the key's own problems (a duplicate) are reported
        // whatever the consumer's.
        let consumer = match parent {
            Some(index) => {
                if file.consumer.is_some() {
                    report.add(
                        format!("{}.consumer", item.path),
                        "a nested credential takes its consumer from its parent",
                    );
                }
                Some(index)
            }
            None => match resolve_consumer(
                keys,
                file.consumer.as_ref(),
                &format!("{}.consumer", item.path),
                report,
            ) {
                Some(Some(index)) => Some(index),
                Some(None) => {
                    report.add(format!("{}.consumer", item.path), "required field missing");
                    None
                }
                None => None,
            },
        };
        // Each field's problem is reported whatever the others' (an unknown algorithm
        // hid a duplicate key in the next credential).
        let algorithm_name = file.algorithm.unwrap_or_else(|| "HS256".to_owned());
        let algorithm = jwt::Algorithm::parse(&algorithm_name);
        if algorithm.is_none() {
            report.add(
                format!("{}.algorithm", item.path),
                jwt::Algorithm::unknown(&algorithm_name),
            );
        }
        // A missing or repeated key still leaves the secret or public key checked, so
        // that one run names every field to fix.
        let key = file.key.filter(|k| !k.is_empty());
        let mut usable = true;
        match &key {
            None => {
                report.add(
                    format!("{}.key", item.path),
                    "required field missing (the Admin API generates one; the file must name it)",
                );
                usable = false;
            }
            Some(key) => {
                header_safe(key, &format!("{}.key", item.path), report);
                if !keys_seen.insert(key.clone()) {
                    report.add(
                        format!("{}.key", item.path),
                        format!("duplicate credential key '{key}'"),
                    );
                    usable = false;
                }
            }
        }
        let id = match (&file.id, &key) {
            (Some(id), _) => id.clone(),
            (None, Some(key)) => stable_id("jwt_secret", key),
            (None, None) => String::new(),
        };
        if usable {
            if let Some(first) = first_seen(&mut ids, id.clone(), item.path.clone()) {
                report.add(
                    format!("{}.id", item.path),
                    format!("duplicate credential id (first at {first})"),
                );
            }
        }
        let Some(algorithm) = algorithm else {
            continue;
        };
        if algorithm.is_hmac() && file.secret.as_deref().unwrap_or("").is_empty() {
            report.add(
                format!("{}.secret", item.path),
                "required for HS algorithms",
            );
            continue;
        }
        let label = key.as_deref().unwrap_or("");
        // An RSA key no token can verify with: refused in the file (the Admin API
        // refuses it before writing); one an earlier version saved loads with a warning,
        // so it cannot stop the gateway's start.
        let unusable = match (algorithm.is_hmac(), file.rsa_public_key.as_deref()) {
            (false, Some(pem)) => jwt::rsa_key_problem(pem),
            _ => None,
        };
        match (unusable, item.layer) {
            (Some(problem), Layer::File) => {
                report.add(format!("{}.rsa_public_key", item.path), problem);
                continue;
            }
            (Some(problem), Layer::Admin) => report.warn(format!(
                "{}.rsa_public_key ({label}): {problem}; no token can verify with it",
                item.path
            )),
            (None, _) => {}
        }
        // Built to check its key material even when its consumer or key is refused
        // (then dropped below, so the placeholder consumer is never used).
        let credential = jwt::Credential::new(
            id.clone(),
            label.to_owned(),
            algorithm,
            file.secret.as_deref(),
            file.rsa_public_key.as_deref(),
            consumer.unwrap_or(0),
        );
        let credential = match credential {
            Ok(credential) => credential,
            Err((field, message)) => {
                report.add(format!("{}.{field}", item.path), message);
                continue;
            }
        };
        let (Some(key), Some(consumer), true) = (key, consumer, usable) else {
            continue;
        };
        // Keys are unique here: a duplicate was refused above.
        credentials.insert(key.clone(), credential);
        secrets.push(JwtSecret {
            id,
            key,
            secret: file.secret,
            algorithm,
            rsa_public_key: file.rsa_public_key,
            consumer,
            tags: file.tags,
            created_at: file.created_at.unwrap_or(0),
            layer: item.layer,
            references: report
                .references_in(&item.path, super::vault::secret_fields("jwt_secrets")),
        });
    }
    (secrets, credentials)
}

/// Kong's `utf8_name`, the rule for the names of services and routes and a plugin's
/// `instance_name`: beyond ASCII anything, within it a name's characters.
pub fn utf8_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("length must be at least 1".to_owned());
    }
    let valid = name
        .chars()
        .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'));
    (!valid).then(|| format!("invalid value '{name}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"))
}

/// The plugin names this version implements.
pub const KNOWN_PLUGINS: &[&str] = &["correlation-id", "jwt", "prometheus", "rate-limiting"];

/// Kong's own plugins (bundled and Enterprise) that this version does not implement: a
/// file moving from Kong names them, and is told so rather than of a typo.
const KONG_PLUGINS: &[&str] = &[
    "acl",
    "acme",
    "ai-proxy",
    "ai-prompt-decorator",
    "ai-prompt-guard",
    "ai-prompt-template",
    "ai-request-transformer",
    "ai-response-transformer",
    "aws-lambda",
    "azure-functions",
    "basic-auth",
    "bot-detection",
    "canary",
    "cors",
    "datadog",
    "file-log",
    "grpc-gateway",
    "grpc-web",
    "hmac-auth",
    "http-log",
    "ip-restriction",
    "jwt-signer",
    "key-auth",
    "key-auth-enc",
    "ldap-auth",
    "loggly",
    "mtls-auth",
    "oauth2",
    "oauth2-introspection",
    "opa",
    "openid-connect",
    "opentelemetry",
    "post-function",
    "pre-function",
    "proxy-cache",
    "proxy-cache-advanced",
    "rate-limiting-advanced",
    "redirect",
    "request-size-limiting",
    "request-termination",
    "request-transformer",
    "request-transformer-advanced",
    "request-validator",
    "response-ratelimiting",
    "response-transformer",
    "response-transformer-advanced",
    "session",
    "standard-webhooks",
    "statsd",
    "syslog",
    "tcp-log",
    "udp-log",
    "zipkin",
];

/// The problem of a plugin name this version does not implement.
pub fn unknown_plugin(name: &str) -> String {
    let available = KNOWN_PLUGINS.join(", ");
    match name {
        "rate-limiting-advanced" => format!(
            "plugin '{name}' is not implemented by this version of ringway: `rate-limiting` \
             takes the same limits per period, per consumer group too (available: {available})"
        ),
        _ if KONG_PLUGINS.contains(&name) => format!(
            "plugin '{name}' is not implemented by this version of ringway (available: {available})"
        ),
        _ => format!("unknown plugin '{name}' (available: {available})"),
    }
}

/// Where a plugin's config problem is reported: `config.FIELD`; the plugin itself for an
/// empty field (a check across the plugin's fields, Kong's `@entity`); `config` itself for
/// `.` (a check across the config's fields, which Kong's schema puts on the record).
fn config_field(plugin: &str, field: &str) -> String {
    match field {
        "" => plugin.to_owned(),
        "." => format!("{plugin}.config"),
        field => format!("{plugin}.config.{field}"),
    }
}

fn plugin_config(
    name: &str,
    config: Option<Value>,
    path: &str,
    layer: Layer,
    report: &mut Report,
) -> Option<(PluginConfig, serde_json::Value)> {
    let config = config.unwrap_or(Value::Mapping(Default::default()));
    let config_path = format!("{path}.config");
    match name {
        "jwt" => {
            let file: jwt::ConfigFile = parse_item(config, &config_path, report)?;
            let json = serde_json::to_value(&file).unwrap_or_default();
            match file.validate() {
                Ok(config) => Some((PluginConfig::Jwt(Arc::new(config)), json)),
                Err(problems) => {
                    for (field, message) in problems {
                        report.add(config_field(path, &field), message);
                    }
                    None
                }
            }
        }
        "rate-limiting" => {
            let file: rate_limiting::ConfigFile = parse_item(config, &config_path, report)?;
            let json = file.shown();
            match file.validate() {
                Ok(config) => Some((PluginConfig::RateLimiting(Arc::new(config)), json)),
                Err(problems) => {
                    for (field, message) in problems {
                        report.add(config_field(path, &field), message);
                    }
                    None
                }
            }
        }
        "correlation-id" => {
            let file: correlation_id::ConfigFile = parse_item(config, &config_path, report)?;
            let json = serde_json::to_value(&file).unwrap_or_default();
            // Refused in the file; Admin API state an earlier version saved loads with a
            // warning (what the Admin API writes is refused, see `what_a_write_adds`).
            if let Some(caution) = file.header_caution() {
                let at = config_field(path, "header_name");
                match layer {
                    Layer::File => {
                        report.add(at, caution);
                        return None;
                    }
                    Layer::Admin => report.warn(format!("{at}: {caution}")),
                }
            }
            match file.validate() {
                Ok(config) => Some((PluginConfig::CorrelationId(Arc::new(config)), json)),
                Err(problems) => {
                    for (field, message) in problems {
                        report.add(config_field(path, &field), message);
                    }
                    None
                }
            }
        }
        "prometheus" => {
            let config: prometheus::Config = parse_item(config, &config_path, report)?;
            let json = serde_json::to_value(&config).unwrap_or_default();
            Some((PluginConfig::Prometheus(Arc::new(config)), json))
        }
        _ => None,
    }
}

/// Validates plugins and resolves their scope references.
/// The ids of the entities a plugin may be scoped to, by index.
pub struct ScopeIds<'a> {
    pub services: Vec<&'a str>,
    pub routes: Vec<&'a str>,
    pub consumers: Vec<&'a str>,
    pub groups: Vec<&'a str>,
}

impl ScopeIds<'_> {
    /// A scope named by its entities' ids (stable as they are), not by their places in
    /// the file: a plugin keeps its id, and a rate limit its counts, when the file's
    /// entities are reordered.
    fn key(&self, scope: &Scope) -> String {
        let id = |ids: &[&str], index: Option<usize>| {
            index.map_or(String::new(), |i| {
                ids.get(i)
                    .map_or_else(|| format!("#{i}"), |id| (*id).to_owned())
            })
        };
        format!(
            "service={} route={} consumer={} group={}",
            id(&self.services, scope.service),
            id(&self.routes, scope.route),
            id(&self.consumers, scope.consumer),
            id(&self.groups, scope.group),
        )
    }
}

pub fn build_plugins(
    items: Vec<(Item, Scope)>,
    keys: &Keys,
    scope_ids: &ScopeIds<'_>,
    report: &mut Report,
) -> Vec<Plugin> {
    let mut plugins = Vec::new();
    let mut seen: HashMap<(String, Scope), String> = HashMap::new();
    // Given ids and instance names, to the item that gave each first.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut instances: HashMap<String, (String, Layer)> = HashMap::new();
    for (item, nested) in items {
        // A malformed instance_name is named whatever else is wrong with the plugin. The
        // Admin API checks what it writes; a plugin an earlier version saved without the
        // check loads with a warning rather than stopping the start.
        let instance = item.value.get("instance_name").and_then(|v| v.as_str());
        if let Some(problem) = instance.and_then(utf8_name_problem) {
            match item.layer {
                Layer::File => report.add(format!("{}.instance_name", item.path), problem),
                Layer::Admin => report.warn(format!("{}.instance_name: {problem}", item.path)),
            }
        }
        let Some(file) = parse_item::<PluginFile>(item.value, &item.path, report) else {
            continue;
        };
        let Some(name) = file.name.clone() else {
            report.add(format!("{}.name", item.path), "required field missing");
            continue;
        };
        if !KNOWN_PLUGINS.contains(&name.as_str()) {
            report.add(format!("{}.name", item.path), unknown_plugin(&name));
            continue;
        }
        let mut scope = nested;
        let mut ok = true;
        for (field, map, reference, slot, kind) in [
            (
                "service",
                &keys.services,
                file.service.as_ref(),
                &mut scope.service,
                "service",
            ),
            (
                "route",
                &keys.routes,
                file.route.as_ref(),
                &mut scope.route,
                "route",
            ),
            (
                "consumer",
                &keys.consumers,
                file.consumer.as_ref(),
                &mut scope.consumer,
                "consumer",
            ),
            (
                "consumer_group",
                &keys.groups,
                file.consumer_group.as_ref(),
                &mut scope.group,
                "consumer group",
            ),
        ] {
            if reference.is_none() {
                continue;
            }
            if slot.is_some() {
                report.add(
                    format!("{}.{field}", item.path),
                    format!("a nested plugin takes its {kind} from its parent"),
                );
                ok = false;
                continue;
            }
            let at = format!("{}.{field}", item.path);
            let resolved = if field == "consumer" {
                resolve_consumer(keys, reference, &at, report)
            } else {
                resolve(map, &keys.declared, reference, kind, &at, report)
            };
            match resolved {
                Some(index) => *slot = index,
                None => ok = false,
            }
        }
        if scope.consumer.is_some() && scope.group.is_some() {
            report.add(
                format!("{}.consumer_group", item.path),
                "a plugin is scoped to a consumer or to a consumer group, not both",
            );
            ok = false;
        }
        if scope.consumer.is_some() || scope.group.is_some() {
            let (field, whom) = if scope.group.is_some() {
                ("consumer_group", "a consumer group")
            } else {
                ("consumer", "a consumer")
            };
            let why = match name.as_str() {
                "jwt" => Some("authenticates consumers, so it cannot be scoped to"),
                "correlation-id" => Some("runs before authentication, so it cannot be scoped to"),
                "prometheus" => Some("cannot be scoped (as in Kong) to"),
                _ => None,
            };
            if let Some(why) = why {
                report.add(
                    format!("{}.{field}", item.path),
                    format!("plugin '{name}' {why} {whom}"),
                );
                ok = false;
            }
        }
        let protocols = file
            .protocols
            .clone()
            .unwrap_or_else(|| vec!["http".into(), "https".into()]);
        // Kong's exports list `grpc` and `grpcs` too: accepted, and never matched, as
        // ringway serves no gRPC.
        for (i, p) in protocols.iter().enumerate() {
            if !matches!(p.as_str(), "http" | "https" | "grpc" | "grpcs") {
                report.add(
                    format!("{}.protocols[{i}]", item.path),
                    format!("unsupported protocol '{p}' (expected http, https, grpc or grpcs)"),
                );
                ok = false;
            }
        }
        let over = |p: &str| protocols.iter().any(|q| q == p);
        if protocols.is_empty() {
            // No protocol would mean a plugin that never runs: a jwt left out this way
            // is an open door, so it is refused as an empty route `protocols` is.
            report.add(format!("{}.protocols", item.path), "must not be empty");
            ok = false;
        }
        if ok && name == "prometheus" && !(over("http") && over("https")) {
            report.warn(format!(
                "{}: the prometheus plugin's series count requests over every protocol; its protocols are not applied",
                item.path
            ));
        } else if ok && !over("http") && !over("https") && name == "jwt" {
            report.add(
                format!("{}.protocols", item.path),
                "a jwt without http or https would authenticate nothing ringway serves",
            );
            ok = false;
        } else if ok && !over("http") && !over("https") {
            report.warn(format!(
                "{}: plugin '{name}' has neither http nor https in its protocols, so it never runs",
                item.path
            ));
        }
        let ordered = |o: &serde_norway::Value| !o.as_mapping().is_some_and(|m| m.is_empty());
        if file.ordering.as_ref().is_some_and(ordered) {
            report.add(
                format!("{}.ordering", item.path),
                "dynamic plugin ordering (Kong Enterprise) is not supported",
            );
            ok = false;
        }
        let Some((mut config, mut config_json)) =
            plugin_config(&name, file.config, &item.path, item.layer, report)
        else {
            continue;
        };
        report.show_references(&format!("{}.config", item.path), &mut config_json);
        if name == "rate-limiting" {
            rate_limiting::show_references_in_both_spellings(&mut config_json);
        }
        if !ok {
            continue;
        }
        if let Some(first) = first_seen(&mut seen, (name.clone(), scope), item.path.clone()) {
            report.add(
                format!("{}.name", item.path),
                format!("plugin '{name}' is already configured for this scope (at {first})"),
            );
            continue;
        }
        if let Some(id) = &file.id {
            if let Some(first) = first_seen(&mut ids, id.clone(), item.path.clone()) {
                report.add(
                    format!("{}.id", item.path),
                    format!("duplicate plugin id '{id}' (first at {first})"),
                );
                continue;
            }
        }
        if let Some(instance) = file
            .instance_name
            .as_ref()
            .filter(|i| utf8_name_problem(i).is_none())
        {
            // A name the file and the Admin API both give is a conflict, as any other
            // unique key the two layers share; two the Admin API's state holds (saved by
            // an earlier version) load with a warning.
            let first = first_seen(
                &mut instances,
                instance.clone(),
                (item.path.clone(), item.layer),
            );
            if let Some((first, first_layer)) = first {
                let problem = format!("duplicate instance_name '{instance}' (first at {first})");
                if item.layer == Layer::Admin && first_layer == Layer::Admin {
                    report.warn(format!("{}.instance_name: {problem}", item.path));
                } else {
                    report.add(format!("{}.instance_name", item.path), problem);
                }
            }
        }
        let id = file
            .id
            .unwrap_or_else(|| stable_id("plugin", &format!("{name}:{}", scope_ids.key(&scope))));
        if let PluginConfig::RateLimiting(config) = &mut config {
            if let Some(config) = Arc::get_mut(config) {
                config.instance = rate_limiting::instance_of(&id);
            }
        }
        plugins.push(Plugin {
            id,
            name,
            instance_name: file.instance_name,
            enabled: file.enabled,
            scope,
            protocols,
            config,
            config_json,
            tags: file.tags,
            created_at: file.created_at.unwrap_or(0),
            layer: item.layer,
            path: item.path,
        });
    }
    plugins
}

/// Kong's precedence (the Enterprise order, which includes consumer groups) of a plugin
/// for a route of a service, or for no route: lower is stronger; `None` when the plugin
/// does not apply there.
///
/// consumer+route+service > group+route+service > consumer+route > consumer+service >
/// group+route > group+service > route+service > consumer > group > route > service >
/// global.
pub(crate) fn rank(scope: &Scope, route: Option<(usize, usize)>) -> Option<u8> {
    let (r, s) = match route {
        Some((r, s)) => (Some(r), Some(s)),
        None => (None, None),
    };
    if (scope.route.is_some() && scope.route != r)
        || (scope.service.is_some() && scope.service != s)
    {
        return None;
    }
    let by_route = scope.route.is_some();
    let by_service = scope.service.is_some();
    Some(
        match (
            scope.consumer.is_some(),
            scope.group.is_some(),
            by_route,
            by_service,
        ) {
            (true, _, true, true) => 1,
            (false, true, true, true) => 2,
            (true, _, true, false) => 3,
            (true, _, false, true) => 4,
            (false, true, true, false) => 5,
            (false, true, false, true) => 6,
            (false, false, true, true) => 7,
            (true, _, false, false) => 8,
            (false, true, false, false) => 9,
            (false, false, true, false) => 10,
            (false, false, false, true) => 11,
            (false, false, false, false) => 12,
        },
    )
}

/// Decides, once per config, which plugin configs run for each route.
/// A plugin left out by its `protocols` is not configured for that request: the next in
/// precedence applies.
pub fn resolve_chains(routes: &[Route], plugins: &[Plugin]) -> (Vec<[Chain; 2]>, [Chain; 2]) {
    let chain_for = |route: Option<(usize, usize)>, https: bool| {
        let protocol = if https { "https" } else { "http" };
        let mut chain = Chain::default();
        let mut best_jwt: Option<u8> = None;
        let mut best_id: Option<u8> = None;
        let runs = |p: &&Plugin| p.enabled && p.protocols.iter().any(|p| p == protocol);
        for plugin in plugins.iter().filter(runs) {
            let Some(rank) = rank(&plugin.scope, route) else {
                continue;
            };
            match &plugin.config {
                PluginConfig::Jwt(config) => {
                    if best_jwt.is_none_or(|best| rank < best) {
                        best_jwt = Some(rank);
                        chain.jwt = Some(config.clone());
                    }
                }
                PluginConfig::RateLimiting(config) => {
                    chain.rate_limiting.offer(&plugin.scope, rank, config);
                }
                PluginConfig::CorrelationId(config) => {
                    if best_id.is_none_or(|best| rank < best) {
                        best_id = Some(rank);
                        chain.correlation_id = Some(config.clone());
                    }
                }
                // Read from the plugin list by /metrics, not per request.
                PluginConfig::Prometheus(_) => {}
            }
        }
        chain
    };
    let both = |route| [chain_for(route, false), chain_for(route, true)];
    let per_route = routes
        .iter()
        .enumerate()
        .map(|(i, r)| both(Some((i, r.service))))
        .collect();
    (per_route, both(None))
}
