//! Kong's upstream endpoints, the reads: the upstreams and targets of the config and
//! their health, which the Admin API can also set by hand, as Kong's
//! `/upstreams/{u}/targets/{t}/healthy|unhealthy` do. Writes go with every other
//! entity's, in `api`.

use serde_json::{json, Value};

use super::Reply;
use crate::config::{Active, Config, HashOn, Passive, Target, Upstream};

/// Answers `/upstreams...` reads, shown and listed as every entity is (`show`, `list`);
/// `None` for any other path, and for writes. `node_id` is this node's, as Kong's
/// health answers name it.
pub fn handle(
    method: &str,
    segments: &[&str],
    query: &str,
    node_id: &str,
    config: &Config,
    show: &dyn Fn(Value) -> Reply,
    list: &dyn Fn(&mut dyn Iterator<Item = Value>) -> Reply,
) -> Option<Reply> {
    let reply = match (method, segments) {
        ("GET", ["upstreams"]) => list(&mut config.upstreams.iter().map(upstream_json)),
        ("GET", ["upstreams", u]) => match find(config, u) {
            Some(up) => show(upstream_json(up)),
            None => not_found(),
        },
        ("GET", ["upstreams", u, "targets"] | ["upstreams", u, "targets", "all"]) => {
            match find(config, u) {
                Some(up) => list(&mut up.targets.iter().map(|t| target_json(up, t))),
                None => not_found(),
            }
        }
        ("GET", ["upstreams", u, "targets", t]) => {
            match find(config, u).and_then(|up| target(up, t)) {
                Some((up, t)) => show(target_json(up, t)),
                None => not_found(),
            }
        }
        ("GET", ["upstreams", u, "health"]) => match find(config, u) {
            // Kong's `?balancer_health=1`: the upstream's own health, not its targets'.
            Some(up)
                if query
                    .split('&')
                    .any(|p| matches!(p, "balancer_health=1" | "balancer_health=true")) =>
            {
                Reply::json(
                    200,
                    &json!({ "data": balancer_health_json(up), "next": null, "node_id": node_id }),
                )
            }
            // Paged as every list, with the node's id beside the page, as Kong's.
            Some(up) => {
                let mut reply = list(&mut up.targets.iter().map(|t| health_json(up, t)));
                if let Ok(Value::Object(mut page)) = serde_json::from_slice(&reply.body) {
                    page.insert("node_id".into(), node_id.into());
                    reply.body = serde_json::to_vec(&page).unwrap_or(reply.body);
                }
                reply
            }
            None => not_found(),
        },
        // Kong's address-level form names one of the target's addresses; a target here
        // has one, its resolved `ip:port`.
        ("PUT" | "POST", ["upstreams", u, "targets", t, state @ ("healthy" | "unhealthy")])
        | ("PUT" | "POST", ["upstreams", u, "targets", t, _, state @ ("healthy" | "unhealthy")]) => {
            let address = match segments {
                [_, _, _, _, address, _] => Some(*address),
                _ => None,
            };
            let found = find(config, u)
                .and_then(|up| target(up, t))
                .filter(|(_, t)| address.is_none_or(|a| t.addr_text == a));
            match found {
                Some((up, t)) => {
                    let healthy = *state == "healthy";
                    if t.health.set(healthy) {
                        crate::balance::active::announce(&up.name, &t.target, healthy, "Admin API");
                    }
                    Reply::empty(204)
                }
                None => not_found(),
            }
        }
        // Writes are the Admin API's, as for any entity; a method a path does not take
        // is its 405 (the API's table of methods), a path there is not its 404.
        _ => return None,
    };
    Some(reply)
}

fn not_found() -> Reply {
    Reply::message(404, "Not found")
}

/// An upstream by id or by name (names are host names, found in any case).
pub(super) fn find<'c>(config: &'c Config, key: &str) -> Option<&'c Upstream> {
    index(config, key).map(|i| &config.upstreams[i])
}

/// Where `find`'s upstream is in the config's list.
pub(super) fn index(config: &Config, key: &str) -> Option<usize> {
    let keys = &config.keys.upstreams;
    let id_of = |i: usize| config.upstreams[i].id.as_str();
    super::api::by_key(keys, key, id_of)
        .or_else(|| super::api::by_key(keys, &key.to_ascii_lowercase(), id_of))
}

/// A target by id or by its `host:port`.
pub(super) fn target<'c>(up: &'c Upstream, key: &str) -> Option<(&'c Upstream, &'c Target)> {
    up.targets
        .iter()
        .find(|t| t.id == key || t.target == key)
        .map(|t| (up, t))
}

