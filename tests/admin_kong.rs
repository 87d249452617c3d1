//! The Admin API where it must answer as Kong's does, black box (SPEC §5: services,
//! routes, plugins, consumers and groups through Kong's endpoints, form-encoded or JSON
//! bodies, `POST /config` with Kong's `config=` form field; Kong's behaviour:
//! research/kong-semantics.md §1.6): typed form values, multipart config uploads,
//! `url` on updates, PUT as an upsert that replaces, tags and pagination, id checks,
//! `updated_at`, nested reads and 404 against 405.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn base_config(origin: &Origin) -> String {
    seed_services_config(origin, false, "")
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn ok(r: &Response, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {r:?}");
    r.json()
}

/// The request target the origin saw for a proxied GET.
fn upstream_target(gw: &Gateway, path: &str) -> String {
    let r = proxy_get(gw, path, &[]);
    assert_eq!(r.status, 200, "GET {path} through the proxy: {r:?}");
    r.header("x-origin-target")
        .unwrap_or_else(|| panic!("no X-Origin-Target: {r:?}"))
        .to_string()
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\n").as_bytes(),
        );
        if filename.is_some() {
            body.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

// ---------------------------------------------------------------------------------------
// 1. form values typed by the schema

#[test]
fn form_encoded_services_and_routes_take_numbers_booleans_lists_and_references() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let port = o.port().to_string();
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[
            ("name", "f1"),
            ("host", "127.0.0.1"),
            ("port", &port),
            ("retries", "2"),
            ("connect_timeout", "500"),
            ("enabled", "true"),
        ],
    );
    let f1 = ok(&r, 201, "POST /services with form numbers");
    assert_eq!(f1["port"], json!(o.port()), "{f1}");
    assert_eq!(f1["retries"], 2, "{f1}");
    assert_eq!(f1["connect_timeout"], 500, "{f1}");
    assert_eq!(f1["enabled"], true, "{f1}");

    let r = admin_form(
        &gw,
        "POST",
        "/routes",
        &[
            ("name", "f1r"),
            ("paths[]", "/f1"),
            ("service.name", "f1"),
            ("strip_path", "false"),
            ("regex_priority", "3"),
            ("methods", "GET"),
            ("methods", "POST"),
            ("response_buffering", "false"),
        ],
    );
    let f1r = ok(&r, 201, "POST /routes with form booleans and service.name");
    assert_eq!(f1r["strip_path"], false, "{f1r}");
    // Kong's buffering switches show as given, true by default.
    assert_eq!(f1r["response_buffering"], false, "{f1r}");
    assert_eq!(f1r["request_buffering"], true, "{f1r}");
    assert_eq!(f1r["regex_priority"], 3, "{f1r}");
    assert_eq!(f1r["paths"], json!(["/f1"]), "{f1r}");
    assert_eq!(f1r["methods"], json!(["GET", "POST"]), "{f1r}");
    assert_eq!(f1r["service"]["id"], f1["id"], "{f1r}");
    // strip_path=false took effect: the prefix reaches the origin.
    assert_eq!(upstream_target(&gw, "/f1/x"), "/f1/x");

    // `service.id=` and a single `paths=` (a one-item list) work too.
    let r = admin_form(
        &gw,
        "POST",
        "/routes",
        &[
            ("name", "f2r"),
            ("paths", "/f2"),
            ("service.id", &id_of(&f1)),
            ("preserve_host", "true"),
        ],
    );
    let f2r = ok(&r, 201, "POST /routes with service.id");
    assert_eq!(f2r["paths"], json!(["/f2"]), "{f2r}");
    assert_eq!(f2r["preserve_host"], true, "{f2r}");
    assert_eq!(f2r["service"]["id"], f1["id"], "{f2r}");
    assert_eq!(
        upstream_target(&gw, "/f2/y"),
        "/y",
        "strip_path defaults to true"
    );

    // Kong's indexed list items (`paths[2]=`), given out of order, are placed by index.
    let r = admin_form(
        &gw,
        "POST",
        "/services/f1/routes",
        &[("name", "f3r"), ("paths[2]", "/f3b"), ("paths[1]", "/f3a")],
    );
    let f3r = ok(&r, 201, "POST /services/f1/routes with indexed paths");
    assert_eq!(f3r["paths"], json!(["/f3a", "/f3b"]), "{f3r}");
    assert_eq!(upstream_target(&gw, "/f3b/z"), "/z");

    // A value that is not a number is still a field error, not a crash.
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "bad"), ("host", "h"), ("port", "http")],
    );
    let bad = ok(&r, 400, "port=http");
    assert!(bad["fields"]["port"].is_string(), "{bad}");

    // Consumers, groups and credentials: tags from forms are lists.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "tagged"), ("tags", "gold")],
    );
    assert_eq!(ok(&r, 201, "consumer tags")["tags"], json!(["gold"]));
    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups",
        &[("name", "g1"), ("tags[]", "a"), ("tags[]", "b")],
    );
    assert_eq!(ok(&r, 201, "group tags")["tags"], json!(["a", "b"]));
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/tagged/jwt",
        &[("key", "k1"), ("tags", "t")],
    );
    assert_eq!(ok(&r, 201, "jwt tags")["tags"], json!(["t"]));
    // A plugin's enabled flag from a form.
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[
            ("name", "correlation-id"),
            ("route.name", "f1r"),
            ("enabled", "false"),
        ],
    );
    let plugin = ok(&r, 201, "plugin enabled=false");
    assert_eq!(plugin["enabled"], false, "{plugin}");
    assert_eq!(plugin["route"]["id"], f1r["id"], "{plugin}");
}

// ---------------------------------------------------------------------------------------
// 2. POST /config as multipart/form-data

#[test]
fn post_config_takes_a_multipart_config_file() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let yaml = format!(
        "_format_version: \"3.0\"\r\nservices:\r\n  - name: uploaded\r\n    url: {}/base\r\n    routes:\r\n      - name: up\r\n        paths: [\"/up\"]\r\n",
        o.url()
    );
    let boundary = "------------------------d74496d66958873e";
    let body = multipart(boundary, &[("config", Some("kong.yml"), yaml.as_bytes())]);
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = http_request(gw.admin_addr(), "POST", "/config", &[], Some((&ct, &body)));
    let answer = ok(&r, 201, "POST /config -F config=@kong.yml");
    assert!(answer["configuration_hash"].is_string(), "{answer}");
    assert_eq!(upstream_target(&gw, "/up/z"), "/base/z");
    let r = gw.admin_get("/services/uploaded");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.admin_get("/services/user-service").status, 404);

    // A plain `-F config=<text>` part (no filename) with other parts around it.
    let yaml2 = yaml.replace("uploaded", "uploaded-2");
    let body = multipart(
        "XyZ",
        &[("note", None, b"hello"), ("config", None, yaml2.as_bytes())],
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("multipart/form-data; boundary=\"XyZ\"", &body)),
    );
    ok(&r, 201, "config part without a filename");
    assert_eq!(gw.admin_get("/services/uploaded-2").status, 200);

    // Malformed bodies are 400 with a reason, and the config stays.
    for (what, ct, body) in [
        (
            "no boundary",
            "multipart/form-data".to_string(),
            body.clone(),
        ),
        (
            "wrong boundary",
            "multipart/form-data; boundary=other".to_string(),
            body.clone(),
        ),
        (
            "truncated",
            "multipart/form-data; boundary=XyZ".to_string(),
            body[..body.len() - 12].to_vec(),
        ),
    ] {
        let r = http_request(gw.admin_addr(), "POST", "/config", &[], Some((&ct, &body)));
        let j = ok(&r, 400, what);
        assert!(
            j["message"]
                .as_str()
                .is_some_and(|m| m.contains("multipart")),
            "{what}: {j}"
        );
    }
    let no_config = multipart("b1", &[("other", None, b"x")]);
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("multipart/form-data; boundary=b1", &no_config)),
    );
    assert!(ok(&r, 400, "no config part")["fields"]["config"].is_string());
    let invalid = multipart("b2", &[("config", Some("k.yml"), b"services: [{name: x}]")]);
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("multipart/form-data; boundary=b2", &invalid)),
    );
    assert_eq!(r.status, 400, "an invalid config: {r:?}");
    assert_eq!(
        gw.admin_get("/services/uploaded-2").status,
        200,
        "old config kept"
    );
    assert_no_panic(&gw.stderr_text());
}

// ---------------------------------------------------------------------------------------
// 3. url on PATCH

/// `POST /config` bodies that are not what their type says get an answer naming the
/// mistake: a file sent as a form without `config=` (curl's default type), and JSON
/// that does not parse as JSON.
#[test]
fn post_config_names_a_body_sent_under_the_wrong_type() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let yaml = "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://127.0.0.1:9\n    routes:\n      - paths: [\"/x[0]\"]\n";
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/x-www-form-urlencoded", yaml.as_bytes())),
    );
    let j = ok(&r, 400, "a YAML file sent as a form");
    assert!(
        j["fields"]["config"]
            .as_str()
            .is_some_and(|m| m.starts_with("expected a declarative configuration")),
        "{j}"
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/json", br#"{"_format_version":"3.0""#)),
    );
    let j = ok(&r, 400, "truncated JSON");
    assert!(
        j["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Cannot parse JSON body")),
        "{j}"
    );
    assert_eq!(
        gw.admin_get("/services/user-service").status,
        200,
        "config kept"
    );
}

#[test]
fn patch_service_with_url_replaces_protocol_host_port_and_path() {
    let o = Origin::start();
    let other = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_json(
        &gw,
        "POST",
        "/services",
        &json!({ "name": "s1", "host": "127.0.0.1", "port": other.port() }),
    );
    ok(&r, 201, "POST /services");
    let r = admin_json(
        &gw,
        "POST",
        "/services/s1/routes",
        &json!({ "name": "s1r", "paths": ["/s1"] }),
    );
    ok(&r, 201, "POST /services/s1/routes");

    let url = format!("http://127.0.0.1:{}/pp", o.port());
    let r = admin_json(&gw, "PATCH", "/services/s1", &json!({ "url": url }));
    let s1 = ok(&r, 200, "PATCH url over host/port");
    assert_eq!(s1["host"], "127.0.0.1", "{s1}");
    assert_eq!(s1["port"], json!(o.port()), "{s1}");
    assert_eq!(s1["path"], "/pp", "{s1}");
    assert_eq!(upstream_target(&gw, "/s1/a"), "/pp/a");
    assert!(other.requests().is_empty(), "the old host got requests");

    // One part on a service stored with a url keeps what the url said of the rest.
    let r = admin_form(&gw, "PATCH", "/services/s1", &[("path", "/qq")]);
    let s1 = ok(&r, 200, "PATCH path after url");
    assert_eq!(s1["host"], "127.0.0.1", "{s1}");
    assert_eq!(s1["port"], json!(o.port()), "{s1}");
    assert_eq!(s1["path"], "/qq", "{s1}");
    assert_eq!(upstream_target(&gw, "/s1/b"), "/qq/b");
}

// ---------------------------------------------------------------------------------------
// 4. PUT is an upsert that replaces

