//! Kong's upstreams and targets, black-box: a service whose host names an upstream is
//! balanced over its targets (weighted round-robin, consistent hashing, least
//! connections), with passive and active health checks, reported in the Admin API,
//! /status and /metrics.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// An origin that answers 200 with its own name as the body.
fn named(name: &'static str) -> Origin {
    Origin::with_handler(move |_| Action::Respond(reply(200, name)))
}

fn reply(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One service `svc` on upstream `pool`, routed at `/`; `upstream` is the rest of the
/// upstream item (indented under `- name: pool`), `targets` its targets.
fn config(upstream: &str, targets: &[(String, u32)], extra: &str) -> String {
    let mut yaml = String::from("_format_version: \"3.0\"\nupstreams:\n  - name: pool\n");
    for line in upstream.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml.push_str("    targets:\n");
    for (target, weight) in targets {
        yaml.push_str(&format!(
            "      - target: {target}\n        weight: {weight}\n"
        ));
    }
    yaml.push_str(
        "services:\n  - name: svc\n    host: pool\n    retries: 3\n    routes:\n      - name: all\n        paths: [\"/\"]\n",
    );
    yaml.push_str(extra);
    yaml
}

fn target(origin: &Origin) -> String {
    format!("127.0.0.1:{}", origin.port())
}

/// Sends `n` GETs on one keep-alive connection; counts the answers by body.
fn tally(gw: &Gateway, n: usize, path: &str, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = proxy_get(gw, path, headers);
        assert_eq!(r.status, 200, "{}", r.body_str());
        *counts.entry(r.body_str()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn round_robin_follows_the_weights_and_sends_the_target_host() {
    let (a, b, off) = (named("a"), named("b"), named("off"));
    let gw = Gateway::start(&config(
        "",
        &[(target(&a), 100), (target(&b), 300), (target(&off), 0)],
        "",
    ));
    let counts = tally(&gw, 40, "/x", &[]);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&30), "{counts:?}");
    assert_eq!(
        counts.get("off"),
        None,
        "weight 0 takes no traffic: {counts:?}"
    );
    // Kong sends the target's host and port as Host when the upstream sets none.
    let seen = a.requests();
    assert_eq!(seen[0].header("host"), Some(target(&a).as_str()));
}

#[test]
fn upstream_host_header_replaces_the_target_host() {
    let a = Origin::echo();
    let gw = Gateway::start(&config(
        "host_header: api.internal",
        &[(target(&a), 100)],
        "",
    ));
    let r = proxy_get(&gw, "/h", &[]);
    assert_eq!(r.status, 200);
    // As Kong: with the target's port, which is not the scheme's default.
    assert_eq!(
        a.requests()[0].header("host"),
        Some(format!("api.internal:{}", a.port()).as_str())
    );
}

#[test]
fn consistent_hashing_sticks_a_key_to_one_target() {
    let (a, b, c) = (named("a"), named("b"), named("c"));
    let gw = Gateway::start(&config(
        "algorithm: consistent-hashing\nhash_on: header\nhash_on_header: x-user\nhash_fallback: ip",
        &[(target(&a), 100), (target(&b), 100), (target(&c), 100)],
        "",
    ));
    let mut used = HashMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = tally(&gw, 4, "/", &[("x-user", &user)]);
        assert_eq!(first.len(), 1, "one key, one target: {first:?}");
        *used.entry(first.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(used.len(), 3, "30 keys spread over every target: {used:?}");
    // As Kong 3.6+ (nginx's `$http_x_user`): a header sent twice hashes its values
    // joined by ", ".
    for user in 0..10 {
        let joined = tally(&gw, 2, "/", &[("x-user", &format!("p{user}, q{user}"))]);
        let (p, q) = (format!("p{user}"), format!("q{user}"));
        let twice = tally(&gw, 2, "/", &[("x-user", &p), ("x-user", &q)]);
        assert_eq!(joined, twice, "user {user}");
    }
    // Without the header, the fallback (the client IP, the same for every request here)
    // still pins one target.
    assert_eq!(tally(&gw, 6, "/", &[]).len(), 1);
}

#[test]
fn hash_on_cookie_sets_the_cookie_then_sticks_to_it() {
    let (a, b) = (named("a"), named("b"));
    let gw = Gateway::start(&config(
        "algorithm: consistent-hashing\nhash_on: cookie\nhash_on_cookie: sticky\nhash_on_cookie_path: /app",
        &[(target(&a), 100), (target(&b), 100)],
        "",
    ));
    let first = proxy_get(&gw, "/", &[]);
    assert_eq!(first.status, 200);
    let set = first
        .header("set-cookie")
        .expect("a Set-Cookie for the new key");
    assert!(
        set.starts_with("sticky=") && set.ends_with("; Path=/app; SameSite=Lax; HttpOnly"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let with_cookie = tally(&gw, 8, "/", &[("cookie", &cookie)]);
    assert_eq!(with_cookie.len(), 1, "{with_cookie:?}");
    assert_eq!(with_cookie.keys().next(), Some(&first.body_str()));
    let again = proxy_get(&gw, "/", &[("cookie", &cookie)]);
    assert_eq!(
        again.header("set-cookie"),
        None,
        "a known cookie is not set again"
    );
    // nginx's $cookie_NAME, which Kong's balancer reads, matches names in any case.
    let shouted = cookie.replacen("sticky", "STICKY", 1);
    let again = proxy_get(&gw, "/", &[("cookie", &shouted)]);
    assert_eq!(again.header("set-cookie"), None, "{again:?}");
    assert_eq!(again.body_str(), first.body_str());

    // A cookie as the fallback is set the same way when the client has neither.
    let gw = Gateway::start(&config(
        "algorithm: consistent-hashing\nhash_on: header\nhash_on_header: x-user\nhash_fallback: cookie\nhash_on_cookie: sticky",
        &[(target(&a), 100), (target(&b), 100)],
        "",
    ));
    let first = proxy_get(&gw, "/", &[]);
    let set = first
        .header("set-cookie")
        .expect("a Set-Cookie for the fallback's new key");
    let cookie = set.split(';').next().unwrap().to_owned();
    let with_cookie = tally(&gw, 8, "/", &[("cookie", &cookie)]);
    assert_eq!(with_cookie.len(), 1, "{with_cookie:?}");
    assert_eq!(with_cookie.keys().next(), Some(&first.body_str()));
    let by_header = proxy_get(&gw, "/", &[("x-user", "u1")]);
    assert_eq!(by_header.header("set-cookie"), None, "the header decided");
}

#[test]
fn the_hash_cookie_replaces_an_upstream_cookie_of_its_name() {
    // As Kong's balancer sets it: the upstream's first `sticky=` cookie gives way, so the
    // client holds one `sticky`, the one requests are hashed on; other cookies, and a
    // second one of that name, pass.
    let o = Origin::with_handler(|_| {
        Action::Respond(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: stickyness=1\r\nSet-Cookie: sticky=up; Path=/\r\nSet-Cookie: other=2\r\nSet-Cookie: sticky=again\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let gw = Gateway::start(&config(
        "algorithm: consistent-hashing\nhash_on: cookie\nhash_on_cookie: sticky",
        &[(target(&o), 100)],
        "",
    ));
    let r = proxy_get(&gw, "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let cookies = r.header_all("set-cookie");
    assert_eq!(cookies.len(), 4, "{cookies:?}");
    assert_eq!(
        [cookies[0], cookies[2], cookies[3]],
        ["stickyness=1", "other=2", "sticky=again"]
    );
    // In the place of the one it replaces.
    assert!(
        cookies[1].starts_with("sticky=")
            && cookies[1].ends_with("; Path=/; SameSite=Lax; HttpOnly"),
        "{cookies:?}"
    );
    // A client with the cookie gets the upstream's cookies as they are.
    let cookie = cookies[1].split(';').next().unwrap().to_owned();
    let r = proxy_get(&gw, "/", &[("cookie", &cookie)]);
    assert_eq!(r.header_all("set-cookie").len(), 4, "{r:?}");
    assert_eq!(r.header_all("set-cookie")[1], "sticky=up; Path=/");
}

#[test]
fn least_connections_avoids_the_busy_target() {
    let hold = |name: &'static str| {
        Origin::with_handler(move |ctx| {
            if ctx.req.path() == "/hold" {
                Action::Delay(
                    Duration::from_millis(1500),
                    Box::new(Action::Respond(reply(200, name))),
                )
            } else {
                Action::Respond(reply(200, name))
            }
        })
    };
    let (a, b) = (hold("a"), hold("b"));
    let gw = Gateway::start(&config(
        "algorithm: least-connections",
        &[(target(&a), 100), (target(&b), 100)],
        "",
    ));
    let addr = gw.proxy_addr();
    let busy = spawn(move || {
        let mut c = Client::connect(addr);
        c.roundtrip(&get_req("/hold", "x")).body_str()
    });
    let held = wait_for(Duration::from_secs(5), || {
        if a.requests().iter().any(|r| r.path() == "/hold") {
            Some("a")
        } else if b.requests().iter().any(|r| r.path() == "/hold") {
            Some("b")
        } else {
            None
        }
    })
    .expect("the held request reached a target");
    let counts = tally(&gw, 6, "/quick", &[]);
    assert_eq!(
        counts.get(held),
        None,
        "the busy target got none: {counts:?}"
    );
    assert_eq!(busy.join().unwrap(), held);
    // Both idle again: traffic alternates.
    assert_eq!(tally(&gw, 6, "/quick", &[]).len(), 2);
}

#[test]
fn a_refused_target_is_skipped_within_the_request() {
    let b = named("b");
    let dead = format!("127.0.0.1:{}", closed_port());
    let gw = Gateway::start(&config("", &[(dead, 100), (target(&b), 100)], ""));
    let started = Instant::now();
    let counts = tally(&gw, 10, "/", &[]);
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_retry_on_another_target_rewrites_host_and_keeps_the_body() {
    let b = Origin::echo();
    // `localhost:P` and `127.0.0.1:Q` differ in length: the head is re-spliced.
    let dead = format!("localhost:{}", closed_port());
    let gw = Gateway::start(&config("", &[(dead, 100), (target(&b), 100)], ""));
    for _ in 0..4 {
        let r = http_request(
            gw.proxy_addr(),
            "POST",
            "/orders",
            &[],
            Some(("text/plain", b"payload-123")),
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let seen = b.requests();
    assert_eq!(seen.len(), 4);
    for req in seen {
        assert_eq!(req.header("host"), Some(target(&b).as_str()));
        assert_eq!(req.body, b"payload-123");
        assert_eq!(req.header("content-type"), Some("text/plain"));
    }
}

#[test]
fn a_gateway_timeout_behind_a_target_counts_as_a_timeout() {
    let a = Origin::with_handler(|_| Action::Respond(reply(504, "late")));
    let b = named("b");
    let gw = Gateway::start(&config(
        "healthchecks:\n  passive:\n    unhealthy:\n      timeouts: 2\n",
        &[(target(&a), 100), (target(&b), 100)],
        "",
    ));
    let counts = tally_any(&gw, 10);
    assert_eq!(counts.get(&504), Some(&2), "{counts:?}");
    assert_eq!(
        gw.status_json()["upstreams"]["pool"]["targets"][target(&a)],
        "unhealthy"
    );
}

/// Counts answers by status.
fn tally_any(gw: &Gateway, n: usize) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(proxy_get(gw, "/", &[]).status).or_insert(0) += 1;
    }
    counts
}

const PASSIVE: &str = "healthchecks:
  passive:
    unhealthy:
      http_failures: 2
      tcp_failures: 1
";

#[test]
fn passive_checks_take_a_failing_target_out_until_the_admin_api_restores_it() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let a = Origin::with_handler(move |_| {
        if flag.load(Ordering::SeqCst) {
            Action::Respond(reply(500, "a-broken"))
        } else {
            Action::Respond(reply(200, "a"))
        }
    });
    let b = named("b");
    let prometheus =
        "plugins:\n  - name: prometheus\n    config:\n      upstream_health_metrics: true\n";
    let gw = Gateway::start(&config(
        PASSIVE,
        &[(target(&a), 100), (target(&b), 100)],
        prometheus,
    ));
    let mut broken = 0;
    for _ in 0..12 {
        let r = proxy_get(&gw, "/", &[]);
        if r.status == 500 {
            broken += 1;
        }
    }
    assert_eq!(
        broken, 2,
        "two 500s mark the target unhealthy, then b takes all"
    );
    let health = gw.admin_get("/upstreams/pool/health").json();
    let state = |health: &serde_json::Value, t: &str| {
        health["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == t)
            .map(|d| d["health"].as_str().unwrap().to_owned())
    };
    assert_eq!(state(&health, &target(&a)).as_deref(), Some("UNHEALTHY"));
    assert_eq!(state(&health, &target(&b)).as_deref(), Some("HEALTHY"));
    assert!(health["node_id"].is_string(), "{health}");
    // Paged as every list.
    let first = gw.admin_get("/upstreams/pool/health?size=1").json();
    assert_eq!(first["data"].as_array().map(Vec::len), Some(1), "{first}");
    assert!(first["node_id"].is_string(), "{first}");
    let next = first["next"].as_str().unwrap_or_else(|| panic!("{first}"));
    let second = gw.admin_get(next).json();
    assert_eq!(second["data"].as_array().map(Vec::len), Some(1), "{second}");
    assert_ne!(second["data"][0]["target"], first["data"][0]["target"]);
    // Kong's `?balancer_health=1`: the upstream as a whole, half of its weight down.
    let balancer = gw
        .admin_get("/upstreams/pool/health?balancer_health=1")
        .json();
    assert_eq!(balancer["data"]["health"], "HEALTHY", "{balancer}");
    assert_eq!(
        balancer["data"]["details"]["weight"],
        serde_json::json!({"total": 200, "available": 100, "unavailable": 100}),
        "{balancer}"
    );
    assert_eq!(balancer["node_id"], health["node_id"], "{balancer}");
    let status = gw.status_json();
    assert_eq!(status["upstreams"]["pool"]["unhealthy"], 1, "{status}");
    assert_eq!(
        status["upstreams"]["pool"]["targets"][target(&a)],
        "unhealthy"
    );
    let metrics = gw.admin_get("/metrics").body_str();
    let line = format!(
        "kong_upstream_target_health{{upstream=\"pool\",target=\"{}\",address=\"{}\",state=\"unhealthy\",subsystem=\"http\"}} 1",
        target(&a),
        a.addr()
    );
    assert!(metrics.contains(&line), "{line}\n{metrics}");
    assert!(metrics.contains(&format!(
        "ringway_upstream_target_healthy{{upstream=\"pool\",target=\"{}\"}} 0",
        target(&a)
    )));

    // Passive checks alone never bring it back (it gets no traffic); the Admin API does.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(tally(&gw, 4, "/", &[]).get("b"), Some(&4));
    // Kong's address-level form: an address the target does not have is none of it.
    let r = http_request(
        gw.admin_addr(),
        "PUT",
        &format!("/upstreams/pool/targets/{}/10.9.9.9:1/healthy", target(&a)),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "{r:?}");
    let r = http_request(
        gw.admin_addr(),
        "PUT",
        &format!(
            "/upstreams/pool/targets/{}/{}/healthy",
            target(&a),
            target(&a)
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 204);
    let counts = tally(&gw, 4, "/", &[]);
    assert_eq!(counts.get("a"), Some(&2), "{counts:?}");
}

#[test]
fn a_success_forgets_the_failures_before_it_unless_successes_are_off() {
    // lua-resty-healthcheck: a success resets every failure counter, when
    // `healthy.successes` is set; with it at 0 (Kong's default) nothing does.
    let failing = |ctx: &Ctx| {
        let status = if ctx.req.target.ends_with("/fail") {
            500
        } else {
            200
        };
        Action::Respond(reply(status, "o"))
    };
    let statuses = |gw: &Gateway, paths: &[&str]| -> Vec<u16> {
        paths.iter().map(|p| proxy_get(gw, p, &[]).status).collect()
    };
    let o = Origin::with_handler(failing);
    let gw = Gateway::start(&config(
        "healthchecks:\n  passive:\n    healthy:\n      successes: 5\n    unhealthy:\n      http_failures: 3\n",
        &[(target(&o), 100)],
        "",
    ));
    assert_eq!(
        statuses(&gw, &["/fail", "/ok", "/fail", "/fail", "/ok"]),
        [500, 200, 500, 500, 200],
        "the 200 between the failures cleared the first one"
    );
    assert_eq!(
        statuses(&gw, &["/fail", "/fail", "/fail", "/ok"]),
        [500, 500, 500, 503]
    );

    let o = Origin::with_handler(failing);
    let gw = Gateway::start(&config(
        "healthchecks:\n  passive:\n    unhealthy:\n      http_failures: 3\n",
        &[(target(&o), 100)],
        "",
    ));
    assert_eq!(
        statuses(&gw, &["/fail", "/ok", "/fail", "/ok", "/fail", "/ok"]),
        [500, 200, 500, 200, 500, 503],
        "without successes counted, failures add up however spread"
    );
}

#[test]
fn every_target_unhealthy_answers_503_fast() {
    let a = Origin::with_handler(|_| Action::Respond(reply(503, "down")));
    let b = Origin::with_handler(|_| Action::Respond(reply(503, "down")));
    let gw = Gateway::start(&config(
        "healthchecks:\n  passive:\n    unhealthy:\n      http_failures: 1\n",
        &[(target(&a), 100), (target(&b), 100)],
        "",
    ));
    for _ in 0..2 {
        assert_eq!(proxy_get(&gw, "/", &[]).status, 503);
    }
    let before = a.requests().len() + b.requests().len();
    let started = Instant::now();
    let r = proxy_get(&gw, "/", &[]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "The upstream server is currently unavailable"
    );
    assert_eq!(
        a.requests().len() + b.requests().len(),
        before,
        "no target was tried"
    );
}

#[test]
fn active_checks_mark_a_target_down_and_bring_it_back() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let a = Origin::with_handler(move |ctx| {
        if ctx.req.path() == "/health" && !flag.load(Ordering::SeqCst) {
            Action::Respond(reply(500, "sick"))
        } else {
            Action::Respond(reply(200, "a"))
        }
    });
    let b = named("b");
    let checks = "healthchecks:
  active:
    http_path: /health
    timeout: 1
    healthy:
      interval: 0.1
      successes: 2
    unhealthy:
      interval: 0.1
      http_failures: 2
";
    let gw = Gateway::start(&config(checks, &[(target(&a), 100), (target(&b), 100)], ""));
    let state = |gw: &Gateway| gw.status_json()["upstreams"]["pool"]["targets"][target(&a)].clone();
    wait_for(Duration::from_secs(5), || {
        (state(&gw) == "unhealthy").then_some(())
    })
    .expect("probes mark a unhealthy");
    assert_eq!(tally(&gw, 4, "/", &[]).get("b"), Some(&4));
    let probes = a.requests();
    let probe = probes.iter().find(|r| r.path() == "/health").unwrap();
    // As Kong's prober: the target's host, without the port.
    assert_eq!(probe.header("host"), Some("127.0.0.1"));
    healthy.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(5), || {
        (state(&gw) == "healthy").then_some(())
    })
    .expect("probes bring a back");
    assert_eq!(tally(&gw, 4, "/", &[]).get("a"), Some(&2));
}

/// Kong's `details.healthy` is whether the balancer can pick a target, checks or not: an
/// upstream without checks whose only target has weight 0 answers 503, and says so.
#[test]
fn balancer_health_without_checks_says_whether_a_target_can_be_picked() {
    let a = named("a");
    let gw = Gateway::start(&config("", &[(target(&a), 0)], ""));
    assert_eq!(proxy_get(&gw, "/", &[]).status, 503);
    let balancer = gw
        .admin_get("/upstreams/pool/health?balancer_health=1")
        .json();
    assert_eq!(balancer["data"]["health"], "HEALTHCHECKS_OFF", "{balancer}");
    assert_eq!(balancer["data"]["details"]["healthy"], false, "{balancer}");
}

#[test]
fn admin_api_lists_upstreams_and_targets() {
    let a = named("a");
    let gw = Gateway::start(&config(
        "algorithm: least-connections\nslots: 100",
        &[(target(&a), 50)],
        "",
    ));
    // Numbers as Kong's JSON writes them: whole ones without a fraction.
    let raw = gw.admin_get("/upstreams/pool").body_str();
    for field in [r#""threshold":0}"#, r#""timeout":1,"#, r#""interval":0,"#] {
        assert!(raw.contains(field), "{field} in {raw}");
    }
    let list = gw.admin_get("/upstreams").json();
    assert_eq!(list["data"][0]["name"], "pool");
    assert_eq!(list["data"][0]["algorithm"], "least-connections");
    assert_eq!(list["data"][0]["slots"], 100);
    assert_eq!(
        list["data"][0]["healthchecks"]["passive"]["unhealthy"]["http_statuses"],
        serde_json::json!([429, 500, 503])
    );
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.admin_get(&format!("/upstreams/{id}")).json()["name"],
        "pool"
    );
    let targets = gw.admin_get("/upstreams/pool/targets").json();
    assert_eq!(targets["data"][0]["target"], target(&a));
    assert_eq!(targets["data"][0]["weight"], 50);
    assert_eq!(targets["data"][0]["upstream"]["id"], id);
    let health = gw.admin_get("/upstreams/pool/health").json();
    assert_eq!(health["data"][0]["health"], "HEALTHCHECKS_OFF");
    assert_eq!(gw.admin_get("/upstreams/nope").status, 404);
    // Declared in the file: read-only, as every file entity.
    for (method, path) in [
        ("DELETE", "/upstreams/pool".to_owned()),
        ("PATCH", "/upstreams/pool".to_owned()),
        ("DELETE", format!("/upstreams/pool/targets/{}", target(&a))),
    ] {
        let r = http_request(gw.admin_addr(), method, &path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(
            r.json()["message"],
            "entity is managed by the declarative config file",
            "{r:?}"
        );
    }
    let r = http_request(gw.admin_addr(), "PATCH", "/upstreams", &[], None);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS, POST"), "{r:?}");
    let path = format!("/upstreams/pool/targets/{}/healthy", target(&a));
    for method in ["DELETE", "GET"] {
        let r = http_request(gw.admin_addr(), method, &path, &[], None);
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("OPTIONS, POST, PUT")),
            "{method}: {r:?}"
        );
    }
    let r = http_request(
        gw.admin_addr(),
        "DELETE",
        "/upstreams/pool/bogus/deep",
        &[],
        None,
    );
    assert_eq!(r.status, 404, "no endpoint there: {r:?}");
}

/// Kong's upstream endpoints write too: an upstream and its targets created, changed
/// and deleted through the Admin API take effect on the next request, and survive a
/// restart.
#[test]
fn admin_api_writes_upstreams_and_targets() {
    let (a, b) = (named("a"), named("b"));
    let gw = Gateway::start(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    host: api-pool\n    routes:\n      - paths: [\"/\"]\n",
    );
    assert_eq!(proxy_get(&gw, "/", &[]).status, 503, "no upstream yet");
    let r = admin_form(
        &gw,
        "POST",
        "/upstreams",
        &[("name", "api-pool"), ("tags", "t1")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let up = r.json();
    assert_eq!(
        (&up["name"], &up["tags"]),
        (&json!("api-pool"), &json!(["t1"])),
        "{up}"
    );
    assert!(up["created_at"].as_u64().is_some_and(|t| t > 0), "{up}");
    let r = admin_form(&gw, "POST", "/upstreams", &[("name", "API-pool")]);
    assert_eq!(r.status, 409, "a name is unique: {r:?}");
    assert_eq!(proxy_get(&gw, "/", &[]).status, 503, "no target yet");

    for origin in [&a, &b] {
        let r = admin_form(
            &gw,
            "POST",
            "/upstreams/api-pool/targets",
            &[("target", &target(origin)), ("weight", "100")],
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json()["upstream"]["id"], up["id"], "{r:?}");
        assert_eq!(r.json()["weight"], 100, "{r:?}");
    }
    let r = admin_form(
        &gw,
        "POST",
        "/upstreams/api-pool/targets",
        &[("target", &target(&a))],
    );
    assert_eq!(r.status, 409, "a target once per upstream: {r:?}");
    let r = admin_form(
        &gw,
        "POST",
        "/upstreams/nope/targets",
        &[("target", "10.0.0.1")],
    );
    assert_eq!(r.status, 404, "{r:?}");
    let r = admin_form(
        &gw,
        "POST",
        "/upstreams/api-pool/targets",
        &[("target", "bad host:x")],
    );
    assert_eq!(r.status, 400, "{r:?}");
    let seen = tally(&gw, 20, "/", &[]);
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&10), Some(&10)),
        "{seen:?}"
    );

    // A PUT takes the target from the path; a change onto another target is a 409.
    let at_b = format!("/upstreams/api-pool/targets/{}", target(&b));
    let r = admin_form(&gw, "PUT", &at_b, &[("weight", "50")]);
    assert_eq!((r.status, &r.json()["weight"]), (200, &json!(50)), "{r:?}");
    assert_eq!(r.json()["target"], json!(target(&b)), "{r:?}");
    let r = admin_form(&gw, "PATCH", &at_b, &[("target", &target(&a))]);
    assert_eq!(r.status, 409, "{r:?}");
    let r = admin_form(&gw, "PUT", "/upstreams/api-pool/targets/127.0.0.9:7", &[]);
    assert_eq!(
        (r.status, &r.json()["target"]),
        (200, &json!("127.0.0.9:7")),
        "PUT creates: {r:?}"
    );
    let r = http_request(
        gw.admin_addr(),
        "DELETE",
        "/upstreams/api-pool/targets/127.0.0.9:7",
        &[],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    // A weight out of range, either side, in Kong's words.
    for weight in ["-1", "65536"] {
        let r = admin_form(
            &gw,
            "POST",
            "/upstreams/api-pool/targets",
            &[("target", "127.0.0.9:8"), ("weight", weight)],
        );
        assert_eq!(
            (r.status, &r.json()["fields"]["weight"]),
            (400, &json!("value should be between 0 and 65535")),
            "weight {weight}: {r:?}"
        );
    }
    // Gone now: a target is found under its upstream, so a second DELETE is Kong's 404.
    let r = http_request(
        gw.admin_addr(),
        "DELETE",
        "/upstreams/api-pool/targets/127.0.0.9:7",
        &[],
        None,
    );
    assert_eq!(
        (r.status, &r.json()["message"]),
        (404, &json!("Not found")),
        "{r:?}"
    );
    // Hashing fields show as given, the fallback's cookie too; `hash_on` alone means
    // consistent hashing (as Kong reads files from before `algorithm`); what GET shows
    // a PUT takes back.
    let r = admin_form(
        &gw,
        "POST",
        "/upstreams",
        &[
            ("name", "hashed"),
            ("hash_on", "header"),
            ("hash_on_header", "x-a"),
            ("hash_fallback", "cookie"),
            ("hash_on_cookie", "ck"),
            ("hash_fallback_query_arg", "unused"),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let shown = r.json();
    assert_eq!(shown["algorithm"], "consistent-hashing", "{shown}");
    assert_eq!(shown["hash_on_cookie"], "ck", "{shown}");
    assert_eq!(shown["hash_fallback_query_arg"], "unused", "{shown}");
    let r = admin_json(&gw, "PUT", "/upstreams/hashed", &shown);
    assert_eq!(r.status, 200, "GET's answer, put back: {r:?}");
    let r = http_request(gw.admin_addr(), "DELETE", "/upstreams/hashed", &[], None);
    assert_eq!(r.status, 204, "{r:?}");
    let r = admin_form(&gw, "POST", "/upstreams", &[("name", "127.0.0.1")]);
    assert_eq!(r.status, 400, "an address for a name: {r:?}");
    assert_eq!(
        r.json()["fields"]["name"],
        "Invalid name; no ip addresses allowed",
        "{r:?}"
    );
    let r = admin_form(&gw, "POST", "/upstreams", &[("name", "spare")]);
    assert_eq!(r.status, 201, "{r:?}");
    let r = admin_form(&gw, "PATCH", "/upstreams/spare", &[("name", "api-pool")]);
    assert_eq!(r.status, 409, "a rename onto another upstream: {r:?}");
    let r = http_request(gw.admin_addr(), "DELETE", "/upstreams/spare", &[], None);
    assert_eq!(r.status, 204, "{r:?}");

    let r = admin_form(&gw, "PATCH", &at_b, &[("weight", "0")]);
    assert_eq!((r.status, &r.json()["weight"]), (200, &json!(0)), "{r:?}");
    assert_eq!(tally(&gw, 6, "/", &[]).get("a"), Some(&6));

    // A partial `healthchecks` merges into the checks there are.
    let r = admin_json(
        &gw,
        "PATCH",
        "/upstreams/api-pool",
        &json!({"healthchecks": {"passive": {"unhealthy": {"http_failures": 3}}, "active": {"timeout": 2.5}}}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_str().contains(r#""timeout":2.5,"#), "{r:?}");
    let passive = &r.json()["healthchecks"]["passive"];
    assert_eq!(passive["unhealthy"]["http_failures"], 3, "{passive}");
    assert_eq!(
        passive["unhealthy"]["http_statuses"],
        json!([429, 500, 503]),
        "{passive}"
    );
    // The same from a form: one status is a one-item list.
    let r = admin_form(
        &gw,
        "PATCH",
        "/upstreams/api-pool",
        &[("healthchecks.active.healthy.http_statuses", "204")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["healthchecks"]["active"]["healthy"]["http_statuses"],
        json!([204]),
        "{r:?}"
    );

    // Durable: a restart serves the same upstream and targets.
    let mut gw = gw;
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    assert_eq!(tally(&gw, 4, "/", &[]).get("a"), Some(&4));
    let r = http_request(
        gw.admin_addr(),
        "DELETE",
        &format!("/upstreams/api-pool/targets/{}", target(&a)),
        &[],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        proxy_get(&gw, "/", &[]).status,
        503,
        "only a weight-0 target left"
    );
    // The balancer's own health says so (passive checks are on since the PATCH above).
    let balancer = gw
        .admin_get("/upstreams/api-pool/health?balancer_health=1")
        .json();
    assert_eq!(
        (
            &balancer["data"]["health"],
            &balancer["data"]["details"]["healthy"]
        ),
        (&json!("UNHEALTHY"), &json!(false)),
        "{balancer}"
    );

    // Deleting the upstream takes its targets with it.
    let r = http_request(gw.admin_addr(), "DELETE", "/upstreams/api-pool", &[], None);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(gw.admin_get("/upstreams/api-pool").status, 404);
    assert!(gw.admin_get("/upstreams").json()["data"]
        .as_array()
        .is_some_and(Vec::is_empty));
    let r = admin_form(&gw, "POST", "/upstreams", &[("name", "api-pool")]);
    assert_eq!(r.status, 201, "{r:?}");
    let targets = gw.admin_get("/upstreams/api-pool/targets").json();
    assert_eq!(targets["data"], json!([]), "{targets}");

    // A target marked unhealthy, deleted and created again starts healthy, as Kong's: a
    // new target, whatever address it has.
    let add_a = || {
        let r = admin_form(
            &gw,
            "POST",
            "/upstreams/api-pool/targets",
            &[("target", &target(&a))],
        );
        assert_eq!(r.status, 201, "{r:?}");
    };
    add_a();
    let at_a = format!("/upstreams/api-pool/targets/{}", target(&a));
    let r = http_request(
        gw.admin_addr(),
        "PUT",
        &format!("{at_a}/unhealthy"),
        &[],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(proxy_get(&gw, "/", &[]).status, 503, "marked unhealthy");
    let r = http_request(gw.admin_addr(), "DELETE", &at_a, &[], None);
    assert_eq!(r.status, 204, "{r:?}");
    add_a();
    assert_eq!(
        proxy_get(&gw, "/", &[]).status,
        200,
        "created again: healthy"
    );
}

#[test]
fn invalid_upstreams_are_reported_with_their_paths() {
    let yaml = "_format_version: \"3.0\"
upstreams:
  - name: pool
    algorithm: latency
    targets:
      - target: \"10.0.0.1:0\"
      - target: 10.0.0.2:80
      - target: 10.0.0.2:80
        weight: 70000
  - name: hashed
    hash_on: header
  - name: pool
  - name: rr
    algorithm: round-robin
    hash_on: ip
  - name: 127.0.0.1
  - name: \"[::1]\"
  - name: api:80
  - name: ranges
    slots: 5
    healthchecks:
      threshold: 101
      active:
        timeout: 70000
        unhealthy: {tcp_failures: 300, http_statuses: [99]}
targets:
  - target: 10.0.0.3
    upstream: missing
";
    check_refuses(
        yaml,
        &[
            "upstreams[0].algorithm: the 'latency' algorithm is not supported",
            "upstreams[1].hash_on_header: required field missing (hash_on is 'header')",
            "upstreams[3].hash_on: hashing needs algorithm 'consistent-hashing'",
            // Kong's: an upstream named as an address would take that address's services.
            "upstreams[4].name: Invalid name; no ip addresses allowed",
            "upstreams[5].name: Invalid name; no ip addresses allowed",
            "upstreams[6].name: Invalid name; no port allowed",
            "targets[0].upstream: no upstream named 'missing'",
            // Found beside the refused algorithm, not hidden by it.
            "upstreams[0].targets[2].weight: value should be between 0 and 65535",
            "upstreams[2].name: duplicate upstream 'pool'",
            // Ranges in Kong's words.
            "upstreams[7].slots: value should be between 10 and 65536",
            "upstreams[7].healthchecks.threshold: value should be between 0 and 100",
            "upstreams[7].healthchecks.active.timeout: value should be between 0 and 65535",
            "upstreams[7].healthchecks.active.unhealthy.tcp_failures: value should be between 0 and 255",
            "upstreams[7].healthchecks.active.unhealthy.http_statuses[0]: value should be between 100 and 999",
        ],
    );
    // Problems in nested targets are found even when their upstream is broken.
    let yaml = "_format_version: \"3.0\"
upstreams:
  - name: pool
    targets:
      - target: \"10.0.0.1:0\"
      - target: 10.0.0.2:80
      - target: 10.0.0.2:80
        weight: 70000
";
    check_refuses(
        yaml,
        &[
            "upstreams[0].targets[0].target: invalid target '10.0.0.1:0'",
            "upstreams[0].targets[2].weight: value should be between 0 and 65535",
        ],
    );
}

#[test]
fn values_that_reach_headers_are_validated() {
    let yaml = r#"_format_version: "3.0"
upstreams:
  - name: pool
    host_header: "api:80\r\nX-Evil: 1"
  - name: hashed
    algorithm: consistent-hashing
    hash_on: cookie
    hash_on_cookie: "a=b"
    hash_on_cookie_path: "/; Secure"
  - name: probed
    healthchecks:
      active:
        timeout: 0
        concurrency: 100
        healthy: {interval: 1}
"#;
    check_refuses(
        yaml,
        &[
            "upstreams[0].host_header: invalid host",
            "upstreams[1].hash_on_cookie: invalid cookie name 'a=b'",
            "upstreams[1].hash_on_cookie_path: invalid cookie path '/; Secure'",
            "upstreams[2].healthchecks.active.timeout: must be greater than 0",
            "upstreams[2].healthchecks.active.concurrency: must be between 1 and 64",
        ],
    );
}
