//! Kong's Admin API endpoints for consumers, JWT credentials, plugins, services, routes,
//! consumer groups and the declarative config.
//!
//! Reads come from the published snapshot. Writes go through `Control::update_admin`:
//! the admin layer is edited, composed with the file layer and validated, written to
//! `data_dir` and fsynced, and only then published and acknowledged. Entities declared
//! in the config file are read-only here (405). Errors have Kong's shapes: 400 with
//! field errors, 404, 405, 409.

use serde_json::{json, Map, Value};

use super::body::{media_type, multipart_parts, parse_body, Body};
use super::upstreams;
use crate::config::{random_id, Config, HostMatch, Layer, PathMatch, Problems, ValueMatch};
use crate::control::{Control, Refused};
use crate::plugins::jwt::Algorithm;

/// An Admin API answer: a status and a JSON (or YAML) body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static [u8],
    /// Extra header lines, each ending in CRLF.
    pub headers: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::json_text(status, serde_json::to_vec(value).unwrap_or_default())
    }

    /// A body that is JSON already.
    pub fn json_text(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body,
            content_type: b"application/json; charset=utf-8",
            headers: Vec::new(),
        }
    }

    pub fn message(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "message": message }))
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            content_type: b"application/json; charset=utf-8",
            headers: Vec::new(),
        }
    }

    /// The reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers
            .extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        self
    }

    /// A 405 with the `Allow` header RFC 9110 §15.5.6 requires.
    pub fn method_not_allowed(allowed: &str) -> Reply {
        Reply::message(405, "Method not allowed").with_header("Allow", &allow_list(allowed))
    }

    /// The answer to `OPTIONS` where `allowed` methods are served: Kong's 204, with the
    /// methods for CORS preflights too.
    pub fn options(allowed: &str) -> Reply {
        let list = allow_list(allowed);
        Reply::empty(204)
            .with_header("Allow", &list)
            .with_header("Access-Control-Allow-Methods", &list)
            .with_header("Access-Control-Allow-Headers", "Content-Type")
    }
}

/// `allowed` with OPTIONS, which every endpoint answers, in Kong's (alphabetical) order.
fn allow_list(allowed: &str) -> String {
    let mut methods: Vec<&str> = allowed.split(", ").chain(["OPTIONS"]).collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

fn not_found() -> Reply {
    Reply::message(404, "Not found")
}

fn read_only() -> Reply {
    Reply::message(405, "entity is managed by the declarative config file")
        .with_header("Allow", &allow_list("GET, HEAD"))
}

/// Kong's 400: `fields` nests a dotted path (`config.minute` under `config`), and the
/// message lists the entity's own problems (`@entity`) first, then each field's.
fn schema_violation(mut fields: Map<String, Value>) -> Reply {
    for value in fields.values_mut() {
        if let Value::String(message) = value {
            *message = kong_wording(message);
        }
    }
    let mut summary: Vec<String> = match fields.get("@entity") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().unwrap_or("invalid").to_owned())
            .collect(),
        _ => Vec::new(),
    };
    summary.extend(
        fields
            .iter()
            .filter(|(k, _)| *k != "@entity")
            .map(|(k, v)| format!("{}: {}", kong_path(k), v.as_str().unwrap_or("invalid"))),
    );
    let message = if summary.len() == 1 {
        format!("schema violation ({})", summary[0])
    } else {
        format!(
            "{} schema violations ({})",
            summary.len(),
            summary.join("; ")
        )
    };
    let mut nested = Map::new();
    for (path, value) in fields {
        if let Some(value) = nest(&mut nested, &path, value) {
            // A field that has a problem of its own and one inside it: kept flat.
            nested.insert(path, value);
        }
    }
    Reply::json(
        400,
        &json!({ "code": 2, "name": "schema violation", "message": message, "fields": nested }),
    )
}

