//! Admin API request bodies: JSON, form-encoded or `multipart/form-data` as Kong accepts
//! them (`a.b=1` nests, a repeated key, `key[]` or `key[1]` makes a list). Form values are text;
//! [`infer`] gives them the types of the entity's schema, as Kong's argument inference
//! does, so `port=8080` is a number and `strip_path=false` a boolean. JSON bodies keep
//! the types they were sent with.

use serde_json::{Map, Value};

use super::api::Reply;
use super::multipart;

/// A request body as a JSON object.
pub type Body = Map<String, Value>;

/// Parses a body by its content type; an empty body is an empty object. With `kind`,
/// form values are typed by that entity's schema.
pub fn parse_body(
    content_type: Option<&str>,
    body: &[u8],
    kind: Option<&str>,
) -> Result<Body, Reply> {
    parse_body_as(content_type, body, kind, None)
}

/// [`parse_body`], a form's plugin `config` typed by `plugin`'s schema when the form
/// names no plugin: a PATCH of a plugin, which Kong types by the stored plugin's name.
pub fn parse_body_as(
    content_type: Option<&str>,
    body: &[u8],
    kind: Option<&str>,
    plugin: Option<&str>,
) -> Result<Body, Reply> {
    let media = media_type(content_type);
    let json = media == "application/json";
    if body.iter().all(u8::is_ascii_whitespace) && !json {
        return Ok(Map::new());
    }
    // Kong's answer to a JSON body that is not a JSON object, an empty one included.
    if json || (media.is_empty() && body.first() == Some(&b'{')) {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) | Err(_) => Err(Reply::message(400, "Cannot parse JSON body")),
        };
    }
    let form = if media.is_empty() || media == "application/x-www-form-urlencoded" {
        parse_form(body)?
    } else if media == "multipart/form-data" {
        parse_multipart_form(content_type.unwrap_or(""), body)?
    } else {
        return Err(Reply::message(415, &format!("Unsupported Content-Type '{media}': use application/json, application/x-www-form-urlencoded or multipart/form-data")));
    };
    Ok(match kind {
        Some(kind) => infer(kind, form, plugin),
        None => form,
    })
}

/// The media type of a Content-Type, lower-cased, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The parts of a `multipart/form-data` body, or a 400 that says what is wrong.
pub fn multipart_parts<'a>(
    content_type: &str,
    body: &'a [u8],
) -> Result<Vec<multipart::Part<'a>>, Reply> {
    multipart::parse(content_type, body)
        .map_err(|e| Reply::message(400, &format!("Cannot parse multipart body: {e}")))
}

/// A multipart body as a form: each part's name and text.
fn parse_multipart_form(content_type: &str, body: &[u8]) -> Result<Body, Reply> {
    let mut fields = Vec::new();
    for part in multipart_parts(content_type, body)? {
        let value = String::from_utf8(part.data.to_vec()).map_err(|_| {
            Reply::message(
                400,
                &format!(
                    "Cannot parse multipart body: part '{}' is not UTF-8",
                    part.name
                ),
            )
        })?;
        fields.push((part.name.to_owned(), value));
    }
    build_form(fields)
}

pub fn decode(part: &str) -> Result<String, Reply> {
    let bytes = unescape(part, true)
        .ok_or_else(|| Reply::message(400, "Cannot parse form body: bad percent-encoding"))?;
    String::from_utf8(bytes).map_err(|_| Reply::message(400, "Cannot parse form body: not UTF-8"))
}

/// A path segment with its percent-escapes decoded (`+` is itself in a path); `None`
/// for a broken escape or text that is not UTF-8.
pub fn decode_segment(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    String::from_utf8(unescape(segment, false)?).ok()
}

/// `%XX` escapes decoded, and `+` as a space in a form; `None` at a broken escape.
fn unescape(text: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn parse_form(body: &[u8]) -> Result<Body, Reply> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Reply::message(400, "Cannot parse form body: not UTF-8"))?;
    let mut fields = Vec::new();
    for (i, pair) in text.split('&').filter(|p| !p.is_empty()).enumerate() {
        if i == MAX_FORM_FIELDS {
            return Err(Reply::message(
                400,
                &format!("Cannot parse form body: more than {MAX_FORM_FIELDS} fields"),
            ));
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        fields.push((decode(key)?, decode(value)?));
    }
    build_form(fields)
}

