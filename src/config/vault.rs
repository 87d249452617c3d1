//! Kong's env vault: `{vault://env/my-secret}` is read from the environment variable
//! `MY_SECRET` (upper-cased, `-` → `_`), so secrets need not sit in the file.

use serde_norway::Value;

use super::Report;

/// The fields where a vault reference is read in what the Admin API writes, by entity
/// (Kong's `referenceable` fields): secrets, which the Admin API shows as the reference.
/// Anywhere else a reference would let whoever holds the Admin API read the gateway's
/// environment back (in the entity, or in what the gateway answers with it). A file
/// the operator puts in place may use references anywhere.
const SECRET_FIELDS: &[(&str, &[&str])] = &[
    ("jwt_secrets", &["secret", "rsa_public_key"]),
    ("certificates", &["cert", "key", "cert_alt", "key_alt"]),
    ("ca_certificates", &["cert"]),
    (
        "plugins",
        &[
            "config.redis.username",
            "config.redis.password",
            "config.redis_username",
            "config.redis_password",
        ],
    ),
];

/// The secret fields of an entity of `kind` (none for most kinds).
pub(super) fn secret_fields(kind: &str) -> &'static [&'static str] {
    SECRET_FIELDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, fields)| fields)
}

/// The keys whose lists hold entities, at any depth (`services[0].routes[1].plugins[0]`).
pub(super) const ENTITY_LISTS: &[&str] = &[
    "services",
    "routes",
    "plugins",
    "consumers",
    "consumer_groups",
    "jwt_secrets",
    "certificates",
    "snis",
    "ca_certificates",
    "upstreams",
    "targets",
];

/// Where a document's vault references are read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Anywhere: a file the operator put in place.
    Anywhere,
    /// In entities' secret fields (and the `ringway:` node section) only: what the Admin
    /// API writes. A reference elsewhere is a problem.
    SecretFieldsOnly,
}