/// A field's path as Kong's messages write it: a list element by its 1-based position
/// after a dot (`tags.1`, `config.claims_to_verify.2`), where ringway's paths have
/// `tags[0]`.
fn kong_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        // An index from the body itself (an unknown field `x[18446744073709551615]`)
        // may be any number: one with no successor stays as written.
        match rest[open + 1..close]
            .parse::<u64>()
            .ok()
            .and_then(|index| index.checked_add(1))
        {
            Some(position) => {
                out.push_str(&rest[..open]);
                out.push('.');
                out.push_str(&position.to_string());
            }
            None => out.push_str(&rest[..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether a problem's path names an entity itself (`consumers[2]`,
/// `services[0].routes[1]`), not a field or a list element of one (`paths[2]`).
fn is_entity(path: &str) -> bool {
    // Top-level lists (the kinds the Admin API writes), and the lists nested in an entity
    // that hold entities (not names or references: a certificate's `snis`, a group's
    // `consumers`, a service's `ca_certificates`).
    const NESTED: [&str; 4] = ["routes", "plugins", "jwt_secrets", "targets"];
    let Some(stem) = path.strip_suffix(']') else {
        return false;
    };
    let (nested, last) = match stem.rsplit_once('.') {
        Some((_, last)) => (true, last),
        None => (false, stem),
    };
    last.split_once('[').is_some_and(|(name, _)| {
        if nested {
            NESTED.contains(&name)
        } else {
            crate::config::ADMIN_KINDS.contains(&name)
        }
    })
}

/// A problem as Kong's Admin API words it: serde's `unknown field `x`, expected one of
/// ...` (which `ringway check` prints, to help a human) is Kong's plain `unknown field`.
fn kong_wording(message: &str) -> String {
    if message.starts_with("unknown field `") {
        return "unknown field".to_owned();
    }
    // serde's ``invalid type: string "abc", expected a number``: Kong names only what
    // belongs there.
    if let Some((_, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        return format!("expected {expected}");
    }
    // A plugin Kong's schema keeps off consumers (`typedefs.no_consumer`): `check` says
    // why, Kong's Admin API that the reference must be null.
    if message.starts_with("plugin '") && message.contains(" cannot be scoped ") {
        return "value must be null".to_owned();
    }
    // `expected one of: a, b (got 'c')`, as `check` helps a human: Kong's list alone.
    if message.starts_with("expected one of: ") {
        if let Some((list, _)) = message.rsplit_once(" (got '") {
            return list.to_owned();
        }
    }
    message.to_owned()
}

/// The largest array a 400 body places element problems in.
const MAX_ELEMENT_ERRORS: usize = 4096;

/// Puts `value` at the dotted `path` in `map`, an element's (`paths[1]`) in an array
/// with null for the elements that are fine, as Kong does; gives it back when a value of
/// another shape is in the way.
fn nest(map: &mut Map<String, Value>, path: &str, value: Value) -> Option<Value> {
    // An index from the body itself (an unknown field named `x[99999999999]`) must not
    // size the answer: beyond a few thousand elements the path stays flat.
    let element = |path: &str| {
        let (name, index) = path.strip_suffix(']')?.split_once('[')?;
        let index = index.parse::<usize>().ok()?;
        (index < MAX_ELEMENT_ERRORS).then(|| (name.to_owned(), index))
    };
    match path.split_once('.') {
        None => match element(path) {
            Some((name, index)) => match map.entry(name).or_insert_with(|| json!([])) {
                Value::Array(list) => {
                    if list.len() <= index {
                        list.resize(index + 1, Value::Null);
                    }
                    list[index] = value;
                    None
                }
                _ => Some(value),
            },
            None => {
                map.insert(path.to_owned(), value);
                None
            }
        },
        // An element on the way (`services[1].routes[0].name`): an object in its array.
        Some((first, rest)) => {
            let inner = match element(first) {
                Some((name, index)) => match map.entry(name).or_insert_with(|| json!([])) {
                    Value::Array(list) => {
                        if list.len() <= index {
                            list.resize(index + 1, Value::Null);
                        }
                        if list[index].is_null() {
                            list[index] = Value::Object(Map::new());
                        }
                        &mut list[index]
                    }
                    _ => return Some(value),
                },
                None => map
                    .entry(first)
                    .or_insert_with(|| Value::Object(Map::new())),
            };
            match inner {
                Value::Object(inner) => nest(inner, rest, value),
                _ => Some(value),
            }
        }
    }
}

/// A body that nests child entities is refused, as Kong refuses it (they are no fields
/// of the entity): the config file may nest them, but an Admin API entity nesting them
/// would hold children that their own endpoints can neither show whole nor delete.
fn without_children(kind: &str, body: Body) -> Result<Body, Reply> {
    let children: &[&str] = match kind {
        "consumers" => &["jwt_secrets", "plugins"],
        "services" => &["routes", "plugins"],
        "routes" | "consumer_groups" => &["plugins"],
        "upstreams" => &["targets"],
        _ => &[],
    };
    // A form may have left an indexed key as it came (`routes[1].paths[]`).
    let nests = |key: &str, child: &str| {
        key.strip_prefix(child)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
    };
    let fields: Map<String, Value> = children
        .iter()
        .filter(|child| body.keys().any(|key| nests(key, child)))
        .map(|child| ((*child).to_owned(), Value::from("unknown field")))
        .collect();
    if fields.is_empty() {
        Ok(body)
    } else {
        Err(schema_violation(fields))
    }
}

fn field_error(field: &str, message: &str) -> Reply {
    let mut fields = Map::new();
    fields.insert(field.into(), message.into());
    schema_violation(fields)
}

fn unique_violation(field: &str, value: &str) -> Reply {
    Reply::json(
        409,
        &json!({
            "code": 5,
            "name": "unique constraint violation",
            "message": format!("UNIQUE violation detected on '{{{field}=\"{value}\"}}'"),
            "fields": { field: value },
        }),
    )
}

/// A random alphanumeric string of 32 characters, as Kong generates credential keys and
/// secrets; `None` when the system's random source fails, so a write fails rather than
/// store a guessable secret.
fn random_string() -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const LEN: usize = 32;
    // Bytes from the largest whole multiple of the alphabet's size on are skipped, so
    // every character is as likely.
    const TAKEN: usize = 256 / ALPHABET.len() * ALPHABET.len();
    let random = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(LEN);
    let mut bytes = [0u8; 64];
    while out.len() < LEN {
        ring::rand::SecureRandom::fill(&random, &mut bytes).ok()?;
        for b in bytes.iter().map(|&b| usize::from(b)).filter(|&b| b < TAKEN) {
            if out.len() < LEN {
                out.push(ALPHABET[b % ALPHABET.len()] as char);
            }
        }
    }
    Some(out)
}

/// The request as the API sees it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// This node's id (Kong's `node_id`).
    pub node_id: &'a str,
    pub content_type: Option<&'a str>,
    pub accept_json: bool,
    pub body: &'a [u8],
}

/// Routes one Admin API request.
pub fn handle(request: &Request<'_>, control: &Control) -> Reply {
    // As Kong: a name in the path is percent-decoded (`/consumers/joe%20smith`).
    let decoded: Option<Vec<String>> = request
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(super::body::decode_segment)
        .collect();
    let Some(decoded) = decoded else {
        return Reply::message(400, "bad percent-encoding in the path");
    };
    // Ids are kept in lower case: a UUID in the path (or as a body's `id`) is taken so,
    // whatever the case of its hex digits, and looked up exactly.
    let decoded: Vec<String> = decoded
        .into_iter()
        .map(crate::config::canonical_key)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = request.method;
    if method == "OPTIONS" {
        return match allowed_methods(&segments) {
            "" => not_found(),
            allowed => Reply::options(allowed),
        };
    }
    // The body as an entity of `kind`; a plugin form's config typed by `plugin`'s schema
    // when the form does not name one.
    let body_as = |kind: &str, plugin: Option<&str>| {
        super::body::parse_body_as(request.content_type, request.body, Some(kind), plugin)
            .and_then(|body| without_children(kind, body))
            .map(canonical_id)
    };
    let body = |kind: &str| body_as(kind, None);
    let snapshot = control.shared.snapshot();
    let config = &snapshot.config;
    // A PATCH of plugin `i`, typed as Kong types it: by the stored plugin's name.
    let patch_body = |i: usize| body_as("plugins", Some(&config.plugins[i].name));
    // A new entity given an id that is taken: Kong's primary key violation, before any
    // other check (the database finds it first).
    if let (true, Some(kind)) = (method == "POST", created_kind(&segments)) {
        if let Ok(given) = body(kind) {
            if let Some(Value::String(id)) = given.get("id") {
                if id_in_use(config, kind, id) {
                    return primary_key_violation(id);
                }
            }
        }
    }
    // What the config model does not keep of Admin-created entities (their timestamps)
    // is copied from the Admin layer for the entities an answer shows, no others.
    let show = |value: Value| Reply::json(200, &Stored::load_for(control, &value).decorate(value));
    let list = |items: &mut dyn Iterator<Item = Value>, filter: &str| {
        paged(items, request, control, filter)
    };
    if let Some(reply) = upstreams::handle(
        method,
        &segments,
        request.query,
        request.node_id,
        config,
        &show,
        &|items| list(items, ""),
    ) {
        return reply;
    }
    match (method, segments.as_slice()) {
        ("GET", ["config"]) => get_config(control, request.accept_json),
        ("POST", ["config"]) => post_config(control, request),

        ("GET", ["consumers"]) => list(
            &mut (0..config.consumers.len()).map(|i| consumer_json(config, i)),
            "custom_id",
        ),
        ("POST", ["consumers"]) => with_body(body("consumers"), |b| {
            create_consumer(control, config, b, None)
        }),
        ("GET", ["consumers", c]) => {
            find_consumer(config, c).map_or_else(not_found, |i| show(consumer_json(config, i)))
        }
        ("PATCH", ["consumers", c]) => with_body(body("consumers"), |b| {
            update_consumer(control, config, c, b)
        }),
        ("PUT", ["consumers", c]) => with_body(body("consumers"), |b| {
            put(control, config, Upsert::Consumers, c, b)
        }),
        ("DELETE", ["consumers", c]) => delete_consumer(control, config, c),
        ("GET", ["consumers", c, "jwt"]) => match find_consumer(config, c) {
            Some(i) => list(
                &mut (0..config.jwt_secrets.len())
                    .filter(|&j| config.jwt_secrets[j].consumer == i)
                    .map(|j| jwt_json(config, j)),
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumers", c, "jwt"]) => match find_consumer(config, c) {
            Some(i) => with_body(body("jwt_secrets"), |b| {
                create_jwt(control, config, i, b, None)
            }),
            None => not_found(),
        },
        ("GET", ["consumers", c, "jwt", k]) => {
            match (find_consumer(config, c), find_jwt(config, k)) {
                (Some(i), Some(j)) if config.jwt_secrets[j].consumer == i => {
                    show(jwt_json(config, j))
                }
                _ => not_found(),
            }
        }
        ("PATCH", ["consumers", c, "jwt", k]) => {
            match (find_consumer(config, c), find_jwt(config, k)) {
                (Some(i), Some(j)) if config.jwt_secrets[j].consumer == i => {
                    with_body(body("jwt_secrets"), |b| update_jwt(control, config, j, b))
                }
                _ => not_found(),
            }
        }
        ("PUT", ["consumers", c, "jwt", k]) => match find_consumer(config, c) {
            Some(i) => with_body(body("jwt_secrets"), |b| put_jwt(control, config, i, k, b)),
            None => not_found(),
        },
        ("DELETE", ["consumers", c, "jwt", k]) => {
            match (find_consumer(config, c), find_jwt(config, k)) {
                (Some(i), Some(j)) if config.jwt_secrets[j].consumer == i => delete_entity(
                    control,
                    config.jwt_secrets[j].layer,
                    "jwt_secrets",
                    &config.jwt_secrets[j].id.clone(),
                ),
                _ => not_found(),
            }
        }
        ("GET", ["jwts"]) => list(
            &mut (0..config.jwt_secrets.len()).map(|j| jwt_json(config, j)),
            "",
        ),
        ("GET", ["jwts", k]) => {
            find_jwt(config, k).map_or_else(not_found, |j| show(jwt_json(config, j)))
        }
        ("GET", ["jwts", k, "consumer"]) => find_jwt(config, k).map_or_else(not_found, |j| {
            show(consumer_json(config, config.jwt_secrets[j].consumer))
        }),
        ("PATCH", ["jwts", k]) => match find_jwt(config, k) {
            Some(j) => with_body(body("jwt_secrets"), |b| update_jwt(control, config, j, b)),
            None => not_found(),
        },
        ("DELETE", ["jwts", k]) => match find_jwt(config, k) {
            Some(j) => delete_entity(
                control,
                config.jwt_secrets[j].layer,
                "jwt_secrets",
                &config.jwt_secrets[j].id.clone(),
            ),
            None => Reply::empty(204),
        },

        ("GET", ["plugins"]) => list(
            &mut (0..config.plugins.len()).map(|p| plugin_json(config, p)),
            "",
        ),
        ("GET", ["plugins", "enabled"]) => Reply::json(
            200,
            &json!({ "enabled_plugins": crate::config::KNOWN_PLUGINS }),
        ),
        ("POST", ["schemas", kind, "validate"]) => {
            with_body(body(kind), |b| validate_entity(kind, b))
        }
        ("GET", ["schemas", "plugins", name]) => {
            schema_reply(plugin_schema(name), || format!("No plugin named '{name}'"))
        }
        ("GET", ["schemas", kind]) => {
            schema_reply(entity_schema(kind), || format!("No entity named '{kind}'"))
        }
        // An endpoint of its own, as in Kong: not the plugin whose instance_name is
        // `enabled`, which a PUT or DELETE here would otherwise write.
        (_, ["plugins", "enabled"]) => Reply::method_not_allowed(allowed_methods(&segments)),
        ("POST", ["plugins"]) => with_body(body("plugins"), |b| {
            create_plugin(control, config, b, None, None)
        }),
        ("GET", ["plugins", p]) => {
            find_plugin(config, p).map_or_else(not_found, |i| show(plugin_json(config, i)))
        }
        ("PATCH", ["plugins", p]) => match find_plugin(config, p) {
            Some(i) => with_body(patch_body(i), |b| update_plugin(control, config, i, b)),
            None => not_found(),
        },
        ("PUT", ["plugins", p]) => with_body(body("plugins"), |b| {
            put(control, config, Upsert::Plugins, p, b)
        }),
        ("DELETE", ["plugins", p]) => match find_plugin(config, p) {
            Some(i) => delete_entity(
                control,
                config.plugins[i].layer,
                "plugins",
                &config.plugins[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        // The entity a plugin is scoped to, as Kong's foreign-key endpoints show it.
        ("GET", ["plugins", p, field @ ("service" | "route" | "consumer" | "consumer_group")]) => {
            let scope = find_plugin(config, p).map(|i| config.plugins[i].scope);
            let entity = scope.and_then(|s| match *field {
                "service" => s.service.map(|i| service_json(config, i)),
                "route" => s.route.map(|i| route_json(config, i)),
                "consumer" => s.consumer.map(|i| consumer_json(config, i)),
                _ => s.group.map(|i| group_json(config, i)),
            });
            entity.map_or_else(not_found, show)
        }
        (
            "GET",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins"],
        ) => match scope_of(config, kind, parent) {
            Some((field, id)) => list(
                &mut (0..config.plugins.len())
                    .map(|p| plugin_json(config, p))
                    .filter(|p| p[field]["id"] == json!(id)),
                "",
            ),
            None => not_found(),
        },
        (
            "POST",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins"],
        ) => match scope_of(config, kind, parent) {
            Some(scope) => with_body(body("plugins"), |b| {
                create_plugin(control, config, b, Some(scope), None)
            }),
            None => not_found(),
        },
        (
            "PUT",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins", p],
        ) => match scope_of(config, kind, parent) {
            Some((field, id)) => with_body(body("plugins"), |mut b| {
                b.insert(field.into(), json!({ "id": id }));
                put(control, config, Upsert::Plugins, p, b)
            }),
            None => not_found(),
        },
        (
            "GET" | "PATCH" | "DELETE",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins", p],
        ) => {
            let scoped = scope_of(config, kind, parent).zip(find_plugin(config, p));
            match scoped {
                Some(((field, id), i)) if plugin_json(config, i)[field]["id"] == json!(id) => {
                    match method {
                        "GET" => show(plugin_json(config, i)),
                        "PATCH" => {
                            with_body(patch_body(i), |b| update_plugin(control, config, i, b))
                        }
                        _ => delete_entity(
                            control,
                            config.plugins[i].layer,
                            "plugins",
                            &config.plugins[i].id.clone(),
                        ),
                    }
                }
                _ => not_found(),
            }
        }

        ("GET", ["services"]) => list(
            &mut (0..config.services.len()).map(|s| service_json(config, s)),
            "",
        ),
        ("POST", ["services"]) => with_body(body("services"), |b| {
            create_service(control, config, b, None)
        }),
        ("GET", ["services", s]) => {
            find_service(config, s).map_or_else(not_found, |i| show(service_json(config, i)))
        }
        ("PATCH", ["services", s]) => match find_service(config, s) {
            Some(i) => with_body(body("services"), |b| update_service(control, config, i, b)),
            None => not_found(),
        },
        ("PUT", ["services", s]) => with_body(body("services"), |b| {
            put(control, config, Upsert::Services, s, b)
        }),
        ("DELETE", ["services", s]) => match find_service(config, s) {
            Some(i) => delete_entity(
                control,
                config.services[i].layer,
                "services",
                &config.services[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        ("GET", ["services", s, "routes"]) => match find_service(config, s) {
            Some(i) => list(
                &mut (0..config.routes.len())
                    .filter(|&r| config.routes[r].service == i)
                    .map(|r| route_json(config, r)),
                "",
            ),
            None => not_found(),
        },
        ("POST", ["services", s, "routes"]) => match find_service(config, s) {
            Some(i) => with_body(body("routes"), |mut b| {
                b.insert("service".into(), json!({ "id": config.services[i].id }));
                create_route(control, config, b, None)
            }),
            None => not_found(),
        },
        // As Kong's: the route is created or replaced, and belongs to this service after.
        ("PUT", ["services", s, "routes", r]) => match find_service(config, s) {
            Some(i) => with_body(body("routes"), |mut b| {
                b.insert("service".into(), json!({ "id": config.services[i].id }));
                put(control, config, Upsert::Routes, r, b)
            }),
            None => not_found(),
        },
        ("GET" | "PATCH" | "DELETE", ["services", s, "routes", r]) => {
            match (find_service(config, s), find_route(config, r)) {
                (Some(s), Some(r)) if config.routes[r].service == s => match method {
                    "GET" => show(route_json(config, r)),
                    "PATCH" => with_body(body("routes"), |b| update_route(control, config, r, b)),
                    _ => delete_entity(
                        control,
                        config.routes[r].layer,
                        "routes",
                        &config.routes[r].id.clone(),
                    ),
                },
                _ => not_found(),
            }
        }

        ("GET", ["routes"]) => list(
            &mut (0..config.routes.len()).map(|r| route_json(config, r)),
            "",
        ),
        ("POST", ["routes"]) => {
            with_body(body("routes"), |b| create_route(control, config, b, None))
        }
        ("GET", ["routes", r]) => {
            find_route(config, r).map_or_else(not_found, |i| show(route_json(config, i)))
        }
        ("PATCH", ["routes", r]) => match find_route(config, r) {
            Some(i) => with_body(body("routes"), |b| update_route(control, config, i, b)),
            None => not_found(),
        },
        ("PUT", ["routes", r]) => with_body(body("routes"), |b| {
            put(control, config, Upsert::Routes, r, b)
        }),
        ("DELETE", ["routes", r]) => match find_route(config, r) {
            Some(i) => delete_entity(
                control,
                config.routes[i].layer,
                "routes",
                &config.routes[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        ("GET", ["routes", r, "service"]) => find_route(config, r).map_or_else(not_found, |i| {
            show(service_json(config, config.routes[i].service))
        }),
        ("PUT", ["routes", r, "service"]) => match find_route(config, r) {
            Some(i) => with_body(body("services"), |b| {
                let service = &config.services[config.routes[i].service].id;
                put(control, config, Upsert::Services, service, b)
            }),
            None => not_found(),
        },
        ("PATCH", ["routes", r, "service"]) => match find_route(config, r) {
            Some(i) => with_body(body("services"), |b| {
                update_service(control, config, config.routes[i].service, b)
            }),
            None => not_found(),
        },

        ("POST", ["upstreams"]) => with_body(body("upstreams"), |b| {
            create_upstream(control, config, b, None)
        }),
        ("PUT", ["upstreams", u]) => with_body(body("upstreams"), |b| {
            put(control, config, Upsert::Upstreams, u, b)
        }),
        ("PATCH", ["upstreams", u]) => match upstreams::find(config, u) {
            Some(up) => with_body(body("upstreams"), |b| {
                update_upstream(control, config, up, b)
            }),
            None => not_found(),
        },
        ("DELETE", ["upstreams", u]) => match upstreams::find(config, u) {
            Some(up) => delete_entity(control, up.layer, "upstreams", &up.id.clone()),
            None => Reply::empty(204),
        },
        ("POST", ["upstreams", u, "targets"]) => match upstreams::find(config, u) {
            Some(up) => with_body(body("targets"), |b| create_target(control, config, up, b)),
            None => not_found(),
        },
        ("PATCH" | "PUT", ["upstreams", u, "targets", t]) => match upstreams::find(config, u) {
            Some(up) => with_body(body("targets"), |b| {
                update_target(control, config, up, t, method == "PUT", b)
            }),
            None => not_found(),
        },
        ("DELETE", ["upstreams", u, "targets", t]) => match upstreams::find(config, u) {
            Some(up) => match upstreams::target(up, t) {
                Some((_, t)) => delete_entity(control, t.layer, "targets", &t.id.clone()),
                // Under its upstream, as a credential under its consumer: Kong's 404.
                None => not_found(),
            },
            None => not_found(),
        },

        ("GET", ["consumer_groups"]) => list(
            &mut (0..config.consumer_groups.len()).map(|g| group_json(config, g)),
            "",
        ),
        ("POST", ["consumer_groups"]) => with_body(body("consumer_groups"), |b| {
            create_group(control, config, b, None)
        }),
        ("GET", ["consumer_groups", g]) => {
            find_group(config, g).map_or_else(not_found, |i| show_group(control, config, i))
        }
        ("PATCH", ["consumer_groups", g]) => match find_group(config, g) {
            Some(i) => with_body(body("consumer_groups"), |b| {
                update_group(control, config, i, b)
            }),
            None => not_found(),
        },
        ("PUT", ["consumer_groups", g]) => with_body(body("consumer_groups"), |b| {
            put(control, config, Upsert::Groups, g, b)
        }),
        ("DELETE", ["consumer_groups", g]) => match find_group(config, g) {
            Some(i) => delete_entity(
                control,
                config.consumer_groups[i].layer,
                "consumer_groups",
                &config.consumer_groups[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        ("GET", ["ca_certificates"]) => list(
            &mut (0..config.ca_certificates.len()).map(|i| ca_certificate_json(config, i)),
            "",
        ),
        ("POST", ["ca_certificates"]) => with_body(body("ca_certificates"), |b| {
            ca_write_refused(config, &b, None)
                .unwrap_or_else(|| write(control, config, "ca_certificates", b, None))
        }),
        ("GET", ["ca_certificates", c]) => find_ca_certificate(config, c)
            .map_or_else(not_found, |i| show(ca_certificate_json(config, i))),
        ("PUT", ["ca_certificates", c]) => with_body(body("ca_certificates"), |b| {
            put_ca_certificate(control, config, c, b)
        }),
        ("PATCH", ["ca_certificates", c]) => match find_ca_certificate(config, c) {
            Some(i) => with_body(body("ca_certificates"), |b| {
                let ca = &config.ca_certificates[i];
                if ca.layer == Layer::File {
                    return read_only();
                }
                if let Some(refused) = ca_write_refused(config, &b, Some(&ca.id)) {
                    return refused;
                }
                // As Kong checks the entity a PATCH leaves: one whose certificate has
                // expired takes no other change (replace or delete it).
                if !b.contains_key("cert") {
                    if let Some(message) = crate::config::expired_ca(&ca.cert) {
                        return field_error("cert", message);
                    }
                }
                update_generic(
                    control,
                    config,
                    ca.layer,
                    "ca_certificates",
                    &ca.id.clone(),
                    b,
                )
            }),
            None => not_found(),
        },
        ("DELETE", ["ca_certificates", c]) => match find_ca_certificate(config, c) {
            Some(i) => {
                let ca = &config.ca_certificates[i];
                // Kong's CA DAO answers for a CA a service still names itself, before
                // any foreign key: "referenced by others" (code 19), naming a service.
                let user = config.services.iter().find(|s| {
                    s.ca_certificates
                        .iter()
                        .flatten()
                        .any(|id| id.eq_ignore_ascii_case(&ca.id))
                });
                match user {
                    Some(service) if ca.layer != Layer::File => Reply::json(
                        400,
                        &json!({
                            "code": 19,
                            "name": "referenced by others",
                            "message": format!(
                                "ca certificate {} is still referenced by services (id = {})",
                                ca.id, service.id
                            ),
                        }),
                    ),
                    _ => delete_entity(control, ca.layer, "ca_certificates", &ca.id.clone()),
                }
            }
            None => Reply::empty(204),
        },
        ("GET", ["certificates"]) => list(
            &mut (0..config.certificates.len()).map(|i| certificate_json(config, i)),
            "",
        ),
        ("POST", ["certificates"]) => with_body(body("certificates"), |b| {
            sni_held(config, &b, None)
                .unwrap_or_else(|| write(control, config, "certificates", b, None))
        }),
        ("GET", ["certificates", c]) => find_certificate(config, c).map_or_else(
            || certificate_missing(c),
            |i| show(certificate_json(config, i)),
        ),
        ("PUT", ["certificates", c]) => with_body(body("certificates"), |b| {
            put_certificate(control, config, c, b)
        }),
        ("PATCH", ["certificates", c]) => match find_certificate(config, c) {
            Some(i) => with_body(body("certificates"), |b| {
                if config.certificates[i].layer == Layer::File {
                    return read_only();
                }
                if let Some(held) = sni_held(config, &b, Some(&config.certificates[i].id)) {
                    return held;
                }
                update_generic(
                    control,
                    config,
                    config.certificates[i].layer,
                    "certificates",
                    &config.certificates[i].id.clone(),
                    b,
                )
            }),
            None => certificate_missing(c),
        },
        ("DELETE", ["certificates", c]) => match find_certificate(config, c) {
            Some(i) => delete_entity(
                control,
                config.certificates[i].layer,
                "certificates",
                &config.certificates[i].id.clone(),
            ),
            None if crate::config::is_uuid(c) => Reply::empty(204),
            None => certificate_missing(c),
        },
        ("GET", ["certificates", c, "snis"]) => match find_certificate(config, c) {
            Some(i) => list(
                &mut (0..config.snis.len())
                    .filter(|&s| config.snis[s].certificate == i)
                    .map(|s| sni_json(config, s)),
                "",
            ),
            None => certificate_missing(c),
        },
        ("GET", ["snis"]) => list(&mut (0..config.snis.len()).map(|i| sni_json(config, i)), ""),
        ("POST", ["certificates", c, "snis"]) => match find_certificate(config, c) {
            Some(i) => with_body(body("snis"), |mut b| {
                b.insert(
                    "certificate".into(),
                    json!({ "id": config.certificates[i].id }),
                );
                create_sni(control, config, b)
            }),
            None => certificate_missing(c),
        },
        ("GET" | "DELETE", ["certificates", c, "snis", s]) => {
            match (find_certificate(config, c), find_sni(config, s)) {
                (Some(c), Some(s)) if config.snis[s].certificate == c => match method {
                    "GET" => show(sni_json(config, s)),
                    _ => delete_sni(control, config, s),
                },
                _ => not_found(),
            }
        }
        ("POST", ["snis"]) => with_body(body("snis"), |b| create_sni(control, config, b)),
        ("GET", ["snis", s]) => {
            find_sni(config, s).map_or_else(not_found, |i| show(sni_json(config, i)))
        }
        ("GET", ["snis", s, "certificate"]) => find_sni(config, s).map_or_else(not_found, |i| {
            show(certificate_json(config, config.snis[i].certificate))
        }),
        ("PUT", ["snis", s]) => with_body(body("snis"), |b| put_sni(control, config, s, b, false)),
        ("PATCH", ["snis", s]) => with_body(body("snis"), |b| put_sni(control, config, s, b, true)),
        ("DELETE", ["snis", s]) => match find_sni(config, s) {
            Some(i) => delete_sni(control, config, i),
            None => Reply::empty(204),
        },
        // Group membership, as Kong Enterprise exposes it from both sides.
        ("GET", ["consumer_groups", g, "consumers"]) => match find_group(config, g) {
            Some(g) => list(
                &mut (0..config.consumers.len())
                    .filter(|&i| config.consumers[i].groups.contains(&g))
                    .map(|i| consumer_json(config, i)),
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumer_groups", g, "consumers"]) => match find_group(config, g) {
            Some(g) => with_body(body("memberships"), |b| add_members(control, config, g, &b)),
            None => not_found(),
        },
        ("DELETE", ["consumer_groups", g, "consumers"]) => match find_group(config, g) {
            Some(g) => {
                let members: Vec<usize> = (0..config.consumers.len())
                    .filter(|&c| config.consumers[c].groups.contains(&g))
                    .collect();
                leave_groups(control, config, &members, &[g])
            }
            None => not_found(),
        },
        ("DELETE", ["consumer_groups", g, "consumers", c]) => {
            match (find_group(config, g), find_consumer(config, c)) {
                (Some(g), Some(c)) => set_membership(control, config, &[c], &[g], false)
                    .map_or_else(|reply| reply, |_| Reply::empty(204)),
                _ => not_found(),
            }
        }
        ("GET", ["consumers", c, "consumer_groups"]) => match find_consumer(config, c) {
            Some(c) => list(
                &mut config.consumers[c]
                    .groups
                    .iter()
                    .map(|&g| group_json(config, g)),
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumers", c, "consumer_groups"]) => match find_consumer(config, c) {
            Some(c) => with_body(body("memberships"), |b| join_groups(control, config, c, &b)),
            None => not_found(),
        },
        ("DELETE", ["consumers", c, "consumer_groups"]) => match find_consumer(config, c) {
            Some(c) => leave_groups(control, config, &[c], &config.consumers[c].groups),
            None => not_found(),
        },
        ("DELETE", ["consumers", c, "consumer_groups", g]) => {
            match (find_group(config, g), find_consumer(config, c)) {
                (Some(g), Some(c)) => set_membership(control, config, &[c], &[g], false)
                    .map_or_else(|reply| reply, |_| Reply::empty(204)),
                _ => not_found(),
            }
        }
        // 405 only where the path exists and the method does not, as Kong routes.
        (_, segments) => match allowed_methods(segments) {
            "" => not_found(),
            allowed => Reply::method_not_allowed(allowed),
        },
    }
}

/// The methods answered at a path, for a 405's `Allow` (empty: no endpoint there, a
/// 404). HEAD goes with every GET.
fn allowed_methods(segments: &[&str]) -> &'static str {
    const LIST: &str = "GET, HEAD, POST";
    const READ: &str = "GET, HEAD";
    const ENTITY: &str = "GET, HEAD, PUT, PATCH, DELETE";
    match segments {
        ["config"] => LIST,
        ["jwts"] | ["jwts", _, "consumer"] | ["plugins", "enabled"] => READ,
        ["jwts", _] => "GET, HEAD, PATCH, DELETE",
        ["consumers" | "plugins" | "services" | "routes" | "consumer_groups" | "certificates"
        | "snis" | "ca_certificates"] => LIST,
        ["consumers" | "plugins" | "services" | "routes" | "consumer_groups" | "certificates"
        | "snis" | "ca_certificates", _] => ENTITY,
        ["consumers", _, "jwt"] | ["services", _, "routes"] => LIST,
        ["consumers", _, "jwt", _] => ENTITY,
        ["services", _, "routes", _] => ENTITY,
        ["consumers" | "services" | "routes" | "consumer_groups", _, "plugins"] => LIST,
        ["consumers" | "services" | "routes" | "consumer_groups", _, "plugins", _] => ENTITY,
        ["consumers", _, "consumer_groups"] | ["consumer_groups", _, "consumers"] => {
            "GET, HEAD, POST, DELETE"
        }
        ["consumers", _, "consumer_groups", _] | ["consumer_groups", _, "consumers", _] => "DELETE",
        ["routes", _, "service"] => "GET, HEAD, PUT, PATCH",
        ["plugins", _, "service" | "route" | "consumer" | "consumer_group"]
        | ["snis", _, "certificate"] => READ,
        ["upstreams"] | ["upstreams", _, "targets"] => LIST,
        ["upstreams", _, "health"] | ["upstreams", _, "targets", "all"] => READ,
        ["upstreams", _] | ["upstreams", _, "targets", _] => ENTITY,
        ["certificates", _, "snis"] => LIST,
        ["certificates", _, "snis", _] => "GET, HEAD, DELETE",
        ["upstreams", _, "targets", _, "healthy" | "unhealthy"]
        | ["upstreams", _, "targets", _, _, "healthy" | "unhealthy"] => "PUT, POST",
        ["schemas", _, "validate"] => "POST",
        ["schemas", _] | ["schemas", "plugins", _] => READ,
        _ => "",
    }
}

fn with_body(body: Result<Body, Reply>, f: impl FnOnce(Body) -> Reply) -> Reply {
    match body {
        Ok(body) => f(body),
        Err(reply) => reply,
    }
}

/// Kong's list shape: `?tags=` (`a,b` all of them, `a/b` any), an optional
/// `?field=value` filter, and pages of `?size=` (default 100, at most 1000) from the
/// `?offset=` cursor, with `next` and `offset` when there are more.
fn paged(
    items: &mut dyn Iterator<Item = Value>,
    request: &Request<'_>,
    control: &Control,
    filter: &str,
) -> Reply {
    let mut wanted = None;
    let mut tags = None;
    let mut size = DEFAULT_PAGE_SIZE;
    let mut offset = None;
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(value) = super::body::decode(value) else {
            return Reply::message(400, "Cannot parse the query string: bad percent-encoding");
        };
        match key {
            "size" => match value.parse::<f64>() {
                Ok(n) if n.fract() == 0.0 && (1.0..=MAX_PAGE_SIZE as f64).contains(&n) => {
                    size = n as usize;
                }
                Ok(_) => {
                    return invalid_size(&format!(
                        "size must be an integer between 1 and {MAX_PAGE_SIZE}"
                    ))
                }
                Err(_) => return invalid_size("size must be a number"),
            },
            // Kong's reasons, as its database strategies give them.
            "offset" => match Cursor::decode(&value) {
                Ok(cursor) => offset = Some(cursor),
                Err(why) => {
                    return Reply::json(
                        400,
                        &json!({
                            "code": 7,
                            "name": "invalid offset",
                            "message": format!("'{value}' is not a valid offset: {why}"),
                        }),
                    )
                }
            },
            // As Kong: of repeated `tags` parameters, the first.
            "tags" if tags.is_some() => {}
            "tags" => {
                let why = match TagFilter::parse(&value) {
                    Some(filter) if filter.len() <= MAX_TAG_QUERY => {
                        tags = Some((filter, value));
                        continue;
                    }
                    Some(_) => "cannot query more than 5 tags",
                    None => "invalid filter syntax",
                };
                return Reply::json(
                    400,
                    &json!({
                        "code": 11,
                        "name": "invalid options",
                        "message": format!("invalid option (tags: {why})"),
                        "options": { "tags": why },
                    }),
                );
            }
            key if key == filter && !filter.is_empty() => wanted = Some(value),
            _ => {}
        }
    }
    // The filters read no timestamp: only the page is dated.
    let mut matching: Vec<Value> = items
        .filter(|item| wanted.as_ref().is_none_or(|w| item[filter] == json!(w)))
        .filter(|item| tags.as_ref().is_none_or(|(t, _)| t.matches(&item["tags"])))
        .collect();
    let start = offset.map_or(0, |cursor| cursor.resume(&matching));
    let end = start.saturating_add(size).min(matching.len());
    let more = end < matching.len();
    let next_offset = more.then(|| Cursor::encode(&matching, end));
    matching.truncate(end);
    let data: Vec<Value> = matching.drain(start..).collect();
    let stored = Stored::load_for_all(control, &data);
    let data: Vec<Value> = data.into_iter().map(|item| stored.decorate(item)).collect();
    let mut page = json!({ "data": data, "next": null });
    if let Some(next_offset) = next_offset {
        let mut next = format!("{}?offset={}", request.path, escape(&next_offset));
        if let Some((_, text)) = &tags {
            next.push_str(&format!("&tags={}", escape(text)));
        }
        if size != DEFAULT_PAGE_SIZE {
            next.push_str(&format!("&size={size}"));
        }
        page["next"] = next.into();
        page["offset"] = next_offset.into();
    }
    Reply::json(200, &page)
}

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

fn invalid_size(message: &str) -> Reply {
    Reply::json(
        400,
        &json!({ "code": 9, "name": "invalid size", "message": message }),
    )
}

/// Kong's `offset`: an opaque cursor. It holds where the next page starts and the ids
/// of a few entities on either side of that place, so entities deleted (or added)
/// between two pages move no other across the boundary: the next page starts at the
/// first of those after it still there, else right after the last of those before it
/// still there, else at the position.
struct Cursor {
    position: usize,
    before: Vec<String>,
    after: Vec<String>,
}

/// How many ids a cursor keeps on each side of its place.
const CURSOR_IDS: usize = 4;

impl Cursor {
    /// The cursor for the page that starts at `position` in `items`.
    fn encode(items: &[Value], position: usize) -> String {
        use base64::Engine;
        let ids = |items: &[Value]| -> Vec<String> {
            items
                .iter()
                .map(|item| item["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let before = ids(&items[position.saturating_sub(CURSOR_IDS)..position]);
        let after = ids(&items[position..(position + CURSOR_IDS).min(items.len())]);
        base64::engine::general_purpose::STANDARD
            .encode(json!([position, before, after]).to_string())
    }

    fn decode(offset: &str) -> Result<Cursor, &'static str> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(offset)
            .map_err(|_| "bad base64 encoding")?;
        let (position, before, after): (usize, Vec<String>, Vec<String>) =
            serde_json::from_slice(&bytes).map_err(|_| "bad json encoding")?;
        Ok(Cursor {
            position,
            before,
            after,
        })
    }

    /// Where the page this cursor points at starts in `items`.
    fn resume(&self, items: &[Value]) -> usize {
        let at = |id: &String| {
            items
                .iter()
                .position(|item| item["id"].as_str() == Some(id.as_str()))
        };
        self.after
            .iter()
            .find_map(at)
            .or_else(|| self.before.iter().rev().find_map(at).map(|i| i + 1))
            .unwrap_or(self.position)
            .min(items.len())
    }
}

/// Percent-encodes what a query value cannot hold as is.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.extend(crate::route::escaped(b).map(char::from));
        }
    }
    out
}

/// Kong's `?tags=` filter: `a,b` needs every tag, `a/b` any of them.
enum TagFilter {
    All(Vec<String>),
    Any(Vec<String>),
}

/// Tags one query may name, as Kong allows.
const MAX_TAG_QUERY: usize = 5;

impl TagFilter {
    fn len(&self) -> usize {
        match self {
            TagFilter::All(tags) | TagFilter::Any(tags) => tags.len(),
        }
    }

    /// Kong's syntax: tags of printable characters but `,` and `/`, joined by one kind
    /// of separator.
    fn parse(text: &str) -> Option<TagFilter> {
        let split = |sep: char| -> Option<Vec<String>> {
            let tags: Vec<String> = text.split(sep).map(str::to_owned).collect();
            let valid = |t: &String| {
                !t.is_empty() && t.chars().all(|c| !c.is_control() && c != ',' && c != '/')
            };
            tags.iter().all(valid).then_some(tags)
        };
        if let Some(tags) = split(',') {
            return Some(TagFilter::All(tags));
        }
        split('/').map(TagFilter::Any)
    }

    fn matches(&self, tags: &Value) -> bool {
        let has = |tag: &String| {
            tags.as_array()
                .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(tag.as_str())))
        };
        match self {
            TagFilter::All(wanted) => wanted.iter().all(has),
            TagFilter::Any(wanted) => wanted.iter().any(has),
        }
    }
}

/// Admin-created entities as stored, by id: what the config model does not keep of
/// them (`updated_at`; `created_at` of services and routes) is shown from here. And when
/// the file layer was read: the time of what the file declares without one.
struct Stored(std::collections::HashMap<String, Map<String, Value>>, u64);

impl Stored {
    /// `load` for an answer showing one entity: only it, and the certificate an SNI
    /// names, are copied, not the whole admin layer (ids are unique across kinds).
    fn load_for(control: &Control, shown: &Value) -> Stored {
        Stored::load_for_all(control, std::slice::from_ref(shown))
    }

    /// `load` for an answer showing `shown` (a page of a list).
    fn load_for_all(control: &Control, shown: &[Value]) -> Stored {
        let ids: std::collections::HashSet<&str> = shown
            .iter()
            .flat_map(|v| [v["id"].as_str(), v["certificate"]["id"].as_str()])
            .flatten()
            .collect();
        Stored::collect(control, |id| ids.contains(id))
    }

    /// The stored entities `wanted(id)` picks, by id.
    fn collect(control: &Control, wanted: impl Fn(&str) -> bool) -> Stored {
        let by_id = control.with_admin(|admin| {
            let mut by_id = std::collections::HashMap::new();
            let Value::Object(kinds) = admin else {
                return by_id;
            };
            for entities in kinds.values() {
                for entity in entities.as_array().into_iter().flatten() {
                    if let (Value::Object(entity), Some(Value::String(id))) =
                        (entity, entity.get("id"))
                    {
                        if wanted(id) {
                            by_id.insert(id.clone(), entity.clone());
                        }
                    }
                }
            }
            by_id
        });
        Stored(by_id, control.file_loaded_at())
    }

    fn decorate(&self, mut value: Value) -> Value {
        let Some(entity) = value["id"].as_str().and_then(|id| self.0.get(id)) else {
            // Declared in the file: stamped when the file was read, unless it says. An
            // SNI named in an Admin-created certificate's `snis` dates from it.
            let stamp = value["certificate"]["id"]
                .as_str()
                .and_then(|id| self.0.get(id))
                .and_then(|certificate| certificate.get("created_at"))
                .and_then(Value::as_u64)
                .unwrap_or(self.1);
            if let Value::Object(shown) = &mut value {
                for field in ["created_at", "updated_at"] {
                    if shown.get(field).is_some_and(|v| v.is_null() || *v == 0) {
                        shown.insert(field.to_owned(), stamp.into());
                    }
                }
            }
            return value;
        };
        let Value::Object(shown) = &mut value else {
            return value;
        };
        for field in ["created_at", "updated_at"] {
            let Some(current) = shown.get(field) else {
                continue;
            };
            let from_store = entity.get(field).filter(|v| !v.is_null());
            if let Some(stored) = from_store {
                if current.is_null() || field == "updated_at" {
                    shown.insert(field.to_owned(), stored.clone());
                }
            }
        }
        value
    }
}

// ----- lookups (by id or by the endpoint key, as Kong does) -----

/// A body with its `id`, when it is a UUID, in lower case, as ids are kept.
fn canonical_id(mut body: Body) -> Body {
    if let Some(Value::String(id)) = body.get_mut("id") {
        *id = crate::config::canonical_key(std::mem::take(id));
    }
    body
}

/// An entity by its endpoint key or its id, as Kong's Admin API finds one: a key shaped as
/// a UUID names an id only, so a name that looks like one is not reached through it (a
/// PUT with it creates the entity of that id, and leaves the named one alone).
pub(super) fn by_key<'c>(
    keys: &std::collections::HashMap<String, usize>,
    key: &str,
    id_of: impl Fn(usize) -> &'c str,
) -> Option<usize> {
    let found = *keys.get(key)?;
    (!crate::config::is_uuid(key) || id_of(found) == key).then_some(found)
}

fn find_consumer(config: &Config, key: &str) -> Option<usize> {
    by_key(&config.keys.consumers, key, |i| &config.consumers[i].id)
}

fn find_jwt(config: &Config, key: &str) -> Option<usize> {
    // A path segment shaped as a UUID arrives in lower case (`canonical_key`); a key is
    // kept as given, so one shaped as a UUID is matched in any case.
    let uuid = crate::config::is_uuid(key);
    config
        .jwt_secrets
        .iter()
        .position(|s| s.id == key || s.key == key || (uuid && s.key.eq_ignore_ascii_case(key)))
}

/// A plugin by id, else by `instance_name` (Kong's endpoint key for plugins).
fn find_plugin(config: &Config, key: &str) -> Option<usize> {
    let plugins = &config.plugins;
    if crate::config::is_uuid(key) {
        return plugins.iter().position(|p| p.id == key);
    }
    plugins
        .iter()
        .position(|p| p.instance_name.as_deref() == Some(key))
}

fn find_service(config: &Config, key: &str) -> Option<usize> {
    by_key(&config.keys.services, key, |i| &config.services[i].id)
}

fn find_route(config: &Config, key: &str) -> Option<usize> {
    by_key(&config.keys.routes, key, |i| &config.routes[i].id)
}

fn find_group(config: &Config, key: &str) -> Option<usize> {
    by_key(&config.keys.groups, key, |i| &config.consumer_groups[i].id)
}

/// For nested plugin endpoints: the scope field and the parent's id.
fn scope_of(config: &Config, kind: &str, key: &str) -> Option<(&'static str, String)> {
    match kind {
        "services" => find_service(config, key).map(|i| ("service", config.services[i].id.clone())),
        "routes" => find_route(config, key).map(|i| ("route", config.routes[i].id.clone())),
        "consumers" => {
            find_consumer(config, key).map(|i| ("consumer", config.consumers[i].id.clone()))
        }
        "consumer_groups" => find_group(config, key)
            .map(|i| ("consumer_group", config.consumer_groups[i].id.clone())),
        "certificates" => find_certificate(config, key)
            .map(|i| ("certificate", config.certificates[i].id.clone())),
        _ => None,
    }
}

// ----- entity shapes, as Kong shows them -----

fn reference(id: Option<&str>) -> Value {
    id.map_or(Value::Null, |id| json!({ "id": id }))
}

fn tags(tags: &[String]) -> Value {
    if tags.is_empty() {
        Value::Null
    } else {
        json!(tags)
    }
}

fn consumer_json(config: &Config, i: usize) -> Value {
    let c = &config.consumers[i];
    json!({
        "id": c.id,
        "username": c.username,
        "custom_id": c.custom_id,
        "tags": tags(&c.tags),
        "created_at": c.created_at,
        "updated_at": c.created_at,
    })
}

fn jwt_json(config: &Config, j: usize) -> Value {
    let s = &config.jwt_secrets[j];
    let mut json = json!({
        "id": s.id,
        "key": s.key,
        "secret": s.secret,
        "algorithm": s.algorithm.name(),
        "rsa_public_key": s.rsa_public_key,
        "consumer": { "id": config.consumers[s.consumer].id },
        "tags": tags(&s.tags),
        "created_at": s.created_at,
    });
    show_references(&mut json, &s.references);
    json
}

/// A value the file gave as a vault reference is shown as the reference, as Kong's
/// Admin API does: reading the API does not read the environment's secrets.
fn show_references(json: &mut Value, references: &[(&'static str, String)]) {
    for (field, reference) in references {
        json[*field] = reference.as_str().into();
    }
}

fn plugin_json(config: &Config, p: usize) -> Value {
    let plugin = &config.plugins[p];
    let scope = plugin.scope;
    json!({
        "id": plugin.id,
        "name": plugin.name,
        "instance_name": plugin.instance_name,
        "config": plugin.config_json,
        "enabled": plugin.enabled,
        "protocols": plugin.protocols,
        "service": reference(scope.service.map(|i| config.services[i].id.as_str())),
        "route": reference(scope.route.map(|i| config.routes[i].id.as_str())),
        "consumer": reference(scope.consumer.map(|i| config.consumers[i].id.as_str())),
        "consumer_group": reference(scope.group.map(|i| config.consumer_groups[i].id.as_str())),
        "tags": tags(&plugin.tags),
        "created_at": plugin.created_at,
        "updated_at": plugin.created_at,
    })
}

fn service_json(config: &Config, i: usize) -> Value {
    let s = &config.services[i];
    json!({
        "id": s.id,
        // A service without a name goes by its id.
        "name": if *s.name == *s.id { Value::Null } else { json!(&*s.name) },
        "protocol": if s.tls.is_some() { "https" } else { "http" },
        "host": s.host,
        "port": s.port,
        "path": if s.path_given { json!(s.path) } else { Value::Null },
        "retries": s.retries,
        "connect_timeout": s.connect_timeout.as_millis() as u64,
        "read_timeout": s.read_timeout.as_millis() as u64,
        "write_timeout": s.write_timeout.as_millis() as u64,
        "enabled": s.enabled,
        "tls_verify": s.tls_verify,
        "tls_verify_depth": s.tls_verify_depth,
        "ca_certificates": s.ca_certificates,
        // Refused when set (not supported): null, as Kong shows a service without one.
        "client_certificate": null,
        "tags": tags(&s.tags),
        "created_at": null,
        "updated_at": null,
    })
}

fn route_json(config: &Config, i: usize) -> Value {
    let r = &config.routes[i];
    let paths: Vec<String> = r
        .paths
        .iter()
        .map(|p| match p {
            PathMatch::Prefix(prefix) => prefix.clone(),
            PathMatch::Regex(re) => {
                let pattern = re.as_str();
                format!(
                    "~{}",
                    pattern
                        .strip_prefix("^(?:")
                        .and_then(|p| p.strip_suffix(')'))
                        .unwrap_or(pattern)
                )
            }
        })
        .collect();
    let hosts: Vec<String> = r
        .hosts
        .iter()
        .map(|h| match h {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*{s}"),
            HostMatch::Prefix(p) => format!("{p}*"),
        })
        .collect();
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|(name, values)| {
            let values: Vec<String> = values
                .iter()
                .map(|v| match v {
                    ValueMatch::Exact(s) => s.clone(),
                    ValueMatch::Regex(re) => format!("~*{}", re.as_str()),
                })
                .collect();
            (name.clone(), json!(values))
        })
        .collect();
    let mut protocols = Vec::new();
    if r.http {
        protocols.push("http");
    }
    if r.https {
        protocols.insert(if r.https_first { 0 } else { protocols.len() }, "https");
    }
    let or_null = |empty: bool, v: Value| if empty { Value::Null } else { v };
    json!({
        "id": r.id,
        "name": r.name.as_deref(),
        "paths": or_null(paths.is_empty(), json!(paths)),
        "methods": or_null(r.methods.is_empty(), json!(r.methods)),
        "hosts": or_null(hosts.is_empty(), json!(hosts)),
        "headers": or_null(headers.is_empty(), Value::Object(headers)),
        "strip_path": r.strip_path,
        "preserve_host": r.preserve_host,
        "regex_priority": r.regex_priority,
        "protocols": protocols,
        "https_redirect_status_code": r.https_redirect_status_code,
        "path_handling": "v0",
        "request_buffering": r.request_buffering,
        "response_buffering": r.response_buffering,
        // Stream and TLS-passthrough matching, refused when set: null, as Kong shows an
        // http route.
        "snis": null,
        "sources": null,
        "destinations": null,
        "service": { "id": config.services[r.service].id },
        "tags": tags(&r.tags),
        "created_at": null,
        "updated_at": null,
    })
}

fn group_json(config: &Config, g: usize) -> Value {
    let group = &config.consumer_groups[g];
    json!({
        "id": group.id,
        "name": group.name,
        "tags": tags(&group.tags),
        "created_at": group.created_at,
        "updated_at": group.created_at,
    })
}

// ----- writes -----

/// Turns a refused change into Kong's answer; problems about the new entity become
/// field errors.
fn refused(
    reason: Refused,
    config_before: &Config,
    kind: &str,
    index_in_admin: Option<usize>,
) -> Reply {
    match reason {
        Refused::Io(e) => {
            log::error!("admin write failed: {e}");
            Reply::message(500, "An unexpected error occurred")
        }
        Refused::Conflict(problems) | Refused::Invalid(problems) => {
            let prefix = index_in_admin.map(|i| {
                format!(
                    "{kind}[{}]",
                    config_before.admin_offsets.get(kind).copied().unwrap_or(0) + i
                )
            });
            let mut fields = Map::new();
            let mut entity = Vec::new();
            let own = |problem: &crate::config::Problem| {
                prefix
                    .as_ref()
                    .and_then(|p| problem.path.strip_prefix(p.as_str()))
                    .filter(|rest| rest.is_empty() || rest.starts_with('.'))
                    .map(|rest| rest.trim_start_matches('.').to_owned())
            };
            // A unique key the write's own checks found free but the config it joined
            // holds (a reload between the check and the write added it): Kong's 409, as
            // the check would have answered.
            let taken = problems.0.iter().find_map(|problem| {
                let field = own(problem)?;
                let value = problem
                    .message
                    .strip_prefix("duplicate ")?
                    .split('\'')
                    .nth(1)?;
                matches!(field.as_str(), "username" | "custom_id" | "name" | "key")
                    .then(|| (field, value.to_owned()))
            });
            if let Some((field, value)) = taken {
                return unique_violation(&field, &value);
            }
            // The config was valid before this write: when the written entity has problems
            // of its own, those elsewhere follow from them (a consumer refused for a
            // field's type leaves its credentials without a consumer) and are not shown.
            let any_own = problems.0.iter().any(|p| own(p).is_some());
            for problem in &problems.0 {
                let field = own(problem);
                if any_own && field.is_none() {
                    continue;
                }
                match field {
                    Some(field) if !field.is_empty() => {
                        fields.insert(field, problem.message.clone().into());
                    }
                    // The written entity's own problem, or one it causes elsewhere.
                    Some(_) => entity.push(Value::from(problem.message.clone())),
                    None => entity.push(Value::from(problem.to_string())),
                }
            }
            if !entity.is_empty() {
                fields.insert("@entity".into(), Value::Array(entity));
            }
            schema_violation(fields)
        }
    }
}

fn admin_list<'a>(admin: &'a mut Value, kind: &str) -> &'a mut Vec<Value> {
    if !admin.is_object() {
        *admin = Value::Object(Map::new());
    }
    let map = admin.as_object_mut().expect("made an object above");
    let entry = map
        .entry(kind.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("made an array above")
}

/// Drops nulls: the config builder reads absent fields as their defaults.
fn without_nulls(mut object: Map<String, Value>) -> Map<String, Value> {
    object.retain(|_, v| !v.is_null());
    object
}

/// Writes an entity built from a request: a new one (201), or, for a PUT, in place of
/// the Admin-created entity with id `replacing` (200): a PUT replaces the whole entity,
/// so every field it does not give goes back to its default.
fn write(
    control: &Control,
    config: &Config,
    kind: &str,
    body: Body,
    replacing: Option<&str>,
) -> Reply {
    if let (true, Some(name)) = (kind == "plugins", body.get("name").and_then(Value::as_str)) {
        if let Some(refused) = plugin_config_refused(config, name, body.get("config"), replacing) {
            return refused;
        }
    }
    // The entity's own problems, in Kong's words, before the config it joins is built
    // (a plugin's were checked with its scope).
    if kind != "plugins" {
        if let Some(reply) = schema_problems(kind, &body) {
            return reply;
        }
    }
    let object = match base_object(body) {
        Ok(object) => object,
        Err(reply) => return reply,
    };
    match replacing {
        None => create(control, config, kind, object),
        Some(id) => replace(control, config, kind, id, object),
    }
}

/// Adds an entity to the admin layer; answers 201 with it as the new config shows it.
fn create(control: &Control, config: &Config, kind: &str, object: Map<String, Value>) -> Reply {
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default();

    let outcome = control.update_admin(|admin| {
        let list = admin_list(admin, kind);
        list.push(Value::Object(without_nulls(object)));
        list.len() - 1
    });
    match outcome {
        Ok((_, snapshot)) => show_written(control, &snapshot.config, kind, &id, 201),
        Err(reason) => {
            let index = control.with_admin(|admin| {
                admin
                    .get(kind)
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            });
            refused(reason, config, kind, Some(index))
        }
    }
}

/// The kind of entity a POST to this path creates.
fn created_kind(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["consumers"] => "consumers",
        ["consumers", _, "jwt"] => "jwt_secrets",
        ["services"] => "services",
        ["routes"] | ["services", _, "routes"] => "routes",
        ["plugins"] | [_, _, "plugins"] => "plugins",
        ["consumer_groups"] => "consumer_groups",
        ["certificates"] => "certificates",
        ["ca_certificates"] => "ca_certificates",
        ["snis"] => "snis",
        ["upstreams"] => "upstreams",
        ["upstreams", _, "targets"] => "targets",
        _ => return None,
    })
}

fn primary_key_violation(id: &str) -> Reply {
    Reply::json(
        400,
        &json!({
            "code": 3,
            "name": "primary key violation",
            "message": format!("primary key violation on key '{{id=\"{id}\"}}'"),
            "fields": { "id": id },
        }),
    )
}

/// Whether an entity of `kind` already has this id (Kong's primary key).
fn id_in_use(config: &Config, kind: &str, id: &str) -> bool {
    let mut ids: Box<dyn Iterator<Item = &str>> = match kind {
        "services" => Box::new(config.services.iter().map(|e| e.id.as_str())),
        "routes" => Box::new(config.routes.iter().map(|e| e.id.as_str())),
        "consumers" => Box::new(config.consumers.iter().map(|e| e.id.as_str())),
        "consumer_groups" => Box::new(config.consumer_groups.iter().map(|e| e.id.as_str())),
        "plugins" => Box::new(config.plugins.iter().map(|e| e.id.as_str())),
        "jwt_secrets" => Box::new(config.jwt_secrets.iter().map(|e| e.id.as_str())),
        "certificates" => Box::new(config.certificates.iter().map(|e| e.id.as_str())),
        "ca_certificates" => Box::new(config.ca_certificates.iter().map(|e| e.id.as_str())),
        "snis" => Box::new(config.snis.iter().map(|e| e.id.as_str())),
        "upstreams" => Box::new(config.upstreams.iter().map(|e| e.id.as_str())),
        "targets" => Box::new(
            config
                .upstreams
                .iter()
                .flat_map(|u| u.targets.iter().map(|t| t.id.as_str())),
        ),
        _ => return false,
    };
    ids.any(|x| x == id)
}

/// Puts `object` in place of the admin entity `id`, keeping its id, `created_at` and,
/// for a consumer, its group membership (a relation of its own) unless `object` gives
/// `groups`.
fn replace(
    control: &Control,
    config: &Config,
    kind: &str,
    id: &str,
    mut object: Map<String, Value>,
) -> Reply {
    let Some(index) = admin_index(control, kind, id) else {
        return not_found();
    };
    let outcome = control.update_admin(|admin| {
        let list = admin_list(admin, kind);
        if let Some(Value::Object(entity)) = list.get_mut(index) {
            object.insert("id".into(), id.into());
            // Membership stays unless the body names the groups itself.
            let given_groups = object.contains_key("groups");
            for kept in ["created_at", "groups"] {
                if kept == "groups" && given_groups {
                    continue;
                }
                if let Some(value) = entity.get(kept) {
                    object.insert(kept.into(), value.clone());
                }
            }
            *entity = without_nulls(object);
        }
    });
    match outcome {
        Ok((_, snapshot)) => show_written(control, &snapshot.config, kind, id, 200),
        Err(reason) => refused(reason, config, kind, Some(index)),
    }
}

/// The answer to a write: the entity as the new config shows it.
fn show_written(control: &Control, config: &Config, kind: &str, id: &str, status: u16) -> Reply {
    match show_by_id(config, kind, id) {
        Some(value) => Reply::json(status, &Stored::load_for(control, &value).decorate(value)),
        None => Reply::message(500, "An unexpected error occurred"),
    }
}

/// Where an entity sits in its admin-layer list.
fn admin_index(control: &Control, kind: &str, id: &str) -> Option<usize> {
    control.with_admin(|admin| {
        admin
            .get(kind)
            .and_then(Value::as_array)
            .and_then(|l| l.iter().position(|e| e["id"].as_str() == Some(id)))
    })
}

/// `PUT /{kind}/{name or id}`: Kong's upsert. An existing entity is replaced whole (405
/// when the file declares it); a missing one is created with that name, or that id when
/// the key is a UUID. Kong answers 200 either way.
/// The kinds `PUT` upserts.
#[derive(Clone, Copy)]
enum Upsert {
    Services,
    Routes,
    Consumers,
    Groups,
    Plugins,
    Upstreams,
}

fn put(control: &Control, config: &Config, kind: Upsert, key: &str, mut body: Body) -> Reply {
    if let Err(reply) = checked_meta(&body) {
        return reply;
    }
    let (found, name_field) = match kind {
        Upsert::Services => (
            find_service(config, key)
                .map(|i| (i, config.services[i].layer, &config.services[i].id)),
            Some("name"),
        ),
        Upsert::Routes => (
            find_route(config, key).map(|i| (i, config.routes[i].layer, &config.routes[i].id)),
            Some("name"),
        ),
        Upsert::Consumers => (
            find_consumer(config, key)
                .map(|i| (i, config.consumers[i].layer, &config.consumers[i].id)),
            Some("username"),
        ),
        Upsert::Groups => (
            find_group(config, key).map(|i| {
                (
                    i,
                    config.consumer_groups[i].layer,
                    &config.consumer_groups[i].id,
                )
            }),
            Some("name"),
        ),
        // Kong's endpoint key for plugins: a PUT by instance_name keeps or sets it.
        Upsert::Plugins => (
            find_plugin(config, key).map(|i| (i, config.plugins[i].layer, &config.plugins[i].id)),
            Some("instance_name"),
        ),
        Upsert::Upstreams => (
            upstreams::index(config, key).map(|i| {
                let up = &config.upstreams[i];
                (i, up.layer, &up.id)
            }),
            Some("name"),
        ),
    };
    let is_id = crate::config::is_uuid(key);
    match (found, name_field) {
        (Some((_, Layer::File, _)), _) => return read_only(),
        (Some((_, _, id)), _) => {
            body.insert("id".into(), id.as_str().into());
        }
        (None, _) if is_id => {
            body.insert("id".into(), key.into());
        }
        (None, None) => return field_error("id", "expected a valid UUID"),
        (None, Some(_)) => {
            body.remove("id");
        }
    }
    if let (false, Some(field)) = (is_id, name_field) {
        body.insert(field.into(), key.into());
    }
    let replacing = found.map(|(i, _, id)| (i, id.as_str()));
    let reply = match kind {
        Upsert::Services => create_service(control, config, body, replacing),
        Upsert::Routes => create_route(control, config, body, replacing),
        Upsert::Consumers => create_consumer(control, config, body, replacing),
        Upsert::Groups => create_group(control, config, body, replacing),
        Upsert::Plugins => create_plugin(control, config, body, None, replacing),
        Upsert::Upstreams => create_upstream(control, config, body, replacing),
    };
    put_status(reply)
}

/// Kong's answer to a certificate whose `snis` name one another certificate (not
/// `own`) serves: `snis: NAME already associated with existing certificate 'ID'`.
fn sni_held(config: &Config, body: &Body, own: Option<&str>) -> Option<Reply> {
    // A list, or one name (a form's single `snis=`).
    let names = match body.get("snis")? {
        Value::Array(names) => names.as_slice(),
        one => std::slice::from_ref(one),
    };
    names.iter().find_map(|entry| {
        let name = entry.as_str().or_else(|| entry.get("name")?.as_str())?;
        let held = config
            .snis
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))?;
        let holder = &config.certificates[held.certificate].id;
        (Some(holder.as_str()) != own).then(|| {
            field_error(
                "snis",
                &format!("{name} already associated with existing certificate '{holder}'"),
            )
        })
    })
}

/// `PUT /certificates/{id or SNI name}`, as Kong: a certificate there is replaced whole
/// (its id kept; fields not given back to their defaults); none there is created, with
/// that id, or with that name among its `snis`.
fn put_certificate(control: &Control, config: &Config, key: &str, mut body: Body) -> Reply {
    if let Err(reply) = checked_meta(&body) {
        return reply;
    }
    let is_id = crate::config::is_uuid(key);
    let found = find_certificate(config, key);
    if found.is_some_and(|i| config.certificates[i].layer == Layer::File) {
        return read_only();
    }
    let own = found.map(|i| config.certificates[i].id.as_str());
    if let Some(held) = sni_held(config, &body, own) {
        return held;
    }
    // A new certificate put under a name serves that name too; one there keeps its
    // names unless the body gives them.
    if !is_id && found.is_none() {
        let mut snis = match body.remove("snis") {
            Some(Value::Array(snis)) => snis,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return field_error("snis", "expected a set"),
        };
        if !snis.iter().any(|s| s.as_str() == Some(key)) {
            snis.push(key.into());
        }
        body.insert("snis".into(), Value::Array(snis));
    }
    match found {
        Some(i) => {
            let certificate = &config.certificates[i];
            for field in ["cert", "key", "cert_alt", "key_alt", "tags"] {
                body.entry(field).or_insert(Value::Null);
            }
            update_generic(
                control,
                config,
                certificate.layer,
                "certificates",
                &certificate.id.clone(),
                body,
            )
        }
        None => {
            if is_id {
                body.insert("id".into(), key.into());
            } else {
                body.remove("id");
            }
            put_status(write(control, config, "certificates", body, None))
        }
    }
}

/// A new SNI; its name is unique (409, as for any other entity).
fn create_sni(control: &Control, config: &Config, mut body: Body) -> Reply {
    if let Some(reply) = sni_name_taken(config, &body, None) {
        return reply;
    }
    match resolve_reference(config, &mut body, "certificate", "certificates") {
        Err(reply) => reply,
        Ok(()) => match unsteady_certificate(config, &body) {
            Some(reply) => reply,
            None => write(control, config, "snis", body, None),
        },
    }
}

/// Kong's unique SNI name, in any case: the answer when an SNI other than `except` holds
/// the body's `name` (the body's schema problems first, as Kong's), or when the name is
/// not a string.
fn sni_name_taken(config: &Config, body: &Body, except: Option<&str>) -> Option<Reply> {
    match string_field(body, "name") {
        Err(reply) => Some(reply),
        Ok(Some(name))
            if config
                .snis
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(name) && Some(s.id.as_str()) != except) =>
        {
            Some(invalid_or("snis", body, unique_violation("name", name)))
        }
        Ok(_) => None,
    }
}

/// `PUT /snis/{id or name}` (create or replace whole) and `PATCH /snis/{id or name}`
/// (the body laid over the SNI there), as Kong; decK creates SNIs with a PUT by id. An
/// SNI given among its certificate's `snis` becomes an entity of its own, its id kept.
fn put_sni(control: &Control, config: &Config, key: &str, mut body: Body, patch: bool) -> Reply {
    if let Err(reply) = checked_meta(&body) {
        return reply;
    }
    let found = find_sni(config, key).map(|i| &config.snis[i]);
    match found {
        Some(sni) if sni.layer == Layer::File => return read_only(),
        None if patch => return not_found(),
        _ => {}
    }
    let is_id = crate::config::is_uuid(key);
    if let (true, Some(sni)) = (patch, found) {
        body.entry("name")
            .or_insert_with(|| sni.name.as_str().into());
        body.entry("certificate")
            .or_insert_with(|| json!({ "id": config.certificates[sni.certificate].id }));
        if !sni.tags.is_empty() {
            body.entry("tags").or_insert_with(|| json!(sni.tags));
        }
    } else if !is_id {
        body.insert("name".into(), key.into());
    }
    match (found, is_id) {
        (Some(sni), _) => body.insert("id".into(), sni.id.as_str().into()),
        (None, true) => body.insert("id".into(), key.into()),
        (None, false) => body.remove("id"),
    };
    // Another SNI holding the name is a conflict, this one is not.
    if let Some(reply) = sni_name_taken(config, &body, found.map(|sni| sni.id.as_str())) {
        return reply;
    }
    if let Err(reply) = resolve_reference(config, &mut body, "certificate", "certificates") {
        return reply;
    }
    if let Some(reply) = unsteady_certificate(config, &body) {
        return reply;
    }
    if let Some(reply) = schema_problems("snis", &body) {
        return reply;
    }
    let mut object = match base_object(body) {
        Ok(object) => object,
        Err(reply) => return reply,
    };
    let id = object["id"].as_str().unwrap_or_default().to_owned();
    let old = found.map(|sni| (json!(sni.id), json!(sni.name), sni.created_at));
    let outcome = control.update_admin(|admin| {
        // The SNI there goes from wherever it is, its place in the list kept.
        let mut at = None;
        if let Some((old_id, old_name, created_at)) = &old {
            // Kept, unless the SNI had none (one named in its certificate's list).
            if *created_at != 0 {
                object.insert("created_at".into(), json!(created_at));
            }
            at = admin_list(admin, "snis")
                .iter()
                .position(|e| e["id"] == *old_id);
            for certificate in admin_list(admin, "certificates") {
                if let Some(names) = certificate.get_mut("snis").and_then(Value::as_array_mut) {
                    names.retain(|n| n != old_name && n["name"] != *old_name);
                }
            }
        }
        let list = admin_list(admin, "snis");
        let entity = Value::Object(without_nulls(object));
        match at {
            Some(at) => list[at] = entity,
            None => list.push(entity),
        }
    });
    match outcome {
        Ok((_, snapshot)) => show_written(control, &snapshot.config, "snis", &id, 200),
        Err(reason) => refused(reason, config, "snis", None),
    }
}

/// An SNI the Admin API attaches to a certificate the file declares without an `id`
/// would be left naming nothing once the certificate is renewed (its id follows its
/// PEM), and the next start would refuse the state: refused up front.
fn unsteady_certificate(config: &Config, body: &Body) -> Option<Reply> {
    let id = body.get("certificate")?.get("id")?.as_str()?;
    let certificate = config.certificates.iter().find(|c| c.id == id)?;
    (certificate.layer == Layer::File && certificate.derived_id).then(|| {
        field_error(
            "certificate",
            &format!(
                "certificate '{id}' is declared in the file without an id: its id follows its \
                 PEM and changes when it is renewed, leaving this SNI behind; give it an id in \
                 the file to attach SNIs here"
            ),
        )
    })
}

/// A PUT answers 200 whether it created the entity or replaced it, as Kong's does.
fn put_status(mut reply: Reply) -> Reply {
    if reply.status == 201 {
        reply.status = 200;
    }
    reply
}

/// Applies `patch` to an admin-layer entity; file-layer entities are read-only.
fn update_generic(
    control: &Control,
    config: &Config,
    layer: Layer,
    kind: &str,
    id: &str,
    patch: Body,
) -> Reply {
    if layer == Layer::File {
        return read_only();
    }
    if let Err(reply) = checked_meta(&patch) {
        return reply;
    }
    // The path names the entity; a body naming another would be ignored or a rename
    // of its primary key, which nothing here supports.
    if let Some(given) = patch.get("id").and_then(Value::as_str) {
        if id != given {
            return field_error("id", "cannot be changed (the path names the entity)");
        }
    }
    let Some(index) = admin_index(control, kind, id) else {
        return not_found();
    };
    // As Kong: a certificate's `snis` is the whole list of its names, those added through
    // `/snis` included, so a PATCH giving it drops the others.
    let replaces_snis = kind == "certificates" && patch.contains_key("snis");
    let outcome = control.update_admin(|admin| {
        if replaces_snis {
            admin_list(admin, "snis").retain(|sni| {
                let of = &sni["certificate"];
                of.as_str().or_else(|| of["id"].as_str()) != Some(id)
            });
        }
        let list = admin_list(admin, kind);
        if let Some(Value::Object(entity)) = list.get_mut(index) {
            for (k, v) in patch {
                if k == "id" || k == "created_at" {
                    continue;
                }
                entity.insert(k, v);
            }
            entity.insert("updated_at".into(), crate::control::unix_now().into());
            let cleaned = without_nulls(std::mem::take(entity));
            *entity = cleaned;
        }
    });
    match outcome {
        Ok((_, snapshot)) => show_written(control, &snapshot.config, kind, id, 200),
        Err(reason) => refused(reason, config, kind, Some(index)),
    }
}

fn show_by_id(config: &Config, kind: &str, id: &str) -> Option<Value> {
    match kind {
        "consumers" => config
            .consumers
            .iter()
            .position(|c| c.id == id)
            .map(|i| consumer_json(config, i)),
        "jwt_secrets" => config
            .jwt_secrets
            .iter()
            .position(|s| s.id == id)
            .map(|i| jwt_json(config, i)),
        "plugins" => config
            .plugins
            .iter()
            .position(|p| p.id == id)
            .map(|i| plugin_json(config, i)),
        "services" => config
            .services
            .iter()
            .position(|s| s.id == id)
            .map(|i| service_json(config, i)),
        "routes" => config
            .routes
            .iter()
            .position(|r| r.id == id)
            .map(|i| route_json(config, i)),
        "consumer_groups" => config
            .consumer_groups
            .iter()
            .position(|g| g.id == id)
            .map(|i| group_json(config, i)),
        "certificates" => config
            .certificates
            .iter()
            .position(|c| c.id == id)
            .map(|i| certificate_json(config, i)),
        "snis" => config
            .snis
            .iter()
            .position(|s| s.id == id)
            .map(|i| sni_json(config, i)),
        "ca_certificates" => {
            find_ca_certificate(config, id).map(|i| ca_certificate_json(config, i))
        }
        "upstreams" => upstreams::find(config, id).map(upstreams::upstream_json),
        "targets" => config.upstreams.iter().find_map(|up| {
            let t = up.targets.iter().find(|t| t.id == id)?;
            Some(upstreams::target_json(up, t))
        }),
        _ => None,
    }
}

fn certificate_json(config: &Config, i: usize) -> Value {
    let c = &config.certificates[i];
    // Sorted, as Kong shows them.
    let mut snis = c.snis.clone();
    snis.sort_unstable();
    let mut json = json!({
        "id": c.id, "cert": c.cert, "key": c.key,
        "cert_alt": c.cert_alt, "key_alt": c.key_alt,
        "snis": snis, "tags": tags(&c.tags), "created_at": c.created_at,
        "updated_at": c.created_at,
    });
    show_references(&mut json, &c.references);
    json
}

fn sni_json(config: &Config, i: usize) -> Value {
    let s = &config.snis[i];
    json!({
        "id": s.id, "name": s.name,
        "certificate": { "id": config.certificates[s.certificate].id },
        "tags": tags(&s.tags), "created_at": s.created_at,
        "updated_at": s.created_at,
    })
}

/// By id only: a CA certificate has no other key.
fn find_ca_certificate(config: &Config, id: &str) -> Option<usize> {
    config.ca_certificates.iter().position(|c| c.id == id)
}

fn ca_certificate_json(config: &Config, i: usize) -> Value {
    let c = &config.ca_certificates[i];
    json!({
        "id": c.id, "cert": c.cert, "cert_digest": c.cert_digest,
        "tags": tags(&c.tags), "created_at": c.created_at, "updated_at": c.created_at,
    })
}

/// `PUT /ca_certificates/{id}`, as Kong (and decK, which writes every entity so): the
/// CA certificate there replaced whole, its id kept; none there, one made with that id.
fn put_ca_certificate(control: &Control, config: &Config, key: &str, mut body: Body) -> Reply {
    if let Err(reply) = checked_meta(&body) {
        return reply;
    }
    let found = find_ca_certificate(config, key);
    match found {
        Some(i) if config.ca_certificates[i].layer == Layer::File => return read_only(),
        None if !crate::config::is_uuid(key) => return field_error("id", "expected a valid UUID"),
        _ => {}
    }
    if let Some(refused) = ca_write_refused(config, &body, Some(key)) {
        return refused;
    }
    body.insert("id".into(), key.into());
    match found {
        Some(_) => write(control, config, "ca_certificates", body, Some(key)),
        None => put_status(write(control, config, "ca_certificates", body, None)),
    }
}

/// What refuses a CA certificate's write before the config it joins is built: a
/// certificate expired already (one that expires later only warns, in every config
/// built since), and Kong's unique `cert_digest`.
fn ca_write_refused(config: &Config, body: &Body, except: Option<&str>) -> Option<Reply> {
    ca_expired(body).or_else(|| ca_digest_taken(config, body, except))
}

/// A CA certificate's `cert` that has expired already.
fn ca_expired(body: &Body) -> Option<Reply> {
    let cert = body.get("cert")?.as_str()?;
    crate::config::expired_ca(cert).map(|message| field_error("cert", message))
}

/// Kong's unique `cert_digest`: a 409 when another CA certificate than `except` (the one
/// a PUT replaces) is the same certificate as the body's.
fn ca_digest_taken(config: &Config, body: &Body, except: Option<&str>) -> Option<Reply> {
    let pem = body.get("cert")?.as_str()?;
    let der = crate::tls::certificates(pem).ok()?.into_iter().next()?;
    let digest = crate::config::cert_digest(&der);
    config
        .ca_certificates
        .iter()
        .any(|c| c.cert_digest == digest && Some(c.id.as_str()) != except)
        .then(|| unique_violation("cert_digest", &digest))
}

/// By id, or (as Kong) by one of its SNI names.
fn find_certificate(config: &Config, key: &str) -> Option<usize> {
    config
        .certificates
        .iter()
        .position(|c| c.id == key)
        .or_else(|| find_sni(config, key).map(|s| config.snis[s].certificate))
}

/// The answer for `/certificates/{key}` when no certificate is there: for an SNI name,
/// Kong's 404 `SNI not found` (a DELETE too); for an id, `Not found` (a DELETE of it 204,
/// as for any top-level entity).
fn certificate_missing(key: &str) -> Reply {
    if crate::config::is_uuid(key) {
        not_found()
    } else {
        Reply::message(404, "SNI not found")
    }
}

fn find_sni(config: &Config, key: &str) -> Option<usize> {
    config
        .snis
        .iter()
        .position(|s| s.id == key || s.name.eq_ignore_ascii_case(key))
}

fn delete_entity(control: &Control, layer: Layer, kind: &str, id: &str) -> Reply {
    if layer == Layer::File {
        return read_only();
    }
    let snapshot = control.shared.snapshot();
    let (dependents, memberships) = dependents(&snapshot.config, kind, id);
    let outcome = control.update_admin(|admin| {
        admin_list(admin, kind).retain(|e| e["id"] != json!(id));
        for (dependent, dependent_id) in &dependents {
            admin_list(admin, dependent).retain(|e| e["id"] != json!(dependent_id));
        }
        for consumer in admin_list(admin, "consumers") {
            let left = memberships
                .iter()
                .find(|(member, _)| consumer["id"] == json!(member));
            if let (Some((_, left)), Value::Object(entity)) = (left, consumer) {
                entity.insert("groups".into(), json!(left));
            }
        }
    });
    match outcome {
        Err(Refused::Invalid(problems) | Refused::Conflict(problems)) => {
            foreign_key_violation(kind, &problems)
        }
        outcome => deleted(outcome),
    }
}

/// What goes with a deleted entity, as Kong's foreign keys cascade, found in the
/// resolved config (so however each refers to it: by id, by name, as an object): a
/// consumer's credentials, an entity's plugins, a certificate's SNIs. For a group, also
/// each Admin-created member's groups without it, as ids.
type Dependents = (Vec<(&'static str, String)>, Vec<(String, Vec<String>)>);

fn dependents(config: &Config, kind: &str, id: &str) -> Dependents {
    let plugins = |scoped: &dyn Fn(&crate::config::Scope) -> bool| {
        config
            .plugins
            .iter()
            .filter(|p| scoped(&p.scope))
            .map(|p| ("plugins", p.id.clone()))
            .collect::<Vec<_>>()
    };
    match kind {
        "consumers" => match find_consumer(config, id) {
            Some(c) => {
                let mut gone = plugins(&|s| s.consumer == Some(c));
                gone.extend(
                    config
                        .jwt_secrets
                        .iter()
                        .filter(|j| j.consumer == c)
                        .map(|j| ("jwt_secrets", j.id.clone())),
                );
                (gone, Vec::new())
            }
            None => (Vec::new(), Vec::new()),
        },
        "services" => match find_service(config, id) {
            Some(i) => (plugins(&|s| s.service == Some(i)), Vec::new()),
            None => (Vec::new(), Vec::new()),
        },
        "routes" => match find_route(config, id) {
            Some(i) => (plugins(&|s| s.route == Some(i)), Vec::new()),
            None => (Vec::new(), Vec::new()),
        },
        "consumer_groups" => match find_group(config, id) {
            Some(g) => {
                let members = config
                    .consumers
                    .iter()
                    .filter(|c| c.layer != Layer::File && c.groups.contains(&g))
                    .map(|c| {
                        let left = c.groups.iter().filter(|&&other| other != g);
                        let ids = left.map(|&other| config.consumer_groups[other].id.clone());
                        (c.id.clone(), ids.collect())
                    })
                    .collect();
                (plugins(&|s| s.group == Some(g)), members)
            }
            None => (Vec::new(), Vec::new()),
        },
        "upstreams" => match upstreams::find(config, id) {
            Some(up) => (
                up.targets
                    .iter()
                    .map(|t| ("targets", t.id.clone()))
                    .collect(),
                Vec::new(),
            ),
            None => (Vec::new(), Vec::new()),
        },
        "certificates" => match find_certificate(config, id) {
            Some(i) => (
                config
                    .snis
                    .iter()
                    .filter(|sni| sni.certificate == i)
                    .map(|sni| ("snis", sni.id.clone()))
                    .collect(),
                Vec::new(),
            ),
            None => (Vec::new(), Vec::new()),
        },
        _ => (Vec::new(), Vec::new()),
    }
}

/// Kong's answer when another entity still refers to the one being deleted (a route
/// to its service; anything the file declares): 400, code 4, naming the referring kind.
fn foreign_key_violation(kind: &str, problems: &Problems) -> Reply {
    let child = problems
        .0
        .first()
        .and_then(|p| p.path.split_once('['))
        .map_or("entities", |(child, _)| child);
    Reply::json(
        400,
        &json!({
            "code": 4,
            "name": "foreign key violation",
            "message": format!("an existing '{child}' entity references this '{kind}' entity"),
            "fields": { "@referenced_by": child },
        }),
    )
}

/// An SNI is an entity of its own, or a name in its certificate's `snis`: either way it
/// goes (the certificate stays).
fn delete_sni(control: &Control, config: &Config, i: usize) -> Reply {
    let sni = &config.snis[i];
    if sni.layer == Layer::File {
        return read_only();
    }
    let (id, name) = (json!(sni.id), json!(sni.name));
    deleted(control.update_admin(|admin| {
        admin_list(admin, "snis").retain(|e| e["id"] != id);
        for certificate in admin_list(admin, "certificates") {
            if let Some(names) = certificate.get_mut("snis").and_then(Value::as_array_mut) {
                names.retain(|n| *n != name && n["name"] != name);
            }
        }
    }))
}

/// The answer to a delete, once the Admin state was written (or refused).
fn deleted<T>(outcome: Result<T, Refused>) -> Reply {
    match outcome {
        Ok(_) => Reply::empty(204),
        Err(Refused::Invalid(problems)) | Err(Refused::Conflict(problems)) => Reply::json(
            400,
            &json!({ "message": format!("cannot delete: {}", problems.to_string().replace('\n', "; ")) }),
        ),
        Err(Refused::Io(e)) => {
            log::error!("admin write failed: {e}");
            Reply::message(500, "An unexpected error occurred")
        }
    }
}

/// The fields every entity has, in a PUT or PATCH body, which keeps the entity's own
/// (the path names it): still refused when malformed, as Kong's schema refuses them, not
/// silently ignored. Every problem at once.
fn checked_meta(body: &Body) -> Result<(), Reply> {
    let mut fields = Map::new();
    meta_errors(body, &mut fields);
    if fields.is_empty() {
        Ok(())
    } else {
        Err(schema_violation(fields))
    }
}

/// Bad tags said in one answer, and how much of each is quoted.
const MAX_TAG_PROBLEMS: usize = 32;
const SHOWN_TAG_CHARS: usize = 64;

/// The problems of the fields every entity has: an `id` that is no UUID, timestamps
/// that are no whole numbers (`1.0` is one, as Kong's JSON decoder reads it).
fn meta_errors(body: &Body, fields: &mut Map<String, Value>) {
    match body.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if crate::config::is_uuid(id) => {}
        Some(_) => {
            fields.insert("id".into(), "expected a valid UUID".into());
        }
    }
    // Kong's schema refuses these before any unique key is looked at; a bad tag is
    // named at its place in the list (`tags[1]`), as Kong answers an element's problem.
    match body.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            // The first few, as the config's own checks stop at a few per item: a body of
            // a million bad tags gets an answer of a few lines, not one per tag.
            let bad = items.iter().enumerate().filter_map(|(i, tag)| {
                let problem = match tag.as_str() {
                    Some(tag) if crate::config::valid_tag(tag) => return None,
                    Some(tag) => format!(
                        "invalid tag '{}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
                        tag.chars().take(SHOWN_TAG_CHARS).collect::<String>().escape_debug()
                    ),
                    None => "expected a string".to_owned(),
                };
                Some((i, problem))
            });
            for (i, problem) in bad.take(MAX_TAG_PROBLEMS) {
                fields.insert(format!("tags[{i}]"), problem.into());
            }
        }
        Some(_) => {
            fields.insert("tags".into(), "expected a set".into());
        }
    }
    if body
        .get("enabled")
        .is_some_and(|v| !v.is_null() && !v.is_boolean())
    {
        fields.insert("enabled".into(), "expected a boolean".into());
    }
    for stamp in ["created_at", "updated_at"] {
        match body.get(stamp) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n))
                if n.is_u64() || n.is_i64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {}
            Some(_) => {
                fields.insert(stamp.into(), "expected an integer".into());
            }
        }
    }
}

/// A new entity's object: its id (given, which must be a UUID as in Kong, or random)
/// and its timestamps.
fn base_object(mut body: Body) -> Result<Map<String, Value>, Reply> {
    let now = crate::control::unix_now();
    match body.get("id") {
        None | Some(Value::Null) => {
            body.insert("id".into(), random_id().into());
        }
        Some(Value::String(id)) if crate::config::is_uuid(id) => {}
        Some(_) => return Err(field_error("id", "expected a valid UUID")),
    }
    body.insert("created_at".into(), now.into());
    body.insert("updated_at".into(), now.into());
    Ok(body)
}

/// Kong's schema checks of a body's plain fields, every problem at once: `strings` must
/// be non-empty strings, and nothing but them, `other` and the fields every entity has
/// may be there. The field errors, by field.
fn field_errors(body: &Body, strings: &[&str], other: &[&str]) -> Map<String, Value> {
    let mut fields = Map::new();
    meta_errors(body, &mut fields);
    for field in strings {
        if let Err(message) = string_value(body, field) {
            fields.insert((*field).to_owned(), message.into());
        }
    }
    for field in body.keys() {
        let common = ["id", "created_at", "updated_at", "tags"];
        let field_str = field.as_str();
        if ![strings, other, &common]
            .iter()
            .any(|known| known.contains(&field_str))
        {
            fields.insert(field.clone(), "unknown field".into());
        }
    }
    fields
}

fn string_value<'a>(body: &'a Body, field: &str) -> Result<Option<&'a str>, &'static str> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        // Kong's strings are never empty unless a schema says so (none here does); an
        // empty form value already arrived as null.
        Some(Value::String(s)) if s.is_empty() => Err("length must be at least 1"),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("expected a string"),
    }
}

