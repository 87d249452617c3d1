//! Kong's Admin API endpoints for consumers, JWT credentials, plugins, services, routes,
//! consumer groups and the declarative config.
//!
//! Reads come from the published snapshot. Writes go through `Control::update_admin`:
//! the admin layer is edited, composed with the file layer and validated, written to
//! `data_dir` and fsynced, and only then published and acknowledged. Entities declared
//! in the config file are read-only here (405). Errors have Kong's shapes: 400 with
//! field errors, 404, 405, 409.

use serde_json::{json, Map, Value};

use super::body::{parse_body, Body};
use crate::config::{random_id, Config, HostMatch, Layer, PathMatch, Problems, ValueMatch};
use crate::control::{Control, Refused};
use crate::plugins::jwt::Algorithm;

/// An Admin API answer: a status and a JSON (or YAML) body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static [u8],
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
            content_type: b"application/json; charset=utf-8",
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
        }
    }
}

fn not_found() -> Reply {
    Reply::message(404, "Not found")
}

fn read_only() -> Reply {
    Reply::message(405, "entity is managed by the declarative config file")
}

fn method_not_allowed() -> Reply {
    Reply::message(405, "Method not allowed")
}

fn schema_violation(fields: Map<String, Value>) -> Reply {
    let summary: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("invalid")))
        .collect();
    let message = if summary.len() == 1 {
        format!("schema violation ({})", summary[0])
    } else {
        format!(
            "{} schema violations ({})",
            summary.len(),
            summary.join("; ")
        )
    };
    Reply::json(
        400,
        &json!({ "code": 2, "name": "schema violation", "message": message, "fields": fields }),
    )
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

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random alphanumeric string, as Kong generates credential keys and secrets.
fn random_string() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The request as the API sees it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub accept_json: bool,
    pub body: &'a [u8],
}