#[test]
fn put_creates_or_replaces_the_whole_entity() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));

    // consumers: fields not given go back to their defaults
    let r = admin_form(
        &gw,
        "PUT",
        "/consumers/bob",
        &[("custom_id", "cb1"), ("tags", "t1")],
    );
    let bob = ok(&r, 200, "PUT creates a consumer");
    assert_eq!(bob["tags"], json!(["t1"]), "{bob}");
    let r = admin_form(&gw, "PUT", "/consumers/bob", &[("custom_id", "cb3")]);
    let bob2 = ok(&r, 200, "PUT replaces a consumer");
    assert_eq!(bob2["id"], bob["id"], "PUT keeps the id");
    assert_eq!(bob2["custom_id"], "cb3", "{bob2}");
    assert!(
        bob2["tags"].is_null(),
        "PUT clears what it does not give: {bob2}"
    );
    assert_eq!(bob2["created_at"], bob["created_at"], "{bob2}");

    // a consumer's JWT credential, by key or id: replaced whole, or created
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/bob/jwt",
        &[
            ("key", "h1"),
            ("secret", "hs"),
            ("algorithm", "HS384"),
            ("tags", "a"),
        ],
    );
    let h1 = ok(&r, 201, "a credential");
    let r = admin_json(&gw, "PUT", "/consumers/bob/jwt/h1", &json!({}));
    let h1b = ok(&r, 200, "PUT replaces a credential");
    assert_eq!((&h1b["id"], &h1b["key"]), (&h1["id"], &h1["key"]), "{h1b}");
    assert_eq!(h1b["algorithm"], "HS256", "back to the default: {h1b}");
    assert!(h1b["tags"].is_null(), "{h1b}");
    let secret = h1b["secret"].as_str().unwrap_or_default();
    assert!(secret.len() == 32 && secret != "hs", "a new secret: {h1b}");
    assert_eq!(h1b["created_at"], h1["created_at"], "{h1b}");
    let r = admin_json(
        &gw,
        "PUT",
        "/consumers/bob/jwt/h2",
        &json!({"secret": "zz"}),
    );
    let h2 = ok(&r, 200, "PUT creates a credential with the key in the path");
    assert_eq!(
        (&h2["key"], &h2["secret"]),
        (&json!("h2"), &json!("zz")),
        "{h2}"
    );
    assert_eq!(h2["consumer"]["id"], bob["id"], "{h2}");
    ok(
        &gw.admin_get("/consumers/bob/jwt/h2"),
        200,
        "the created credential",
    );
    let id = "4f9c8ac4-6a7e-4a68-9fbf-6f1b1c4ea0a1";
    let r = admin_json(&gw, "PUT", &format!("/consumers/bob/jwt/{id}"), &json!({}));
    let by_id = ok(&r, 200, "PUT creates a credential with the id in the path");
    assert_eq!(by_id["id"], id, "{by_id}");
    assert_eq!(
        by_id["key"].as_str().map(str::len),
        Some(32),
        "a generated key: {by_id}"
    );
    ok(
        &admin_form(&gw, "PUT", "/consumers/carl", &[]),
        200,
        "another consumer",
    );
    let r = admin_json(&gw, "PUT", "/consumers/carl/jwt/h2", &json!({}));
    assert_eq!(r.status, 404, "another consumer's credential: {r:?}");
    let r = admin_json(&gw, "PUT", "/consumers/nobody/jwt/h9", &json!({}));
    assert_eq!(r.status, 404, "an unknown consumer: {r:?}");
    // A key that looks like an id is still the key the path names, and it stays.
    let uuid_key = "0b5e7c1e-2f4a-4c6b-9d8e-7f6a5b4c3d2e";
    let r = admin_form(&gw, "POST", "/consumers/bob/jwt", &[("key", uuid_key)]);
    let made = ok(&r, 201, "a credential keyed like an id");
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/consumers/bob/jwt/{uuid_key}"),
        &json!({}),
    );
    let put = ok(&r, 200, "PUT by that key");
    assert_eq!(
        (&put["id"], &put["key"]),
        (&made["id"], &json!(uuid_key)),
        "{put}"
    );

    // services: create when missing, replace (defaults back) when present
    let r = admin_form(
        &gw,
        "PUT",
        "/services/f2",
        &[("url", &o.url()), ("retries", "2")],
    );
    let f2 = ok(&r, 200, "PUT creates a service");
    assert_eq!(f2["name"], "f2", "{f2}");
    assert_eq!(f2["retries"], 2, "{f2}");
    let url = format!("{}/v2", o.url());
    let r = admin_form(&gw, "PUT", "/services/f2", &[("url", &url)]);
    let f2b = ok(&r, 200, "PUT replaces a service given a url");
    assert_eq!(f2b["id"], f2["id"], "{f2b}");
    assert_eq!(f2b["path"], "/v2", "{f2b}");
    assert_eq!(f2b["retries"], 5, "retries back to Kong's default: {f2b}");

    // routes
    let r = admin_form(
        &gw,
        "PUT",
        "/routes/newr",
        &[("paths", "/newr"), ("service.name", "f2")],
    );
    let newr = ok(&r, 200, "PUT creates a route");
    assert_eq!(newr["name"], "newr", "{newr}");
    assert_eq!(upstream_target(&gw, "/newr/x"), "/v2/x");
    let r = admin_form(
        &gw,
        "PUT",
        "/routes/newr",
        &[
            ("paths", "/other"),
            ("service.name", "f2"),
            ("strip_path", "false"),
        ],
    );
    let newr2 = ok(&r, 200, "PUT replaces a route");
    assert_eq!(newr2["id"], newr["id"]);
    assert_eq!(newr2["paths"], json!(["/other"]), "{newr2}");
    assert_eq!(proxy_get(&gw, "/newr/x", &[]).status, 404, "old path gone");

    // nested under a service: the route is created there, or moved there when replaced
    let r = admin_form(
        &gw,
        "PUT",
        "/services/f2/routes/nested",
        &[("paths", "/nested")],
    );
    let nested = ok(&r, 200, "PUT /services/{s}/routes/{r} creates a route");
    assert_eq!(nested["service"]["id"], f2["id"], "{nested}");
    assert_eq!(upstream_target(&gw, "/nested/x"), "/v2/x");
    let r = admin_form(
        &gw,
        "PUT",
        "/services/nobody/routes/nested",
        &[("paths", "/n")],
    );
    assert_eq!(r.status, 404, "an unknown service: {r:?}");
    // the service behind a route, replaced whole
    let r = admin_form(&gw, "PUT", "/routes/nested/service", &[("url", &o.url())]);
    let behind = ok(&r, 200, "PUT /routes/{r}/service");
    assert_eq!(
        (&behind["id"], &behind["path"], &behind["name"]),
        (&f2["id"], &Value::Null, &Value::Null),
        "replaced whole, by id: {behind}"
    );
    assert_eq!(upstream_target(&gw, "/nested/x"), "/x");

    // plugins nested under their scope, by id
    let scoped = "0d1f3c5e-7a9b-4c2d-8e6f-1a3b5c7d9e0f";
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/services/{}/plugins/{scoped}", id_of(&f2)),
        &json!({ "name": "rate-limiting", "config": { "minute": 50 } }),
    );
    let sp = ok(&r, 200, "PUT /services/{s}/plugins/{p} creates a plugin");
    assert_eq!(
        (&sp["id"], &sp["service"]["id"]),
        (&json!(scoped), &f2["id"]),
        "{sp}"
    );
    let r = proxy_get(&gw, "/nested/x", &[]);
    assert_eq!(r.header("x-ratelimit-limit-minute"), Some("50"), "{r:?}");

    // plugins, by id
    let pid = "6f0b5a8e-3f43-4a8e-9d3c-2b1f7f1c9a01";
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/plugins/{pid}"),
        &json!({ "name": "correlation-id", "config": { "header_name": "X-A" } }),
    );
    let p = ok(&r, 200, "PUT creates a plugin with that id");
    assert_eq!(p["id"], pid, "{p}");
    assert_eq!(p["config"]["header_name"], "X-A", "{p}");
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/plugins/{pid}"),
        &json!({ "name": "correlation-id", "config": { "generator": "tracker" } }),
    );
    let p2 = ok(&r, 200, "PUT replaces a plugin");
    assert_eq!(p2["config"]["generator"], "tracker", "{p2}");
    assert_eq!(
        p2["config"]["header_name"], "Kong-Request-ID",
        "the config is replaced, not merged: {p2}"
    );
    // Not an id: Kong's other endpoint key for plugins, instance_name; a new global
    // correlation-id under it is the second one, a conflict.
    let r = admin_json(
        &gw,
        "PUT",
        "/plugins/not-a-uuid",
        &json!({ "name": "correlation-id" }),
    );
    assert_eq!(r.status, 409, "PUT /plugins/{{instance_name}}: {r:?}");

    // consumer groups
    let r = admin_form(&gw, "PUT", "/consumer_groups/newg", &[("tags", "x")]);
    let g = ok(&r, 200, "PUT creates a consumer group");
    assert_eq!(g["name"], "newg", "{g}");
    let r = admin_form(&gw, "PUT", "/consumer_groups/newg", &[]);
    let g2 = ok(&r, 200, "PUT replaces a consumer group");
    assert_eq!(g2["id"], g["id"]);
    assert!(g2["tags"].is_null(), "{g2}");

    // A PUT that would take another entity's name is a conflict.
    let r = admin_form(
        &gw,
        "PUT",
        &format!("/services/{}", id_of(&f2)),
        &[("name", "user-service"), ("url", &o.url())],
    );
    assert_eq!(r.status, 409, "{r:?}");
    // File-declared entities stay read-only.
    let r = admin_form(&gw, "PUT", "/services/user-service", &[("url", &o.url())]);
    assert_eq!(r.status, 405, "{r:?}");
    let r = admin_form(&gw, "PUT", "/routes/user-routes", &[("paths", "/x")]);
    assert_eq!(r.status, 405, "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 5. tags and pagination

#[test]
fn lists_filter_by_tags_and_page_with_size_and_offset() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for (name, tags) in [
        ("c1", vec!["a", "b"]),
        ("c2", vec!["a"]),
        ("c3", vec!["b"]),
        ("c4", vec!["c"]),
        ("c5", vec![]),
    ] {
        let r = admin_json(
            &gw,
            "POST",
            "/consumers",
            &json!({ "username": name, "tags": tags }),
        );
        ok(&r, 201, name);
    }
    let names = |path: &str| -> Vec<String> {
        let j = ok(&gw.admin_get(path), 200, path);
        let mut names: Vec<String> = j["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {j}"))
            .iter()
            .map(|c| c["username"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("/consumers?tags=a,b"), ["c1"], "AND");
    assert_eq!(names("/consumers?tags=a/b"), ["c1", "c2", "c3"], "OR");
    assert_eq!(names("/consumers?tags=c"), ["c4"]);
    // Of repeated parameters, the first, as Kong reads them.
    assert_eq!(names("/consumers?tags=c&tags=a"), ["c4"]);
    assert!(names("/consumers?tags=zzz").is_empty());
    let r = gw.admin_get("/consumers?tags=a,b/c");
    assert_eq!(r.status, 400, "mixed separators: {r:?}");
    // At most five tags, as Kong allows.
    assert_eq!(names("/consumers?tags=a/b/c/x/y"), ["c1", "c2", "c3", "c4"]);
    for many in ["a,b,c,d,e,f", "a/b/c/d/e/f"] {
        let r = gw.admin_get(&format!("/consumers?tags={many}"));
        let body = ok(&r, 400, many);
        assert_eq!(
            (&body["code"], &body["message"]),
            (
                &json!(11),
                &json!("invalid option (tags: cannot query more than 5 tags)")
            ),
            "{body}"
        );
    }

    // Admin-created services and routes carry their tags too.
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "ts"), ("url", &o.url()), ("tags", "blue")],
    );
    assert_eq!(ok(&r, 201, "tagged service")["tags"], json!(["blue"]));
    let j = ok(&gw.admin_get("/services?tags=blue"), 200, "services by tag");
    assert_eq!(j["data"].as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(j["data"][0]["name"], "ts", "{j}");

    // Pages of two, followed through `next`.
    let first = ok(&gw.admin_get("/consumers?size=2"), 200, "size=2");
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2), "{first}");
    let offset = first["offset"].as_str().expect("offset when there is more");
    let next = first["next"].as_str().expect("next when there is more");
    assert!(next.starts_with("/consumers?offset="), "{next}");
    assert!(next.contains("size=2"), "{next}");
    assert!(
        next.contains(offset) || next.contains(&offset.replace('=', "%3D")),
        "{next}"
    );
    let mut seen: HashSet<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    let mut next = next.to_string();
    let mut pages = 1;
    loop {
        let page = ok(&gw.admin_get(&next), 200, &next);
        pages += 1;
        for c in page["data"].as_array().unwrap() {
            assert!(seen.insert(id_of(c)), "{c} on two pages");
        }
        match page["next"].as_str() {
            Some(n) => next = n.to_string(),
            None => {
                assert!(
                    page.get("offset").is_none(),
                    "no offset on the last page: {page}"
                );
                break;
            }
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(pages, 3);
    // Tags and size carry over into `next`.
    let j = ok(
        &gw.admin_get("/consumers?tags=a/b&size=1"),
        200,
        "tags+size",
    );
    let next = j["next"].as_str().expect("more pages");
    assert!(
        next.contains("tags=a%2Fb") && next.contains("size=1"),
        "{next}"
    );
    let j = ok(&gw.admin_get(next), 200, next);
    assert_eq!(j["data"].as_array().map(Vec::len), Some(1), "{j}");

    let all = ok(&gw.admin_get("/consumers"), 200, "default size");
    assert_eq!(all["data"].as_array().map(Vec::len), Some(5));
    assert!(all["next"].is_null(), "{all}");

    for bad in ["size=0", "size=1001", "size=abc", "size=1.5"] {
        let r = gw.admin_get(&format!("/consumers?{bad}"));
        let j = ok(&r, 400, bad);
        assert_eq!(j["name"], "invalid size", "{bad}: {j}");
    }
    // Kong's reason for each way a cursor is wrong (`bm90IGpzb24=` is "not json").
    for (offset, why) in [
        ("!!notbase64", "bad base64 encoding"),
        ("bm90IGpzb24%3D", "bad json encoding"),
    ] {
        let r = gw.admin_get(&format!("/consumers?offset={offset}"));
        let j = ok(&r, 400, "bad offset");
        assert_eq!(j["name"], "invalid offset", "{j}");
        assert!(j["message"].as_str().unwrap().ends_with(why), "{j}");
    }
    let r = gw.admin_get("/services?size=1000");
    assert_eq!(r.status, 200, "{r:?}");

    // A cursor, as Kong's: deleting between pages moves no entity across the boundary.
    let usernames = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|c| c["username"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = usernames(&ok(&gw.admin_get("/consumers"), 200, "all"));
    assert_eq!(all.len(), 5, "{all:?}");
    let first = ok(&gw.admin_get("/consumers?size=2"), 200, "first page");
    assert_eq!(usernames(&first), all[..2]);
    let next = first["next"].as_str().unwrap().to_owned();
    // the last one shown goes
    assert_eq!(
        admin_form(&gw, "DELETE", &format!("/consumers/{}", all[1]), &[]).status,
        204
    );
    let second = ok(
        &gw.admin_get(&next),
        200,
        "after deleting from the first page",
    );
    assert_eq!(usernames(&second), all[2..4], "{second}");
    // the next one to be shown goes
    let next = second["next"].as_str().unwrap().to_owned();
    assert_eq!(
        admin_form(&gw, "DELETE", &format!("/consumers/{}", all[4]), &[]).status,
        204
    );
    let r = admin_json(&gw, "POST", "/consumers", &json!({"username": "c6"}));
    ok(&r, 201, "c6");
    let third = ok(&gw.admin_get(&next), 200, "after deleting the next one");
    assert_eq!(usernames(&third), ["c6"], "{third}");
    // The last one shown and the next one both gone: still nothing skipped.
    for name in ["p1", "p2", "p3", "p4"] {
        let r = admin_json(
            &gw,
            "POST",
            "/consumers",
            &json!({"username": name, "tags": ["pg"]}),
        );
        ok(&r, 201, name);
    }
    let first = ok(&gw.admin_get("/consumers?tags=pg&size=1"), 200, "p1");
    assert_eq!(usernames(&first), ["p1"]);
    for name in ["p1", "p2"] {
        assert_eq!(
            admin_form(&gw, "DELETE", &format!("/consumers/{name}"), &[]).status,
            204
        );
    }
    let next = first["next"].as_str().unwrap().to_owned();
    let second = ok(&gw.admin_get(&next), 200, "after deleting p1 and p2");
    assert_eq!(usernames(&second), ["p3"], "{second}");
}

// ---------------------------------------------------------------------------------------
// 6. ids must be UUIDs

#[test]
fn a_given_id_must_be_a_uuid() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "ivan", "id": "not-a-uuid" }),
    );
    let j = ok(&r, 400, "consumer with a bad id");
    assert_eq!(j["name"], "schema violation", "{j}");
    assert_eq!(j["fields"]["id"], "expected a valid UUID", "{j}");
    assert_eq!(
        gw.admin_get("/consumers/ivan").status,
        404,
        "nothing created"
    );
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "s"), ("url", &o.url()), ("id", "123")],
    );
    assert_eq!(
        ok(&r, 400, "service with a bad id")["fields"]["id"],
        "expected a valid UUID"
    );
    // A good one is kept.
    let id = "0d4b4a4e-8d4e-4a3b-9b1a-0c7e2f1d5e6a";
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "ivan", "id": id }),
    );
    assert_eq!(ok(&r, 201, "consumer with a UUID")["id"], id);
    // The same POST again: the id taken is what Kong reports (its database finds it first).
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "ivan", "id": id }),
    );
    let body = ok(&r, 400, "a taken id");
    assert_eq!(
        body,
        json!({
            "code": 3,
            "name": "primary key violation",
            "message": format!("primary key violation on key '{{id=\"{id}\"}}'"),
            "fields": { "id": id },
        })
    );
}