/// `string_value`, its problem as Kong's 400 for the field.
fn string_field<'a>(body: &'a Body, field: &str) -> Result<Option<&'a str>, Reply> {
    string_value(body, field).map_err(|problem| field_error(field, problem))
}

/// The entity a PUT replaces: its index in the config and its id.
type Replacing<'a> = Option<(usize, &'a str)>;

/// A name field's own problems, then Kong's unique constraint on it (the entity being
/// replaced or updated may hold the name already).
fn unique_name(
    body: &Body,
    field: &str,
    names: &std::collections::HashMap<String, usize>,
    replacing: Replacing<'_>,
) -> Result<(), Reply> {
    match string_field(body, field)? {
        Some(name) if taken_by_other(names.get(name), replacing) => {
            Err(unique_violation(field, name))
        }
        _ => Ok(()),
    }
}

/// `unique_name` for the names Kong types as `utf8_name` (services', routes'): a name
/// that is not one is no conflict, and the build reports it beside the entity's other
/// problems.
fn unique_utf8_name(
    body: &Body,
    field: &str,
    names: &std::collections::HashMap<String, usize>,
    replacing: Replacing<'_>,
) -> Result<(), Reply> {
    if let Some(name) = string_field(body, field)? {
        if crate::config::utf8_name_problem(name).is_some() {
            return Ok(());
        }
    }
    unique_name(body, field, names, replacing)
}