/// Routes one Admin API request.
pub fn handle(request: &Request<'_>, control: &Control) -> Reply {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method;
    let body = || parse_body(request.content_type, request.body);
    let snapshot = control.shared.snapshot();
    let config = &snapshot.config;
    if let Some(reply) = super::upstreams::handle(method, &segments, config) {
        return reply;
    }
    match (method, segments.as_slice()) {
        ("GET", ["config"]) => get_config(control, request.accept_json),
        ("POST", ["config"]) => post_config(control, request),
        (_, ["config"]) => method_not_allowed(),

        ("GET", ["consumers"]) => list(
            config
                .consumers
                .iter()
                .enumerate()
                .map(|(i, _)| consumer_json(config, i)),
            request.query,
            "custom_id",
        ),
        ("POST", ["consumers"]) => with_body(body(), |b| create_consumer(control, config, b)),
        ("GET", ["consumers", c]) => find_consumer(config, c)
            .map_or_else(not_found, |i| Reply::json(200, &consumer_json(config, i))),
        ("PATCH" | "PUT", ["consumers", c]) => with_body(body(), |b| {
            update_consumer(control, config, c, b, method == "PUT")
        }),
        ("DELETE", ["consumers", c]) => delete_consumer(control, config, c),
        ("GET", ["consumers", c, "jwt"]) => match find_consumer(config, c) {
            Some(i) => list(
                config
                    .jwt_secrets
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.consumer == i)
                    .map(|(j, _)| jwt_json(config, j)),
                "",
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumers", c, "jwt"]) => match find_consumer(config, c) {
            Some(i) => with_body(body(), |b| create_jwt(control, config, i, b)),
            None => not_found(),
        },
        ("GET", ["consumers", c, "jwt", k]) => {
            match (find_consumer(config, c), find_jwt(config, k)) {
                (Some(i), Some(j)) if config.jwt_secrets[j].consumer == i => {
                    Reply::json(200, &jwt_json(config, j))
                }
                _ => not_found(),
            }
        }
        ("PATCH" | "PUT", ["consumers", c, "jwt", k]) => {
            match (find_consumer(config, c), find_jwt(config, k)) {
                (Some(i), Some(j)) if config.jwt_secrets[j].consumer == i => {
                    with_body(body(), |b| update_jwt(control, config, j, b))
                }
                _ => not_found(),
            }
        }
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
            (0..config.jwt_secrets.len()).map(|j| jwt_json(config, j)),
            "",
            "",
        ),
        ("GET", ["jwts", k]) => {
            find_jwt(config, k).map_or_else(not_found, |j| Reply::json(200, &jwt_json(config, j)))
        }
        ("GET", ["jwts", k, "consumer"]) => find_jwt(config, k).map_or_else(not_found, |j| {
            Reply::json(200, &consumer_json(config, config.jwt_secrets[j].consumer))
        }),

        ("GET", ["plugins"]) => list(
            (0..config.plugins.len()).map(|p| plugin_json(config, p)),
            "",
            "",
        ),
        ("GET", ["plugins", "enabled"]) => Reply::json(
            200,
            &json!({ "enabled_plugins": crate::config::KNOWN_PLUGINS }),
        ),
        ("POST", ["plugins"]) => with_body(body(), |b| create_plugin(control, config, b, None)),
        ("GET", ["plugins", p]) => find_plugin(config, p)
            .map_or_else(not_found, |i| Reply::json(200, &plugin_json(config, i))),
        ("PATCH" | "PUT", ["plugins", p]) => match find_plugin(config, p) {
            Some(i) => with_body(body(), |b| update_plugin(control, config, i, b)),
            None => not_found(),
        },
        ("DELETE", ["plugins", p]) => match find_plugin(config, p) {
            Some(i) => delete_entity(
                control,
                config.plugins[i].layer,
                "plugins",
                &config.plugins[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        (
            "GET",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins"],
        ) => match scope_of(config, kind, parent) {
            Some((field, id)) => list(
                (0..config.plugins.len())
                    .map(|p| plugin_json(config, p))
                    .filter(|p| p[field]["id"] == json!(id)),
                "",
                "",
            ),
            None => not_found(),
        },
        (
            "POST",
            [kind @ ("services" | "routes" | "consumers" | "consumer_groups"), parent, "plugins"],
        ) => match scope_of(config, kind, parent) {
            Some(scope) => with_body(body(), |b| create_plugin(control, config, b, Some(scope))),
            None => not_found(),
        },

        ("GET", ["services"]) => list(
            (0..config.services.len()).map(|s| service_json(config, s)),
            "",
            "",
        ),
        ("POST", ["services"]) => with_body(body(), |b| create_service(control, config, b)),
        ("GET", ["services", s]) => find_service(config, s)
            .map_or_else(not_found, |i| Reply::json(200, &service_json(config, i))),
        ("PATCH" | "PUT", ["services", s]) => match find_service(config, s) {
            Some(i) => with_body(body(), |b| {
                update_generic(
                    control,
                    config,
                    config.services[i].layer,
                    "services",
                    &config.services[i].id.clone(),
                    b,
                )
            }),
            None => not_found(),
        },
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
                config
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.service == i)
                    .map(|(r, _)| route_json(config, r)),
                "",
                "",
            ),
            None => not_found(),
        },
        ("POST", ["services", s, "routes"]) => match find_service(config, s) {
            Some(i) => with_body(body(), |mut b| {
                b.insert("service".into(), json!({ "id": config.services[i].id }));
                create_route(control, config, b)
            }),
            None => not_found(),
        },

        ("GET", ["routes"]) => list(
            (0..config.routes.len()).map(|r| route_json(config, r)),
            "",
            "",
        ),
        ("POST", ["routes"]) => with_body(body(), |b| create_route(control, config, b)),
        ("GET", ["routes", r]) => find_route(config, r)
            .map_or_else(not_found, |i| Reply::json(200, &route_json(config, i))),
        ("PATCH" | "PUT", ["routes", r]) => match find_route(config, r) {
            Some(i) => with_body(body(), |b| {
                update_generic(
                    control,
                    config,
                    config.routes[i].layer,
                    "routes",
                    &config.routes[i].id.clone(),
                    b,
                )
            }),
            None => not_found(),
        },
        ("DELETE", ["routes", r]) => match find_route(config, r) {
            Some(i) => delete_entity(
                control,
                config.routes[i].layer,
                "routes",
                &config.routes[i].id.clone(),
            ),
            None => Reply::empty(204),
        },

        ("GET", ["consumer_groups"]) => list(
            (0..config.consumer_groups.len()).map(|g| group_json(config, g)),
            "",
            "",
        ),
        ("POST", ["consumer_groups"]) => with_body(body(), |b| create_group(control, config, b)),
        ("GET", ["consumer_groups", g]) => find_group(config, g)
            .map_or_else(not_found, |i| Reply::json(200, &group_json(config, i))),
        ("DELETE", ["consumer_groups", g]) => match find_group(config, g) {
            Some(i) => delete_entity(
                control,
                config.consumer_groups[i].layer,
                "consumer_groups",
                &config.consumer_groups[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        ("GET", ["certificates"]) => list(
            (0..config.certificates.len()).map(|i| certificate_json(config, i)),
            "",
            "",
        ),
        ("POST", ["certificates"]) => with_body(body(), |b| {
            create(control, config, "certificates", base_object(b), |c, id| {
                show_by_id(c, "certificates", id)
            })
        }),
        ("GET", ["certificates", c]) => find_certificate(config, c).map_or_else(not_found, |i| {
            Reply::json(200, &certificate_json(config, i))
        }),
        ("PATCH" | "PUT", ["certificates", c]) => match find_certificate(config, c) {
            Some(i) => with_body(body(), |b| {
                update_generic(
                    control,
                    config,
                    config.certificates[i].layer,
                    "certificates",
                    &config.certificates[i].id.clone(),
                    b,
                )
            }),
            None => not_found(),
        },
        ("DELETE", ["certificates", c]) => match find_certificate(config, c) {
            Some(i) => delete_entity(
                control,
                config.certificates[i].layer,
                "certificates",
                &config.certificates[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        ("GET", ["certificates", c, "snis"]) => match find_certificate(config, c) {
            Some(i) => list(
                (0..config.snis.len())
                    .filter(|&s| config.snis[s].certificate == i)
                    .map(|s| sni_json(config, s)),
                "",
                "",
            ),
            None => not_found(),
        },
        ("GET", ["snis"]) => list((0..config.snis.len()).map(|i| sni_json(config, i)), "", ""),
        ("POST", ["snis"]) => with_body(body(), |b| {
            create(control, config, "snis", base_object(b), |c, id| {
                show_by_id(c, "snis", id)
            })
        }),
        ("GET", ["snis", s]) => {
            find_sni(config, s).map_or_else(not_found, |i| Reply::json(200, &sni_json(config, i)))
        }
        ("DELETE", ["snis", s]) => match find_sni(config, s) {
            Some(i) => delete_entity(
                control,
                config.snis[i].layer,
                "snis",
                &config.snis[i].id.clone(),
            ),
            None => Reply::empty(204),
        },
        // Group membership, as Kong Enterprise exposes it from both sides.
        ("GET", ["consumer_groups", g, "consumers"]) => match find_group(config, g) {
            Some(g) => list(
                (0..config.consumers.len())
                    .filter(|&i| config.consumers[i].groups.contains(&g))
                    .map(|i| consumer_json(config, i)),
                "",
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumer_groups", g, "consumers"]) => match find_group(config, g) {
            Some(g) => with_body(body(), |b| add_members(control, config, g, &b)),
            None => not_found(),
        },
        ("DELETE", ["consumer_groups", g, "consumers", c]) => {
            match (find_group(config, g), find_consumer(config, c)) {
                (Some(g), Some(c)) => set_membership(control, config, c, &[g], false)
                    .map_or_else(|reply| reply, |_| Reply::empty(204)),
                _ => not_found(),
            }
        }
        ("GET", ["consumers", c, "consumer_groups"]) => match find_consumer(config, c) {
            Some(c) => list(
                config.consumers[c]
                    .groups
                    .iter()
                    .map(|&g| group_json(config, g)),
                "",
                "",
            ),
            None => not_found(),
        },
        ("POST", ["consumers", c, "consumer_groups"]) => match find_consumer(config, c) {
            Some(c) => with_body(body(), |b| join_groups(control, config, c, &b)),
            None => not_found(),
        },
        ("DELETE", ["consumers", c, "consumer_groups", g]) => {
            match (find_group(config, g), find_consumer(config, c)) {
                (Some(g), Some(c)) => set_membership(control, config, c, &[g], false)
                    .map_or_else(|reply| reply, |_| Reply::empty(204)),
                _ => not_found(),
            }
        }
        (
            _,
            ["consumers" | "plugins" | "services" | "routes" | "consumer_groups" | "jwts"
            | "certificates" | "snis", ..],
        ) => method_not_allowed(),
        _ => not_found(),
    }
}

fn with_body(body: Result<Body, Reply>, f: impl FnOnce(Body) -> Reply) -> Reply {
    match body {
        Ok(body) => f(body),
        Err(reply) => reply,
    }
}

/// Kong's list shape, with an optional `?field=value` filter.
fn list(items: impl Iterator<Item = Value>, query: &str, filter: &str) -> Reply {
    let wanted = query.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == filter && !filter.is_empty())
            .map(|(_, v)| v.to_owned())
    });
    let data: Vec<Value> = items
        .filter(|item| wanted.as_ref().is_none_or(|w| item[filter] == json!(w)))
        .collect();
    Reply::json(200, &json!({ "data": data, "next": null }))
}

// ----- lookups (by id or by the endpoint key, as Kong does) -----

fn find_consumer(config: &Config, key: &str) -> Option<usize> {
    config.keys.consumers.get(key).copied()
}

fn find_jwt(config: &Config, key: &str) -> Option<usize> {
    config
        .jwt_secrets
        .iter()
        .position(|s| s.id == key || s.key == key)
}

fn find_plugin(config: &Config, id: &str) -> Option<usize> {
    config.plugins.iter().position(|p| p.id == id)
}

fn find_service(config: &Config, key: &str) -> Option<usize> {
    config.keys.services.get(key).copied()
}

fn find_route(config: &Config, key: &str) -> Option<usize> {
    config.keys.routes.get(key).copied()
}

fn find_group(config: &Config, key: &str) -> Option<usize> {
    config.keys.groups.get(key).copied()
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
    json!({
        "id": s.id,
        "key": s.key,
        "secret": s.secret,
        "algorithm": s.algorithm.name(),
        "rsa_public_key": s.rsa_public_key,
        "consumer": { "id": config.consumers[s.consumer].id },
        "tags": tags(&s.tags),
        "created_at": s.created_at,
    })
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
        "name": &*s.name,
        "protocol": "http",
        "host": s.host,
        "port": s.port,
        "path": if s.path == "/" { Value::Null } else { json!(s.path) },
        "retries": s.retries,
        "connect_timeout": s.connect_timeout.as_millis() as u64,
        "read_timeout": s.read_timeout.as_millis() as u64,
        "write_timeout": s.write_timeout.as_millis() as u64,
        "enabled": s.enabled,
        "tags": null,
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
        protocols.push("https");
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
        "service": { "id": config.services[r.service].id },
        "tags": null,
    })
}

fn group_json(config: &Config, g: usize) -> Value {
    let group = &config.consumer_groups[g];
    json!({ "id": group.id, "name": group.name, "tags": tags(&group.tags), "created_at": group.created_at })
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
            for problem in &problems.0 {
                let field = prefix
                    .as_ref()
                    .and_then(|p| problem.path.strip_prefix(p.as_str()))
                    .map(|rest| rest.trim_start_matches('.').to_owned());
                match field {
                    Some(field) if !field.is_empty() => {
                        fields.insert(field, problem.message.clone().into());
                    }
                    _ => {
                        fields.insert("@entity".into(), json!([problem.to_string()]));
                    }
                }
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

/// Adds an entity to the admin layer; answers 201 with it as the new config shows it.
fn create(
    control: &Control,
    config: &Config,
    kind: &str,
    object: Map<String, Value>,
    show: impl Fn(&Config, &str) -> Option<Value>,
) -> Reply {
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
        Ok((_, snapshot)) => show(&snapshot.config, &id).map_or_else(
            || Reply::message(500, "An unexpected error occurred"),
            |v| Reply::json(201, &v),
        ),
        Err(reason) => {
            let index = control
                .admin_state()
                .get(kind)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            refused(reason, config, kind, Some(index))
        }
    }
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
    let index = control
        .admin_state()
        .get(kind)
        .and_then(Value::as_array)
        .and_then(|l| l.iter().position(|e| e["id"] == json!(id)));
    let Some(index) = index else {
        return not_found();
    };
    let outcome = control.update_admin(|admin| {
        let list = admin_list(admin, kind);
        if let Some(Value::Object(entity)) = list.get_mut(index) {
            for (k, v) in patch {
                if k == "id" || k == "created_at" {
                    continue;
                }
                entity.insert(k, v);
            }
            entity.insert("updated_at".into(), now_secs().into());
            let cleaned = without_nulls(std::mem::take(entity));
            *entity = cleaned;
        }
    });
    match outcome {
        Ok((_, snapshot)) => {
            show_by_id(&snapshot.config, kind, id).map_or_else(not_found, |v| Reply::json(200, &v))
        }
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
        _ => None,
    }
}

fn certificate_json(config: &Config, i: usize) -> Value {
    let c = &config.certificates[i];
    json!({
        "id": c.id, "cert": c.cert, "key": c.key,
        "cert_alt": c.cert_alt, "key_alt": c.key_alt,
        "snis": c.snis, "tags": tags(&c.tags), "created_at": c.created_at,
    })
}

fn sni_json(config: &Config, i: usize) -> Value {
    let s = &config.snis[i];
    json!({
        "id": s.id, "name": s.name,
        "certificate": { "id": config.certificates[s.certificate].id },
        "tags": tags(&s.tags), "created_at": s.created_at,
    })
}

fn find_certificate(config: &Config, key: &str) -> Option<usize> {
    config.certificates.iter().position(|c| c.id == key)
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
    let outcome = control.update_admin(|admin| {
        admin_list(admin, kind).retain(|e| e["id"] != json!(id));
        // Kong cascades: a consumer's credentials and plugins go with it.
        if kind == "consumers" {
            for dependent in ["jwt_secrets", "plugins"] {
                admin_list(admin, dependent).retain(|e| e["consumer"]["id"] != json!(id));
            }
        }
    });
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

fn base_object(mut body: Body) -> Map<String, Value> {
    let now = now_secs();
    if !body
        .get("id")
        .and_then(Value::as_str)
        .is_some_and(crate::config::is_uuid)
    {
        body.insert("id".into(), random_id().into());
    }
    body.insert("created_at".into(), now.into());
    body
}

fn string_field<'a>(body: &'a Body, field: &str) -> Result<Option<&'a str>, Reply> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_error(field, "expected a string")),
    }
}