/// An id is one UUID however its hex digits are cased, as in Kong (whose check ignores
/// case and whose database keeps the canonical lower case): stored and shown in lower
/// case, found by either spelling, and taken for both.
#[test]
fn ids_are_uuids_in_any_case_stored_in_lower_case() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let upper = "ABCDEF00-BBBB-4CCC-8DDD-EEEEEEEEEEEE";
    let lower = upper.to_ascii_lowercase();
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "up-a", "id": upper }),
    );
    assert_eq!(ok(&r, 201, "an upper-case id")["id"], lower.as_str());
    for key in [upper, lower.as_str()] {
        let r = gw.admin_get(&format!("/consumers/{key}"));
        assert_eq!(ok(&r, 200, key)["username"], "up-a");
    }
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "up-b", "id": lower }),
    );
    assert_eq!(
        ok(&r, 400, "the same id in lower case")["name"],
        "primary key violation"
    );
    // PUT by an upper-case id creates the entity under the lower-case one.
    let put_id = "12345678-AAAA-4BBB-8CCC-DDDDDDDDDDDD";
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/consumers/{put_id}"),
        &json!({ "username": "up-c" }),
    );
    assert_eq!(
        ok(&r, 200, "PUT by an upper-case id")["id"],
        put_id.to_ascii_lowercase()
    );
    // A PATCH naming another id is refused, not ignored.
    let r = admin_json(
        &gw,
        "PATCH",
        "/consumers/up-a",
        &json!({ "id": "0d4b4a4e-8d4e-4a3b-9b1a-0c7e2f1d5e6a" }),
    );
    assert_field_error(&r, "id", "cannot be changed");
    let r = admin_json(&gw, "PATCH", "/consumers/up-a", &json!({ "id": upper }));
    assert_eq!(ok(&r, 200, "PATCH with its own id")["id"], lower.as_str());
    // A credential PUT by its id in upper case keeps its key (it took the id as key).
    let cred = "0d4b4a4e-8d4e-4a3b-9b1a-0c7e2f1d5e6c";
    let r = admin_json(
        &gw,
        "POST",
        "/consumers/up-a/jwt",
        &json!({ "id": cred, "key": "up-key", "secret": "s-0123456789" }),
    );
    ok(&r, 201, "credential");
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/consumers/up-a/jwt/{}", cred.to_ascii_uppercase()),
        &json!({ "key": "up-key", "secret": "t-0123456789" }),
    );
    let j = ok(&r, 200, "PUT by the upper-case id");
    assert_eq!(
        (j["id"].as_str(), j["key"].as_str()),
        (Some(cred), Some("up-key"))
    );
    // A custom_id no consumer has names no consumer, whatever usernames there are.
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({ "name": "rate-limiting", "config": {"minute": 1}, "consumer": {"custom_id": "up-a"} }),
    );
    ok(&r, 400, "an unknown custom_id");
}

/// As Kong's Admin API: a path key shaped as a UUID names an id only. A consumer whose
/// username looks like one is not reached (nor replaced) through it, and a username may
/// not be another consumer's id; the answers say so.
#[test]
fn a_uuid_shaped_key_names_an_id_only() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let name = "11111111-2222-3333-4444-555555555556";
    let r = admin_form(&gw, "POST", "/consumers", &[("username", name)]);
    let id = id_of(&ok(&r, 201, "a UUID-shaped username"));
    assert_eq!(gw.admin_get(&format!("/consumers/{name}")).status, 404);
    assert_eq!(gw.admin_get(&format!("/consumers/{id}")).status, 200);
    // A PUT by it would create the consumer of that id, which the username holds.
    let r = admin_form(
        &gw,
        "PUT",
        &format!("/consumers/{name}"),
        &[("custom_id", "zz9")],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body_str().contains("username of another consumer"),
        "{r:?}"
    );
    let r = gw.admin_get(&format!("/consumers/{id}"));
    assert_eq!(ok(&r, 200, "untouched")["username"], name);
    // A username that is another consumer's id.
    let r = admin_form(&gw, "POST", "/consumers", &[("username", &id)]);
    let j = ok(&r, 409, "another consumer's id as a username");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("is the id of another consumer"),
        "{j}"
    );
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "plain")]);
    ok(&r, 201, "a plain consumer");
    let r = admin_form(&gw, "PATCH", "/consumers/plain", &[("username", &id)]);
    ok(&r, 409, "renamed to another consumer's id");
    // A service whose name looks like a UUID is reached by its id.
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", name), ("url", "http://127.0.0.1:9")],
    );
    let service = id_of(&ok(&r, 201, "a UUID-shaped service name"));
    assert_eq!(gw.admin_get(&format!("/services/{name}")).status, 404);
    assert_eq!(gw.admin_get(&format!("/services/{service}")).status, 200);
}

/// A state an earlier version saved with upper-case ids is read with them in lower case,
/// so a DELETE by the id the Admin API shows removes the entity (it answered 204 and the
/// token kept working).
#[test]
fn state_saved_with_upper_case_ids_is_found_by_them() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: {u}
    routes:
      - name: r
        paths: [/a]
        plugins:
          - name: jwt
consumers:
  - username: alice
    id: CCCCCCCC-BBBB-4CCC-8DDD-EEEEEEEEEEEE
"#,
        u = o.url()
    );
    let mut gw = Gateway::start(&cfg);
    gw.kill9();
    std::fs::write(
        gw.data_dir().join("state.json"),
        json!({"jwt_secrets": [{
            "algorithm": "HS256",
            "consumer": {"id": "CCCCCCCC-BBBB-4CCC-8DDD-EEEEEEEEEEEE"},
            "id": "F94DEEAB-201E-46B2-91B8-98B4C639EFF0",
            "key": "ak", "secret": "as-0123456789"
        }]})
        .to_string(),
    )
    .unwrap();
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    let token = cli_sign(&["--secret", "as-0123456789", "--key", "ak"]);
    let auth = format!("Bearer {token}");
    assert_eq!(
        proxy_get(&gw, "/a", &[("Authorization", &auth)]).status,
        200
    );
    let shown = gw.admin_get("/jwts/ak").json();
    assert_eq!(
        shown["id"], "f94deeab-201e-46b2-91b8-98b4c639eff0",
        "{shown}"
    );
    assert_eq!(admin_form(&gw, "DELETE", "/jwts/ak", &[]).status, 204);
    assert_eq!(gw.admin_get("/jwts/ak").status, 404);
    assert_eq!(
        proxy_get(&gw, "/a", &[("Authorization", &auth)]).status,
        401
    );
}

/// An RSA public key (SubjectPublicKeyInfo) with exponent 65536, which no signature
/// verifies with: the fixture's modulus with its exponent replaced.
fn rsa_key_with_even_exponent() -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let pkcs1: String = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/rsa-public.pkcs1.pem"
    ))
    .unwrap()
    .lines()
    .filter(|l| !l.starts_with("-----"))
    .collect();
    let der = engine.decode(pkcs1).unwrap();
    let long = |tag: u8, body: &[u8]| {
        let mut out = vec![tag, 0x82, (body.len() >> 8) as u8, body.len() as u8];
        out.extend_from_slice(body);
        out
    };
    let mut inner = der[4..4 + 4 + 257].to_vec();
    inner.extend_from_slice(&[2, 3, 1, 0, 0]);
    let mut bits = vec![0];
    bits.extend_from_slice(&long(0x30, &inner));
    let mut info = vec![
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    info.extend_from_slice(&long(0x03, &bits));
    let text = engine.encode(long(0x30, &info));
    format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n")
}

/// An RSA key no token can verify with is refused when the Admin API is asked to store
/// it; one an earlier version stored loads with a warning instead of stopping the start.
#[test]
fn an_unusable_rsa_key_is_refused_but_a_saved_one_loads() {
    let o = Origin::start();
    let mut gw = Gateway::start(&base_config(&o));
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "rk")]),
        201,
        "consumer",
    );
    let pem = rsa_key_with_even_exponent();
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/rk/jwt",
        &[
            ("key", "rk-k"),
            ("algorithm", "RS256"),
            ("rsa_public_key", &pem),
        ],
    );
    assert_field_error(&r, "rsa_public_key", "exponent");
    // Stored under HS256 (no key check there), then made RS256 by a PATCH of the
    // algorithm alone: the stored key is checked.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/rk/jwt",
        &[
            ("key", "rk-h"),
            ("algorithm", "HS256"),
            ("secret", "s-0123456789"),
            ("rsa_public_key", &pem),
        ],
    );
    ok(&r, 201, "an HS256 credential carrying a key");
    let r = admin_form(
        &gw,
        "PATCH",
        "/consumers/rk/jwt/rk-h",
        &[("algorithm", "RS256")],
    );
    let j = ok(&r, 400, "made RS256 with an unusable stored key");
    assert!(j["fields"]["rsa_public_key"].is_string(), "{j}");
    let consumer = id_of(&gw.admin_get("/consumers/rk").json());
    gw.kill9();
    let state_path = gw.data_dir().join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["jwt_secrets"] = json!([{
        "algorithm": "RS256", "consumer": {"id": consumer},
        "id": "0d4b4a4e-8d4e-4a3b-9b1a-0c7e2f1d5e6b", "key": "rk-k", "rsa_public_key": pem
    }]);
    std::fs::write(&state_path, state.to_string()).unwrap();
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    assert_eq!(
        gw.admin_get("/jwts/rk-k").status,
        200,
        "the saved credential loaded"
    );
    assert!(
        gw.stderr_text().contains("no token can verify with it"),
        "{}",
        gw.stderr_text()
    );
}

/// A reference to an entity that does not exist is Kong's 400, naming the reference as
/// given: a foreign key violation (code 4) by id, unresolved (code 13) by name.
#[test]
fn a_reference_to_nothing_is_a_foreign_key_violation() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let missing = "00000000-0000-4000-8000-000000000000";
    let r = admin_json(
        &gw,
        "POST",
        "/routes",
        &json!({ "name": "r", "paths": ["/x"], "service": { "id": missing } }),
    );
    let j = ok(&r, 400, "a route to no service");
    assert_eq!(
        (j["code"].as_u64(), j["name"].as_str()),
        (Some(4), Some("foreign key violation")),
        "{j}"
    );
    assert_eq!(
        j["message"],
        format!("the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'services' entity."),
    );
    assert_eq!(j["fields"], json!({ "service": { "id": missing } }));
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[
            ("name", "rate-limiting"),
            ("config.minute", "5"),
            ("consumer.username", "nobody"),
        ],
    );
    // By another unique field, which Kong resolves to an id first: a foreign key that
    // could not be resolved (code 13).
    let j = ok(&r, 400, "a plugin on no consumer");
    let why = "the foreign key cannot be resolved with '{username=\"nobody\"}' for an existing 'consumers' entity";
    assert_eq!(
        j,
        json!({
            "code": 13,
            "name": "foreign keys unresolved",
            "message": format!("foreign key unresolved (consumer.username: {why})"),
            "fields": { "consumer": { "username": why } },
        })
    );
    let r = admin_form(
        &gw,
        "POST",
        "/routes",
        &[("name", "r4"), ("paths[]", "/d"), ("service.name", "nosvc")],
    );
    let j = ok(&r, 400, "a route to no service, by name");
    assert_eq!((j["code"].as_u64(), &j["fields"]["service"]["name"]), (Some(13), &json!("the foreign key cannot be resolved with '{name=\"nosvc\"}' for an existing 'services' entity")), "{j}");
}

/// A plugin is checked against its schema before its unique key, as Kong does: one with
/// an invalid config answers 400 even where its name is configured already; a valid one
/// there, 409.
#[test]
fn a_plugin_schema_is_checked_before_its_unique_key() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "100")],
    );
    ok(&r, 201, "the global one");
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "rate-limiting")]);
    let j = ok(&r, 400, "no limit given");
    assert_eq!(j["name"], "schema violation", "{j}");
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "bad")],
    );
    let j = ok(&r, 400, "a mistyped limit");
    assert!(j["fields"]["config"]["minute"].is_string(), "{j}");
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "5")],
    );
    let j = ok(&r, 409, "a valid second one on the same scope");
    assert_eq!(j["name"], "unique constraint violation", "{j}");
}

/// `instance_name` is unique, as Kong's unique key (409, code 5), and names its plugin
/// in the path as Kong's endpoint key does.
#[test]
fn plugin_instance_names_are_unique_and_name_their_plugin() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "correlation-id"), ("instance_name", "inst1")],
    );
    let id = id_of(&ok(&r, 201, "first"));
    let r = admin_form(
        &gw,
        "POST",
        "/routes/user-routes/plugins",
        &[
            ("name", "rate-limiting"),
            ("config.minute", "3"),
            ("instance_name", "inst1"),
        ],
    );
    let j = ok(&r, 409, "the same instance_name");
    assert_eq!(
        (j["code"].as_i64(), j["fields"]["instance_name"].as_str()),
        (Some(5), Some("inst1"))
    );
    let j = ok(&gw.admin_get("/plugins/inst1"), 200, "by instance_name");
    assert_eq!(j["id"], id.as_str());
    let r = admin_form(
        &gw,
        "PATCH",
        "/plugins/inst1",
        &[("instance_name", "inst1")],
    );
    ok(&r, 200, "a plugin keeps its own instance_name");
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "prometheus"), ("instance_name", "bad name!")],
    );
    let j = ok(&r, 400, "not a name");
    assert!(j["fields"]["instance_name"].is_string(), "{j}");
    // PUT by instance_name replaces the plugin and keeps the name, or creates one so named.
    let r = admin_json(
        &gw,
        "PUT",
        "/plugins/inst1",
        &json!({"name": "correlation-id", "config": {"header_name": "X-Trace"}}),
    );
    let j = ok(&r, 200, "PUT by instance_name");
    assert_eq!(
        (j["id"].as_str(), j["instance_name"].as_str()),
        (Some(id.as_str()), Some("inst1"))
    );
    let r = admin_json(&gw, "PUT", "/plugins/fresh", &json!({"name": "prometheus"}));
    assert_eq!(
        ok(&r, 200, "PUT of a new instance_name")["instance_name"],
        "fresh"
    );
}

