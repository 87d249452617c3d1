//! Serde structs that mirror Kong's declarative file, field for field.
//!
//! Only shape lives here: every struct denies unknown fields, and defaults are the named
//! consts below. Meaning (ranges, references, regexes) is checked by `config::validate`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_norway::Value;

pub const DEFAULT_RETRIES: u32 = 5;
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

fn yes() -> bool {
    true
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// An entity's `id`: a UUID, as Kong's schemas require, kept in lower case (Kong's
/// check ignores case and its database stores the canonical form), so one id has one
/// spelling in lookups, references and `X-Consumer-ID`.
pub fn entity_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(id) if super::is_uuid(&id) => Ok(Some(super::canonical_key(id))),
        Some(_) => Err(serde::de::Error::custom("expected a valid UUID")),
    }
}

/// An entity's `tags`, held to Kong's rule: each one non-empty, of printable ASCII
/// other than `,` and `/` (the separators of the Admin API's `?tags=` filter) or of
/// characters beyond ASCII.
pub fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    // `tags: null`, as Kong's exports write an entity without tags.
    let tags = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
    match tags_problem(&tags) {
        None => Ok(tags),
        Some(problem) => Err(serde::de::Error::custom(problem)),
    }
}

/// Kong's rule for a tag: not empty, of printable ASCII other than `,` and `/` (the
/// separators of the Admin API's `?tags=` filter) or of characters beyond ASCII.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .chars()
            .all(|c| !c.is_ascii() || (c == ' ' || c.is_ascii_graphic()) && c != ',' && c != '/')
}

/// What breaks Kong's rule for tags, every bad tag named with its place.
pub fn tags_problem(tags: &[String]) -> Option<String> {
    let bad: Vec<String> = tags
        .iter()
        .enumerate()
        .filter(|(_, tag)| !valid_tag(tag))
        .map(|(i, tag)| format!("[{i}] '{}'", tag.escape_debug()))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "invalid tag {}: expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
            bad.join(", ")
        )
    })
}

/// The top level: every entity list is kept as raw values so that each item is
/// deserialized on its own and every broken item is reported, not only the first.
/// Kong bookkeeping fields (`_transform`, `tags`, `created_at`, ...) are accepted so
/// files exported from Kong load, and otherwise unused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Top {
    #[serde(rename = "_format_version")]
    pub format_version: Option<Value>,
    #[serde(rename = "_transform", default)]
    pub transform: Option<bool>,
    #[serde(rename = "_comment", default)]
    pub comment: Option<Value>,
    #[serde(rename = "_ignore", default)]
    pub ignore: Option<Value>,
    #[serde(rename = "_workspace", default)]
    pub workspace: Option<String>,
    /// decK's headers (a tag-filtered dump's `select_tags`, a Konnect dump's control
    /// plane): about the file, not the gateway.
    #[serde(rename = "_info", default)]
    pub info: Option<Value>,
    #[serde(rename = "_konnect", default)]
    pub konnect: Option<Value>,
    #[serde(default)]
    pub services: Vec<Value>,
    #[serde(default)]
    pub routes: Vec<Value>,
    #[serde(default)]
    pub plugins: Vec<Value>,
    #[serde(default)]
    pub consumers: Vec<Value>,
    #[serde(default)]
    pub consumer_groups: Vec<Value>,
    #[serde(default)]
    pub jwt_secrets: Vec<Value>,
    #[serde(default)]
    pub upstreams: Vec<Value>,
    #[serde(default)]
    pub targets: Vec<Value>,
    #[serde(default)]
    pub certificates: Vec<Value>,
    #[serde(default)]
    pub snis: Vec<Value>,
    #[serde(default)]
    pub ca_certificates: Vec<Value>,
    #[serde(default)]
    pub vaults: Vec<Value>,
    #[serde(default)]
    pub ringway: Option<Value>,
}