/// A form's fields as an object. Kong's indexed fields (`paths[2]=/b&paths[1]=/a`) are
/// list items placed by their 1-based index; the fields of one name are taken
/// together, in index order, where the first of them stood.
fn build_form(mut fields: Vec<(String, String)>) -> Result<Body, Reply> {
    if fields
        .iter()
        .any(|(key, _)| list_index(key).is_some_and(|(_, i)| i.is_some()))
    {
        let mut first_seen: std::collections::HashMap<&str, usize> = Default::default();
        let order: Vec<(usize, u32)> = fields
            .iter()
            .enumerate()
            .map(|(position, (key, _))| {
                let (stem, index) = list_index(key).unwrap_or((key, None));
                let group = *first_seen.entry(stem).or_insert(position);
                (group, index.unwrap_or(0))
            })
            .collect();
        let mut ranked: Vec<_> = order.into_iter().zip(std::mem::take(&mut fields)).collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        fields = ranked.into_iter().map(|(_, field)| field).collect();
    }
    let mut map = Map::new();
    for (key, value) in fields {
        add_field(&mut map, key, value)?;
    }
    Ok(map)
}

/// A field name's list suffix: `name[]` is `(name, None)`, `name[3]` is `(name, Some(3))`;
/// `None` for a name without one.
fn list_index(key: &str) -> Option<(&str, Option<u32>)> {
    let (stem, inside) = key.strip_suffix(']')?.rsplit_once('[')?;
    if inside.is_empty() {
        return Some((stem, None));
    }
    if inside.len() > 9 || !inside.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem, inside.parse().ok()))
}

/// Fields one form body may have; an entity has a few dozen.
const MAX_FORM_FIELDS: usize = 1000;
/// How deep a field name may nest (`config.headers.x-v` is three); the nesting is built
/// and dropped recursively, so it is bounded well before the stack is.
const MAX_FORM_KEY_DEPTH: usize = 8;

/// Adds one `key=value` of a form: dots nest; `[]`, `[N]` or a repeat makes a list.
fn add_field(map: &mut Map<String, Value>, key: String, value: String) -> Result<(), Reply> {
    let (key, force_list) = match list_index(&key) {
        Some((stem, _)) => (stem.to_owned(), true),
        None => (key, false),
    };
    let path: Vec<&str> = key.split('.').collect();
    if path.len() > MAX_FORM_KEY_DEPTH {
        return Err(Reply::message(
            400,
            &format!("Cannot parse form body: a field name nests deeper than {MAX_FORM_KEY_DEPTH} levels"),
        ));
    }
    insert(map, &path, Value::String(value), force_list);
    Ok(())
}

/// The type of an entity field, for typing form values as Kong's schemas do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Text,
    Integer,
    Boolean,
    /// A list of strings: one value becomes a one-item list.
    Texts,
    /// A reference to another entity: `service=name`, `service.id=...`, `service.name=...`.
    Foreign,
    /// Route `headers`: each header name to a list of values.
    HeaderMap,
    /// A plugin's `config` (`config.minute=100`): each plugin has its own schema, so a
    /// value that reads as a number or a boolean is taken as one.
    PluginConfig,
}

/// Kong's schema for the fields a form may set; unknown fields are left as sent (the
/// config layer reports them).
fn field_type(kind: &str, field: &str) -> Option<Type> {
    use Type::*;
    Some(match (kind, field) {
        (_, "id") => Text,
        (_, "tags") => Texts,
        ("services", "name" | "url" | "protocol" | "host" | "path") => Text,
        (
            "services",
            "port" | "retries" | "connect_timeout" | "read_timeout" | "write_timeout"
            | "tls_verify_depth",
        ) => Integer,
        ("services", "enabled" | "tls_verify") => Boolean,
        ("services", "ca_certificates") => Texts,
        ("services", "client_certificate") => Foreign,
        ("routes", "name" | "path_handling") => Text,
        ("routes", "regex_priority" | "https_redirect_status_code") => Integer,
        ("routes", "strip_path" | "preserve_host" | "request_buffering" | "response_buffering") => {
            Boolean
        }
        ("routes", "paths" | "methods" | "hosts" | "protocols" | "snis") => Texts,
        ("routes", "service") => Foreign,
        ("routes", "headers") => HeaderMap,
        ("consumers", "username" | "custom_id") => Text,
        ("consumers", "groups") => Texts,
        ("consumer_groups", "name") => Text,
        ("jwt_secrets", "key" | "secret" | "algorithm" | "rsa_public_key") => Text,
        ("jwt_secrets", "consumer") => Foreign,
        ("plugins", "name" | "instance_name") => Text,
        ("plugins", "enabled") => Boolean,
        ("plugins", "protocols") => Texts,
        ("plugins", "config") => PluginConfig,
        ("plugins", "service" | "route" | "consumer" | "consumer_group") => Foreign,
        ("certificates", "cert" | "key" | "cert_alt" | "key_alt") => Text,
        ("certificates", "snis") => Texts,
        ("snis", "name") => Text,
        ("snis", "certificate") => Foreign,
        (
            "upstreams",
            "name"
            | "algorithm"
            | "hash_on"
            | "hash_fallback"
            | "hash_on_header"
            | "hash_fallback_header"
            | "hash_on_cookie"
            | "hash_on_cookie_path"
            | "hash_on_query_arg"
            | "hash_fallback_query_arg"
            | "host_header",
        ) => Text,
        ("upstreams", "slots") => Integer,
        ("upstreams", "use_srv_name") => Boolean,
        // Numbers and booleans where they read as such, as a plugin's config.
        ("upstreams", "healthchecks") => PluginConfig,
        ("targets", "target") => Text,
        ("targets", "weight") => Integer,
        ("targets", "upstream") => Foreign,
        _ => return None,
    })
}