fn create_consumer(control: &Control, config: &Config, body: Body) -> Reply {
    let (username, custom_id) = match (
        string_field(&body, "username"),
        string_field(&body, "custom_id"),
    ) {
        (Ok(u), Ok(c)) => (u.map(str::to_owned), c.map(str::to_owned)),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    if username.as_deref().unwrap_or("").is_empty() && custom_id.as_deref().unwrap_or("").is_empty()
    {
        let mut fields = Map::new();
        fields.insert(
            "@entity".into(),
            json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"]),
        );
        return schema_violation(fields);
    }
    if let Some(username) = &username {
        if config.keys.consumers.contains_key(username) {
            return unique_violation("username", username);
        }
    }
    if let Some(custom_id) = &custom_id {
        if config
            .consumers
            .iter()
            .any(|c| c.custom_id.as_deref() == Some(custom_id))
        {
            return unique_violation("custom_id", custom_id);
        }
    }
    create(control, config, "consumers", base_object(body), |c, id| {
        show_by_id(c, "consumers", id)
    })
}

fn update_consumer(control: &Control, config: &Config, key: &str, body: Body, put: bool) -> Reply {
    let Some(i) = find_consumer(config, key) else {
        if put {
            // PUT creates when absent (by username when the key is not an id).
            let mut body = body;
            if !crate::config::is_uuid(key) {
                body.insert("username".into(), key.into());
            }
            // Kong answers a PUT 200 whether it created or replaced.
            let mut reply = create_consumer(control, config, body);
            if reply.status == 201 {
                reply.status = 200;
            }
            return reply;
        }
        return not_found();
    };
    let consumer = &config.consumers[i];
    if let Ok(Some(username)) = string_field(&body, "username") {
        if config
            .keys
            .consumers
            .get(username)
            .is_some_and(|&other| other != i)
        {
            return unique_violation("username", username);
        }
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

fn create_jwt(control: &Control, config: &Config, consumer: usize, mut body: Body) -> Reply {
    for field in ["key", "secret", "algorithm", "rsa_public_key"] {
        if let Err(reply) = string_field(&body, field) {
            return reply;
        }
    }
    let algorithm = body
        .get("algorithm")
        .and_then(Value::as_str)
        .unwrap_or("HS256")
        .to_owned();
    let Some(algorithm) = Algorithm::parse(&algorithm) else {
        return field_error(
            "algorithm",
            "expected one of: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384",
        );
    };
    if body
        .get("key")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        body.insert("key".into(), random_string().into());
    }
    let key = body["key"].as_str().unwrap_or_default().to_owned();
    if config.credentials.contains_key(&key) {
        return unique_violation("key", &key);
    }
    if algorithm.is_hmac()
        && body
            .get("secret")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        body.insert("secret".into(), random_string().into());
    }
    if !algorithm.is_hmac() && body.get("rsa_public_key").and_then(Value::as_str).is_none() {
        return field_error(
            "rsa_public_key",
            &format!("required for algorithm {}", algorithm.name()),
        );
    }
    body.insert("algorithm".into(), algorithm.name().into());
    body.insert(
        "consumer".into(),
        json!({ "id": config.consumers[consumer].id }),
    );
    create(
        control,
        config,
        "jwt_secrets",
        base_object(body),
        |c, id| show_by_id(c, "jwt_secrets", id),
    )
}

fn update_jwt(control: &Control, config: &Config, j: usize, mut body: Body) -> Reply {
    body.remove("consumer");
    if let Some(Value::String(key)) = body.get("key") {
        if config
            .credentials
            .get(key)
            .is_some_and(|c| c.id != config.jwt_secrets[j].id)
        {
            return unique_violation("key", key);
        }
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

/// Coerces form-encoded plugin config values (`config.minute=100`) to numbers and
/// booleans, as Kong's schema-driven form parsing does.
fn coerce(value: Value) -> Value {
    match value {
        Value::String(s) => {
            if let Ok(n) = s.parse::<i64>() {
                json!(n)
            } else if let Ok(f) = s.parse::<f64>() {
                json!(f)
            } else if s == "true" || s == "false" {
                json!(s == "true")
            } else {
                Value::String(s)
            }
        }
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, coerce(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(coerce).collect()),
        other => other,
    }
}

fn create_plugin(
    control: &Control,
    config: &Config,
    mut body: Body,
    scope: Option<(&str, String)>,
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
    if let Some(config_value) = body.remove("config") {
        body.insert("config".into(), coerce(config_value));
    }
    if let Some((field, id)) = scope {
        body.insert(field.into(), json!({ "id": id }));
    }
    // References by name become references by id, so they survive renames.
    for (field, kind) in [
        ("service", "services"),
        ("route", "routes"),
        ("consumer", "consumers"),
        ("consumer_group", "consumer_groups"),
    ] {
        let key = match body.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o
                .get("id")
                .or(o.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        if let Some(key) = key {
            match scope_of(config, kind, &key) {
                Some((_, id)) => {
                    body.insert(field.into(), json!({ "id": id }));
                }
                None => return field_error(field, &format!("no {field} with id or name '{key}'")),
            }
        }
    }
    let same_scope = |p: usize| {
        let existing = plugin_json(config, p);
        ["service", "route", "consumer", "consumer_group"]
            .iter()
            .all(|field| existing[*field] == body.get(*field).cloned().unwrap_or(Value::Null))
    };
    if let Some(p) =
        (0..config.plugins.len()).find(|&p| config.plugins[p].name == name && same_scope(p))
    {
        return Reply::json(
            409,
            &json!({
                "code": 5,
                "name": "unique constraint violation",
                "message": format!("UNIQUE violation detected on '{{name=\"{name}\"}}' (plugin {})", config.plugins[p].id),
                "fields": { "name": name },
            }),
        );
    }
    create(control, config, "plugins", base_object(body), |c, id| {
        show_by_id(c, "plugins", id)
    })
}

fn update_plugin(control: &Control, config: &Config, i: usize, mut body: Body) -> Reply {
    if let Some(config_value) = body.remove("config") {
        // A partial config merges into the current one, as in Kong.
        let mut merged = config.plugins[i].config_json.clone();
        if let (Value::Object(current), Value::Object(patch)) = (&mut merged, coerce(config_value))
        {
            for (k, v) in patch {
                current.insert(k, v);
            }
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

fn create_service(control: &Control, config: &Config, body: Body) -> Reply {
    if let Ok(Some(name)) = string_field(&body, "name") {
        if config.keys.services.contains_key(name) {
            return unique_violation("name", name);
        }
    }
    create(control, config, "services", base_object(body), |c, id| {
        show_by_id(c, "services", id)
    })
}

fn create_route(control: &Control, config: &Config, mut body: Body) -> Reply {
    if let Ok(Some(name)) = string_field(&body, "name") {
        if config.keys.routes.contains_key(name) {
            return unique_violation("name", name);
        }
    }
    if let Some(Value::String(key)) = body.get("service").cloned() {
        match find_service(config, &key) {
            Some(i) => {
                body.insert("service".into(), json!({ "id": config.services[i].id }));
            }
            None => return field_error("service", &format!("no service with id or name '{key}'")),
        }
    }
    for list in ["paths", "methods", "hosts", "protocols"] {
        if let Some(Value::String(one)) = body.get(list).cloned() {
            body.insert(list.into(), json!([one]));
        }
    }
    create(control, config, "routes", base_object(body), |c, id| {
        show_by_id(c, "routes", id)
    })
}

fn create_group(control: &Control, config: &Config, body: Body) -> Reply {
    if let Ok(Some(name)) = string_field(&body, "name") {
        if config.keys.groups.contains_key(name) {
            return unique_violation("name", name);
        }
    }
    create(
        control,
        config,
        "consumer_groups",
        base_object(body),
        |c, id| show_by_id(c, "consumer_groups", id),
    )
}

/// The names or ids in a membership body field (one value or a list).
fn names(body: &Body, field: &str) -> Vec<String> {
    match body.get(field) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `POST /consumer_groups/{group}/consumers` with `consumer=<username or id>`.
fn add_members(control: &Control, config: &Config, g: usize, body: &Body) -> Reply {
    let wanted = names(body, "consumer");
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
    let mut snapshot = None;
    for c in members.iter().copied() {
        match set_membership(control, config, c, &[g], true) {
            Ok(after) => snapshot = Some(after),
            Err(reply) => return reply,
        }
    }
    let Some(after) = snapshot else {
        return Reply::message(500, "An unexpected error occurred");
    };
    // Membership changes leave every entity's position as it was.
    let config = &after.config;
    Reply::json(
        201,
        &json!({
            "consumer_group": group_json(config, g),
            "consumers": members
                .iter()
                .filter_map(|&c| config.consumers.get(c).map(|_| consumer_json(config, c)))
                .collect::<Vec<_>>(),
        }),
    )
}

/// `POST /consumers/{consumer}/consumer_groups` with `group=<name or id>`.
fn join_groups(control: &Control, config: &Config, c: usize, body: &Body) -> Reply {
    let wanted = names(body, "group");
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
    match set_membership(control, config, c, &groups, true) {
        Ok(after) => {
            let config = &after.config;
            Reply::json(
                201,
                &json!({
                    "consumer": consumer_json(config, c),
                    "consumer_groups": groups.iter().map(|&g| group_json(config, g)).collect::<Vec<_>>(),
                }),
            )
        }
        Err(reply) => reply,
    }
}

/// Adds a consumer to groups or removes it from them. Only Admin-created consumers can
/// change: a file-declared consumer's groups are the file's.
fn set_membership(
    control: &Control,
    config: &Config,
    c: usize,
    groups: &[usize],
    member: bool,
) -> Result<std::sync::Arc<crate::proxy::Snapshot>, Reply> {
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
    let index = control
        .admin_state()
        .get("consumers")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().position(|e| e["id"] == json!(consumer.id)));
    let Some(index) = index else {
        return Err(not_found());
    };
    let outcome = control.update_admin(|admin| {
        let list = admin_list(admin, "consumers");
        if let Some(Value::Object(entity)) = list.get_mut(index) {
            entity.insert("groups".into(), json!(ids));
            entity.insert("updated_at".into(), now_secs().into());
        }
    });
    match outcome {
        Ok((_, snapshot)) => Ok(snapshot),
        Err(reason) => Err(refused(reason, config, "consumers", Some(index))),
    }
}

// ----- declarative config -----

fn get_config(control: &Control, json: bool) -> Reply {
    let bytes = control.file_bytes();
    if json {
        match serde_norway::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => Reply::json(200, &json!({ "config": value })),
            Err(_) => Reply::json(200, &json!({ "config": String::from_utf8_lossy(&bytes) })),
        }
    } else {
        Reply {
            status: 200,
            body: bytes,
            content_type: b"application/yaml",
        }
    }
}

fn post_config(control: &Control, request: &Request<'_>) -> Reply {
    let content_type = request
        .content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let bytes: Vec<u8> = match content_type.as_str() {
        "application/x-www-form-urlencoded" | "multipart/form-data" => {
            match parse_body(request.content_type, request.body) {
                Ok(form) => match form.get("config") {
                    Some(Value::String(text)) => text.clone().into_bytes(),
                    Some(other) => serde_json::to_vec(other).unwrap_or_default(),
                    None => return field_error("config", "required field missing"),
                },
                Err(reply) => return reply,
            }
        }
        // YAML is a superset of JSON: both go to the same loader. A JSON object whose
        // only key is `config` is what `GET /config` answers (and Kong's shape, with the
        // YAML as a string): what it wraps is the config. A config itself always has
        // `_format_version`, so nothing else looks like it.
        _ => match serde_json::from_slice::<serde_json::Map<String, Value>>(request.body) {
            Ok(mut object) if object.len() == 1 => match object.remove("config") {
                Some(Value::String(text)) => text.into_bytes(),
                Some(config) => serde_json::to_vec(&config).unwrap_or_default(),
                None => request.body.to_vec(),
            },
            _ => request.body.to_vec(),
        },
    };
    match control.replace_file(bytes) {
        Ok(hash) => Reply::json(201, &json!({ "configuration_hash": hash })),
        Err(Refused::Invalid(problems)) => config_errors(400, &problems),
        Err(Refused::Conflict(problems)) => config_errors(409, &problems),
        Err(Refused::Io(e)) => {
            log::error!("POST /config: {e}");
            Reply::message(500, "An unexpected error occurred")
        }
    }
}

fn config_errors(status: u16, problems: &Problems) -> Reply {
    let errors: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    let message = if status == 409 {
        "declarative config conflicts with entities created through the Admin API"
    } else {
        "declarative config is invalid"
    };
    Reply::json(
        status,
        &json!({ "code": 14, "name": "invalid declarative configuration", "message": message, "errors": errors }),
    )
}