/// Whether `other` (the entity holding a name) is someone else than the one replaced.
fn taken_by_other(other: Option<&usize>, replacing: Replacing<'_>) -> bool {
    other.is_some_and(|&other| replacing.is_none_or(|(i, _)| i != other))
}

fn create_consumer(
    control: &Control,
    config: &Config,
    body: Body,
    replacing: Replacing<'_>,
) -> Reply {
    let mut fields = field_errors(&body, &["username", "custom_id"], &["groups"]);
    if !fields.is_empty() {
        // Kong checks the pair with the fields' own problems, an empty string as empty.
        let given = |field: &str| {
            !fields.contains_key(field)
                && body
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
        };
        if !given("username") && !given("custom_id") {
            fields.insert(
                "@entity".into(),
                json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"]),
            );
        }
        return schema_violation(fields);
    }
    let username = string_value(&body, "username")
        .ok()
        .flatten()
        .map(str::to_owned);
    let custom_id = string_value(&body, "custom_id")
        .ok()
        .flatten()
        .map(str::to_owned);
    if username.is_none() && custom_id.is_none() {
        let mut fields = Map::new();
        fields.insert(
            "@entity".into(),
            json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"]),
        );
        return schema_violation(fields);
    }
    if let Some(username) = &username {
        if let Err(reply) = username_free(config, username, replacing) {
            return invalid_or("consumers", &body, reply);
        }
    }
    if let Some(custom_id) = &custom_id {
        if let Err(reply) = custom_id_free(config, custom_id, replacing) {
            return invalid_or("consumers", &body, reply);
        }
    }
    write(
        control,
        config,
        "consumers",
        body,
        replacing.map(|(_, id)| id),
    )
}