/// Service and route names are Kong's `utf8_name` through the Admin API as in the file:
/// a route named `bad name` or `a/b?c` is a 400 on the field (it was taken, and could not
/// be addressed at `/routes/{name}`); beyond ASCII anything.
#[test]
fn service_and_route_names_are_checked_as_kong_checks_them() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let url = o.url();
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "sp ace"), ("url", &url)],
    );
    assert!(ok(&r, 400, "a service name with a space")["fields"]["name"].is_string());
    let r = admin_form(&gw, "POST", "/services", &[("name", "café"), ("url", &url)]);
    ok(&r, 201, "a service name beyond ASCII");
    for bad in ["bad name", "a/b?c#d", "new\nline"] {
        let r = admin_json(
            &gw,
            "POST",
            "/services/caf%C3%A9/routes",
            &json!({"name": bad, "paths": ["/named"]}),
        );
        assert_field_error(&r, "name", "only accepted ascii characters");
    }
    let r = admin_json(
        &gw,
        "POST",
        "/services/caf%C3%A9/routes",
        &json!({"name": "größe", "paths": ["/named"]}),
    );
    ok(&r, 201, "a route name beyond ASCII");
    let r = admin_json(
        &gw,
        "PATCH",
        "/routes/gr%C3%B6%C3%9Fe",
        &json!({"name": "x y"}),
    );
    assert!(ok(&r, 400, "PATCH to a bad name")["fields"]["name"].is_string());
    assert_eq!(proxy_get(&gw, "/named", &[]).status, 200);
}

/// A credential's PATCH with a `consumer` moves it there, as Kong's PATCH takes the
/// body's foreign key (it was dropped, and the 200 said nothing); `/jwts/{id}` takes
/// PATCH and DELETE as Kong generates them.
#[test]
fn a_credential_moves_by_patch_and_jwts_can_be_written() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for name in ["ren", "other"] {
        ok(
            &admin_form(&gw, "POST", "/consumers", &[("username", name)]),
            201,
            name,
        );
    }
    ok(
        &admin_form(
            &gw,
            "POST",
            "/consumers/ren/jwt",
            &[("key", "ren-k"), ("secret", "ren-secret-0123456789")],
        ),
        201,
        "credential",
    );
    let other = id_of(&gw.admin_get("/consumers/other").json());
    let r = admin_form(
        &gw,
        "PATCH",
        "/consumers/ren/jwt/ren-k",
        &[("consumer.id", &other)],
    );
    assert_eq!(ok(&r, 200, "moved")["consumer"]["id"], other.as_str());
    assert_eq!(gw.admin_get("/consumers/ren/jwt/ren-k").status, 404);
    assert_eq!(gw.admin_get("/consumers/other/jwt/ren-k").status, 200);
    let r = admin_form(
        &gw,
        "PATCH",
        "/consumers/other/jwt/ren-k",
        &[("consumer", "nobody")],
    );
    ok(&r, 400, "a consumer that does not exist");

    let r = admin_form(
        &gw,
        "PATCH",
        "/jwts/ren-k",
        &[("secret", "rotated-0123456789")],
    );
    assert_eq!(ok(&r, 200, "PATCH /jwts")["secret"], "rotated-0123456789");
    assert_eq!(admin_form(&gw, "DELETE", "/jwts/ren-k", &[]).status, 204);
    assert_eq!(gw.admin_get("/jwts/ren-k").status, 404);
    assert_eq!(admin_form(&gw, "DELETE", "/jwts/ren-k", &[]).status, 204);
}

/// A form PATCH of a plugin need not name it: its config is typed by the stored plugin's
/// schema, as Kong's does, so one value of a list field is a one-item list, at the plugin
/// and under its scope.
#[test]
fn a_plugin_patch_form_is_typed_by_the_stored_plugin() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "jwt")]);
    let id = id_of(&ok(&r, 201, "a jwt plugin"));
    let r = admin_form(
        &gw,
        "PATCH",
        &format!("/plugins/{id}"),
        &[("config.claims_to_verify", "nbf")],
    );
    assert_eq!(
        ok(&r, 200, "one list value")["config"]["claims_to_verify"],
        json!(["nbf"])
    );
    // A JSON body is typed as sent: a string is no list.
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{id}"),
        &json!({ "config": { "header_names": "x-token" } }),
    );
    ok(&r, 400, "a string for a list, in JSON");
}

/// Kong's words for what a body gets wrong: a body that is no JSON object (an empty one
/// included) is `Cannot parse JSON body`, and a field's problem names what belongs there,
/// not what was sent: `expected a number`, `expected one of: ...` with the list alone.
#[test]
fn field_problems_are_worded_as_kong_words_them() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for body in [&b"{bad"[..], b"[1,2]", b""] {
        let r = http_request(
            gw.admin_addr(),
            "POST",
            "/consumers",
            &[],
            Some(("application/json", body)),
        );
        assert_eq!(
            (r.status, r.json()),
            (400, json!({ "message": "Cannot parse JSON body" })),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let post = |path: &str, body: Value| admin_json(&gw, "POST", path, &body);
    // Kong's 400 body for schema problems.
    let violation = |message: String, fields: Value| json!({ "code": 2, "name": "schema violation", "message": message, "fields": fields });

    let r = post(
        "/plugins",
        json!({ "name": "rate-limiting", "config": { "minute": "abc", "policy": "foo" } }),
    );
    let j = ok(&r, 400, "mistyped and unknown values");
    assert_eq!(j["fields"]["config"]["minute"], "expected a number", "{j}");
    let policy = j["fields"]["config"]["policy"].as_str().unwrap();
    assert!(
        policy.starts_with("expected one of: ") && !policy.contains("got"),
        "{j}"
    );
    let r = post(
        "/plugins",
        json!({ "name": "prometheus", "service": { "id": "bad" } }),
    );
    assert_eq!(
        ok(&r, 400, "a reference by an id that is no UUID"),
        violation(
            "schema violation (service.id: expected a valid UUID)".into(),
            json!({ "service": { "id": "expected a valid UUID" } })
        )
    );
    let r = post(
        "/plugins",
        json!({ "name": "rate-limiting", "config": { "minute": 5, "limit_by": "header" } }),
    );
    let condition = "failed conditional validation given value of field 'config.limit_by'";
    assert_eq!(
        ok(&r, 400, "limit_by header without its name")["fields"],
        json!({ "@entity": [condition], "config": { "header_name": "required field missing" } })
    );
    let r = post(
        "/plugins",
        json!({ "name": "correlation-id", "config": { "header_name": "" } }),
    );
    assert_eq!(
        ok(&r, 400, "an empty header name")["fields"]["config"]["header_name"],
        "length must be at least 1"
    );
    let r = post(
        "/plugins",
        json!({ "name": "rate-limiting", "config": { "minute": 100, "hour": 50, "day": 10 } }),
    );
    let order = "The limit for hour(50.0) cannot be lower than the limit for minute(100.0)";
    assert_eq!(
        ok(&r, 400, "periods out of order"),
        violation(
            format!("schema violation (config: {order})"),
            json!({ "config": order })
        )
    );

    let r = post("/consumers", json!({ "username": "" }));
    let pair = "at least one of these fields must be non-empty: 'custom_id', 'username'";
    assert_eq!(
        ok(&r, 400, "an empty username alone")["fields"],
        json!({ "@entity": [pair], "username": "length must be at least 1" })
    );
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "jc")]),
        201,
        "consumer",
    );
    let r = admin_form(&gw, "POST", "/consumers/jc/plugins", &[("name", "jwt")]);
    assert_eq!(
        ok(&r, 400, "jwt on a consumer"),
        violation(
            "schema violation (consumer: value must be null)".into(),
            json!({ "consumer": "value must be null" })
        )
    );
    let r = post("/consumers/jc/jwt", json!({ "algorithm": "HS999" }));
    let j = ok(&r, 400, "an unknown algorithm");
    assert_eq!(
        j["fields"]["algorithm"],
        "expected one of: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA",
        "{j}"
    );
    let r = post("/consumers/jc/jwt", json!({ "algorithm": "RS256" }));
    let condition = "failed conditional validation given value of field 'algorithm'";
    assert_eq!(
        ok(&r, 400, "RS256 without its key"),
        violation(
            format!("2 schema violations ({condition}; rsa_public_key: required field missing)"),
            json!({ "@entity": [condition], "rsa_public_key": "required field missing" })
        )
    );
}

/// A service's verification settings are shown, so one written back as read keeps them
/// (hidden, a GET then PUT turned verification back on).
#[test]
fn a_service_read_and_written_back_keeps_its_verification_settings() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[
            ("name", "tv"),
            ("url", "https://127.0.0.1:9"),
            ("tls_verify", "false"),
            ("tls_verify_depth", "3"),
        ],
    );
    let created = ok(&r, 201, "an https service");
    assert_eq!(created["tls_verify"], false, "{created}");
    assert_eq!(created["tls_verify_depth"], 3, "{created}");
    assert!(created["ca_certificates"].is_null(), "{created}");
    let shown = ok(&gw.admin_get("/services/tv"), 200, "GET");
    ok(
        &admin_json(&gw, "PUT", "/services/tv", &shown),
        200,
        "PUT back as read",
    );
    let after = ok(&gw.admin_get("/services/tv"), 200, "GET again");
    assert_eq!(after["tls_verify"], false, "{after}");
    assert_eq!(after["tls_verify_depth"], 3, "{after}");
    // A plain service shows them as null, and takes them back as null.
    let plain = ok(
        &gw.admin_get("/services/user-service"),
        200,
        "a file service",
    );
    assert!(plain["tls_verify"].is_null(), "{plain}");
}

#[test]
fn a_consumer_reference_may_name_any_unique_field() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    // A rate-limiting plugin scoped by one reference field.
    let rate_limit = |field: &str, value: &str| {
        admin_form(
            &gw,
            "POST",
            "/plugins",
            &[
                ("name", "rate-limiting"),
                ("config.minute", "5"),
                (field, value),
            ],
        )
    };
    for (field, value) in [
        ("consumer.username", "refd"),
        ("consumer.custom_id", "ext-7"),
    ] {
        let consumer = if field == "consumer.username" {
            json!({ "username": value })
        } else {
            json!({ "custom_id": value })
        };
        let id = id_of(&ok(
            &admin_json(&gw, "POST", "/consumers", &consumer),
            201,
            "a consumer",
        ));
        let plugin = ok(&rate_limit(field, value), 201, field);
        assert_eq!(plugin["consumer"]["id"], id.as_str(), "{field}: {plugin}");
    }
    let r = rate_limit("consumer.username", "nobody");
    assert_eq!(r.status, 400, "an unknown username: {r:?}");
    let r = rate_limit("consumer.name", "refd");
    assert_eq!(r.status, 400, "'name' is no consumer field: {r:?}");
    // PATCH takes references alike, and keeps the unique key: moving a plugin onto a
    // scope that has one of its name is Kong's 409.
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "9")],
    );
    let global = id_of(&ok(&r, 201, "a global rate-limiting"));
    let r = admin_form(
        &gw,
        "PATCH",
        &format!("/plugins/{global}"),
        &[("consumer.name", "refd")],
    );
    assert_eq!(r.status, 400, "PATCH: 'name' is no consumer field: {r:?}");
    let r = admin_form(
        &gw,
        "PATCH",
        &format!("/plugins/{global}"),
        &[("consumer.username", "refd")],
    );
    let body = ok(&r, 409, "PATCH onto a scope that has a rate-limiting");
    assert_eq!(body["code"], 5, "{body}");
    assert_eq!(body["fields"]["name"], "rate-limiting", "{body}");
    assert!(body["fields"]["consumer"]["id"].is_string(), "{body}");
}

#[test]
fn a_membership_answer_shows_a_file_groups_timestamps() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "{}consumer_groups:\n  - name: filegroup\n",
        base_config(&o)
    ));
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "joiner")]),
        201,
        "a consumer",
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups/filegroup/consumers",
        &[("consumer", "joiner")],
    );
    let answer = ok(&r, 201, "membership");
    let group = ok(
        &gw.admin_get("/consumer_groups/filegroup"),
        200,
        "the group",
    );
    assert_ne!(group["created_at"], 0, "{group}");
    for field in ["created_at", "updated_at"] {
        assert_eq!(
            answer["consumer_group"][field], group[field],
            "{field}: the answer shows the group as GET does: {answer}"
        );
    }
}

/// PUT replaces a consumer whole: `groups` in the body is its membership (checked as
/// anywhere else); without it, the membership stays.
#[test]
fn put_applies_the_groups_it_gives() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "{}consumer_groups:\n  - name: ga\n  - name: gb\n",
        base_config(&o)
    ));
    let groups = |gw: &Gateway| -> Vec<String> {
        let list = ok(
            &gw.admin_get("/consumers/pg/consumer_groups"),
            200,
            "groups",
        );
        let mut names: Vec<String> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    ok(
        &admin_json(&gw, "PUT", "/consumers/pg", &json!({ "groups": ["ga"] })),
        200,
        "create",
    );
    assert_eq!(groups(&gw), ["ga"]);
    ok(
        &admin_json(&gw, "PUT", "/consumers/pg", &json!({ "custom_id": "x" })),
        200,
        "no groups",
    );
    assert_eq!(groups(&gw), ["ga"], "membership stays");
    ok(
        &admin_json(&gw, "PUT", "/consumers/pg", &json!({ "groups": ["gb"] })),
        200,
        "new groups",
    );
    assert_eq!(groups(&gw), ["gb"]);
    let r = admin_json(
        &gw,
        "PUT",
        "/consumers/pg",
        &json!({ "groups": ["nosuch"] }),
    );
    assert_eq!(r.status, 400, "an unknown group: {r:?}");
    assert_eq!(groups(&gw), ["gb"], "unchanged");
    // A form's one value for the list is a one-item list, as Kong reads it.
    ok(
        &admin_form(&gw, "PUT", "/consumers/pg", &[("groups", "ga")]),
        200,
        "groups=ga",
    );
    assert_eq!(groups(&gw), ["ga"]);
}