/// A `services[]` item (Kong `services` entity).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ServiceFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_timeout_ms")]
    pub connect_timeout: u64,
    #[serde(default = "default_timeout_ms")]
    pub read_timeout: u64,
    #[serde(default = "default_timeout_ms")]
    pub write_timeout: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u32>,
    /// CA certificate ids, kept as ids are (a UUID in lower case).
    #[serde(default, deserialize_with = "entity_keys")]
    pub ca_certificates: Option<Vec<String>>,
    pub client_certificate: Option<Value>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
    #[serde(default)]
    pub routes: Vec<Value>,
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// A reference to a parent entity at top level: its name, or `{name: ...}` / `{id: ...}`
/// (`{username: ...}` for a consumer).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a name or id, or an object with one of `name`, `username`, `id`, `custom_id`"
)]
pub enum Reference {
    #[serde(deserialize_with = "reference_key")]
    Name(String),
    Object(ReferenceObject),
}

/// A list of references by id, each as ids are kept.
fn entity_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let keys = Option::<Vec<String>>::deserialize(d)?;
    Ok(keys.map(|keys| keys.into_iter().map(super::canonical_key).collect()))
}

/// A reference written as one string: a name, or an id in any case (kept as ids are, in
/// lower case, so `route: 1111...555A` finds the route whose id was written so).
fn reference_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(super::canonical_key)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceObject {
    pub name: Option<String>,
    pub username: Option<String>,
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    /// A consumer's other unique field: decK names a consumer with no username by it.
    pub custom_id: Option<String>,
    /// Kong's lowercased copy of a consumer's username (the Admin API's consumer
    /// objects carry it): derived, so unused.
    #[serde(rename = "username_lower")]
    _username_lower: Option<String>,
    /// The referenced entity's own bookkeeping, as Kong's Admin API shows a consumer's
    /// groups (an export may carry the whole object): no part of the reference.
    #[serde(default, deserialize_with = "tags", rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<u64>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<u64>,
}

impl ReferenceObject {
    /// Checks a reference giving both a name and an id against `keys`: when they name
    /// different `kind` entities it is a problem (Kong would follow the id and drop the
    /// name unread); an id that names nothing beside a name that does (a file exported
    /// from a database whose ids were not kept) is a warning, the name deciding. Returns
    /// whether the reference is refused.
    pub(crate) fn refuse_disagreement(
        &self,
        keys: &HashMap<String, usize>,
        kind: &str,
        path: &str,
        report: &mut super::Report,
    ) -> bool {
        let (Some(name), Some(id)) = (
            self.name.as_deref().or(self.username.as_deref()),
            self.id.as_deref(),
        ) else {
            return false;
        };
        match (keys.get(name), keys.get(id)) {
            (Some(a), Some(b)) if a != b => {
                report.add(
                    path.to_owned(),
                    format!("'{name}' and the id '{id}' name different {kind}s"),
                );
                true
            }
            (Some(_), None) => {
                report.warn(format!(
                    "{path}: no {kind} has the id '{id}'; the {kind} named '{name}' is meant"
                ));
                false
            }
            // The same entity, or a name that names nothing (reported as missing).
            _ => false,
        }
    }
}

impl Reference {
    /// See [`ReferenceObject::refuse_disagreement`].
    pub(crate) fn refuse_disagreement(
        &self,
        keys: &HashMap<String, usize>,
        kind: &str,
        path: &str,
        report: &mut super::Report,
    ) -> bool {
        match self {
            Reference::Name(_) => false,
            Reference::Object(object) => object.refuse_disagreement(keys, kind, path, report),
        }
    }

    /// The name or id this reference points at.
    pub fn key(&self) -> Option<&str> {
        match self {
            Reference::Name(name) => Some(name),
            Reference::Object(object) => object
                .name
                .as_deref()
                .or(object.username.as_deref())
                .or(object.id.as_deref()),
        }
    }

    /// A consumer named by its `custom_id` alone.
    pub fn custom_id(&self) -> Option<&str> {
        match self {
            Reference::Object(object) if self.key().is_none() => object.custom_id.as_deref(),
            _ => None,
        }
    }
}