/// Kong's unique constraint on a consumer's `username`. Usernames and ids share one lookup
/// here, so a username shaped as a UUID may not be another consumer's id either (Kong keeps
/// the two apart), and the answer says which it is.
fn username_free(config: &Config, username: &str, replacing: Replacing<'_>) -> Result<(), Reply> {
    // An id is found without regard to case: so is a username shaped as one.
    let as_id = crate::config::is_uuid(username).then(|| username.to_ascii_lowercase());
    let holder = config.keys.consumers.get(username).or_else(|| {
        let id = as_id.as_deref()?;
        config
            .keys
            .consumers
            .get(id)
            .filter(|&&i| config.consumers[i].id == id)
    });
    if !taken_by_other(holder, replacing) {
        return Ok(());
    }
    match holder {
        Some(&i) if config.consumers[i].id.eq_ignore_ascii_case(username) => Err(Reply::json(
            409,
            &json!({
                "code": 5,
                "name": "unique constraint violation",
                "message": format!("'{username}' is the id of another consumer, which a username may not be"),
                "fields": { "username": username },
            }),
        )),
        _ => Err(unique_violation("username", username)),
    }
}

/// Kong's unique constraint on a consumer's `custom_id`, for a create, a PUT or a PATCH
/// (the consumer being written may hold it already).
fn custom_id_free(config: &Config, custom_id: &str, replacing: Replacing<'_>) -> Result<(), Reply> {
    let holder = config
        .consumers
        .iter()
        .position(|c| c.custom_id.as_deref() == Some(custom_id));
    if taken_by_other(holder.as_ref(), replacing) {
        return Err(unique_violation("custom_id", custom_id));
    }
    Ok(())
}

fn update_consumer(control: &Control, config: &Config, key: &str, body: Body) -> Reply {
    let Some(i) = find_consumer(config, key) else {
        return not_found();
    };
    let consumer = &config.consumers[i];
    match string_field(&body, "username") {
        Ok(Some(username)) => {
            if let Err(reply) = username_free(config, username, Some((i, &consumer.id))) {
                return reply;
            }
        }
        Ok(None) => {}
        Err(reply) => return reply,
    }
    match string_field(&body, "custom_id") {
        Ok(Some(custom_id)) => {
            if let Err(reply) = custom_id_free(config, custom_id, Some((i, &consumer.id))) {
                return reply;
            }
        }
        Ok(None) => {}
        Err(reply) => return reply,
    }
    update_generic(
        control,
        config,
        consumer.layer,
        "consumers",
        &consumer.id.clone(),
        body,
    )
}

fn delete_consumer(control: &Control, config: &Config, key: &str) -> Reply {
    match find_consumer(config, key) {
        Some(i) => delete_entity(
            control,
            config.consumers[i].layer,
            "consumers",
            &config.consumers[i].id.clone(),
        ),
        // As Kong: deleting what is not there is not an error.
        None => Reply::empty(204),
    }
}

/// `PUT /consumers/{c}/jwt/{id or key}`, as Kong: replaces the credential whole (what the
/// body leaves out goes back to its default, a secret is generated anew) or creates it,
/// with that id or key; 200 either way.
fn put_jwt(control: &Control, config: &Config, consumer: usize, k: &str, mut body: Body) -> Reply {
    if let Err(reply) = checked_meta(&body) {
        return reply;
    }
    body.remove("consumer");
    let found = find_jwt(config, k);
    // The path names the credential by its id, else by its key (which may look like an
    // id too): a key in the path is the key it keeps.
    let by_id = match found {
        Some(j) => config.jwt_secrets[j].id == k,
        None => crate::config::is_uuid(k),
    };
    let replacing = match found {
        Some(j) if config.jwt_secrets[j].consumer != consumer => return not_found(),
        Some(j) if config.jwt_secrets[j].layer == Layer::File => return read_only(),
        Some(j) => Some((j, config.jwt_secrets[j].id.as_str())),
        None => None,
    };
    match (replacing, by_id) {
        (Some((_, id)), _) => body.insert("id".into(), id.into()),
        (None, true) => body.insert("id".into(), k.into()),
        (None, false) => body.remove("id"),
    };
    if !by_id {
        body.insert("key".into(), k.into());
    }
    put_status(create_jwt(control, config, consumer, body, replacing))
}

/// A credential's string fields.
const JWT_STRINGS: [&str; 4] = ["key", "secret", "algorithm", "rsa_public_key"];

/// Kong's entity-level problem beside a public-key credential's missing or unusable
/// `rsa_public_key` (its schema's conditional on `algorithm`).
const ALGORITHM_CONDITION: &str = "failed conditional validation given value of field 'algorithm'";