/// decK writes a group's members under the group (`consumers: [{username: ...}]`): the
/// same memberships as a consumer's own `groups`, and a member naming no consumer is an
/// error with its path.
#[test]
fn members_listed_under_a_group_are_its_members() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "{}consumer_groups:\n  - name: gold\n    tags: null\n    consumers:\n      - username: alice\n      - {{username: bob, tags: null}}\nconsumers:\n  - username: alice\n  - username: bob\n    groups: [{{name: gold, tags: null, created_at: 1}}]\n  - username: carol\n",
        base_config(&o)
    ));
    for (who, want) in [
        ("alice", vec!["gold"]),
        ("bob", vec!["gold"]),
        ("carol", vec![]),
    ] {
        let list = ok(
            &gw.admin_get(&format!("/consumers/{who}/consumer_groups")),
            200,
            who,
        );
        let names: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, want, "{who}: {list}");
    }
    // The file's memberships are the file's to change.
    for path in [
        "/consumer_groups/gold/consumers",
        "/consumers/alice/consumer_groups",
    ] {
        assert_eq!(admin_form(&gw, "DELETE", path, &[]).status, 405, "{path}");
    }
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumers/carol/consumer_groups", &[]).status,
        204,
        "nothing to leave"
    );
    check_refuses(
        "_format_version: \"3.0\"\nconsumer_groups:\n  - name: gold\n    consumers: [{username: ghost}]\n",
        &["consumer_groups[0].consumers[0]: no consumer named 'ghost'"],
    );
}

#[test]
fn malformed_ids_and_timestamps_are_refused_by_put_and_patch_too() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_json(&gw, "PUT", "/consumers/putter", &json!({ "id": "abc" }));
    let j = ok(&r, 400, "PUT with a bad id");
    assert_eq!(j["fields"]["id"], "expected a valid UUID", "{j}");
    assert_eq!(
        gw.admin_get("/consumers/putter").status,
        404,
        "nothing created"
    );
    ok(
        &admin_json(
            &gw,
            "PUT",
            "/consumers/putter",
            &json!({ "custom_id": "p" }),
        ),
        200,
        "PUT creating",
    );
    let r = admin_json(
        &gw,
        "PATCH",
        "/consumers/putter",
        &json!({ "created_at": "x", "updated_at": 1.5, "id": 7, "custom_id": "q" }),
    );
    let j = ok(&r, 400, "PATCH with bad stamps");
    assert_eq!(j["fields"]["created_at"], "expected an integer", "{j}");
    assert_eq!(j["fields"]["updated_at"], "expected an integer", "{j}");
    assert_eq!(j["fields"]["id"], "expected a valid UUID", "{j}");
    let r = admin_json(
        &gw,
        "PUT",
        "/consumers/putter/jwt/k1",
        &json!({ "id": "xx" }),
    );
    let j = ok(&r, 400, "PUT of a credential with a bad id");
    assert_eq!(j["fields"]["id"], "expected a valid UUID", "{j}");
    let shown = ok(&gw.admin_get("/consumers/putter"), 200, "unchanged");
    assert_eq!(
        shown["custom_id"], "p",
        "the refused PATCH changed nothing: {shown}"
    );
}

#[test]
fn nested_child_entities_in_a_body_are_refused_as_kong_refuses_them() {
    // The file format nests children; the Admin API does not: a credential nested in a
    // consumer body would be one its own endpoints could not delete.
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({ "username": "nz", "jwt_secrets": [{ "key": "nz-key", "secret": "s" }], "plugins": [] }),
    );
    let j = ok(&r, 400, "consumer with nested credentials");
    assert_eq!(j["name"], "schema violation", "{j}");
    assert_eq!(j["fields"]["jwt_secrets"], "unknown field", "{j}");
    assert_eq!(j["fields"]["plugins"], "unknown field", "{j}");
    assert_eq!(gw.admin_get("/consumers/nz").status, 404, "nothing created");
    ok(
        &admin_json(&gw, "POST", "/consumers", &json!({ "username": "nz" })),
        201,
        "plain consumer",
    );
    for (method, path, body) in [
        (
            "PUT",
            "/consumers/nz",
            json!({ "jwt_secrets": [{ "key": "k2" }] }),
        ),
        (
            "PATCH",
            "/consumers/nz",
            json!({ "jwt_secrets": [{ "key": "k3" }] }),
        ),
        (
            "POST",
            "/services",
            json!({ "name": "ns", "url": o.url(), "routes": [{ "paths": ["/ns"] }] }),
        ),
        (
            "POST",
            "/upstreams",
            json!({ "name": "nu", "targets": [{ "target": "127.0.0.1:1" }] }),
        ),
    ] {
        let r = admin_json(&gw, method, path, &body);
        assert_eq!(r.status, 400, "{method} {path} with nested children: {r:?}");
    }
    // A form's indexed keys alike.
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[
            ("name", "nf"),
            ("url", &o.url()),
            ("routes[1].paths[]", "/z"),
        ],
    );
    let j = ok(&r, 400, "a form nesting routes");
    assert_eq!(j["fields"]["routes"], "unknown field", "{j}");
    let creds = ok(&gw.admin_get("/consumers/nz/jwt"), 200, "credentials");
    assert_eq!(
        creds["data"],
        json!([]),
        "no credential slipped in: {creds}"
    );
    assert_eq!(gw.admin_get("/services/ns").status, 404);
}

// ---------------------------------------------------------------------------------------
// 7. updated_at

#[test]
fn updates_move_updated_at() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let c = ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "u1")]),
        201,
        "consumer",
    );
    let s = ok(
        &admin_form(
            &gw,
            "POST",
            "/services",
            &[("name", "s1"), ("url", &o.url())],
        ),
        201,
        "service",
    );
    assert!(s["created_at"].is_u64(), "{s}");
    assert_eq!(c["updated_at"], c["created_at"], "{c}");
    std::thread::sleep(Duration::from_millis(1100));
    let c2 = ok(
        &admin_form(&gw, "PATCH", "/consumers/u1", &[("custom_id", "x")]),
        200,
        "PATCH consumer",
    );
    assert_eq!(c2["created_at"], c["created_at"]);
    assert!(
        c2["updated_at"].as_u64() > c["created_at"].as_u64(),
        "PATCH moves updated_at: {c2}"
    );
    let got = ok(&gw.admin_get("/consumers/u1"), 200, "GET after PATCH");
    assert_eq!(got["updated_at"], c2["updated_at"], "{got}");
    // A list dates what it shows as the entity's own read does.
    let listed = ok(
        &gw.admin_get("/consumers?custom_id=x"),
        200,
        "list after PATCH",
    );
    assert_eq!(
        listed["data"][0]["updated_at"], c2["updated_at"],
        "{listed}"
    );
    let s2 = ok(
        &admin_form(&gw, "PATCH", "/services/s1", &[("retries", "1")]),
        200,
        "PATCH service",
    );
    assert!(
        s2["updated_at"].as_u64() > s["created_at"].as_u64(),
        "PATCH moves updated_at: {s2}"
    );
    let c3 = ok(
        &admin_form(&gw, "PUT", "/consumers/u1", &[("custom_id", "y")]),
        200,
        "PUT consumer",
    );
    assert!(c3["updated_at"].as_u64() > c["created_at"].as_u64(), "{c3}");
}

// ---------------------------------------------------------------------------------------
// 8. nested reads; 404 for paths that do not exist, 405 for methods that do not

#[test]
fn nested_reads_and_unknown_paths() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = gw.admin_get("/routes/user-routes/service");
    let svc = ok(&r, 200, "GET /routes/{r}/service");
    assert_eq!(svc["name"], "user-service", "{svc}");
    let r = gw.admin_get("/services/user-service/routes/user-routes");
    assert_eq!(
        ok(&r, 200, "GET /services/{s}/routes/{r}")["name"],
        "user-routes"
    );
    let r = gw.admin_get("/services/account-service/routes/user-routes");
    assert_eq!(r.status, 404, "a route of another service: {r:?}");

    let plugins = ok(
        &gw.admin_get("/services/user-service/plugins"),
        200,
        "plugins",
    );
    let pid = id_of(&plugins["data"][0]);
    let r = gw.admin_get(&format!("/plugins/{pid}/service"));
    assert_eq!(
        ok(&r, 200, "GET /plugins/{p}/service")["name"],
        "user-service"
    );
    let r = gw.admin_get(&format!("/plugins/{pid}/route"));
    assert_eq!(r.status, 404, "a plugin with no route: {r:?}");
    let r = gw.admin_get(&format!("/services/user-service/plugins/{pid}"));
    assert_eq!(
        ok(&r, 200, "GET /services/{s}/plugins/{p}")["id"],
        json!(pid)
    );

    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "bob")]),
        201,
        "bob",
    );
    for path in [
        "/consumers/bob/foo",
        "/nothing",
        "/consumers/bob/jwt/k/extra",
        "/routes/user-routes/foo",
    ] {
        let r = gw.admin_get(path);
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
        assert_eq!(r.json()["message"], "Not found", "{path}");
    }
    for (method, path) in [
        ("DELETE", "/consumers"),
        ("POST", "/consumers/bob"),
        ("PUT", "/config"),
        ("POST", "/routes/user-routes/service"),
    ] {
        let r = admin_form(&gw, method, path, &[]);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
    }
}

/// Services and routes declared in the file show their tags, and lists filter by them.
#[test]
fn file_declared_services_and_routes_carry_their_tags() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: tagged\n    url: {}\n    tags: [edge, team-a]\n    routes:\n      - name: r1\n        paths: [/r1]\n        tags: [v1]\n  - name: plain\n    url: {}\n",
        o.url(),
        o.url()
    ));
    let names = |path: &str| -> Vec<String> {
        let j = ok(&gw.admin_get(path), 200, path);
        j["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {j}"))
            .iter()
            .map(|e| e["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names("/services?tags=edge"), ["tagged"]);
    assert_eq!(names("/services?tags=edge,team-a"), ["tagged"]);
    assert!(names("/services?tags=edge,team-b").is_empty());
    assert_eq!(names("/routes?tags=v1"), ["r1"]);
    let service = ok(&gw.admin_get("/services/tagged"), 200, "service");
    assert_eq!(service["tags"], json!(["edge", "team-a"]));
    assert_eq!(service["protocol"], "http");
    let plain = ok(&gw.admin_get("/services/plain"), 200, "service");
    assert_eq!(plain["tags"], Value::Null);
}

/// Hostile forms are refused with a 400, and the gateway lives on: a field name nested
/// 200,000 levels deep (built and dropped recursively, it would overflow the stack and
/// take every worker down with it), and a body of more fields than any entity has.
#[test]
fn hostile_form_bodies_are_refused_not_fatal() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let deep_name = "a.".repeat(200_000) + "a";
    let many: String = (0..5000).map(|i| format!("f{i}=1&")).collect();
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n1\r\n--XyZ--\r\n",
        "a.".repeat(100) + "a"
    );
    for (what, content_type, body) in [
        (
            "deep",
            "application/x-www-form-urlencoded",
            format!("{deep_name}=1"),
        ),
        ("many fields", "application/x-www-form-urlencoded", many),
        (
            "deep part name",
            "multipart/form-data; boundary=XyZ",
            multipart,
        ),
    ] {
        let r = http_request(
            gw.admin_addr(),
            "POST",
            "/consumers",
            &[],
            Some((content_type, body.as_bytes())),
        );
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(r.body_str().contains("Cannot parse"), "{what}: {r:?}");
    }
    assert_eq!(gw.admin_get("/status").status, 200, "the gateway lives on");
}

/// Entities declared in the file answer 405 to every write, through the new nested
/// endpoints too, before any other check of the body (a taken name is not a 409 there).
#[test]
fn file_declared_entities_refuse_writes_first() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for (method, path, form) in [
        (
            "PATCH",
            "/routes/user-routes",
            vec![("name", "account-routes")],
        ),
        (
            "PATCH",
            "/routes/user-routes/service",
            vec![("retries", "1")],
        ),
        (
            "PATCH",
            "/services/user-service/routes/user-routes",
            vec![("strip_path", "false")],
        ),
        (
            "DELETE",
            "/services/user-service/routes/user-routes",
            vec![],
        ),
        (
            "PATCH",
            "/services/user-service",
            vec![("name", "account-service")],
        ),
    ] {
        let r = admin_form(&gw, method, path, &form);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(
            r.json()["message"],
            "entity is managed by the declarative config file"
        );
    }
}

/// A service without a name, its routes nested under it, as Kong allows: it routes, and
/// the Admin API shows it with `name: null` under a stable id.
#[test]
fn a_nameless_service_routes_and_shows_no_name() {
    let o = Origin::start();
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n  - url: {}\n    routes:\n      - name: anon\n        paths: [/anon]\n",
        o.url()
    );
    let gw = Gateway::start(&config);
    assert_eq!(upstream_target(&gw, "/anon/x"), "/x");
    let services = ok(&gw.admin_get("/services"), 200, "services");
    let service = &services["data"][0];
    assert_eq!(service["name"], Value::Null, "{services}");
    let id = id_of(service);
    assert_eq!(
        ok(&gw.admin_get(&format!("/services/{id}")), 200, "by id")["id"],
        id.as_str()
    );
    let route = ok(&gw.admin_get("/routes/anon"), 200, "route");
    assert_eq!(route["service"]["id"], id.as_str());
    // The same file loads with the same id.
    gw.send_signal("HUP");
    let again = ok(&gw.admin_get("/services"), 200, "services");
    assert_eq!(id_of(&again["data"][0]), id);
}

/// A plugin's config in JSON keeps its types (a header named `123` stays a string); in a
/// form, values that read as numbers or booleans are taken as such.
#[test]
fn plugin_config_types_come_from_json_as_sent() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({ "name": "correlation-id", "config": { "header_name": "123" } }),
    );
    let plugin = ok(&r, 201, "JSON config");
    assert_eq!(plugin["config"]["header_name"], "123", "{plugin}");
    let r = admin_form(
        &gw,
        "POST",
        "/services/user-service/plugins",
        &[("name", "rate-limiting"), ("config.minute", "7")],
    );
    let plugin = ok(&r, 201, "form config");
    assert_eq!(plugin["config"]["minute"], 7, "{plugin}");
}

