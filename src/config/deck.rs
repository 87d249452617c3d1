//! What Kong's and decK's files carry besides the entities' own fields, applied to the
//! file's document before it is read: bookkeeping on any entity (`_comment`, `_ignore`,
//! `ws_id`), and decK's `_info` header, whose `defaults` fill the fields an entity
//! leaves unset and whose `select_tags` tag every entity, as `deck gateway sync` sends
//! them to Kong.

use serde_norway::{Mapping, Value};

use super::Report;

/// The entity lists of a file, at the top level.
const KINDS: [&str; 11] = [
    "services",
    "routes",
    "plugins",
    "consumers",
    "consumer_groups",
    "jwt_secrets",
    "upstreams",
    "targets",
    "certificates",
    "snis",
    "ca_certificates",
];

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

/// A service's fields its `url` gives: a default never stands in for them.
const URL_FIELDS: [&str; 4] = ["protocol", "host", "port", "path"];

/// Applies the file's conventions to its document (the file layer's only: the Admin
/// API's entities have none of them).
pub(super) fn apply(doc: &mut Value, report: &mut Report) {
    let Value::Mapping(top) = doc else {
        return;
    };
    let (defaults, select_tags) = info(top.get("_info"), report);
    for kind in KINDS {
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
        let has_url = entity.get("url").is_some_and(|url| !url.is_null());
        for (field, value) in fields {
            let url_field = field.as_str().is_some_and(|f| URL_FIELDS.contains(&f));
            if has_url && url_field {
                continue;
            }
            if entity.get(field).is_none_or(Value::is_null) {
                entity.insert(field.clone(), value.clone());
            }
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

/// decK's `_info`: its `defaults` by entity list, and its `select_tags`. Its other keys
/// (a Konnect dump's control plane) are about the file.
fn info(info: Option<&Value>, report: &mut Report) -> (Vec<(&'static str, Mapping)>, Vec<Value>) {
    let mut defaults = Vec::new();
    let mut select_tags = Vec::new();
    let Some(Value::Mapping(info)) = info else {
        return (defaults, select_tags);
    };
    match info.get("defaults") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(given)) => {
            for (key, fields) in given {
                let known = key
                    .as_str()
                    .and_then(|k| DEFAULTS.iter().find(|(name, _)| *name == k));
                let path = format!("_info.defaults.{}", key.as_str().unwrap_or("?"));
                match (known, fields) {
                    (Some((_, kind)), Value::Mapping(fields)) => {
                        defaults.push((*kind, fields.clone()));
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
        Some(Value::Sequence(tags)) if tags.iter().all(Value::is_string) => {
            select_tags.clone_from(tags);
        }
        Some(_) => report.add("_info.select_tags", "expected a list of tags"),
    }
    (defaults, select_tags)
}