/// Where a walk stands: in the node section, in an entity (its kind, and where its path
/// starts), or neither.
#[derive(Clone, Copy)]
enum At {
    Node,
    Entity(&'static str, usize),
    Other,
}

/// Replaces the vault references in the document, reporting missing variables (and,
/// reading secret fields only, references elsewhere) by path.
pub(super) fn resolve(doc: &mut Value, reading: Reading, report: &mut Report) {
    walk(doc, &mut String::new(), At::Other, reading, true, report);
}

/// Reports, without reading them, the references in `item` (an entity of `kind` at
/// `path`) outside its secret fields: what an Admin API write may not hold.
pub(super) fn check_secret_fields_only(
    kind: &str,
    item: &mut Value,
    path: &str,
    report: &mut Report,
) {
    let at = match ENTITY_LISTS.iter().find(|k| **k == kind) {
        Some(kind) => At::Entity(kind, path.len()),
        None => At::Other,
    };
    let mut path = path.to_owned();
    walk(
        item,
        &mut path,
        at,
        Reading::SecretFieldsOnly,
        false,
        report,
    );
}

/// Whether `text` holds a decK template action: decK renders the whole file as a Go
/// template with `${{` and `}}` as delimiters (`${{ env "NAME" }}`, ``${{env `NAME`}}``,
/// `${{- ... -}}`), so any such pair is one.
fn is_deck_template(text: &str) -> bool {
    text.find("${{")
        .is_some_and(|at| text[at + 3..].contains("}}"))
}

fn walk(
    value: &mut Value,
    path: &mut String,
    at: At,
    reading: Reading,
    read: bool,
    report: &mut Report,
) {
    match value {
        Value::String(text) => {
            // decK expands `${{ env "DECK_NAME" }}` before Kong sees the file; read here,
            // it would be taken as written: a secret anyone reading the file knows.
            if read && is_deck_template(text) {
                report.add(
                    path.clone(),
                    "a decK template (${{ ... }}) is not expanded here: write \
                     {vault://env/NAME} to read a value from $NAME",
                );
                return;
            }
            let Some(reference) = text
                .trim()
                .strip_prefix("{vault://")
                .and_then(|r| r.strip_suffix('}'))
            else {
                return;
            };
            // Kong reads a reference only as the whole value: with spaces around it, its
            // text would be the secret there and the variable's here. Neither: refused.
            if read && text.trim().len() != text.len() {
                report.add(
                    path.clone(),
                    "a vault reference must be the whole value, without spaces around it",
                );
                return;
            }
            let secret = match at {
                At::Node => true,
                At::Entity(kind, start) => {
                    secret_fields(kind).contains(&path.get(start + 1..).unwrap_or(""))
                }
                At::Other => false,
            };
            if reading == Reading::SecretFieldsOnly && !secret {
                report.add(
                    path.clone(),
                    "a vault reference is read here only in a config file put in place; \
                     through the Admin API only in secret fields (a jwt secret or \
                     rsa_public_key, a certificate's cert and key, Redis credentials)",
                );
                report.muted.push(super::Muted::Field(path.clone()));
                return;
            }
            if !read {
                return;
            }
            match lookup(reference) {
                Ok(secret) => {
                    let written = std::mem::replace(text, secret.clone());
                    report.references.insert(path.clone(), (written, secret));
                }
                Err(message) => {
                    report.add(path.clone(), message);
                    // What later checks would say of the reference's own text
                    // (not a PEM, not a URL) is not news.
                    report.muted.push(super::Muted::Field(path.clone()));
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, at, reading, read, report);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                let name = key.as_str().unwrap_or("?");
                let top = path.is_empty();
                if !top {
                    path.push('.');
                }
                path.push_str(name);
                let entities = ENTITY_LISTS.iter().find(|k| **k == name);
                match (item, entities) {
                    (Value::Sequence(items), Some(kind)) => {
                        for (i, item) in items.iter_mut().enumerate() {
                            let base = path.len();
                            path.push_str(&format!("[{i}]"));
                            let entity = At::Entity(kind, path.len());
                            walk(item, path, entity, reading, read, report);
                            path.truncate(base);
                        }
                    }
                    (item, _) => {
                        let inner = if top && name == "ringway" {
                            At::Node
                        } else {
                            at
                        };
                        walk(item, path, inner, reading, read, report);
                    }
                }
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, at, reading, read, report),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Reads `env/RESOURCE[/KEY][?prefix=P][#VERSION]` as Kong's env vault does: the
/// variable is `P` + `RESOURCE`, upper-cased with `-` → `_`, and `_PREVIOUS` appended for
/// version 2; with a `KEY`, the variable holds a JSON object and the value is its string
/// field `KEY`.
fn lookup(reference: &str) -> Result<String, String> {
    let unsupported =
        || format!("unsupported vault reference 'vault://{reference}' (only vault://env/NAME)");
    let rest = reference.strip_prefix("env/").ok_or_else(unsupported)?;
    let (rest, version) = match rest.split_once('#') {
        Some((rest, version)) => match version.parse::<u32>() {
            Ok(version) => (rest, Some(version)),
            Err(_) => return Err(format!("invalid version in vault://{reference}")),
        },
        None => (rest, None),
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut prefix = "";
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("prefix", value)) => prefix = value,
            _ => {
                return Err(format!(
                "unsupported option '{pair}' in vault://{reference} (the env vault takes prefix)"
            ))
            }
        }
    }
    let (resource, key) = match path.rsplit_once('/') {
        Some((resource, key)) => (resource, Some(key).filter(|k| !k.is_empty())),
        None => (path, None),
    };
    if resource.is_empty() {
        return Err(unsupported());
    }
    let mut variable: String = prefix
        .chars()
        .chain(resource.chars())
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if version == Some(2) {
        variable.push_str("_PREVIOUS");
    }
    let value = std::env::var(&variable).map_err(|_| {
        format!("environment variable {variable} (from vault://{reference}) is not set")
    })?;
    let Some(key) = key else {
        return Ok(value);
    };
    // Not quoted: the value is a secret.
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&value).map_err(|_| {
            format!(
                "environment variable {variable} (from vault://{reference}) is not a JSON object"
            )
        })?;
    match object.get(key) {
        Some(serde_json::Value::String(field)) => Ok(field.clone()),
        Some(_) => Err(format!(
            "field '{key}' of environment variable {variable} (from vault://{reference}) is not a string"
        )),
        None => Err(format!(
            "environment variable {variable} (from vault://{reference}) has no field '{key}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn references_read_as_kongs_env_vault() {
        std::env::set_var("RINGWAY_VAULT_PLAIN", "plain-value");
        std::env::set_var("RINGWAY_VAULT_JSON", r#"{"user":"u1","pass":"p1","n":3}"#);
        std::env::set_var("SSL_RINGWAY_VAULT_CERT", "with-prefix");
        std::env::set_var("RINGWAY_VAULT_PLAIN_PREVIOUS", "older");
        for (reference, expected) in [
            ("env/ringway-vault-plain", Ok("plain-value")),
            ("env/ringway-vault-plain#1", Ok("plain-value")),
            ("env/ringway-vault-plain#2", Ok("older")),
            ("env/ringway-vault-json/user", Ok("u1")),
            ("env/ringway-vault-json/pass", Ok("p1")),
            ("env/ringway-vault-cert?prefix=ssl_", Ok("with-prefix")),
            ("env/ringway-vault-json/n", Err("is not a string")),
            ("env/ringway-vault-json/none", Err("has no field 'none'")),
            ("env/ringway-vault-plain/user", Err("is not a JSON object")),
            (
                "env/ringway-vault-plain?ttl=60",
                Err("unsupported option 'ttl=60'"),
            ),
            ("env/ringway-vault-plain#x", Err("invalid version")),
            ("aws/secret", Err("only vault://env/NAME")),
            ("env/", Err("only vault://env/NAME")),
            ("env/ringway-vault-unset", Err("RINGWAY_VAULT_UNSET")),
        ] {
            match (lookup(reference), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{reference}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{reference}: {got}"),
                (got, want) => panic!("{reference}: {got:?}, expected {want:?}"),
            }
        }
        // A secret never appears in the message about it.
        let message = lookup("env/ringway-vault-json/n").unwrap_err();
        assert!(!message.contains("p1"), "{message}");
    }
}