fn create_jwt(
    control: &Control,
    config: &Config,
    consumer: usize,
    mut body: Body,
    replacing: Replacing<'_>,
) -> Reply {
    let mut fields = field_errors(&body, &JWT_STRINGS, &["consumer"]);
    let name = match body.get("algorithm") {
        Some(Value::String(name)) => name.as_str(),
        _ => "HS256",
    };
    let algorithm = Algorithm::parse(name);
    match algorithm {
        None => {
            fields.insert("algorithm".into(), Algorithm::unknown(name).into());
        }
        Some(a) if !a.is_hmac() && body.get("rsa_public_key").and_then(Value::as_str).is_none() => {
            fields
                .entry("rsa_public_key")
                .or_insert_with(|| "required field missing".into());
            fields.insert("@entity".into(), json!([ALGORITHM_CONDITION]));
        }
        Some(a) => {
            if let Some(problem) = unusable_key(a, &body) {
                fields.insert("rsa_public_key".into(), problem.into());
                fields.insert("@entity".into(), json!([ALGORITHM_CONDITION]));
            }
        }
    }
    let Some(algorithm) = algorithm.filter(|_| fields.is_empty()) else {
        return schema_violation(fields);
    };
    let generated = |body: &mut Body, field: &str| -> Result<(), Reply> {
        if body.get(field).and_then(Value::as_str).is_none() {
            let value = random_string().ok_or_else(|| {
                log::error!("the system's random source failed: no {field} generated");
                Reply::message(500, "An unexpected error occurred")
            })?;
            body.insert(field.into(), value.into());
        }
        Ok(())
    };
    if let Err(reply) = generated(&mut body, "key") {
        return reply;
    }
    let key = body["key"].as_str().unwrap_or_default().to_owned();
    let holder = config.credentials.get(&key).map(|c| c.id.as_str());
    if holder.is_some_and(|id| replacing.is_none_or(|(_, replaced)| replaced != id)) {
        return unique_violation("key", &key);
    }
    // As Kong's `auto` secret, whatever the algorithm.
    if let Err(reply) = generated(&mut body, "secret") {
        return reply;
    }
    body.insert("algorithm".into(), algorithm.name().into());
    body.insert(
        "consumer".into(),
        json!({ "id": config.consumers[consumer].id }),
    );
    write(
        control,
        config,
        "jwt_secrets",
        body,
        replacing.map(|(_, id)| id),
    )
}

/// What makes the RSA key in a new credential's body one no token could verify with.
fn unusable_key(algorithm: Algorithm, body: &Body) -> Option<&'static str> {
    let pem = body.get("rsa_public_key")?.as_str()?;
    (!algorithm.is_hmac())
        .then(|| crate::plugins::jwt::rsa_key_problem(pem))
        .flatten()
}

/// PATCH of a credential. A `consumer` in the body moves it to that consumer, as Kong's
/// PATCH takes the body's foreign key over the path's.
fn update_jwt(control: &Control, config: &Config, j: usize, mut body: Body) -> Reply {
    match body.get("consumer") {
        None => {}
        Some(Value::String(_) | Value::Object(_)) => {
            if let Err(reply) = resolve_reference(config, &mut body, "consumer", "consumers") {
                return reply;
            }
        }
        Some(_) => {
            return field_error(
                "consumer",
                "expected a reference by id, username or custom_id",
            )
        }
    }
    for field in ["key", "secret", "algorithm", "rsa_public_key"] {
        if let Err(reply) = string_field(&body, field) {
            return reply;
        }
    }
    if let Some(Value::String(key)) = body.get("key") {
        if config
            .credentials
            .get(key)
            .is_some_and(|c| c.id != config.jwt_secrets[j].id)
        {
            return unique_violation("key", key);
        }
    }
    // The key after the patch, under the algorithm after it: a PATCH of the algorithm
    // alone may make an RSA credential of a key stored before.
    let algorithm = match body.get("algorithm").and_then(Value::as_str) {
        Some(name) => Algorithm::parse(name),
        None => Some(config.jwt_secrets[j].algorithm),
    };
    let pem = match body.get("rsa_public_key") {
        Some(value) => value.as_str(),
        None => config.jwt_secrets[j].rsa_public_key.as_deref(),
    };
    let unusable = match (algorithm, pem) {
        (Some(a), Some(pem)) if !a.is_hmac() => crate::plugins::jwt::rsa_key_problem(pem),
        _ => None,
    };
    if let Some(problem) = unusable {
        return field_error("rsa_public_key", problem);
    }
    update_generic(
        control,
        config,
        config.jwt_secrets[j].layer,
        "jwt_secrets",
        &config.jwt_secrets[j].id.clone(),
        body,
    )
}

fn create_plugin(
    control: &Control,
    config: &Config,
    mut body: Body,
    scope: Option<(&str, String)>,
    replacing: Replacing<'_>,
) -> Reply {
    let name = match string_field(&body, "name") {
        Ok(Some(name)) => name.to_owned(),
        Ok(None) => return field_error("name", "required field missing"),
        Err(reply) => return reply,
    };
    if !crate::config::KNOWN_PLUGINS.contains(&name.as_str()) {
        return field_error(
            "name",
            &format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        );
    }
    if let Some((field, id)) = scope {
        body.insert(field.into(), json!({ "id": id }));
    }
    // As Kong: the schema first, the references it names after.
    if let Some(reply) = schema_refusal(&body) {
        return reply;
    }
    if let Err(reply) = resolve_scope(config, &mut body) {
        return reply;
    }
    if let Some(reply) = instance_name_taken(config, &body, replacing.map(|(i, _)| i)) {
        return reply;
    }
    if let Some(reply) = plugin_conflict(config, &name, &body, replacing.map(|(i, _)| i)) {
        return reply;
    }
    write(
        control,
        config,
        "plugins",
        body,
        replacing.map(|(_, id)| id),
    )
}

/// Kong validates an entity against its schema before it looks at unique keys: a body
/// that would take a name already taken, and is invalid too, answers 400 with its
/// problems, not 409. `conflict` is the 409, answered when the entity is otherwise
/// valid.
fn invalid_or(kind: &str, body: &Body, conflict: Reply) -> Reply {
    schema_problems(kind, body).unwrap_or(conflict)
}

/// The id of the stand-in parents an entity is checked under when it is checked alone
/// (`schema_problems`): what its references name is the write's to look for.
const STAND_IN: &str = "00000000-0000-4000-8000-000000000000";

/// Whether a value has the shape of what a field holds.
type Shaped = fn(&Value) -> bool;

/// An entity's problems against its schema, checked alone as a write checks it (the
/// write's own rules for what it adds included): a reference it gives points at a
/// stand-in parent, a list of other entities' names or ids is left to the write to
/// look up, and no name goes to the resolver. Kong's 400, or `None` when it is valid.
/// Plugins have their own check (`schema_refusal`), with their scope.
fn schema_problems(kind: &str, body: &Body) -> Option<Reply> {
    let mut fields = Map::new();
    // The checks a create of these kinds makes first, in Kong's words: alone when they
    // find anything, as the create answers them.
    match kind {
        "consumers" => fields = field_errors(body, &["username", "custom_id"], &["groups"]),
        "jwt_secrets" => fields = field_errors(body, &JWT_STRINGS, &["consumer"]),
        _ => meta_errors(body, &mut fields),
    }
    if matches!(kind, "consumers" | "jwt_secrets") && !fields.is_empty() {
        return Some(schema_violation(fields));
    }
    let mut alone = body.clone();
    for field in ["id", "created_at", "updated_at"] {
        alone.remove(field);
    }
    let mut admin = Map::new();
    let is_reference = |v: &Value| v.is_string() || v.is_object();
    // A reference given in a reference's shape: to a stand-in parent.
    let parent = match kind {
        "routes" => Some(("service", "services", json!({ "host": "stand-in.invalid" }))),
        "jwt_secrets" => Some(("consumer", "consumers", json!({ "username": "stand-in" }))),
        "targets" => Some((
            "upstream",
            "upstreams",
            json!({ "name": "stand-in.invalid" }),
        )),
        _ => None,
    };
    if let Some((field, parent_kind, mut entity)) = parent {
        if alone.get(field).is_some_and(is_reference) {
            alone.insert(field.into(), json!({ "id": STAND_IN }));
            entity["id"] = STAND_IN.into();
            admin.insert(parent_kind.into(), json!([entity]));
        }
    }
    if kind == "jwt_secrets" {
        // Generated by the write when missing.
        for generated in ["key", "secret"] {
            alone.entry(generated).or_insert_with(|| "stand-in".into());
        }
    }
    // References the write looks up that cannot stand in (a certificate is its PEM),
    // and lists of names or ids: left out when given in their shape.
    let looked_up: &[(&str, Shaped)] = match kind {
        "snis" => &[("certificate", |v| v.is_string() || v.is_object())],
        "consumers" => &[("groups", Value::is_array)],
        "services" => &[("ca_certificates", Value::is_array)],
        _ => &[],
    };
    let mut left_out = Vec::new();
    for (field, shaped) in looked_up {
        if alone.get(*field).is_some_and(shaped) {
            alone.remove(*field);
            left_out.push(*field);
        }
    }
    admin.insert(kind.to_owned(), json!([alone]));
    let admin = Value::Object(admin);
    let mut problems = crate::config::what_a_write_adds(&json!({}), &admin, &Default::default());
    if let Err(built) = Config::checked_without_lookups(
        b"_format_version: \"3.0\"\n",
        Some(&admin),
        crate::config::Reading::SecretFieldsOnly,
    ) {
        problems.extend(built.0);
    }
    // An SNI's name is checked where its certificate takes it.
    if let (true, Some(name)) = (kind == "snis", body.get("name").and_then(Value::as_str)) {
        if let Err(problem) = crate::tls::Certificates::default().add(name, Vec::new()) {
            fields.insert("name".into(), problem.into());
        }
    }
    let own = format!("{kind}[0]");
    // An SNI whose name is refused is not refused again as an entity for it.
    if kind == "snis" && fields.contains_key("name") {
        problems.retain(|p| p.path != own);
    }
    entity_refusal(&own, problems, fields, &left_out)
}

/// Kong's 400 for the entity at `own` (`services[0]`) of a config checked around it:
/// each of its fields' first problem, its own under `@entity`; a field `fields` holds
/// already (said in Kong's words) or one rooted in `left_out` is not said again. `None`
/// when there is nothing to say.
fn entity_refusal(
    own: &str,
    problems: Vec<crate::config::Problem>,
    mut fields: Map<String, Value>,
    left_out: &[&str],
) -> Option<Reply> {
    let said: Vec<String> = fields.keys().cloned().collect();
    let mut entity = Vec::new();
    for problem in problems {
        let Some(field) = problem.path.strip_prefix(own) else {
            continue;
        };
        let field = field.trim_start_matches('.');
        if field.is_empty() {
            entity.push(Value::from(problem.message));
            continue;
        }
        let root = field.split(['.', '[']).next().unwrap_or("");
        let already = said.iter().any(|key| key.split('[').next() == Some(root));
        if !left_out.contains(&root) && !already {
            fields
                .entry(field.to_owned())
                .or_insert(problem.message.into());
        }
    }
    if !entity.is_empty() {
        fields.insert("@entity".into(), Value::Array(entity));
    }
    (!fields.is_empty()).then(|| schema_violation(fields))
}

/// Kong's `POST /schemas/{entity}/validate` (and `/schemas/plugins/validate`): the
/// entity checked as a write would check it, nothing written; its references are not
/// looked for, as Kong's schema check does not.
fn validate_entity(kind: &str, body: Body) -> Reply {
    if !crate::config::ADMIN_KINDS.contains(&kind) {
        return Reply::message(404, &format!("No entity named '{kind}'"));
    }
    let problems = if kind == "plugins" {
        match string_value(&body, "name") {
            Ok(Some(name)) if crate::config::KNOWN_PLUGINS.contains(&name) => schema_refusal(&body),
            Ok(Some(name)) => Some(field_error(
                "name",
                &format!(
                    "plugin '{name}' not enabled; add it to the 'plugins' configuration property"
                ),
            )),
            Ok(None) => Some(field_error("name", "required field missing")),
            Err(problem) => Some(field_error("name", problem)),
        }
    } else {
        let mut body = body;
        if kind == "routes" {
            lists_of_one(&mut body);
        }
        (kind == "ca_certificates")
            .then(|| ca_expired(&body))
            .flatten()
            .or_else(|| schema_problems(kind, &body))
    };
    problems
        .unwrap_or_else(|| Reply::json(200, &json!({ "message": "schema validation successful" })))
}

/// A schema, or Kong's 404 naming what has none.
fn schema_reply(schema: Option<Value>, missing: impl FnOnce() -> String) -> Reply {
    match schema {
        Some(schema) => Reply::json(200, &schema),
        None => Reply::message(404, &missing()),
    }
}

/// The id the entity a schema is read from is written with.
const SCHEMA_SAMPLE: &str = "00000000-0000-4000-8000-000000000001";

/// Kong's `GET /schemas/{entity}`, as far as tools read it: each field with its type and
/// its default when it has one, a record with its own fields. Read off what ringway
/// shows for an entity written with its required fields alone, so what a tool fills in
/// from these defaults (decK does, before it compares a file with what it reads back) is
/// what ringway answers for the same entity.
fn entity_schema(kind: &str) -> Option<Value> {
    // Kinds a sample cannot be written for without key material, and with no default
    // but their timestamps' and id's: their fields as Kong's schemas list them.
    let plain: &[(&str, &str)] = match kind {
        "certificates" => &[
            ("cert", "string"),
            ("key", "string"),
            ("cert_alt", "string"),
            ("key_alt", "string"),
            ("snis", "set"),
            ("tags", "set"),
        ],
        "snis" => &[
            ("name", "string"),
            ("certificate", "foreign"),
            ("tags", "set"),
        ],
        "ca_certificates" => &[
            ("cert", "string"),
            ("cert_digest", "string"),
            ("tags", "set"),
        ],
        _ => &[],
    };
    if !plain.is_empty() {
        let mut fields = vec![json!({ "id": { "type": "string", "auto": true } })];
        for (name, kind) in plain {
            fields.push(json!({ *name: { "type": kind } }));
        }
        for auto in ["created_at", "updated_at"] {
            fields.push(json!({ auto: { "type": "integer", "auto": true } }));
        }
        return Some(json!({ "fields": fields }));
    }
    let (sample, given): (Value, &[&str]) = match kind {
        "services" => (json!({ "host": "example.test" }), &["host"]),
        "routes" => (json!({ "paths": ["/"] }), &["paths", "service"]),
        "upstreams" => (json!({ "name": "example.test" }), &["name"]),
        "targets" => (
            json!({ "target": "example.test:80" }),
            &["target", "upstream"],
        ),
        "consumers" => (json!({ "username": "example" }), &["username"]),
        "consumer_groups" => (json!({ "name": "example" }), &["name"]),
        "jwt_secrets" => (
            json!({ "key": "example", "secret": "example" }),
            &["key", "secret", "consumer"],
        ),
        _ => return None,
    };
    let parent = match kind {
        "routes" => Some(("service", "services", json!({ "host": "stand-in.invalid" }))),
        "targets" => Some((
            "upstream",
            "upstreams",
            json!({ "name": "stand-in.invalid" }),
        )),
        "jwt_secrets" => Some(("consumer", "consumers", json!({ "username": "stand-in" }))),
        _ => None,
    };
    let mut sample = sample;
    sample["id"] = SCHEMA_SAMPLE.into();
    let mut admin = Map::new();
    if let Some((field, parent_kind, mut entity)) = parent {
        sample[field] = json!({ "id": STAND_IN });
        entity["id"] = STAND_IN.into();
        admin.insert(parent_kind.into(), json!([entity]));
    }
    admin.insert(kind.into(), json!([sample]));
    let shown = sample_shown(&Value::Object(admin), kind)?;
    Some(json!({ "fields": schema_fields(&shown, given) }))
}

/// Kong's `GET /schemas/plugins/{name}`: the plugin's fields, its `config` a record of
/// the configuration's, read off a plugin written with the least configuration it takes.
fn plugin_schema(name: &str) -> Option<Value> {
    let (config, given): (Value, &[&str]) = match name {
        "rate-limiting" => (json!({ "minute": 1 }), &["minute"]),
        name if crate::config::KNOWN_PLUGINS.contains(&name) => (json!({}), &[]),
        _ => return None,
    };
    let plugin = json!({ "id": SCHEMA_SAMPLE, "name": name, "config": config });
    let mut shown = sample_shown(&json!({ "plugins": [plugin] }), "plugins")?;
    let mut config = shown.as_object_mut()?.remove("config")?;
    let mut fields = schema_fields(&shown, &["name"]);
    let mut record = json!({ "type": "record" });
    if name == "rate-limiting" {
        // Kong's deprecated spellings: not fields of their own but shorthands, each
        // translated to and from its place in the `redis` record.
        let mut shorthands = Vec::new();
        for (shorthand, field) in crate::plugins::rate_limiting::REDIS_SHORTHANDS {
            config.as_object_mut()?.remove(shorthand);
            let kind = match config["redis"][field] {
                Value::Bool(_) => "boolean",
                Value::Number(_) => "integer",
                _ => "string",
            };
            shorthands.push(json!({ shorthand: {
                "type": kind,
                "translate_backwards": ["redis", field],
            } }));
        }
        record["shorthand_fields"] = Value::Array(shorthands);
    }
    record["fields"] = Value::Array(schema_fields(&config, given));
    fields.push(json!({ "config": record }));
    Some(json!({ "fields": fields }))
}

/// How ringway shows the sample entity of `kind` in `admin` (the Admin API layer of a
/// config that holds nothing else).
fn sample_shown(admin: &Value, kind: &str) -> Option<Value> {
    let config = Config::checked_without_lookups(
        b"_format_version: \"3.0\"\n",
        Some(admin),
        crate::config::Reading::SecretFieldsOnly,
    )
    .ok()?;
    show_by_id(&config, kind, SCHEMA_SAMPLE)
}

/// Schema fields from a shown entity: what the sample was given (`given`) and what is
/// generated (`id`, the timestamps) have no default; null has none either; an object
/// with fields is a required record of them.
fn schema_fields(shown: &Value, given: &[&str]) -> Vec<Value> {
    let Some(object) = shown.as_object() else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    for (name, value) in object {
        let kind = match value {
            Value::Null => None,
            Value::Bool(_) => Some("boolean"),
            Value::Number(n) if n.is_f64() => Some("number"),
            Value::Number(_) => Some("integer"),
            Value::String(_) => Some("string"),
            Value::Array(_) => Some("array"),
            Value::Object(o) if o.is_empty() => Some("map"),
            // A reference to another entity (`{"id": ...}`), Kong's foreign key.
            Value::Object(o) if o.len() == 1 && o.contains_key("id") => Some("foreign"),
            Value::Object(_) => Some("record"),
        };
        let mut field = Map::new();
        if let Some(kind) = kind {
            field.insert("type".into(), kind.into());
        }
        if matches!(name.as_str(), "id" | "created_at" | "updated_at") {
            field.insert("auto".into(), true.into());
        } else if given.contains(&name.as_str()) {
            // What the sample was given has no default (whether Kong requires it or
            // not, the schema does not say).
        } else if kind == Some("record") {
            // Shown whole whether given or not, as a required record of Kong's is: a tool
            // fills it in from its fields' defaults (go-kong fills a record only when it
            // is required).
            field.insert("required".into(), true.into());
            field.insert("fields".into(), Value::Array(schema_fields(value, &[])));
        } else if !value.is_null() {
            field.insert("default".into(), value.clone());
        }
        fields.push(json!({ name: field }));
    }
    fields
}

/// Kong checks a plugin against its schema before its foreign and unique keys: an
/// invalid plugin answers 400 with its schema's problems even on a scope that names
/// nothing (code 4) or has one of its name already (409). The plugin is checked in a
/// config that holds nothing else, its scope (when it has one) stand-in entities, so
/// what a scope allows (no jwt on a consumer) is checked with it.
fn schema_refusal(body: &Body) -> Option<Reply> {
    let mut alone = body.clone();
    alone.remove("id");
    let mut doc = Map::new();
    doc.insert("_format_version".into(), "3.0".into());
    let service = json!({ "id": STAND_IN, "host": "stand-in.invalid" });
    for (field, kind, parent) in [
        ("service", "services", service.clone()),
        (
            "route",
            "routes",
            json!({ "id": STAND_IN, "paths": ["/"], "service": { "id": STAND_IN } }),
        ),
        (
            "consumer",
            "consumers",
            json!({ "id": STAND_IN, "username": "stand-in" }),
        ),
        (
            "consumer_group",
            "consumer_groups",
            json!({ "id": STAND_IN, "name": "stand-in" }),
        ),
    ] {
        if alone.get(field).is_some_and(|v| !v.is_null()) {
            alone.insert(field.into(), json!({ "id": STAND_IN }));
            doc.insert(kind.into(), json!([parent]));
            if field == "route" {
                doc.insert("services".into(), json!([service]));
            }
        }
    }
    doc.insert("plugins".into(), json!([alone]));
    let bytes = serde_json::to_vec(&doc).ok()?;
    // Vault references read as the write will read them: only in secret fields.
    let built =
        Config::checked_without_lookups(&bytes, None, crate::config::Reading::SecretFieldsOnly);
    let mut fields = Map::new();
    meta_errors(body, &mut fields);
    let problems = built.err().map(|p| p.0).unwrap_or_default();
    entity_refusal("plugins[0]", problems, fields, &[])
}