/// One or many header values (`headers: {x-version: v1}` or `[v1, v2]`).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// A `routes[]` item (Kong `routes` entity).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RouteFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub service: Option<Reference>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    #[serde(default = "yes")]
    pub strip_path: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub regex_priority: i64,
    pub protocols: Option<Vec<String>>,
    pub path_handling: Option<String>,
    pub https_redirect_status_code: Option<u16>,
    pub request_buffering: Option<bool>,
    pub response_buffering: Option<bool>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub snis: Vec<String>,
    #[serde(default)]
    pub sources: Vec<Value>,
    #[serde(default)]
    pub destinations: Vec<Value>,
    /// Kong's expressions router (`router_flavor = expressions`); its exports write
    /// `expression: null` and `priority: 0` on every route.
    pub expression: Option<String>,
    pub priority: Option<u64>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// The `ringway:` node section: our extension, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub proxy_listen: Option<ListenList>,
    pub admin_listen: Option<String>,
    pub workers: Option<u64>,
    pub data_dir: Option<String>,
    pub admin_token: Option<String>,
    pub trusted_ips: Option<Vec<String>>,
    pub max_connections: Option<u64>,
    pub rate_limit_max_keys: Option<u64>,
    pub metrics_label_limit: Option<u64>,
    pub latency_headers: Option<bool>,
    pub access_log: Option<String>,
    pub upstream_keepalive_idle_timeout: Option<u64>,
    pub upstream_keepalive_max_idle: Option<u64>,
    pub client_header_timeout: Option<u64>,
    pub client_body_timeout: Option<u64>,
    pub keepalive_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub drain_timeout: Option<u64>,
    pub max_request_line_bytes: Option<u64>,
    pub max_header_line_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub log_level: Option<String>,
    pub ssl_cert: Option<String>,
    pub ssl_cert_key: Option<String>,
    /// `auto` (io_uring when the kernel has it), `io_uring` or `epoll`.
    pub driver: Option<String>,
}

/// `proxy_listen` as a single string or a list, as Kong's `proxy_listen` allows.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected an address or a list of addresses")]
pub enum ListenList {
    One(String),
    Many(Vec<String>),
}

impl ListenList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            ListenList::One(value) => value.split(',').map(|s| s.trim().to_owned()).collect(),
            ListenList::Many(values) => values,
        }
    }
}

/// A consumer's group membership: a name, or Kong Enterprise's `{name: ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a group name, or an object with `name` or `id` (and Kong's `tags`, `created_at`, `updated_at`)"
)]
pub enum GroupRef {
    #[serde(deserialize_with = "reference_key")]
    Name(String),
    Object(ReferenceObject),
}

impl GroupRef {
    pub fn key(&self) -> Option<&str> {
        match self {
            GroupRef::Name(name) => Some(name),
            GroupRef::Object(object) => object.name.as_deref().or(object.id.as_deref()),
        }
    }
}

/// A `consumers[]` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConsumerFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// Kong's lowercased copy of `username` (a database column its exports include):
    /// derived, so unused.
    pub username_lower: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    #[serde(default)]
    pub jwt_secrets: Vec<Value>,
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// A `jwt_secrets[]` item (Kong's JWT credential).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct JwtSecretFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub key: Option<String>,
    pub secret: Option<String>,
    pub algorithm: Option<String>,
    pub rsa_public_key: Option<String>,
    pub consumer: Option<Reference>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
}

/// A `consumer_groups[]` item (Kong Enterprise's shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConsumerGroupFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
    #[serde(default)]
    pub plugins: Vec<Value>,
    /// Members listed under the group, as decK writes them (`consumers: [{username:
    /// alice}]`): the same memberships as a consumer's own `groups`.
    #[serde(default)]
    pub consumers: Vec<Reference>,
}

/// A `plugins[]` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PluginFile {
    #[serde(default, deserialize_with = "entity_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub instance_name: Option<String>,
    pub config: Option<Value>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub protocols: Option<Vec<String>>,
    pub service: Option<Reference>,
    pub route: Option<Reference>,
    pub consumer: Option<Reference>,
    pub consumer_group: Option<Reference>,
    /// Kong Enterprise's dynamic plugin ordering; exports write `ordering: null`.
    pub ordering: Option<Value>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
}