/// Deleting follows Kong's foreign keys: a service that routes still use is refused with
/// Kong's foreign-key body; what is scoped to the entity (plugins, a group's
/// memberships) goes with it.
#[test]
fn deletes_restrict_on_routes_and_cascade_scoped_entities() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "ls"), ("url", &o.url())],
    );
    ok(&r, 201, "a service");
    let r = admin_form(
        &gw,
        "POST",
        "/services/ls/routes",
        &[("name", "lr"), ("paths[]", "/ls")],
    );
    ok(&r, 201, "its route");
    for (path, name) in [
        ("/services/ls/plugins", "correlation-id"),
        ("/routes/lr/plugins", "prometheus"),
    ] {
        ok(&admin_form(&gw, "POST", path, &[("name", name)]), 201, path);
    }
    let r = admin_form(&gw, "DELETE", "/services/ls", &[]);
    let body = ok(&r, 400, "a service its route still uses");
    assert_eq!(
        body,
        json!({
            "code": 4,
            "name": "foreign key violation",
            "message": "an existing 'routes' entity references this 'services' entity",
            "fields": { "@referenced_by": "routes" },
        })
    );
    assert_eq!(
        proxy_get(&gw, "/ls/x", &[]).status,
        200,
        "nothing was deleted"
    );
    assert_eq!(
        admin_form(&gw, "DELETE", "/routes/lr", &[]).status,
        204,
        "the route, with its plugin"
    );
    assert_eq!(
        admin_form(&gw, "DELETE", "/services/ls", &[]).status,
        204,
        "then the service, with its"
    );
    let plugins = ok(&gw.admin_get("/plugins"), 200, "plugins");
    let names: Vec<&str> = plugins["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"correlation-id") && !names.contains(&"prometheus"),
        "{plugins}"
    );

    // However the plugin names its service (a PATCH stores the name as sent).
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "ps"), ("url", &o.url())],
    );
    ok(&r, 201, "ps");
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "correlation-id")]);
    let plugin = id_of(&ok(&r, 201, "a global plugin"));
    let r = admin_form(
        &gw,
        "PATCH",
        &format!("/plugins/{plugin}"),
        &[("service.name", "ps")],
    );
    ok(&r, 200, "moved onto ps by name");
    assert_eq!(
        admin_form(&gw, "DELETE", "/services/ps", &[]).status,
        204,
        "ps, with its plugin"
    );
    assert_eq!(gw.admin_get(&format!("/plugins/{plugin}")).status, 404);

    ok(
        &admin_form(&gw, "POST", "/consumer_groups", &[("name", "gold")]),
        201,
        "a group",
    );
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "member")]),
        201,
        "a consumer",
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups/gold/consumers",
        &[("consumer", "member")],
    );
    assert!(r.status == 200 || r.status == 201, "membership: {r:?}");
    // A member named by an object, as references may be; a number is a type error.
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "m2")]),
        201,
        "m2",
    );
    let r = admin_json(
        &gw,
        "POST",
        "/consumer_groups/gold/consumers",
        &json!({"consumer": {"username": "m2"}}),
    );
    assert_eq!(r.status, 201, "membership by object: {r:?}");
    let r = admin_json(
        &gw,
        "POST",
        "/consumers/m2/consumer_groups",
        &json!({"group": 5}),
    );
    let body = ok(&r, 400, "a number for a group");
    assert_eq!(
        body["fields"]["group"], "expected a name or id, or an object with one",
        "{body}"
    );
    // Kong Enterprise's single-group answer: the group with its members (its own fields
    // beside them, as every entity is shown).
    ok(
        &admin_form(
            &gw,
            "POST",
            "/consumer_groups/gold/plugins",
            &[("name", "rate-limiting"), ("config.minute", "7")],
        ),
        201,
        "a group plugin",
    );
    let shown = ok(&gw.admin_get("/consumer_groups/gold"), 200, "gold");
    assert_eq!(shown["consumer_group"]["name"], "gold", "{shown}");
    assert_eq!(shown["name"], "gold", "{shown}");
    let mut members: Vec<&str> = shown["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["username"].as_str())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["m2", "member"], "{shown}");
    // Its plugins are under /consumer_groups/gold/plugins; `plugins` here is Kong
    // Enterprise's per-group overrides, of which there are none.
    assert_eq!(shown["plugins"], json!([]), "{shown}");
    let scoped = ok(
        &gw.admin_get("/consumer_groups/gold/plugins"),
        200,
        "gold's plugins",
    );
    assert_eq!(scoped["data"][0]["config"]["minute"], 7, "{scoped}");
    // Every member out at once, from either side; the group stays.
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumers/m2/consumer_groups", &[]).status,
        204
    );
    let groups = ok(&gw.admin_get("/consumers/m2/consumer_groups"), 200, "m2's");
    assert_eq!(groups["data"], json!([]), "{groups}");
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumers/m2/consumer_groups", &[]).status,
        204,
        "in no group"
    );
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumer_groups/gold/consumers", &[]).status,
        204
    );
    let left = ok(
        &gw.admin_get("/consumer_groups/gold/consumers"),
        200,
        "none",
    );
    assert_eq!(left["data"], json!([]), "{left}");
    ok(
        &gw.admin_get("/consumer_groups/gold"),
        200,
        "the group stays",
    );
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumer_groups/nope/consumers", &[]).status,
        404
    );
    ok(
        &admin_form(
            &gw,
            "POST",
            "/consumer_groups/gold/consumers",
            &[("consumer", "member")],
        ),
        201,
        "back in",
    );
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumer_groups/gold", &[]).status,
        204,
        "a group with members"
    );
    let groups = ok(
        &gw.admin_get("/consumers/member/consumer_groups"),
        200,
        "the member's groups",
    );
    assert_eq!(groups["data"], json!([]), "{groups}");
    // A membership that names its group, in any of the ways a reference may.
    ok(
        &admin_form(&gw, "POST", "/consumer_groups", &[("name", "silver")]),
        201,
        "silver",
    );
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"username": "named", "groups": [{"id": "8d4e4c8e-5a53-4a8b-9c43-0b9d7b6a1f00", "name": "silver"}]}),
    );
    ok(&r, 201, "a member naming its group");
    assert_eq!(
        admin_form(&gw, "DELETE", "/consumer_groups/silver", &[]).status,
        204
    );
    let groups = ok(
        &gw.admin_get("/consumers/named/consumer_groups"),
        200,
        "named's groups",
    );
    assert_eq!(groups["data"], json!([]), "{groups}");
}

/// `GET /` has the keys of Kong's node information that tools and scripts read.
#[test]
fn node_information_has_kongs_keys() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    ok(
        &admin_form(&gw, "POST", "/plugins", &[("name", "prometheus")]),
        201,
        "plugin",
    );
    let body = ok(&gw.admin_get("/"), 200, "GET /");
    assert_eq!(body["configuration"]["database"], "off", "{body}");
    // Kong 3's version, which decK reads to choose the 3.0 format and the endpoints it
    // writes; ringway's own beside it.
    assert_eq!(body["version"], "3.9.0", "{body}");
    assert_eq!(
        body["ringway"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{body}"
    );
    assert!(
        body["node_id"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );
    assert!(body["hostname"].is_string(), "{body}");
    assert!(body["pids"]["master"].is_u64(), "{body}");
    let available = body["plugins"]["available_on_server"].as_object().unwrap();
    for name in ["jwt", "rate-limiting", "correlation-id", "prometheus"] {
        assert!(available[name]["priority"].is_u64(), "{name}: {body}");
        // Kong's bundled plugins carry Kong's version.
        assert_eq!(available[name]["version"], "3.9.0", "{name}: {body}");
    }
    let enabled = body["plugins"]["enabled_in_cluster"].as_array().unwrap();
    assert!(enabled.contains(&json!("prometheus")), "{body}");
}

/// The node id outlives the process, as Kong's (kept in its prefix): Prometheus series
/// carry it, so a new one at each start would split them. It lives in `data_dir`; a file
/// that does not hold a UUID is replaced, not served.
#[test]
fn node_id_survives_restarts() {
    let o = Origin::start();
    let mut gw = Gateway::start(&base_config(&o));
    let first = ok(&gw.admin_get("/"), 200, "GET /")["node_id"].clone();
    let kept = std::fs::read_to_string(gw.data_dir().join("node_id")).unwrap();
    assert_eq!(kept.trim(), first.as_str().unwrap(), "data_dir/node_id");
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    let again = ok(&gw.admin_get("/"), 200, "GET / after a restart");
    assert_eq!(again["node_id"], first, "{again}");

    std::fs::write(gw.data_dir().join("node_id"), "not-a-uuid\n").unwrap();
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    let fresh = ok(&gw.admin_get("/"), 200, "GET / after a bad node_id file")["node_id"].clone();
    let fresh = fresh.as_str().unwrap().to_owned();
    assert!(fresh.len() == 36 && fresh != first, "{fresh}");
    let kept = std::fs::read_to_string(gw.data_dir().join("node_id")).unwrap();
    assert_eq!(kept.trim(), fresh, "the new id is kept");
}

/// Kong's `POST /schemas/{entity}/validate` (what `deck gateway validate` posts each
/// entity to): 200 for a valid entity, the write's 400 for an invalid one; nothing is
/// written and references are not looked for.
#[test]
fn schemas_validate_checks_without_writing() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let valid = "schema validation successful";
    for (kind, body) in [
        (
            "services",
            json!({"name": "v-svc", "url": "http://api.example.com"}),
        ),
        (
            "routes",
            json!({"paths": ["/v"], "service": {"name": "no-such-service"}}),
        ),
        ("consumers", json!({"username": "v-user"})),
        (
            "plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5}}),
        ),
        ("upstreams", json!({"name": "v-pool"})),
        // What the write generates may be left out.
        ("jwt_secrets", json!({"consumer": {"username": "whoever"}})),
        (
            "snis",
            json!({"name": "v.example", "certificate": {"id": "00000000-0000-4000-8000-00000000000a"}}),
        ),
    ] {
        let path = format!("/schemas/{kind}/validate");
        let r = admin_json(&gw, "POST", &path, &body);
        assert_eq!(ok(&r, 200, &path)["message"], valid, "{r:?}");
    }
    for (kind, body, field) in [
        (
            "services",
            json!({"url": "ftp://x", "retries": "x"}),
            "retries",
        ),
        ("routes", json!({"paths": ["x"]}), "paths"),
        ("consumers", json!({"username": "u", "bogus": 1}), "bogus"),
        (
            "plugins",
            json!({"name": "rate-limiting", "config": {"minute": 0}}),
            "config",
        ),
        ("plugins", json!({"name": "acl"}), "name"),
        (
            "jwt_secrets",
            json!({"key": "k", "algorithm": "RS256"}),
            "rsa_public_key",
        ),
        // What a write refuses as it adds the entity, and what a scope allows.
        (
            "routes",
            json!({"name": "bad name", "paths": ["/x"]}),
            "name",
        ),
        ("targets", json!({"upstream": {"name": "pool"}}), "target"),
        (
            "targets",
            json!({"target": "10.0.0.1:80", "weight": 70000, "upstream": {"name": "pool"}}),
            "weight",
        ),
        ("snis", json!({"name": "a..b"}), "name"),
        (
            "plugins",
            json!({"name": "jwt", "consumer": {"name": "anyone"}}),
            "consumer",
        ),
    ] {
        let path = format!("/schemas/{kind}/validate");
        let body = ok(&admin_json(&gw, "POST", &path, &body), 400, &path);
        assert_eq!(body["code"], 2, "{path}: {body}");
        assert!(body["fields"].get(field).is_some(), "{path}: {body}");
    }
    let r = admin_json(&gw, "POST", "/schemas/widgets/validate", &json!({}));
    assert_eq!(
        ok(&r, 404, "unknown")["message"],
        "No entity named 'widgets'"
    );
    for path in ["/services/v-svc", "/consumers/v-user", "/upstreams/v-pool"] {
        assert_eq!(gw.admin_get(path).status, 404, "{path} was not written");
    }
}

/// `/plugins/enabled` is an endpoint of its own: no write there reaches a plugin.
#[test]
fn plugins_enabled_takes_no_writes() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let body = ok(&gw.admin_get("/plugins/enabled"), 200, "GET");
    assert!(body["enabled_plugins"].is_array(), "{body}");
    for method in ["PUT", "PATCH", "DELETE", "POST"] {
        let r = admin_form(&gw, method, "/plugins/enabled", &[("name", "prometheus")]);
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(
            r.header("allow"),
            Some("GET, HEAD, OPTIONS"),
            "{method}: {r:?}"
        );
    }
    let plugins = ok(&gw.admin_get("/plugins"), 200, "plugins");
    assert!(
        !plugins
            .to_string()
            .contains("\"instance_name\":\"enabled\""),
        "{plugins}"
    );
}

/// Kong validates an entity before its unique keys: a body that is invalid and takes a
/// name already taken is a 400 with its problems; the same body, valid, a 409.
#[test]
fn schema_problems_answer_before_a_taken_name() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let url = o.url();
    for (path, first, invalid, field) in [
        (
            "/services",
            json!({"name": "svc-a", "url": url}),
            json!({"name": "svc-a", "url": url, "retries": "many"}),
            "retries",
        ),
        (
            "/routes",
            json!({"name": "route-a", "paths": ["/route-a"], "service": {"name": "svc-a"}}),
            json!({"name": "route-a", "paths": ["nope"], "service": {"name": "svc-a"}}),
            "paths",
        ),
        (
            "/consumer_groups",
            json!({"name": "group-a"}),
            json!({"name": "group-a", "bogus": 1}),
            "bogus",
        ),
        (
            "/upstreams",
            json!({"name": "up-a"}),
            json!({"name": "up-a", "slots": "x"}),
            "slots",
        ),
        (
            "/upstreams/up-a/targets",
            json!({"target": "10.0.0.1:80"}),
            json!({"target": "10.0.0.1:80", "weight": -5}),
            "weight",
        ),
        (
            "/consumers",
            json!({"username": "user-a"}),
            json!({"username": "user-a", "custom_id": 5}),
            "custom_id",
        ),
    ] {
        ok(&admin_json(&gw, "POST", path, &first), 201, path);
        let body = ok(&admin_json(&gw, "POST", path, &invalid), 400, path);
        assert_eq!(body["code"], 2, "{path}: {body}");
        assert!(body["fields"].get(field).is_some(), "{path}: {body}");
        let body = ok(&admin_json(&gw, "POST", path, &first), 409, path);
        assert_eq!(body["code"], 5, "{path}: {body}");
    }
}