/// Types a form's values by the schema of `kind`, as Kong's `infer_value` does: an empty
/// value is null (which resets the field), integers and booleans are parsed when they
/// parse (else left for validation to report), one value of a list field is a list.
pub fn infer(kind: &str, form: Body, stored: Option<&str>) -> Body {
    let plugin = (kind == "plugins")
        .then(|| {
            form.get("name")
                .and_then(Value::as_str)
                .or(stored)
                .map(str::to_owned)
        })
        .flatten();
    form.into_iter()
        .map(|(field, value)| {
            let mut value = match field_type(kind, &field) {
                Some(ty) => infer_value(ty, value),
                None => value,
            };
            if kind == "upstreams" && field == "healthchecks" {
                status_lists(&mut value);
            }
            if let (Some(plugin), "config", Value::Object(config)) =
                (&plugin, field.as_str(), &mut value)
            {
                for (name, value) in config.iter_mut() {
                    if plugin_list_field(plugin, name) {
                        if let Value::String(one) = value {
                            *value = Value::Array(vec![Value::String(std::mem::take(one))]);
                        }
                    }
                }
            }
            (field, value)
        })
        .collect()
}

/// An upstream's `healthchecks` from a form: each `http_statuses` given one value is a
/// one-item list, as Kong's schema types it.
fn status_lists(value: &mut Value) {
    if let Value::Object(fields) = value {
        for (name, inner) in fields.iter_mut() {
            if name == "http_statuses" && !inner.is_array() && !inner.is_null() {
                *inner = Value::Array(vec![inner.take()]);
            } else {
                status_lists(inner);
            }
        }
    }
}

/// The list fields of the plugins' configs: one form value of one is a one-item list.
fn plugin_list_field(plugin: &str, field: &str) -> bool {
    matches!(
        (plugin, field),
        (
            "jwt",
            "uri_param_names" | "cookie_names" | "header_names" | "claims_to_verify"
        )
    )
}

fn infer_value(ty: Type, value: Value) -> Value {
    if value.as_str() == Some("") {
        return Value::Null;
    }
    match (ty, value) {
        (Type::Integer, Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => n.into(),
            Err(_) => Value::String(s),
        },
        (Type::Boolean, Value::String(s)) => match s.as_str() {
            "true" => true.into(),
            "false" => false.into(),
            _ => Value::String(s),
        },
        (Type::Texts, Value::String(s)) => Value::Array(vec![Value::String(s)]),
        (Type::PluginConfig, value) => guess(value),
        (Type::HeaderMap, Value::Object(headers)) => Value::Object(
            headers
                .into_iter()
                .map(|(name, values)| (name, infer_value(Type::Texts, values)))
                .collect(),
        ),
        (_, value) => value,
    }
}

/// A form value typed by its looks: an integer, a number, `true` or `false`, else text.
fn guess(value: Value) -> Value {
    match value {
        Value::String(s) => {
            if let Ok(n) = s.parse::<i64>() {
                n.into()
            } else if let Some(f) = s.parse::<f64>().ok().filter(|f| f.is_finite()) {
                f.into()
            } else if s == "true" || s == "false" {
                (s == "true").into()
            } else {
                Value::String(s)
            }
        }
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, guess(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(guess).collect()),
        other => other,
    }
}