/// The upstream as a whole, as Kong's balancer reports it: `HEALTHCHECKS_OFF` without
/// checks, else whether the healthy weight is above `healthchecks.threshold`.
fn balancer_health_json(up: &Upstream) -> Value {
    let (total, available) = crate::balance::weights(up);
    // Whether the balancer can pick a target: healthy weight above the threshold, as
    // Kong's balancer says it in `details.healthy`, checks or not.
    let healthy = crate::balance::threshold_met(up, (total, available)) && available > 0;
    let health = if !up.checks_on() {
        "HEALTHCHECKS_OFF"
    } else if healthy {
        "HEALTHY"
    } else {
        "UNHEALTHY"
    };
    json!({
        "health": health,
        "balancer_health": health,
        "id": up.id,
        "details": {
            "healthy": healthy,
            "weight": {
                "total": total,
                "available": available,
                "unavailable": total - available,
            },
        },
    })
}

fn health_json(up: &Upstream, t: &Target) -> Value {
    let health = crate::balance::state(up, t).to_ascii_uppercase();
    let mut value = target_json(up, t);
    value["health"] = json!(&health);
    value["data"] = json!({
        "addresses": t.addr.map(|a| vec![json!({
            "ip": a.ip().to_string(),
            "port": a.port(),
            "weight": t.weight,
            "health": &health,
        })]).unwrap_or_default(),
    });
    value
}

pub(super) fn target_json(up: &Upstream, t: &Target) -> Value {
    json!({
        "id": t.id,
        "target": t.target,
        "weight": t.weight,
        "upstream": { "id": up.id },
        "tags": tags(&t.tags),
        "created_at": t.created_at,
        "updated_at": t.created_at,
    })
}

fn tags(tags: &[String]) -> Value {
    if tags.is_empty() {
        Value::Null
    } else {
        json!(tags)
    }
}

pub(super) fn upstream_json(up: &Upstream) -> Value {
    // The fields as given, whether or not the hashing chosen uses them, as Kong shows them.
    let given = &up.hash_fields;
    json!({
        "id": up.id,
        "name": &*up.name,
        "algorithm": up.algorithm.as_str(),
        "hash_on": hash_kind(&up.hash_on),
        "hash_fallback": hash_kind(&up.hash_fallback),
        "hash_on_header": given.hash_on_header,
        "hash_fallback_header": given.hash_fallback_header,
        "hash_on_query_arg": given.hash_on_query_arg,
        "hash_fallback_query_arg": given.hash_fallback_query_arg,
        "hash_on_cookie": given.hash_on_cookie,
        "hash_on_cookie_path": given.hash_on_cookie_path.as_deref().unwrap_or("/"),
        "hash_on_uri_capture": null,
        "hash_fallback_uri_capture": null,
        "slots": up.slots,
        "host_header": up.host_header,
        "client_certificate": null,
        "use_srv_name": false,
        "tags": tags(&up.tags),
        "created_at": up.created_at,
        "updated_at": up.created_at,
        "healthchecks": {
            "threshold": number(up.checks.threshold),
            "active": active_json(&up.checks.active),
            "passive": passive_json(&up.checks.passive),
        },
    })
}

fn hash_kind(on: &HashOn) -> &'static str {
    match on {
        HashOn::None => "none",
        HashOn::Consumer => "consumer",
        HashOn::Ip => "ip",
        HashOn::Path => "path",
        HashOn::Header(_) => "header",
        HashOn::QueryArg(_) => "query_arg",
        HashOn::Cookie { .. } => "cookie",
    }
}

/// A number as Kong's JSON writes it: whole ones without a fraction (`1`, not `1.0`).
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&value) {
        json!(value as u64)
    } else {
        json!(value)
    }
}

fn active_json(a: &Active) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &a.headers {
        let entry = headers.entry(name.clone()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(value));
        }
    }
    // None given is null, as Kong shows it (the field has no default).
    let headers = if headers.is_empty() {
        Value::Null
    } else {
        Value::Object(headers)
    };
    json!({
        "type": if a.tcp_only { "tcp" } else { "http" },
        "timeout": number(a.timeout.as_secs_f64()),
        "concurrency": a.concurrency,
        "http_path": a.http_path,
        "https_sni": a.https_sni,
        "https_verify_certificate": a.https_verify_certificate,
        "headers": headers,
        "healthy": {
            "interval": number(a.healthy_interval.as_secs_f64()),
            "http_statuses": a.healthy_statuses.listed(),
            "successes": a.successes,
        },
        "unhealthy": {
            "interval": number(a.unhealthy_interval.as_secs_f64()),
            "http_statuses": a.unhealthy_statuses.listed(),
            "tcp_failures": a.tcp_failures,
            "timeouts": a.timeouts,
            "http_failures": a.http_failures,
        },
    })
}

fn passive_json(p: &Passive) -> Value {
    json!({
        "type": "http",
        "healthy": {
            "http_statuses": p.healthy_statuses.listed(),
            "successes": p.successes,
        },
        "unhealthy": {
            "http_statuses": p.unhealthy_statuses.listed(),
            "tcp_failures": p.tcp_failures,
            "timeouts": p.timeouts,
            "http_failures": p.http_failures,
        },
    })
}
