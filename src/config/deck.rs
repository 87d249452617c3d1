//! What Kong's and decK's files carry besides the entities' own fields, applied to the
//! file's document before it is read: bookkeeping on any entity (`_comment`, `_ignore`,
//! `ws_id`), and decK's `_info` header, whose `defaults` fill the fields an entity
//! leaves unset and whose `select_tags` tag every entity, as `deck gateway sync` sends
//! them to Kong.

use serde_norway::{Mapping, Value};

use super::Report;

/// The entity lists a `kind`'s items may nest (references, such as a group's
/// `consumers`, are not entities).
fn nested(kind: &str) -> &'static [&'static str] {
    match kind {
        "services" => &["routes", "plugins"],
        "routes" | "consumer_groups" => &["plugins"],
        "consumers" => &["jwt_secrets", "plugins"],
        "upstreams" => &["targets"],
        "certificates" => &["snis"],
        _ => &[],
    }
}

/// Kong's bookkeeping on any entity of a file: its comments (`kong config init` writes
/// `_comment`) and, in `kong config db_export` output, the workspace of every row
/// (ringway serves one workspace).
const BOOKKEEPING: [&str; 3] = ["_comment", "_ignore", "ws_id"];

/// decK's `defaults` keys and the entity list each fills.
const DEFAULTS: [(&str, &str); 4] = [
    ("service", "services"),
    ("route", "routes"),
    ("upstream", "upstreams"),
    ("target", "targets"),
];

/// A service's fields its `url` gives: a default never stands in for them (a `path`
/// only when the url has one).
const URL_FIELDS: [&str; 3] = ["protocol", "host", "port"];

/// What decK refuses in defaults: what names an entity (`defaultsRestrictedFields`).
fn restricted(kind: &str) -> &'static [&'static str] {
    match kind {
        "target" => &["id", "target"],
        _ => &["id", "name"],
    }
}

/// `_info`'s keys, decK's (`default_lookup_tags` steers only decK's own lookups of
/// entities the file refers to, so it means nothing here).
const INFO_KEYS: [&str; 3] = ["select_tags", "defaults", "default_lookup_tags"];

/// Applies the file's conventions to its document (the file layer's only: the Admin
/// API's entities have none of them).
pub(super) fn apply(doc: &mut Value, report: &mut Report) {
    let Value::Mapping(top) = doc else {
        return;
    };
    let (defaults, select_tags) = info(top.get("_info"), report);
    for kind in super::vault::ENTITY_LISTS {
        if let Some(Value::Sequence(items)) = top.get_mut(kind) {
            for item in items {
                visit(kind, item, &defaults, &select_tags);
            }
        }
    }
}

fn visit(kind: &str, item: &mut Value, defaults: &[(&str, Mapping)], select_tags: &[Value]) {
    let Value::Mapping(entity) = item else {
        return;
    };
    for field in BOOKKEEPING {
        entity.remove(field);
    }
    if let Some((_, fields)) = defaults.iter().find(|(k, _)| *k == kind) {
        let url = entity.get("url").and_then(Value::as_str);
        let has_url = url.is_some();
        let url_has_path = url.is_some_and(|url| {
            let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
            authority.contains('/')
        });
        for (field, value) in fields {
            let gives = |f: &str| URL_FIELDS.contains(&f) || (f == "path" && url_has_path);
            if has_url && field.as_str().is_some_and(gives) {
                continue;
            }
            fill(entity, field, value);
        }
    }
    if !select_tags.is_empty() {
        let tags = entity
            .entry(Value::String("tags".into()))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if tags.is_null() {
            *tags = Value::Sequence(Vec::new());
        }
        if let Value::Sequence(tags) = tags {
            for tag in select_tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
    }
    for child in nested(kind) {
        if let Some(Value::Sequence(items)) = entity.get_mut(*child) {
            for item in items {
                visit(child, item, defaults, select_tags);
            }
        }
    }
}

/// Sets `field` from a default where the entity leaves it unset; within a record both
/// give (an upstream's `healthchecks`), field by field, as decK merges them.
fn fill(entity: &mut Mapping, field: &Value, default: &Value) {
    match (entity.get_mut(field), default) {
        (Some(Value::Mapping(given)), Value::Mapping(defaults)) => {
            for (inner, value) in defaults {
                fill(given, inner, value);
            }
        }
        (Some(given), _) if !given.is_null() => {}
        _ => {
            entity.insert(field.clone(), default.clone());
        }
    }
}

/// decK's `_info`: its `defaults` by entity list, and its `select_tags`. Its other keys
/// (a Konnect dump's control plane) are about the file.
fn info(info: Option<&Value>, report: &mut Report) -> (Vec<(&'static str, Mapping)>, Vec<Value>) {
    let mut defaults = Vec::new();
    let mut select_tags = Vec::new();
    let Some(Value::Mapping(info)) = info else {
        return (defaults, select_tags);
    };
    for key in info.keys() {
        if !key.as_str().is_some_and(|k| INFO_KEYS.contains(&k)) {
            report.add(
                format!("_info.{}", key.as_str().unwrap_or("?")),
                "unknown field (decK's _info has select_tags, defaults, default_lookup_tags)",
            );
        }
    }
    match info.get("defaults") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(given)) => {
            for (key, fields) in given {
                let known = key
                    .as_str()
                    .and_then(|k| DEFAULTS.iter().find(|(name, _)| *name == k));
                let path = format!("_info.defaults.{}", key.as_str().unwrap_or("?"));
                match (known, fields) {
                    (Some((name, list)), Value::Mapping(fields)) => {
                        if fits(name, fields, &path, report) {
                            defaults.push((*list, fields.clone()));
                        }
                    }
                    (Some(_), Value::Null) => {}
                    (Some(_), _) => report.add(path, "expected a mapping of field values"),
                    (None, _) => report.add(
                        path,
                        "decK's defaults are for service, route, upstream and target",
                    ),
                }
            }
        }
        Some(_) => report.add("_info.defaults", "expected a mapping"),
    }
    match info.get("select_tags") {
        None | Some(Value::Null) => {}
        Some(tags) => {
            // Checked here, once, as tags are: not at every entity they would join.
            let before = report.problems.len();
            let _ = super::parse_item::<SelectTags>(
                Value::Mapping(Mapping::from_iter([(
                    Value::from("select_tags"),
                    tags.clone(),
                )])),
                "_info",
                report,
            );
            if report.problems.len() == before {
                if let Value::Sequence(tags) = tags {
                    select_tags.clone_from(tags);
                }
            }
        }
    }
    (defaults, select_tags)
}

/// `select_tags`, read as an entity's `tags` is.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SelectTags {
    #[serde(deserialize_with = "super::file::tags")]
    select_tags: Vec<String>,
}

/// Whether decK's defaults for `kind` are fields of that entity, checked where they are
/// written (not at every entity they would fill), and name none of its own.
fn fits(kind: &str, fields: &Mapping, path: &str, report: &mut Report) -> bool {
    let mut fine = true;
    for field in restricted(kind) {
        if fields.contains_key(*field) {
            report.add(
                format!("{path}.{field}"),
                format!("{kind} defaults cannot have this restricted field set (as decK)"),
            );
            fine = false;
        }
    }
    let value = Value::Mapping(fields.clone());
    let typed = match kind {
        "service" => super::parse_item::<super::file::ServiceFile>(value, path, report).is_some(),
        "route" => super::parse_item::<super::file::RouteFile>(value, path, report).is_some(),
        _ => super::upstreams::defaults_fit(kind, value, path, report),
    };
    fine && typed
}