/// Kong's 409 for an `instance_name` another plugin has (`this`: the plugin being
/// written, which may keep its own).
fn instance_name_taken(config: &Config, body: &Body, this: Option<usize>) -> Option<Reply> {
    let name = body.get("instance_name")?.as_str()?;
    if let Some(problem) = crate::config::utf8_name_problem(name) {
        return Some(field_error("instance_name", &problem));
    }
    config
        .plugins
        .iter()
        .enumerate()
        .any(|(i, p)| Some(i) != this && p.instance_name.as_deref() == Some(name))
        .then(|| unique_violation("instance_name", name))
}

/// Kong's unique key of plugins, name and scope: a plugin (other than `except`) with the
/// same name on the same scope (references as `{"id": ...}` or absent) answers 409,
/// with Kong's body naming the whole key, each reference as `{id="..."}` or `null`.
fn plugin_conflict(
    config: &Config,
    name: &str,
    scope: &Body,
    except: Option<usize>,
) -> Option<Reply> {
    const SCOPE: [&str; 4] = ["service", "route", "consumer", "consumer_group"];
    let same_scope = |p: usize| {
        let existing = plugin_json(config, p);
        SCOPE
            .iter()
            .all(|field| existing[*field] == scope.get(*field).cloned().unwrap_or(Value::Null))
    };
    (0..config.plugins.len())
        .find(|&p| config.plugins[p].name == name && Some(p) != except && same_scope(p))?;
    let mut fields = Map::new();
    let mut shown = Vec::new();
    for field in ["consumer", "consumer_group", "name", "route", "service"] {
        let value = if field == "name" {
            Value::from(name)
        } else {
            scope.get(field).cloned().unwrap_or(Value::Null)
        };
        if field == "consumer_group" && value.is_null() {
            continue;
        }
        let text = match &value {
            Value::String(s) => format!("\"{s}\""),
            Value::Object(o) => match o.get("id").and_then(Value::as_str) {
                Some(id) => format!("{{id=\"{id}\"}}"),
                None => "null".into(),
            },
            _ => "null".into(),
        };
        shown.push(format!("{field}={text}"));
        fields.insert(field.into(), value);
    }
    Some(Reply::json(
        409,
        &json!({
            "code": 5,
            "name": "unique constraint violation",
            "message": format!("UNIQUE violation detected on '{{{}}}'", shown.join(",")),
            "fields": fields,
        }),
    ))
}

/// A plugin body's scope references (service, route, consumer, group), each resolved to
/// `{"id": ...}`.
fn resolve_scope(config: &Config, body: &mut Body) -> Result<(), Reply> {
    for (field, kind) in [
        ("service", "services"),
        ("route", "routes"),
        ("consumer", "consumers"),
        ("consumer_group", "consumer_groups"),
    ] {
        resolve_reference(config, body, field, kind)?;
    }
    Ok(())
}

/// What refuses a plugin's configuration (`given`, as written) before the config it
/// joins is built, for a create, a PUT (`replacing` its id) or a PATCH's result.
fn plugin_config_refused(
    config: &Config,
    name: &str,
    given: Option<&Value>,
    replacing: Option<&str>,
) -> Option<Reply> {
    let redis = given.filter(|_| name == "rate-limiting");
    redis
        .and_then(redis_spellings_refused)
        .or_else(|| token_header_clash(config, name, given, replacing))
}

/// A correlation-id plugin whose header is one a jwt plugin (other than the one being
/// replaced, `replacing`) reads its token from, or a jwt plugin reading from a
/// correlation-id plugin's header: the token would become the logged request ID. The
/// file refuses it at load; here it is refused when written (saved state only warns).
fn token_header_clash(
    config: &Config,
    name: &str,
    given: Option<&Value>,
    replacing: Option<&str>,
) -> Option<Reply> {
    use crate::config::PluginConfig;
    let others = config
        .plugins
        .iter()
        .filter(|p| Some(p.id.as_str()) != replacing);
    use crate::http::same_header;
    let (field, clash) = match name {
        "correlation-id" => {
            let header = given
                .and_then(|c| c.get("header_name"))
                .and_then(Value::as_str)
                .map_or_else(
                    crate::plugins::correlation_id::default_header,
                    str::to_owned,
                );
            let clash = others
                .filter_map(|p| match &p.config {
                    PluginConfig::Jwt(jwt) => Some(&jwt.header_names),
                    _ => None,
                })
                .flatten()
                .any(|h| same_header(h, &header))
                .then_some(header);
            ("header_name", clash)
        }
        "jwt" => {
            let names: Vec<String> = match given.and_then(|c| c.get("header_names")) {
                Some(Value::Array(names)) => names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(one)) => vec![one.clone()],
                _ => crate::plugins::jwt::default_headers(),
            };
            let clash = others
                .filter_map(|p| match &p.config {
                    PluginConfig::CorrelationId(id) => Some(id.header_name.as_str()),
                    _ => None,
                })
                .find(|h| names.iter().any(|n| same_header(n, h)))
                .map(str::to_owned);
            ("header_names", clash)
        }
        _ => return None,
    };
    let header = clash?;
    Some(field_error(
        &format!("config.{field}"),
        &format!(
            "'{header}' is where a jwt plugin reads its token and where correlation-id puts the request ID, which goes into logs; name the ID's own header"
        ),
    ))
}

/// A rate-limiting configuration's two Redis spellings compared as written, before any
/// reference in them is read: one may not hold a secret's value beside the other's
/// reference (Kong compares them so too).
fn redis_spellings_refused(config: &Value) -> Option<Reply> {
    let disagree = crate::plugins::rate_limiting::spellings_disagree(config);
    (!disagree.is_empty()).then(|| {
        field_error(
            "config.redis",
            &format!(
                "the 'redis' block and the legacy 'redis_*' fields disagree on {}",
                disagree.join(", ")
            ),
        )
    })
}

fn update_plugin(control: &Control, config: &Config, i: usize, mut body: Body) -> Reply {
    if config.plugins[i].layer == Layer::File {
        return read_only();
    }
    // References as a create takes them, and the same unique key: the plugin's scope
    // after the patch.
    if let Err(reply) = resolve_scope(config, &mut body) {
        return reply;
    }
    let current = plugin_json(config, i);
    let mut scope = Map::new();
    for field in ["service", "route", "consumer", "consumer_group"] {
        let value = body
            .get(field)
            .cloned()
            .unwrap_or_else(|| current[field].clone());
        if !value.is_null() {
            scope.insert(field.into(), value);
        }
    }
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&config.plugins[i].name)
        .to_owned();
    // Kong checks the stored configuration, defaults and all, against the new plugin's
    // schema, which refuses another plugin's fields: a plugin does not become another
    // (a jwt turned correlation-id would take authentication off its scope silently).
    if name != config.plugins[i].name {
        return field_error(
            "name",
            &format!(
                "a '{}' plugin cannot become '{name}': create that plugin and delete this one",
                config.plugins[i].name
            ),
        );
    }
    if let Some(reply) = instance_name_taken(config, &body, Some(i)) {
        return reply;
    }
    if let Some(reply) = plugin_conflict(config, &name, &scope, Some(i)) {
        return reply;
    }
    if let Some(config_value) = body.remove("config") {
        // A partial config merges into the current one, records field by field, as in
        // Kong: a PATCH of `redis.port` keeps the host and the password.
        let mut merged = config.plugins[i].config_json.clone();
        let mut config_value = config_value;
        if name == "rate-limiting" {
            // Either spelling in the patch changes the record; the shorthands shown
            // beside it (its values) give way, so none is left to disagree.
            crate::plugins::rate_limiting::fold_shorthands(&mut merged);
            crate::plugins::rate_limiting::fold_shorthands(&mut config_value);
        }
        merge_records(&mut merged, config_value);
        let own = Some(config.plugins[i].id.as_str());
        if let Some(refused) = plugin_config_refused(config, &name, Some(&merged), own) {
            return refused;
        }
        body.insert("config".into(), merged);
    }
    update_generic(
        control,
        config,
        config.plugins[i].layer,
        "plugins",
        &config.plugins[i].id.clone(),
        body,
    )
}

fn create_service(
    control: &Control,
    config: &Config,
    body: Body,
    replacing: Replacing<'_>,
) -> Reply {
    if let Err(reply) = unique_utf8_name(&body, "name", &config.keys.services, replacing) {
        return invalid_or("services", &body, reply);
    }
    write(
        control,
        config,
        "services",
        body,
        replacing.map(|(_, id)| id),
    )
}

/// `PATCH /services/{s}`. As in Kong, `url` is shorthand for protocol, host, port and
/// path: giving it replaces all four, and giving one of those on a service stored with
/// a `url` keeps the rest of what the url said.
fn update_service(control: &Control, config: &Config, i: usize, mut patch: Body) -> Reply {
    const PARTS: [&str; 4] = ["protocol", "host", "port", "path"];
    let service = &config.services[i];
    if service.layer == Layer::File {
        return read_only();
    }
    if let Err(reply) = unique_utf8_name(
        &patch,
        "name",
        &config.keys.services,
        Some((i, &service.id)),
    ) {
        return reply;
    }
    if patch.get("url").is_some_and(|u| !u.is_null()) {
        for part in PARTS {
            patch.entry(part).or_insert(Value::Null);
        }
    } else if PARTS.iter().any(|p| patch.contains_key(*p)) {
        let stored_url = admin_index(control, "services", &service.id).and_then(|index| {
            control.with_admin(|admin| admin["services"][index]["url"].as_str().map(str::to_owned))
        });
        if let Some(parts) = stored_url.as_deref().and_then(split_url) {
            for (part, value) in parts {
                patch.entry(part).or_insert(value);
            }
            patch.insert("url".into(), Value::Null);
        }
    }
    update_generic(
        control,
        config,
        service.layer,
        "services",
        &service.id.clone(),
        patch,
    )
}

/// `scheme://host[:port][/path]` as a service's separate fields; `None` when it does
/// not look like that (validation then reports the url as it is).
fn split_url(url: &str) -> Option<Map<String, Value>> {
    let (protocol, host, port, path) = crate::config::parse_url(url).ok()?;
    let mut parts = Map::new();
    parts.insert("protocol".into(), protocol.into());
    parts.insert("host".into(), host.into());
    if let Some(port) = port {
        parts.insert("port".into(), port.into());
    }
    if let Some(path) = path {
        parts.insert("path".into(), path.into());
    }
    Some(parts)
}

/// A reference field (`service=name`, `{"name": ...}`, `{"id": ...}`) of `kind` rewritten
/// as a reference by id, so it survives renames. Absent is fine; one that names nothing
/// is a field error.
fn resolve_reference(
    config: &Config,
    body: &mut Body,
    field: &str,
    kind: &str,
) -> Result<(), Reply> {
    // Which unique field the reference gave, for Kong's answer when it names nothing.
    let mut by = if kind == "consumers" {
        "username"
    } else {
        "name"
    };
    let key = match body.get(field) {
        Some(Value::String(key)) => {
            if crate::config::is_uuid(key) {
                by = "id";
            }
            crate::config::canonical_key(key.clone())
        }
        Some(Value::Object(reference)) => {
            // As Kong's foreign keys: by id, or by any unique field of the entity.
            let unique: &[&str] = if kind == "consumers" {
                &["id", "username", "custom_id"]
            } else {
                &["id", "name"]
            };
            let given = unique.iter().find_map(|name| {
                reference
                    .get(*name)
                    .and_then(Value::as_str)
                    .map(|value| (*name, value))
            });
            match given {
                // A custom_id no consumer has names none (it must not fall back to a
                // consumer whose username or id happens to be that text).
                Some(("custom_id", custom_id)) => match config
                    .consumers
                    .iter()
                    .find(|c| c.custom_id.as_deref() == Some(custom_id))
                {
                    Some(c) => c.id.clone(),
                    None => return Err(missing_reference(field, kind, "custom_id", custom_id)),
                },
                Some((name, key)) => {
                    by = name;
                    crate::config::canonical_key(key.to_owned())
                }
                None => {
                    return Err(field_error(
                        field,
                        &format!("expected a reference by {}", unique.join(", ")),
                    ))
                }
            }
        }
        _ => return Ok(()),
    };
    // `{id: ...}` that is no UUID is the field's schema problem, as Kong checks it first.
    if by == "id" && !crate::config::is_uuid(&key) {
        let mut fields = Map::new();
        fields.insert(format!("{field}.id"), json!("expected a valid UUID"));
        return Err(schema_violation(fields));
    }
    match scope_of(config, kind, &key) {
        Some((_, id)) => {
            body.insert(field.into(), json!({ "id": id }));
            Ok(())
        }
        None => Err(missing_reference(field, kind, by, &key)),
    }
}

/// Kong's 400 for a reference to an entity that does not exist, naming the reference as
/// given: by id, a foreign key violation (code 4); by another unique field (`name`,
/// `username`, `custom_id`), which Kong first resolves to an id, a foreign key that
/// could not be resolved (code 13).
fn missing_reference(field: &str, kind: &str, by: &str, key: &str) -> Reply {
    let reference = format!("{{{by}=\"{key}\"}}");
    if by == "id" {
        return Reply::json(
            400,
            &json!({
                "code": 4,
                "name": "foreign key violation",
                "message": format!(
                    "the foreign key '{reference}' does not reference an existing '{kind}' entity."
                ),
                "fields": { field: { by: key } },
            }),
        );
    }
    let why = format!(
        "the foreign key cannot be resolved with '{reference}' for an existing '{kind}' entity"
    );
    Reply::json(
        400,
        &json!({
            "code": 13,
            "name": "foreign keys unresolved",
            "message": format!("foreign key unresolved ({field}.{by}: {why})"),
            "fields": { field: { by: why } },
        }),
    )
}

/// One value of a list field (JSON `"paths": "/a"`) is a one-item list.
fn lists_of_one(body: &mut Body) {
    for list in ["paths", "methods", "hosts", "protocols"] {
        if let Some(Value::String(one)) = body.get(list).cloned() {
            body.insert(list.into(), json!([one]));
        }
    }
}

fn create_route(
    control: &Control,
    config: &Config,
    mut body: Body,
    replacing: Replacing<'_>,
) -> Reply {
    lists_of_one(&mut body);
    if let Err(reply) = unique_utf8_name(&body, "name", &config.keys.routes, replacing) {
        return invalid_or("routes", &body, reply);
    }
    if let Err(reply) = resolve_reference(config, &mut body, "service", "services") {
        return reply;
    }
    write(control, config, "routes", body, replacing.map(|(_, id)| id))
}

fn update_route(control: &Control, config: &Config, i: usize, mut patch: Body) -> Reply {
    let route = &config.routes[i];
    if route.layer == Layer::File {
        return read_only();
    }
    if let Err(reply) = unique_utf8_name(&patch, "name", &config.keys.routes, Some((i, &route.id)))
    {
        return reply;
    }
    if let Err(reply) = resolve_reference(config, &mut patch, "service", "services") {
        return reply;
    }
    lists_of_one(&mut patch);
    update_generic(
        control,
        config,
        route.layer,
        "routes",
        &route.id.clone(),
        patch,
    )
}

/// A new upstream (or, for a PUT, one in place of an Admin-created one): its name, a
/// host name, is unique in any case.
fn create_upstream(
    control: &Control,
    config: &Config,
    body: Body,
    replacing: Replacing<'_>,
) -> Reply {
    if let Err(reply) = upstream_name_free(config, &body, replacing.map(|(_, id)| id)) {
        return invalid_or("upstreams", &body, reply);
    }
    write(
        control,
        config,
        "upstreams",
        body,
        replacing.map(|(_, id)| id),
    )
}

