//! Admin API request bodies: JSON, or form-encoded as Kong accepts them (`a.b=1` nests,
//! a repeated key or `key[]` makes a list).

use serde_json::{Map, Value};

use super::api::Reply;

/// A request body as a JSON object.
pub type Body = Map<String, Value>;

/// Parses a body by its content type; an empty body is an empty object.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Body, Reply> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if media == "application/json" || (media.is_empty() && body.first() == Some(&b'{')) {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(Reply::message(
                400,
                "Cannot parse JSON body: expected an object",
            )),
            Err(e) => Err(Reply::message(400, &format!("Cannot parse JSON body: {e}"))),
        };
    }
    if media.is_empty() || media == "application/x-www-form-urlencoded" {
        return parse_form(body);
    }
    Err(Reply::message(415, &format!("Unsupported Content-Type '{media}': use application/json or application/x-www-form-urlencoded")))
}

pub fn decode(part: &str) -> Result<String, Reply> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => {
                        return Err(Reply::message(
                            400,
                            "Cannot parse form body: bad percent-encoding",
                        ))
                    }
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Reply::message(400, "Cannot parse form body: not UTF-8"))
}

fn parse_form(body: &[u8]) -> Result<Body, Reply> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Reply::message(400, "Cannot parse form body: not UTF-8"))?;
    let mut map = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        let value = Value::String(decode(value)?);
        let (key, force_list) = match key.strip_suffix("[]") {
            Some(stripped) => (stripped.to_owned(), true),
            None => (key, false),
        };
        insert(
            &mut map,
            &key.split('.').collect::<Vec<_>>(),
            value,
            force_list,
        );
    }
    Ok(map)
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
        )
        .unwrap();
        assert_eq!(
            Value::Object(form),
            json!({ "username": "mobile-app", "custom_id": "a b c" })
        );
        let nested = parse_body(None, b"name=rate-limiting&config.minute=5&config.limit_by=ip&paths[]=/a&methods=GET&methods=POST").unwrap();
        assert_eq!(
            Value::Object(nested),
            json!({ "name": "rate-limiting", "config": { "minute": "5", "limit_by": "ip" }, "paths": ["/a"], "methods": ["GET", "POST"] })
        );
        let object = parse_body(
            Some("application/json; charset=utf-8"),
            br#"{"algorithm":"HS256"}"#,
        )
        .unwrap();
        assert_eq!(object["algorithm"], "HS256");
        assert!(parse_body(Some("application/json"), b"[1]").is_err());
        assert!(parse_body(Some("application/json"), b"{").is_err());
        assert!(parse_body(Some("text/plain"), b"x").is_err());
        assert!(parse_body(None, b"a=%zz").is_err());
        assert!(parse_body(None, b"").unwrap().is_empty());
    }
}