fn insert(map: &mut Map<String, Value>, path: &[&str], value: Value, force_list: bool) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match map.get_mut(*first) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let previous = existing.take();
                *existing = Value::Array(vec![previous, value]);
            }
            None if force_list => {
                map.insert((*first).to_owned(), Value::Array(vec![value]));
            }
            None => {
                map.insert((*first).to_owned(), value);
            }
        }
        return;
    }
    let entry = map
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(inner) = entry {
        insert(inner, rest, value, force_list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_and_json() {
        let form = parse_body(
            Some("application/x-www-form-urlencoded"),
            b"username=mobile-app&custom_id=a%20b+c",
            None,
        )
        .unwrap();
        assert_eq!(
            Value::Object(form),
            json!({ "username": "mobile-app", "custom_id": "a b c" })
        );
        let nested = parse_body(None, b"name=rate-limiting&config.minute=5&config.limit_by=ip&paths[]=/a&methods=GET&methods=POST", None).unwrap();
        assert_eq!(
            Value::Object(nested),
            json!({ "name": "rate-limiting", "config": { "minute": "5", "limit_by": "ip" }, "paths": ["/a"], "methods": ["GET", "POST"] })
        );
        let object = parse_body(
            Some("application/json; charset=utf-8"),
            br#"{"algorithm":"HS256"}"#,
            None,
        )
        .unwrap();
        assert_eq!(object["algorithm"], "HS256");
        assert!(parse_body(Some("application/json"), b"[1]", None).is_err());
        assert!(parse_body(Some("application/json"), b"{", None).is_err());
        assert!(parse_body(Some("text/plain"), b"x", None).is_err());
        assert!(parse_body(None, b"a=%zz", None).is_err());
        assert!(parse_body(None, b"", None).unwrap().is_empty());
    }

    #[test]
    fn form_values_take_the_schema_types() {
        let form = |kind, text: &str| {
            Value::Object(parse_body(None, text.as_bytes(), Some(kind)).unwrap())
        };
        assert_eq!(
            form(
                "services",
                "name=f1&host=h&port=19001&retries=2&connect_timeout=500&enabled=false&tags=a"
            ),
            json!({ "name": "f1", "host": "h", "port": 19001, "retries": 2, "connect_timeout": 500, "enabled": false, "tags": ["a"] })
        );
        assert_eq!(
            form("routes", "paths[]=/f1&service.name=f1&strip_path=false&regex_priority=-3&methods=GET&headers.x-v=1&hosts=a&hosts=b"),
            json!({ "paths": ["/f1"], "service": { "name": "f1" }, "strip_path": false, "regex_priority": -3, "methods": ["GET"], "headers": { "x-v": ["1"] }, "hosts": ["a", "b"] })
        );
        // What does not parse is left for validation to report; empty resets; a name
        // that looks like a number stays text.
        assert_eq!(
            form("services", "port=http&enabled=yes&path=&name=123"),
            json!({ "port": "http", "enabled": "yes", "path": null, "name": "123" })
        );
        assert_eq!(
            form("consumers", "username=007&custom_id=&tags[]=x&groups=free"),
            json!({ "username": "007", "custom_id": null, "tags": ["x"], "groups": ["free"] })
        );
        // Kong's indexed list items, in index order, beside the other fields.
        assert_eq!(
            form(
                "routes",
                "paths[2]=/b&name=r&paths[1]=/a&methods[1]=GET&paths[10]=/c"
            ),
            json!({ "paths": ["/a", "/b", "/c"], "name": "r", "methods": ["GET"] })
        );
        assert_eq!(
            form(
                "plugins",
                "name=jwt&config.claims_to_verify[2]=nbf&config.claims_to_verify[1]=exp"
            ),
            json!({ "name": "jwt", "config": { "claims_to_verify": ["exp", "nbf"] } })
        );
        // A bracket that is no index is part of the name (an unknown field, reported).
        assert_eq!(
            form("routes", "paths[x]=/a&hosts[]=h"),
            json!({ "paths[x]": "/a", "hosts": ["h"] })
        );
        // An upstream's healthchecks: numbers where they read as such, statuses a list.
        assert_eq!(
            form("upstreams", "name=u&healthchecks.active.healthy.http_statuses=200&healthchecks.active.healthy.interval=5&healthchecks.passive.unhealthy.http_statuses[1]=500&healthchecks.passive.unhealthy.http_statuses[2]=503"),
            json!({ "name": "u", "healthchecks": {
                "active": { "healthy": { "http_statuses": [200], "interval": 5 } },
                "passive": { "unhealthy": { "http_statuses": [500, 503] } } } })
        );
        // JSON keeps its types.
        let json_body = parse_body(
            Some("application/json"),
            br#"{"port":"1"}"#,
            Some("services"),
        )
        .unwrap();
        assert_eq!(json_body["port"], "1");
        // Multipart fields are form fields.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"port\"\r\n\r\n8080\r\n--b\r\nContent-Disposition: form-data; name=\"paths[]\"\r\n\r\n/x\r\n--b--\r\n";
        let multi = parse_body(
            Some("multipart/form-data; boundary=b"),
            body,
            Some("services"),
        )
        .unwrap();
        assert_eq!(multi["port"], 8080);
        assert_eq!(multi["paths"], json!(["/x"]));
        assert_eq!(
            parse_body(Some("multipart/form-data; boundary=b"), b"garbage", None)
                .unwrap_err()
                .status,
            400
        );
    }
}