/// Kong's schema-violation body: `fields` nests (`config` holds `minute`), a check across
/// fields is the entity's (`@entity`, listed first in the message), and neither names
/// the entity's place in ringway's combined config.
#[test]
fn schema_violations_nest_their_fields_as_kong_does() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "0")],
    );
    let body = ok(&r, 400, "minute: 0");
    assert_eq!(
        (body["code"].clone(), body["name"].clone()),
        (json!(2), json!("schema violation")),
        "{body}"
    );
    assert_eq!(
        body["fields"]["config"]["minute"], "value must be greater than 0",
        "Kong's words: {body}"
    );
    assert!(body["fields"].get("config.minute").is_none(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("schema violation (config.minute: "),
        "{body}"
    );

    // An element's problem sits at its place in an array, null where elements are fine.
    let r = admin_json(
        &gw,
        "POST",
        "/routes",
        &json!({"paths": ["nope", "/ok", "/a//b"], "service": {"name": "user-service"}}),
    );
    let body = ok(&r, 400, "bad paths");
    let paths = body["fields"]["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(paths.len(), 3, "{body}");
    assert!(
        paths[0].is_string() && paths[1].is_null() && paths[2].is_string(),
        "{body}"
    );

    // An index that comes from the body itself stays a flat key, whatever its size.
    for field in ["x[100000000000]", "x[18446744073709551615]"] {
        let r = admin_json(
            &gw,
            "POST",
            "/consumers",
            &json!({"username": "ix", field: 1}),
        );
        let body = ok(&r, 400, field);
        assert!(body["fields"][field].is_string(), "{body}");
    }
    assert_eq!(gw.admin_get("/status").status, 200, "still up");

    let periods = "at least one of these fields must be non-empty: 'config.second', \
                   'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'";
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "rate-limiting", "config": {"limit_by": "ip"}}),
    );
    let body = ok(&r, 400, "no period");
    assert_eq!(body["fields"], json!({ "@entity": [periods] }), "{body}");
    assert_eq!(
        body["message"],
        format!("schema violation ({periods})"),
        "{body}"
    );

    // Every problem at once: a bad name hides none of the others, and the schema
    // comes before a reference that names nothing (Kong's order).
    let r = admin_form(
        &gw,
        "POST",
        "/services",
        &[("name", "bad name"), ("host", "h"), ("retries", "-1")],
    );
    let body = ok(&r, 400, "a bad name and a bad number");
    assert!(
        body["fields"]["name"].is_string() && body["fields"]["retries"].is_string(),
        "{body}"
    );
    let r = admin_form(
        &gw,
        "POST",
        "/routes",
        &[
            ("name", "bad name"),
            ("paths", "nope"),
            ("service.name", "user-service"),
        ],
    );
    let body = ok(&r, 400, "a route's bad name and bad path");
    assert!(
        body["fields"]["name"].is_string() && body["fields"]["paths"].is_array(),
        "{body}"
    );
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "rate-limiting", "config": {"minute": "x"}, "service": {"name": "nosvc"}}),
    );
    let body = ok(&r, 400, "a bad config on a missing service");
    assert_eq!(body["code"], 2, "{body}");
    assert!(body["fields"]["config"]["minute"].is_string(), "{body}");

    let r = admin_form(&gw, "POST", "/consumers", &[("username", "both")]);
    ok(&r, 201, "a consumer");
    // A field of the wrong type is the one problem shown, not what it leads to (the
    // consumer's credential left without its consumer).
    ok(
        &admin_form(&gw, "POST", "/consumers/both/jwt", &[]),
        201,
        "a credential",
    );
    let r = admin_json(
        &gw,
        "PATCH",
        "/consumers/both",
        &json!({"tags": "notalist"}),
    );
    let body = ok(&r, 400, "a mistyped field");
    assert_eq!(body["fields"], json!({"tags": "expected a set"}), "{body}");
    let r = admin_json(
        &gw,
        "PATCH",
        "/consumers/both",
        &json!({"username": null, "custom_id": null}),
    );
    let body = ok(&r, 400, "PATCH away both names");
    assert_eq!(
        body["fields"],
        json!({ "@entity": ["at least one of these fields must be non-empty: 'custom_id', 'username'"] }),
        "{body}"
    );
}

/// `POST /config` without a `ringway:` section keeps the file's: the node's settings are
/// not what a config push replaces (a next run would otherwise start on defaults, away
/// from its data_dir). A posted section replaces it.
#[test]
fn post_config_keeps_the_node_section_it_does_not_send() {
    let o = Origin::start();
    let node = "ringway:\n  keepalive_timeout: 4321\n";
    let gw = Gateway::start(&format!("{}{node}", base_config(&o)));
    let pushed = json!({
        "_format_version": "3.0",
        "services": [{"name": "pushed", "url": o.url(),
                      "routes": [{"name": "pushed", "paths": ["/pushed"]}]}]
    });
    ok(&admin_json(&gw, "POST", "/config", &pushed), 201, "push");
    assert_eq!(upstream_target(&gw, "/pushed/a"), "/a");
    // A JSON body stays JSON, the file's section added to it.
    let file = std::fs::read_to_string(gw.config_path()).unwrap();
    assert!(file.contains(r#""keepalive_timeout": 4321"#), "{file}");
    assert!(file.contains(r#""name": "pushed""#), "{file}");
    // A YAML body is kept as sent, comments included, the section appended.
    let yaml = format!(
        "# pushed by the pipeline\n_format_version: \"3.0\"\nservices:\n  - name: pushed  # the one\n    url: {}\n",
        o.url()
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", yaml.as_bytes())),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let file = std::fs::read_to_string(gw.config_path()).unwrap();
    assert_eq!(file, format!("{yaml}{node}"));
    let mut with_section = pushed.clone();
    with_section["ringway"] = json!({ "keepalive_timeout": 999 });
    ok(
        &admin_json(&gw, "POST", "/config", &with_section),
        201,
        "push",
    );
    let file = std::fs::read_to_string(gw.config_path()).unwrap();
    assert!(file.contains("999") && !file.contains("4321"), "{file}");
}

/// The file's `ringway:` section as a push without one keeps it, however the file
/// writes it: one that refers to an anchor elsewhere (it cannot be read alone) is kept;
/// a `ringway:` line inside a quoted string (a multi-line scalar may run back to column
/// 0) is no section, and nothing is taken from it.
#[test]
fn post_config_reads_the_node_section_from_the_whole_file() {
    let o = Origin::start();
    let service = format!("services:\n  - name: first\n    url: {}\n", o.url());
    for (head, kept) in [
        (
            format!(
                "{service}    read_timeout: &wait 4321\nringway:\n  keepalive_timeout: *wait\n"
            ),
            true,
        ),
        (
            format!("_comment: \"a\nringway:\n  keepalive_timeout: 4321\n\"\n{service}"),
            false,
        ),
    ] {
        let gw = Gateway::start(&format!("_format_version: \"3.0\"\n{head}"));
        let pushed = json!({
            "_format_version": "3.0",
            "services": [{"name": "pushed", "url": o.url(),
                          "routes": [{"name": "pushed", "paths": ["/pushed"]}]}]
        });
        ok(&admin_json(&gw, "POST", "/config", &pushed), 201, "push");
        assert_eq!(upstream_target(&gw, "/pushed/a"), "/a");
        let file = std::fs::read_to_string(gw.config_path()).unwrap();
        assert_eq!(
            file.contains(r#""keepalive_timeout": 4321"#),
            kept,
            "{head}\nsaved:\n{file}"
        );
        assert_eq!(file.contains("4321"), kept, "{file}");
    }
}

/// A single form value of a plugin's list field is a one-item list, as with Kong.
#[test]
fn a_plugin_list_field_takes_one_form_value() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let r = admin_form(
        &gw,
        "POST",
        "/services/account-service/plugins",
        &[
            ("name", "jwt"),
            ("config.claims_to_verify", "exp"),
            ("config.cookie_names", "session"),
        ],
    );
    let plugin = ok(&r, 201, "jwt from a form");
    assert_eq!(
        plugin["config"]["claims_to_verify"],
        json!(["exp"]),
        "{plugin}"
    );
    assert_eq!(
        plugin["config"]["cookie_names"],
        json!(["session"]),
        "{plugin}"
    );
}

/// HTTP as RFC 9110 asks of the Admin API: a 405 says what is allowed, HEAD answers as
/// GET without the body, a 401 carries a challenge, and a load balancer may probe
/// `/status/ready` with HEAD too.
#[test]
fn admin_http_allow_head_and_challenge() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "{}ringway:\n  admin_token: sesame\n",
        base_config(&o)
    ));
    let token = [("Kong-Admin-Token", "sesame")];
    for (method, path, allow) in [
        ("DELETE", "/status", "GET, HEAD, OPTIONS"),
        ("DELETE", "/consumers", "GET, HEAD, OPTIONS, POST"),
        ("POST", "/jwts", "GET, HEAD, OPTIONS"),
        (
            "POST",
            "/jwts/some-key",
            "DELETE, GET, HEAD, OPTIONS, PATCH",
        ),
        (
            "POST",
            "/routes/user-routes/service",
            "GET, HEAD, OPTIONS, PATCH, PUT",
        ),
        (
            "POST",
            "/services/user-service/routes/user-routes",
            "DELETE, GET, HEAD, OPTIONS, PATCH, PUT",
        ),
        ("PATCH", "/services/user-service", "GET, HEAD, OPTIONS"),
    ] {
        let r = http_request(gw.admin_addr(), method, path, &token, None);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}: {r:?}");
    }
    // OPTIONS (a browser's CORS preflight) answers 204 with what the path serves, as
    // Kong; a path with no endpoint is still a 404.
    for (path, allow) in [
        ("/consumers", "GET, HEAD, OPTIONS, POST"),
        (
            "/consumers/nobody/jwt/k",
            "DELETE, GET, HEAD, OPTIONS, PATCH, PUT",
        ),
        ("/status", "GET, HEAD, OPTIONS"),
    ] {
        let r = http_request(gw.admin_addr(), "OPTIONS", path, &token, None);
        assert_eq!(r.status, 204, "OPTIONS {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "OPTIONS {path}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some(allow),
            "OPTIONS {path}: {r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Content-Type"),
            "OPTIONS {path}: {r:?}"
        );
    }
    let r = http_request(gw.admin_addr(), "OPTIONS", "/nowhere", &token, None);
    assert_eq!(r.status, 404, "{r:?}");
    for path in ["/status", "/consumers", "/services/user-service"] {
        let get = http_request(gw.admin_addr(), "GET", path, &token, None);
        let head = http_request(gw.admin_addr(), "HEAD", path, &token, None);
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
        assert!(head.body.is_empty(), "HEAD {path}: {head:?}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
    }
    let r = http_request(gw.admin_addr(), "GET", "/status", &[], None);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
    let r = http_request(gw.admin_addr(), "HEAD", "/status/ready", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/consumers",
        &token,
        Some(("text/plain", b"x")),
    );
    assert_eq!(r.status, 415, "{r:?}");
    assert!(
        r.head_raw
            .starts_with(b"HTTP/1.1 415 Unsupported Media Type\r\n"),
        "{r:?}"
    );
}

/// A config nested past any real one is refused with the loader's reason, before any
/// YAML parsing (the node-section merge of `POST /config` included).
#[test]
fn post_config_refuses_a_bracket_bomb() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let bomb = format!(
        "_format_version: \"3.0\"\nservices: {}",
        "[".repeat(200_000)
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", bomb.as_bytes())),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body_str().contains("nests deeper than 256 levels"),
        "{r:?}"
    );
    assert_eq!(gw.admin_get("/status").status, 200);
}

#[test]
fn admin_routes_are_3_0_routes_under_a_2_1_file() {
    // A "2.1" file's bare regex paths are migrated as Kong does; routes written through
    // the Admin API are not in the file's format and keep their paths as sent.
    let o = Origin::start();
    let file = format!(
        "_format_version: \"2.1\"\nservices:\n  - name: s\n    url: {}/svc\n    routes:\n      - name: legacy\n        strip_path: false\n        paths: [\"/legacy/v[0-9]+$\"]\n",
        o.url()
    );
    let gw = Gateway::start(&file);
    assert_eq!(upstream_target(&gw, "/legacy/v7"), "/svc/legacy/v7");
    for (name, path) in [("marked", "~/marked/v[0-9]+$"), ("literal", "/literal/[x]")] {
        let r = admin_json(
            &gw,
            "POST",
            "/routes",
            &json!({"name": name, "paths": [path], "strip_path": false, "service": {"name": "s"}}),
        );
        ok(&r, 201, name);
    }
    assert_eq!(upstream_target(&gw, "/marked/v12"), "/svc/marked/v12");
    assert_eq!(upstream_target(&gw, "/literal/[x]/a"), "/svc/literal/[x]/a");
    assert_eq!(proxy_get(&gw, "/literal/x", &[]).status, 404);
}

/// A credential's key is any string, kept as given; one shaped as an upper-case UUID is
/// still found at `/jwts/{key}` (path UUIDs are read in lower case, as ids are kept).
#[test]
fn a_key_shaped_as_an_upper_case_uuid_is_found() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    ok(
        &admin_form(&gw, "POST", "/consumers", &[("username", "uk")]),
        201,
        "consumer",
    );
    let key = "7B5D4A3C-1F2E-4D6C-9A8B-00000000000A";
    let r = admin_form(&gw, "POST", "/consumers/uk/jwt", &[("key", key)]);
    assert_eq!(ok(&r, 201, "credential")["key"], key);
    assert_eq!(
        ok(&gw.admin_get(&format!("/jwts/{key}")), 200, "GET")["key"],
        key
    );
    let r = http_request(
        gw.admin_addr(),
        "DELETE",
        &format!("/jwts/{key}"),
        &[],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(gw.admin_get(&format!("/jwts/{key}")).status, 404, "deleted");
}