/// A 409 when `body` names an upstream other than the one with id `own` (names are host
/// names, the same in any case).
fn upstream_name_free(config: &Config, body: &Body, own: Option<&str>) -> Result<(), Reply> {
    match string_field(body, "name")? {
        Some(name) => match upstreams::find(config, &name.to_ascii_lowercase()) {
            Some(holder) if Some(holder.id.as_str()) != own => Err(unique_violation("name", name)),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

/// A PATCH of an upstream: `healthchecks` merges into the current checks, as Kong
/// merges a record, so one threshold can change alone.
fn update_upstream(
    control: &Control,
    config: &Config,
    up: &crate::config::Upstream,
    mut patch: Body,
) -> Reply {
    if let Err(reply) = upstream_name_free(config, &patch, Some(&up.id)) {
        return reply;
    }
    if let Some(checks) = patch.remove("healthchecks") {
        let mut merged = upstreams::upstream_json(up)["healthchecks"].take();
        merge_records(&mut merged, checks);
        patch.insert("healthchecks".into(), merged);
    }
    update_generic(
        control,
        config,
        up.layer,
        "upstreams",
        &up.id.clone(),
        patch,
    )
}

/// `patch` into `base`: objects merge field by field, anything else replaces.
fn merge_records(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge_records(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A new target of `up`: its `host:port` (Kong's default port when none is given) is
/// unique within the upstream.
fn create_target(
    control: &Control,
    config: &Config,
    up: &crate::config::Upstream,
    mut body: Body,
) -> Reply {
    body.insert("upstream".into(), json!({ "id": up.id }));
    if let Some(reply) = target_taken(up, &body, None) {
        return invalid_or("targets", &body, reply);
    }
    write(control, config, "targets", body, None)
}

/// A 409 when `body` names a target `up` has already (other than `except`, by id).
fn target_taken(up: &crate::config::Upstream, body: &Body, except: Option<&str>) -> Option<Reply> {
    let target = string_field(body, "target").ok().flatten()?;
    let with_port = if target.ends_with(']') || !target.contains(':') {
        format!("{target}:8000")
    } else {
        target.to_owned()
    };
    up.targets
        .iter()
        .any(|t| t.target.eq_ignore_ascii_case(&with_port) && except != Some(t.id.as_str()))
        .then(|| unique_violation("target", target))
}

/// `PATCH` or `PUT /upstreams/{u}/targets/{key}`. The target stays with its upstream; a
/// PUT without `target` keeps the one the path names (or creates it, for a `host:port`
/// key), and a change onto another target of the upstream is a 409.
fn update_target(
    control: &Control,
    config: &Config,
    up: &crate::config::Upstream,
    key: &str,
    put: bool,
    mut body: Body,
) -> Reply {
    body.insert("upstream".into(), json!({ "id": up.id }));
    let found = upstreams::target(up, key).map(|(_, t)| t);
    if put && !body.contains_key("target") {
        match found {
            Some(t) => body.insert("target".into(), t.target.clone().into()),
            None if !crate::config::is_uuid(key) => body.insert("target".into(), key.into()),
            None => None,
        };
    }
    let Some(t) = found else {
        if !put {
            return not_found();
        }
        if crate::config::is_uuid(key) {
            body.insert("id".into(), key.into());
        }
        return put_status(create_target(control, config, up, body));
    };
    if t.layer == Layer::File {
        return read_only();
    }
    if let Some(reply) = target_taken(up, &body, Some(&t.id)) {
        return reply;
    }
    if put {
        write(control, config, "targets", body, Some(&t.id.clone()))
    } else {
        update_generic(control, config, t.layer, "targets", &t.id.clone(), body)
    }
}

fn create_group(control: &Control, config: &Config, body: Body, replacing: Replacing<'_>) -> Reply {
    if let Err(reply) = unique_name(&body, "name", &config.keys.groups, replacing) {
        return invalid_or("consumer_groups", &body, reply);
    }
    write(
        control,
        config,
        "consumer_groups",
        body,
        replacing.map(|(_, id)| id),
    )
}

fn update_group(control: &Control, config: &Config, g: usize, patch: Body) -> Reply {
    let group = &config.consumer_groups[g];
    if group.layer == Layer::File {
        return read_only();
    }
    if let Err(reply) = unique_name(&patch, "name", &config.keys.groups, Some((g, &group.id))) {
        return reply;
    }
    update_generic(
        control,
        config,
        group.layer,
        "consumer_groups",
        &group.id.clone(),
        patch,
    )
}

/// The names or ids in a membership body field: one or a list, each a string or, as
/// references are elsewhere, an object naming one (`{"id": ...}`, `{"name": ...}`).
fn names(body: &Body, field: &str) -> Result<Vec<String>, Reply> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => ["id", "name", "username"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_owned)),
        _ => None,
    };
    let found = match body.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(value) => one(value).map(|name| vec![name]),
    };
    found.ok_or_else(|| field_error(field, "expected a name or id, or an object with one"))
}

/// `POST /consumer_groups/{group}/consumers` with `consumer=<username or id>`.
fn add_members(control: &Control, config: &Config, g: usize, body: &Body) -> Reply {
    let wanted = match names(body, "consumer") {
        Ok(wanted) => wanted,
        Err(reply) => return reply,
    };
    if wanted.is_empty() {
        return field_error("consumer", "required field missing");
    }
    let mut members = Vec::new();
    for name in &wanted {
        match find_consumer(config, name) {
            Some(c) => members.push(c),
            None => return field_error("consumer", &format!("consumer '{name}' not found")),
        }
    }
    let after = match set_membership(control, config, &members, &[g], true) {
        Ok(after) => after,
        Err(reply) => return reply,
    };
    // Membership changes leave every entity's position as it was.
    let config = &after.config;
    // Timestamps as every other answer shows them.
    let group = group_json(config, g);
    let consumers: Vec<Value> = members
        .iter()
        .filter(|&&c| c < config.consumers.len())
        .map(|&c| consumer_json(config, c))
        .collect();
    let stored = Stored::load_for_all(control, &[&[group.clone()][..], &consumers].concat());
    Reply::json(
        201,
        &json!({
            "consumer_group": stored.decorate(group),
            "consumers": consumers.into_iter().map(|c| stored.decorate(c)).collect::<Vec<_>>(),
        }),
    )
}

/// `GET /consumer_groups/{group}`: Kong Enterprise's answer (`consumer_group`, its
/// `consumers` and `plugins`), with the group's own fields beside them, as every other
/// entity is shown, for clients that read it that way.
fn show_group(control: &Control, config: &Config, g: usize) -> Reply {
    let group = group_json(config, g);
    let consumers: Vec<Value> = (0..config.consumers.len())
        .filter(|&c| config.consumers[c].groups.contains(&g))
        .map(|c| consumer_json(config, c))
        .collect();
    let stored = Stored::load_for_all(control, &[&[group.clone()][..], &consumers].concat());
    let group = stored.decorate(group);
    let mut shown = group.clone();
    shown["consumer_group"] = group;
    shown["consumers"] = consumers.into_iter().map(|c| stored.decorate(c)).collect();
    // Kong Enterprise lists the group's per-group overrides here (the pre-3.4 kind,
    // which ringway has none of), not the plugins scoped to it: those are under
    // `/consumer_groups/{g}/plugins`. decK reads this list as overrides, and would write
    // a scoped plugin twice.
    shown["plugins"] = json!([]);
    Reply::json(200, &shown)
}

/// `DELETE /consumers/{c}/consumer_groups` and `DELETE /consumer_groups/{g}/consumers`:
/// every consumer of `consumers` leaves every group of `groups` it is in. Nothing
/// changes when one of them is the file's.
fn leave_groups(
    control: &Control,
    config: &Config,
    consumers: &[usize],
    groups: &[usize],
) -> Reply {
    let leaving: Vec<usize> = consumers
        .iter()
        .copied()
        .filter(|&c| {
            groups
                .iter()
                .any(|g| config.consumers[c].groups.contains(g))
        })
        .collect();
    if leaving.is_empty() {
        return Reply::empty(204);
    }
    set_membership(control, config, &leaving, groups, false)
        .map_or_else(|reply| reply, |_| Reply::empty(204))
}

/// `POST /consumers/{consumer}/consumer_groups` with `group=<name or id>`.
fn join_groups(control: &Control, config: &Config, c: usize, body: &Body) -> Reply {
    let wanted = match names(body, "group") {
        Ok(wanted) => wanted,
        Err(reply) => return reply,
    };
    if wanted.is_empty() {
        return field_error("group", "required field missing");
    }
    let mut groups = Vec::new();
    for name in &wanted {
        match find_group(config, name) {
            Some(g) => groups.push(g),
            None => return field_error("group", &format!("consumer group '{name}' not found")),
        }
    }
    match set_membership(control, config, &[c], &groups, true) {
        Ok(after) => {
            let config = &after.config;
            let consumer = consumer_json(config, c);
            let shown: Vec<Value> = groups.iter().map(|&g| group_json(config, g)).collect();
            let stored = Stored::load_for_all(control, &[&[consumer.clone()][..], &shown].concat());
            Reply::json(
                201,
                &json!({
                    "consumer": stored.decorate(consumer),
                    "consumer_groups": shown.into_iter().map(|g| stored.decorate(g)).collect::<Vec<_>>(),
                }),
            )
        }
        Err(reply) => reply,
    }
}

/// Adds consumers to groups or removes them from them, in one write (a group's hundred
/// members are one config build, not a hundred). Only Admin-created consumers can change:
/// a file-declared consumer's groups are the file's; nothing changes when one is.
fn set_membership(
    control: &Control,
    config: &Config,
    consumers: &[usize],
    groups: &[usize],
    member: bool,
) -> Result<std::sync::Arc<crate::proxy::Snapshot>, Reply> {
    let mut changes = Vec::with_capacity(consumers.len());
    for &c in consumers {
        let consumer = &config.consumers[c];
        if consumer.layer == Layer::File {
            return Err(read_only());
        }
        if !member && !groups.iter().any(|g| consumer.groups.contains(g)) {
            return Err(not_found());
        }
        let mut ids: Vec<String> = consumer
            .groups
            .iter()
            .map(|&g| config.consumer_groups[g].id.clone())
            .collect();
        for &g in groups {
            let id = &config.consumer_groups[g].id;
            ids.retain(|x| x != id);
            if member {
                ids.push(id.clone());
            }
        }
        let Some(index) = admin_index(control, "consumers", &consumer.id) else {
            return Err(not_found());
        };
        changes.push((index, ids));
    }
    let outcome = control.update_admin(|admin| {
        let list = admin_list(admin, "consumers");
        let now = crate::control::unix_now();
        for (index, ids) in &changes {
            if let Some(Value::Object(entity)) = list.get_mut(*index) {
                entity.insert("groups".into(), json!(ids));
                entity.insert("updated_at".into(), now.into());
            }
        }
    });
    match outcome {
        Ok((_, snapshot)) => Ok(snapshot),
        Err(reason) => {
            let one = match changes.as_slice() {
                [(index, _)] => Some(*index),
                _ => None,
            };
            Err(refused(reason, config, "consumers", one))
        }
    }
}

// ----- declarative config -----

fn get_config(control: &Control, json: bool) -> Reply {
    let bytes = control.file_bytes();
    if json {
        // As the config is read: merge keys expanded, YAML 1.1 booleans as booleans.
        let doc = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| crate::config::document(text).ok())
            .and_then(|doc| serde_json::to_value(doc).ok());
        let answer = match doc {
            Some(value) => json!({ "config": value }),
            None => json!({ "config": String::from_utf8_lossy(&bytes) }),
        };
        // Saved as a file, the answer is read as YAML: what YAML reads otherwise is
        // escaped.
        let text = serde_json::to_string(&answer).unwrap_or_default();
        Reply::json_text(200, yaml_safe_escapes(&text).into_bytes())
    } else {
        Reply {
            status: 200,
            body: as_yaml(bytes),
            content_type: b"application/yaml",
            headers: Vec::new(),
        }
    }
}

/// The file layer's text as YAML: as written, unless it is JSON (as `POST /config`
/// writes a JSON body, or an operator may), which is then shown in YAML's block form,
/// keys in their order (JSON holds no comments to lose).
fn as_yaml(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return bytes;
    }
    serde_norway::from_slice::<serde_norway::Value>(&bytes)
        .ok()
        .and_then(|value| serde_norway::to_string(&value).ok())
        .map_or(bytes, String::into_bytes)
}

fn post_config(control: &Control, request: &Request<'_>) -> Reply {
    let bytes: Vec<u8> = match media_type(request.content_type).as_str() {
        // `curl -F config=@kong.yml`: the file is the `config` part, taken as sent.
        "multipart/form-data" => {
            match multipart_parts(request.content_type.unwrap_or(""), request.body) {
                Ok(parts) => match parts.into_iter().find(|p| p.name == "config") {
                    Some(part) => part.data.to_vec(),
                    None => return field_error("config", NO_CONFIG_FIELD),
                },
                Err(reply) => return reply,
            }
        }
        // A file sent as a form without `config=` (curl's `--data-binary @kong.yaml` with
        // its default type) says so, rather than how its text fails to parse as a form.
        "application/x-www-form-urlencoded" => {
            match parse_body(request.content_type, request.body, None)
                .ok()
                .and_then(|mut form| form.remove("config"))
            {
                Some(Value::String(text)) => text.into_bytes(),
                Some(other) => serde_json::to_vec(&other).unwrap_or_default(),
                None => return field_error("config", NO_CONFIG_FIELD),
            }
        }
        // Declared JSON is read as JSON; one that is not a JSON object gets Kong's answer.
        "application/json" => match json_config(request.body) {
            Some(text) => text,
            None => return Reply::message(400, "Cannot parse JSON body"),
        },
        // YAML as SPEC names it (and a body sent with no type at all).
        "" | "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            json_config(request.body).unwrap_or_else(|| request.body.to_vec())
        }
        // As Kong, which takes no other type: a `text/plain` post is what a web page can
        // send without the browser asking first.
        other => {
            return Reply::message(
                415,
                &format!("Unsupported Content-Type '{other}': use application/yaml, application/json, application/x-www-form-urlencoded (config=) or multipart/form-data"),
            )
        }
    };
    // Kong's `?check_hash=1`: 304 when the config is the one running.
    let check_hash = request.query.split('&').any(|pair| {
        matches!(
            pair.split_once('=').unwrap_or((pair, "")),
            ("check_hash", "1" | "true")
        )
    });
    match control.replace_file(bytes, check_hash) {
        Ok(Some(hash)) => Reply::json(201, &json!({ "configuration_hash": hash })),
        Ok(None) => Reply::empty(304),
        Err(Refused::Invalid(problems)) => config_errors(400, &problems),
        Err(Refused::Conflict(problems)) => config_errors(409, &problems),
        Err(Refused::Io(e)) => {
            log::error!("POST /config: {e}");
            Reply::message(500, "An unexpected error occurred")
        }
    }
}

const NO_CONFIG_FIELD: &str = "expected a declarative configuration: send the file as the form field `config` (`--data-urlencode config@kong.yaml`), or as the body with a YAML or JSON content type";

/// A `POST /config` body that is JSON, as the file layer keeps it; `None` for a body
/// that is not JSON (YAML, kept as sent). JSON is decoded as JSON, not as YAML: the two
/// differ at the edges (a surrogate pair escape `\ud83d\ude00` is JSON, not YAML). It is
/// kept as JSON written out again, keys in their order: JSON is YAML to the loader, and
/// unlike YAML written from it, its strings are quoted, so `"yes"` stays a string to a
/// YAML 1.1 reader (Kong's loader among them). A JSON object whose only key is `config`
/// is what `GET /config` answers (and Kong's shape, with the YAML as a string): what it
/// wraps is the config; a config itself always has `_format_version`.
fn json_config(body: &[u8]) -> Option<Vec<u8>> {
    use serde_norway::Value as Yaml;
    // A byte order mark (some editors save one) is no part of the JSON.
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let doc = serde_json::from_slice::<Yaml>(body).ok()?;
    let config = match doc.as_mapping() {
        Some(map) if map.len() == 1 => match map.get("config") {
            Some(Yaml::String(text)) => return Some(text.clone().into_bytes()),
            Some(config) => config,
            None => &doc,
        },
        Some(_) => &doc,
        None => return None,
    };
    let text = serde_json::to_string_pretty(config).ok()?;
    let mut text = yaml_safe_escapes(&text).into_bytes();
    text.push(b'\n');
    Some(text)
}

/// JSON text with every character a YAML reader takes otherwise than JSON does written
/// as a `\uXXXX` escape, which both read alike: DEL and the C1 controls (YAML refuses
/// them unescaped, though JSON takes them), NEL and the line and paragraph separators
/// (line breaks to YAML, folded into a space inside a quoted string: a secret holding one
/// would change), the byte order mark and U+FFFE / U+FFFF. They can only be inside
/// strings: JSON's own syntax is ASCII.
fn yaml_safe_escapes(json: &str) -> String {
    let differs = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if !json.contains(differs) {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if differs(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Kong's answer to a config it refuses: `fields` nests each problem where it is (entity
/// lists as arrays, null where an item is fine), and `errors` lists them as `check`
/// prints them. Of two problems at one place, `fields` holds the first. A conflict (409)
/// has `errors` only: it names Admin API entities, not places in the file.
fn config_errors(status: u16, problems: &Problems) -> Reply {
    let errors: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    if status == 409 {
        // Conflicts name Admin API entities, not places in the file.
        let message = "declarative config conflicts with entities created through the Admin API";
        return Reply::json(
            status,
            &json!({ "code": 14, "name": "invalid declarative configuration", "message": message, "errors": errors }),
        );
    }
    let mut fields = Map::new();
    // A problem of an entity itself, not of one of its fields, is Kong's `@entity`: all
    // of an entity's, in order.
    let mut entities: Vec<(&str, Vec<Value>)> = Vec::new();
    // Where each entity's list is (a config may hold very many entities with problems).
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for problem in problems.0.iter().filter(|p| is_entity(&p.path)) {
        let message = Value::from(problem.message.clone());
        match at.get(problem.path.as_str()) {
            Some(&i) => entities[i].1.push(message),
            None => {
                at.insert(&problem.path, entities.len());
                entities.push((&problem.path, vec![message]));
            }
        }
    }
    for (path, list) in entities {
        let _ = nest(&mut fields, &format!("{path}.@entity"), Value::Array(list));
    }
    for problem in problems
        .0
        .iter()
        .rev()
        .filter(|p| !p.path.is_empty() && !is_entity(&p.path))
    {
        // Whatever is in the way of a place stays as it is.
        let _ = nest(
            &mut fields,
            &problem.path,
            kong_wording(&problem.message).into(),
        );
    }
    Reply::json(
        status,
        &json!({ "code": 14, "name": "invalid declarative configuration", "message": "declarative config is invalid", "fields": fields, "errors": errors }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_list_elements_as_kong_does() {
        assert_eq!(kong_path("tags[0]"), "tags.1");
        assert_eq!(
            kong_path("config.claims_to_verify[1]"),
            "config.claims_to_verify.2"
        );
        assert_eq!(kong_path("routes[2].paths[0]"), "routes.3.paths.1");
        assert_eq!(kong_path("name"), "name");
        assert_eq!(kong_path("x[y]"), "x[y]");
        assert_eq!(
            kong_path("x[18446744073709551615]"),
            "x[18446744073709551615]"
        );
    }

    #[test]
    fn every_schema_is_read_off_its_sample() {
        // A sample that stops building (a new check refusing it) would answer 404 where
        // decK needs the schema: each is built here.
        // Every kind the Admin API writes (plugins have theirs by name, below).
        for kind in crate::config::ADMIN_KINDS
            .iter()
            .filter(|&&k| k != "plugins")
        {
            let schema = entity_schema(kind).unwrap_or_else(|| panic!("{kind}"));
            assert!(
                schema["fields"].as_array().is_some_and(|f| f.len() > 3),
                "{kind}: {schema}"
            );
        }
        for plugin in crate::config::KNOWN_PLUGINS {
            let schema = plugin_schema(plugin).unwrap_or_else(|| panic!("{plugin}"));
            assert!(
                schema.to_string().contains("\"config\""),
                "{plugin}: {schema}"
            );
        }
    }

    #[test]
    fn generated_secrets_are_32_alphanumerics_each_drawn_evenly() {
        let a = random_string().expect("the random source");
        let b = random_string().expect("the random source");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        // Over many draws every character turns up, none far more than the others.
        let mut counts = std::collections::HashMap::new();
        for _ in 0..400 {
            for c in random_string().unwrap().chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        assert_eq!(counts.len(), 62);
        assert!(
            counts.values().all(|&n| (100..=330).contains(&n)),
            "{counts:?}"
        );
    }

    /// A config's problems nest as Kong's `fields`: lists of entities as arrays with
    /// null for the items that are fine, the first problem of a place kept.
    #[test]
    fn config_problems_nest_through_entity_lists() {
        let problem = |path: &str, message: &str| crate::config::Problem {
            path: path.into(),
            message: message.into(),
        };
        let reply = config_errors(
            400,
            &crate::config::Problems(vec![
                problem("services[1].routes[0].paths[2]", "bad path"),
                problem("services[1].name", "first"),
                problem("services[1].name", "second"),
                problem("ringway.log_level", "unknown level"),
                problem("", "no place"),
                problem("consumers[1]", "needs a name"),
                problem("consumers[1]", "and more"),
                problem("services[1].routes[1]", "matches nothing"),
                problem("services[0].ca_certificates[1]", "no CA certificate"),
                problem(
                    "plugins[0].config.foo",
                    "unknown field `foo`, expected one of `a`",
                ),
            ]),
        );
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        // An entity's own problem is Kong's `@entity`; serde's unknown-field text, Kong's.
        assert_eq!(
            body["fields"],
            json!({
                "services": [
                    {"ca_certificates": [null, "no CA certificate"]},
                    {"name": "first", "routes": [
                        {"paths": [null, null, "bad path"]},
                        {"@entity": ["matches nothing"]},
                    ]},
                ],
                "consumers": [null, {"@entity": ["needs a name", "and more"]}],
                "plugins": [{"config": {"foo": "unknown field"}}],
                "ringway": {"log_level": "unknown level"},
            }),
            "{body}"
        );
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(10), "{body}");
    }

    /// A unique key taken by the time a write joins the config (a reload in between)
    /// answers Kong's 409, as the write's own check would have; other problems stay 400.
    #[test]
    fn a_key_taken_between_check_and_write_is_a_conflict() {
        let config = Config::from_bytes(
            b"_format_version: \"3.0\"\n",
            &crate::config::NodeOverrides::default(),
        )
        .unwrap();
        let problem = |path: &str, message: &str| crate::config::Problem {
            path: path.into(),
            message: message.into(),
        };
        let reply = refused(
            Refused::Invalid(crate::config::Problems(vec![problem(
                "consumers[0].username",
                "duplicate consumer 'hw-14'",
            )])),
            &config,
            "consumers",
            Some(0),
        );
        assert_eq!(reply.status, 409);
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["code"], 5, "{body}");
        assert_eq!(body["fields"]["username"], "hw-14", "{body}");
        let reply = refused(
            Refused::Invalid(crate::config::Problems(vec![problem(
                "consumers[0].custom_id",
                "invalid type: integer `1`, expected a string",
            )])),
            &config,
            "consumers",
            Some(0),
        );
        assert_eq!(reply.status, 400);
    }

    /// What the file declares is dated when the file was read, unless it says; an SNI
    /// named in an Admin-created certificate, by the certificate.
    #[test]
    fn file_entities_and_certificate_snis_are_dated() {
        let certificate = json!({"id": "c1", "created_at": 5, "updated_at": 6});
        let stored = Stored(
            [("c1".to_owned(), certificate.as_object().unwrap().clone())].into(),
            100,
        );
        let sni =
            json!({"id": "s1", "certificate": {"id": "c1"}, "created_at": 0, "updated_at": 0});
        let sni = stored.decorate(sni);
        assert_eq!(
            (&sni["created_at"], &sni["updated_at"]),
            (&json!(5), &json!(5))
        );
        let service = json!({"id": "f1", "created_at": null, "updated_at": null});
        let service = stored.decorate(service);
        assert_eq!(
            (&service["created_at"], &service["updated_at"]),
            (&json!(100), &json!(100))
        );
        let dated = json!({"id": "f2", "created_at": 7});
        assert_eq!(
            stored.decorate(dated)["created_at"],
            7,
            "a time the file gives stays"
        );
    }
}
