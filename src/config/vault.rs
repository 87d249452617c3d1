//! Kong's env vault: `{vault://env/my-secret}` is read from the environment variable
//! `MY_SECRET` (upper-cased, `-` → `_`), so secrets need not sit in the file.

use serde_norway::Value;

use super::Report;

/// Replaces every vault reference in the document, reporting missing variables by path.
pub(super) fn resolve(value: &mut Value, path: &mut String, report: &mut Report) {
    match value {
        Value::String(text) => {
            if let Some(reference) = text
                .trim()
                .strip_prefix("{vault://")
                .and_then(|r| r.strip_suffix('}'))
            {
                match lookup(reference) {
                    Ok(secret) => *text = secret,
                    Err(message) => report.add(path.clone(), message),
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                resolve(item, path, report);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                resolve(item, path, report);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => resolve(&mut tagged.value, path, report),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn lookup(reference: &str) -> Result<String, String> {
    let name = reference.strip_prefix("env/").ok_or_else(|| {
        format!("unsupported vault reference 'vault://{reference}' (only vault://env/NAME)")
    })?;
    let name = name.split('/').next().unwrap_or(name);
    let variable: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    std::env::var(&variable).map_err(|_| {
        format!("environment variable {variable} (from vault://{reference}) is not set")
    })
}