/// The defaults of a schema's fields (records flattened to their own defaults), as decK
/// reads them to fill in what a file leaves out.
fn schema_defaults(schema: &Value) -> serde_json::Map<String, Value> {
    let mut defaults = serde_json::Map::new();
    for field in schema["fields"].as_array().into_iter().flatten() {
        let Some((name, spec)) = field.as_object().and_then(|f| f.iter().next()) else {
            continue;
        };
        if spec["type"] == "record" {
            defaults.insert(name.clone(), Value::Object(schema_defaults(spec)));
        } else if let Some(default) = spec.get("default") {
            defaults.insert(name.clone(), default.clone());
        }
    }
    defaults
}

/// Every default in `defaults` is what `shown` has there.
fn assert_defaults_shown(defaults: &serde_json::Map<String, Value>, shown: &Value, what: &str) {
    for (name, default) in defaults {
        match default {
            Value::Object(record) if !record.is_empty() => {
                assert_defaults_shown(record, &shown[name], &format!("{what}.{name}"))
            }
            default => assert_eq!(&shown[name], default, "{what}.{name}: {shown}"),
        }
    }
}

/// Kong's `GET /schemas/{entity}` and `/schemas/plugins/{name}`, which decK reads before
/// a sync or a diff to fill in what a file leaves out: each field's type and default,
/// and the defaults are what ringway answers for an entity written without them, so a
/// file synced and read back compares equal.
#[test]
fn schemas_give_the_defaults_writes_answer_with() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let schema = |path: &str| ok(&gw.admin_get(path), 200, path);
    let services = schema("/schemas/services");
    let defaults = schema_defaults(&services);
    assert_eq!(defaults["retries"], 5, "{services}");
    assert_eq!(defaults["protocol"], "http", "{services}");
    let service = ok(
        &admin_form(
            &gw,
            "POST",
            "/services",
            &[("name", "schema-svc"), ("host", "example.test")],
        ),
        201,
        "service",
    );
    assert_defaults_shown(&defaults, &service, "service");

    let route = ok(
        &admin_json(
            &gw,
            "POST",
            "/routes",
            &json!({"paths": ["/schema"], "service": {"id": service["id"]}}),
        ),
        201,
        "route",
    );
    let defaults = schema_defaults(&schema("/schemas/routes"));
    assert_eq!(defaults["strip_path"], true);
    assert_defaults_shown(&defaults, &route, "route");

    let upstream = ok(
        &admin_form(&gw, "POST", "/upstreams", &[("name", "schema.pool")]),
        201,
        "upstream",
    );
    let defaults = schema_defaults(&schema("/schemas/upstreams"));
    // Kong's order, kept: 429 first.
    assert_eq!(
        defaults["healthchecks"]["active"]["unhealthy"]["http_statuses"],
        json!([429, 404, 500, 501, 502, 503, 504, 505])
    );
    assert_defaults_shown(&defaults, &upstream, "upstream");
    let target = ok(
        &admin_form(
            &gw,
            "POST",
            "/upstreams/schema.pool/targets",
            &[("target", "10.0.0.9:80")],
        ),
        201,
        "target",
    );
    assert_defaults_shown(
        &schema_defaults(&schema("/schemas/targets")),
        &target,
        "target",
    );

    for (name, config) in [
        ("rate-limiting", json!({"minute": 5})),
        ("jwt", json!({})),
        ("prometheus", json!({})),
        ("correlation-id", json!({})),
    ] {
        let plugin = ok(
            &admin_json(
                &gw,
                "POST",
                &format!("/services/{}/plugins", service["id"].as_str().unwrap()),
                &json!({"name": name, "config": config}),
            ),
            201,
            name,
        );
        let schema = schema(&format!("/schemas/plugins/{name}"));
        let defaults = schema_defaults(&schema);
        assert_defaults_shown(&defaults, &plugin, name);
        assert!(defaults["protocols"].is_array(), "{name}: {schema}");
    }
    // A rate-limiting plugin shows its `redis` record whole, given or not, as Kong does,
    // and the schema says it is required: go-kong fills in only a required record.
    let rate = schema("/schemas/plugins/rate-limiting");
    let config = rate["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("config"))
        .unwrap();
    let redis = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("redis"))
        .unwrap();
    assert_eq!(
        (&redis["type"], &redis["required"]),
        (&json!("record"), &json!(true)),
        "{redis}"
    );
    // Kong's deprecated spellings are shorthands translated into the record, which decK
    // lines up before it compares; not fields of their own.
    let shorthand = config["shorthand_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("redis_port"))
        .unwrap();
    assert_eq!(
        shorthand["translate_backwards"],
        json!(["redis", "port"]),
        "{config}"
    );
    assert!(
        !config["fields"].to_string().contains("redis_port"),
        "{config}"
    );
    let defaults = schema_defaults(&rate);
    assert_eq!(defaults["config"]["redis"]["port"], 6379);
    assert_eq!(defaults["config"]["redis"]["timeout"], 2000);

    for (path, message) in [
        ("/schemas/nothing", "No entity named 'nothing'"),
        ("/schemas/plugins/nothing", "No plugin named 'nothing'"),
    ] {
        let r = gw.admin_get(path);
        assert_eq!(
            (r.status, &r.json()["message"]),
            (404, &json!(message)),
            "{r:?}"
        );
    }
}

/// Health-check status lists are shown in the order given (Kong's `set`), each status
/// once; an upstream without active-check headers shows null, as Kong does.
#[test]
fn upstream_status_lists_keep_their_order() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let up = ok(
        &admin_json(
            &gw,
            "POST",
            "/upstreams",
            &json!({"name": "order.pool", "healthchecks": {"passive": {"unhealthy": {"http_statuses": [503, 500, 429, 503]}}}}),
        ),
        201,
        "upstream",
    );
    let checks = &up["healthchecks"];
    assert_eq!(
        checks["passive"]["unhealthy"]["http_statuses"],
        json!([503, 500, 429])
    );
    assert_eq!(checks["active"]["headers"], Value::Null, "{checks}");
}

/// A PATCH of a plugin's configuration merges records field by field, as Kong's does:
/// changing `redis.port` keeps the host and the password.
#[test]
fn a_plugin_patch_merges_nested_records() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let plugin = ok(
        &admin_json(
            &gw,
            "POST",
            "/plugins",
            &json!({"name": "rate-limiting", "config": {"minute": 5, "redis": {"host": "redis.internal", "password": "pw"}}}),
        ),
        201,
        "plugin",
    );
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{}", id_of(&plugin)),
        &json!({"config": {"redis": {"port": 6380}}}),
    );
    let redis = &ok(&r, 200, "PATCH")["config"]["redis"];
    assert_eq!(
        (&redis["host"], &redis["password"], &redis["port"]),
        (&json!("redis.internal"), &json!("pw"), &json!(6380)),
        "{redis}"
    );

    // Written with Kong's shorthand fields: folded into the record, and a PATCH of
    // either spelling changes the one value.
    ok(
        &admin_form(
            &gw,
            "POST",
            "/services",
            &[("name", "users"), ("host", "example.test")],
        ),
        201,
        "service",
    );
    let flat = ok(
        &admin_form(
            &gw,
            "POST",
            "/plugins",
            &[
                ("name", "rate-limiting"),
                ("config.minute", "5"),
                ("config.redis_host", "redis.flat"),
                ("config.redis_password", "pw2"),
                ("service", "users"),
            ],
        ),
        201,
        "flat plugin",
    );
    // Both spellings shown, as Kong 3.6.1 on shows them, saying the same.
    assert_eq!(flat["config"]["redis"]["host"], "redis.flat", "{flat}");
    assert_eq!(flat["config"]["redis_host"], "redis.flat", "{flat}");
    assert_eq!(flat["config"]["redis_port"], 6379, "{flat}");
    let path = format!("/plugins/{}", id_of(&flat));
    let r = admin_form(&gw, "PATCH", &path, &[("config.redis_port", "6390")]);
    let redis = &ok(&r, 200, "PATCH redis_port")["config"]["redis"];
    assert_eq!(
        (&redis["host"], &redis["port"]),
        (&json!("redis.flat"), &json!(6390)),
        "{redis}"
    );
    let r = admin_json(
        &gw,
        "PATCH",
        &path,
        &json!({"config": {"redis": {"port": 6391}}}),
    );
    let config = &ok(&r, 200, "PATCH redis.port")["config"];
    let redis = &config["redis"];
    assert_eq!(
        (&redis["password"], &redis["port"]),
        (&json!("pw2"), &json!(6391)),
        "{redis}"
    );
    assert_eq!(config["redis_port"], 6391, "{config}");
    // A plugin does not become another.
    let r = admin_form(&gw, "PATCH", &path, &[("name", "correlation-id")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        ok(&gw.admin_get(&path), 200, "GET")["name"],
        "rate-limiting"
    );
    // The two spellings saying different things in one PATCH: refused, as a create is.
    let r = admin_json(
        &gw,
        "PATCH",
        &path,
        &json!({"config": {"redis": {"port": 7000}, "redis_port": 7001}}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        ok(&gw.admin_get(&path), 200, "GET")["config"]["redis"]["port"],
        6391
    );
    // What a GET shows goes back whole with a PUT.
    let shown = ok(&gw.admin_get(&path), 200, "GET");
    let r = admin_json(&gw, "PUT", &path, &shown);
    assert_eq!(ok(&r, 200, "PUT as shown")["config"], shown["config"]);
}

/// A service's path is shown as given, `/` too, as Kong shows it; none given is null.
#[test]
fn a_service_path_is_shown_as_given() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for (name, url, path) in [
        ("slash", "http://example.test:8080/", json!("/")),
        ("bare", "http://example.test:8080", Value::Null),
        ("deep", "http://example.test:8080/v1", json!("/v1")),
    ] {
        let shown = ok(
            &admin_form(&gw, "POST", "/services", &[("name", name), ("url", url)]),
            201,
            name,
        );
        assert_eq!(shown["path"], path, "{name}: {shown}");
    }
}

/// A route's protocols are shown in the order given, as Kong keeps a set's.
#[test]
fn route_protocols_keep_their_order() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    ok(
        &admin_form(
            &gw,
            "POST",
            "/services",
            &[("name", "ordered"), ("host", "example.test")],
        ),
        201,
        "service",
    );
    for (paths, protocols) in [
        ("/first-https", json!(["https", "http"])),
        ("/first-http", json!(["http", "https"])),
    ] {
        let route = ok(
            &admin_json(
                &gw,
                "POST",
                "/services/ordered/routes",
                &json!({"paths": [paths], "protocols": protocols}),
            ),
            201,
            paths,
        );
        assert_eq!(route["protocols"], protocols, "{route}");
    }
}

/// A username may not be another consumer's id, in any case: ids are found without
/// regard to case, so the new consumer would be reached as the other one.
#[test]
fn a_username_is_no_other_consumers_id_in_capitals() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    let id = "7b5d4a3c-1f2e-4d6c-9a8b-0000000000bb";
    ok(
        &admin_form(
            &gw,
            "POST",
            "/consumers",
            &[("username", "first"), ("id", id)],
        ),
        201,
        "first",
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", &id.to_uppercase())],
    );
    let body = ok(&r, 409, "a username that is an id in capitals");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("is the id of another consumer")),
        "{body}"
    );
}

/// correlation-id under a credential header, or one the gateway sets upstream: refused
/// when written, through the Admin API as in the file.
#[test]
fn correlation_id_refuses_a_credential_or_forwarding_header_when_written() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    for header in ["Authorization", "X-Forwarded-For"] {
        let r = admin_json(
            &gw,
            "POST",
            "/plugins",
            &json!({"name": "correlation-id", "config": {"header_name": header}}),
        );
        let body = ok(&r, 400, header);
        assert!(
            body["fields"]["config"]["header_name"]
                .as_str()
                .is_some_and(|m| m.contains(header)),
            "{body}"
        );
    }
    check_refuses(
        "_format_version: \"3.0\"\nplugins:\n  - name: correlation-id\n    config: {header_name: Cookie}\n",
        &["plugins[0].config.header_name: 'Cookie' carries credentials"],
    );
}

/// correlation-id where a jwt plugin reads its token, written through the Admin API in
/// either order: refused, the token would become the logged request ID.
#[test]
fn correlation_id_and_jwt_may_not_share_a_header_when_written() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o));
    ok(
        &admin_form(
            &gw,
            "POST",
            "/services",
            &[("name", "shared"), ("host", "example.test")],
        ),
        201,
        "service",
    );
    ok(
        &admin_json(
            &gw,
            "POST",
            "/services/shared/plugins",
            &json!({"name": "jwt", "config": {"header_names": ["x-token"]}}),
        ),
        201,
        "jwt",
    );
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "correlation-id", "config": {"header_name": "X-Token"}}),
    );
    let body = ok(&r, 400, "correlation-id on the jwt header");
    assert!(
        body["fields"]["config"]["header_name"]
            .as_str()
            .is_some_and(|m| m.contains("X-Token")),
        "{body}"
    );
    // `X_Token` is read as the header `x-token` too.
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "correlation-id", "config": {"header_name": "X_Token"}}),
    );
    let body = ok(&r, 400, "correlation-id on the jwt header, underscored");
    assert!(
        body["fields"]["config"]["header_name"]
            .as_str()
            .is_some_and(|m| m.contains("X_Token")),
        "{body}"
    );
    // The other order: a correlation-id first, then a jwt reading its header.
    let id = ok(
        &admin_json(
            &gw,
            "POST",
            "/plugins",
            &json!({"name": "correlation-id", "config": {"header_name": "X-Trace"}}),
        ),
        201,
        "correlation-id",
    );
    let r = admin_json(
        &gw,
        "POST",
        "/routes",
        &json!({"name": "r-shared", "paths": ["/shared"], "service": {"name": "shared"}}),
    );
    ok(&r, 201, "route");
    let r = admin_json(
        &gw,
        "POST",
        "/routes/r-shared/plugins",
        &json!({"name": "jwt", "config": {"header_names": ["x-trace"]}}),
    );
    ok(&r, 400, "jwt on the correlation-id header");
    // A PATCH into the clash is refused too.
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{}", id_of(&id)),
        &json!({"config": {"header_name": "x-token"}}),
    );
    ok(&r, 400, "PATCH into the clash");
}
