//! The writable Admin API, black box (SPEC §5: consumers and JWT credentials as Kong's Admin
//! API, two layers, durability, reload through `POST /config` and SIGHUP, `admin_token`;
//! Kong's behaviour: research/kong-semantics.md §1.6).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "my-secret-key";

/// user-service (/api/users) has a service-scoped jwt; account-service (/api/accounts) has
/// no plugin; `extra` is appended verbatim.
fn base_config(origin: &Origin, extra: &str) -> String {
    seed_services_config(origin, false, extra)
}

fn token(iss: &str, secret: &str) -> String {
    py_hs256(
        &json!({"iss": iss, "sub": "user123", "exp": unix_now() + 3600}).to_string(),
        secret,
    )
}

fn auth(iss: &str, secret: &str) -> String {
    format!("Bearer {}", token(iss, secret))
}

fn get_with(gw: &Gateway, path: &str, authz: &str) -> Response {
    proxy_get(gw, path, &[("Authorization", authz)])
}

fn create_consumer(gw: &Gateway, username: &str) -> Value {
    let r = admin_form(gw, "POST", "/consumers", &[("username", username)]);
    assert_eq!(r.status, 201, "POST /consumers username={username}: {r:?}");
    r.json()
}

fn create_jwt(gw: &Gateway, consumer: &str, key: &str, secret: &str) -> Value {
    let r = admin_form(
        gw,
        "POST",
        &format!("/consumers/{consumer}/jwt"),
        &[("key", key), ("secret", secret)],
    );
    assert_eq!(r.status, 201, "POST /consumers/{consumer}/jwt: {r:?}");
    r.json()
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn assert_not_found(r: &Response, what: &str) {
    assert_eq!(r.status, 404, "{what}: {r:?}");
    assert_eq!(r.json()["message"], "Not found", "{what}: {r:?}");
}

fn assert_list(r: &Response, what: &str) -> Vec<Value> {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let j = r.json();
    assert!(
        j.get("next").is_some() && j["next"].is_null(),
        "{what}: `next: null`: {j}"
    );
    j["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: `data` list: {j}"))
        .clone()
}

// ---------------------------------------------------------------------------------------
// consumers

#[test]
fn consumers_crud_by_username_and_id_form_and_json() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));

    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "alice"), ("custom_id", "cust-a")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let alice = r.json();
    let id = id_of(&alice);
    assert_eq!(alice["username"], "alice", "{alice}");
    assert_eq!(alice["custom_id"], "cust-a", "{alice}");

    let r = admin_json(&gw, "POST", "/consumers", &json!({"username": "bob"}));
    assert_eq!(r.status, 201, "JSON body: {r:?}");
    let bob_id = id_of(&r.json());
    assert_ne!(bob_id, id);
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"custom_id": "only-custom"}),
    );
    assert_eq!(r.status, 201, "custom_id alone is enough: {r:?}");

    // read by username and by id
    for key in ["alice", id.as_str()] {
        let r = gw.admin_get(&format!("/consumers/{key}"));
        assert_eq!(r.status, 200, "GET /consumers/{key}: {r:?}");
        assert_eq!(r.json()["id"], json!(id), "{r:?}");
        assert_eq!(r.json()["username"], "alice", "{r:?}");
    }
    // lists
    let all = assert_list(&gw.admin_get("/consumers"), "GET /consumers");
    assert_eq!(all.len(), 3, "{all:?}");
    let by_custom = assert_list(
        &gw.admin_get("/consumers?custom_id=cust-a"),
        "GET /consumers?custom_id=cust-a",
    );
    assert_eq!(by_custom.len(), 1, "{by_custom:?}");
    assert_eq!(by_custom[0]["id"], json!(id));
    let none = assert_list(
        &gw.admin_get("/consumers?custom_id=nope"),
        "GET /consumers?custom_id=nope",
    );
    assert!(none.is_empty(), "{none:?}");
    assert_not_found(&gw.admin_get("/consumers/nobody"), "unknown consumer");
}

#[test]
fn consumers_patch_put_delete_by_username_and_id() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "alice"), ("custom_id", "cust-a")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let id = id_of(&r.json());
    let bob_id = id_of(&create_consumer(&gw, "bob"));

    // PATCH by username (form) and by id (JSON)
    let r = admin_form(&gw, "PATCH", "/consumers/alice", &[("custom_id", "cust-b")]);
    assert_eq!(r.status, 200, "PATCH by username: {r:?}");
    assert_eq!(r.json()["custom_id"], "cust-b");
    assert_eq!(r.json()["id"], json!(id), "PATCH keeps the id");
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/consumers/{id}"),
        &json!({"username": "alice2"}),
    );
    assert_eq!(r.status, 200, "PATCH by id: {r:?}");
    assert_eq!(r.json()["username"], "alice2");
    assert_eq!(r.json()["custom_id"], "cust-b", "PATCH leaves other fields");
    assert_not_found(
        &gw.admin_get("/consumers/alice"),
        "old username after rename",
    );
    assert_eq!(gw.admin_get("/consumers/alice2").status, 200);

    // PUT: create on an unknown username, replace on a known one
    let r = admin_form(&gw, "PUT", "/consumers/dave", &[("custom_id", "cust-d")]);
    assert_eq!(r.status, 200, "PUT creates, and Kong answers 200: {r:?}");
    let dave = r.json();
    assert_eq!(dave["username"], "dave", "{dave}");
    assert_eq!(dave["custom_id"], "cust-d", "{dave}");
    let r = admin_json(
        &gw,
        "PUT",
        "/consumers/dave",
        &json!({"custom_id": "cust-e"}),
    );
    assert_eq!(r.status, 200, "PUT replaces: {r:?}");
    assert_eq!(r.json()["custom_id"], "cust-e");
    assert_eq!(
        r.json()["id"],
        dave["id"],
        "PUT on the same username keeps the id"
    );

    // DELETE by username and by id
    let r = admin_form(&gw, "DELETE", "/consumers/dave", &[]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_not_found(&gw.admin_get("/consumers/dave"), "deleted consumer");
    let r = admin_form(&gw, "DELETE", &format!("/consumers/{bob_id}"), &[]);
    assert_eq!(r.status, 204, "DELETE by id: {r:?}");
    assert_not_found(&gw.admin_get("/consumers/bob"), "deleted by id");
    // As Kong: deleting what is not there answers 204 too.
    let r = admin_form(&gw, "DELETE", "/consumers/bob", &[]);
    assert_eq!(r.status, 204, "DELETE of a missing consumer: {r:?}");
    let r = admin_form(&gw, "DELETE", "/consumers/bob/jwt/none", &[]);
    assert_not_found(&r, "DELETE of a credential under a missing consumer");
    let r = admin_form(&gw, "PATCH", "/consumers/nobody", &[("custom_id", "x")]);
    assert_not_found(&r, "PATCH unknown consumer");
}

/// A secret the file gives as a vault reference authenticates with the environment's
/// value, and the Admin API shows the reference, as Kong's does, not the secret.
#[test]
fn vault_secrets_show_as_their_references() {
    const SECRET: &str = "from-the-environment-0123456789";
    let o = Origin::start();
    let consumers = "consumers:\n  - username: vaulted\n    jwt_secrets:\n      \
                     - key: vaulted-key\n        secret: \"{vault://env/ringway-admin-secret}\"\n";
    let gw = Gateway::start_with(
        &base_config(&o, consumers),
        GatewayOpts::default().env("RINGWAY_ADMIN_SECRET", SECRET),
    );
    let r = get_with(&gw, "/api/users/1", &auth("vaulted-key", SECRET));
    assert_eq!(r.status, 200, "{r:?}");
    let r = gw.admin_get("/consumers/vaulted/jwt");
    assert_eq!(r.status, 200, "{r:?}");
    let listed = r.json();
    assert_eq!(
        listed["data"][0]["secret"], "{vault://env/ringway-admin-secret}",
        "{listed}"
    );
    assert!(!listed.to_string().contains(SECRET), "{listed}");

    // A credential the Admin API creates may name its secret by reference too: the
    // environment's value signs, not the reference's text.
    create_consumer(&gw, "api-made");
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/api-made/jwt",
        &[
            ("key", "api-key"),
            ("secret", "{vault://env/ringway-admin-secret}"),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["secret"],
        "{vault://env/ringway-admin-secret}",
        "{r:?}"
    );
    let r = get_with(&gw, "/api/users/1", &auth("api-key", SECRET));
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_with(
        &gw,
        "/api/users/1",
        &auth("api-key", "{vault://env/ringway-admin-secret}"),
    );
    assert_eq!(r.status, 401, "the reference's text is no secret: {r:?}");
    // A reference to a variable that is not set is refused, as in the file.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/api-made/jwt",
        &[
            ("key", "unset-key"),
            ("secret", "{vault://env/ringway-not-set-anywhere}"),
        ],
    );
    assert_field_error(&r, "secret", "RINGWAY_NOT_SET_ANYWHERE");
}

/// A plugin's Redis password given as a vault reference shows as the reference, in the
/// file's plugins and the Admin API's, also after a PATCH; through the Admin API a
/// reference is read only in such secret fields, or anyone holding the Admin API could
/// read the gateway's environment back (in the entity, or in a 429's message).
#[test]
fn plugin_secrets_show_as_references_and_admin_references_stay_in_secret_fields() {
    const SECRET: &str = "redis-password-from-the-environment";
    let o = Origin::start();
    let file_plugin = "plugins:\n  - name: rate-limiting\n    config:\n      minute: 100000\n      \
                       policy: redis\n      redis:\n        host: 127.0.0.1\n        port: 9\n        \
                       password: \"{vault://env/ringway-redis-secret}\"\n";
    let gw = Gateway::start_with(
        &base_config(&o, file_plugin),
        GatewayOpts::default().env("RINGWAY_REDIS_SECRET", SECRET),
    );
    let reference = "{vault://env/ringway-redis-secret}";
    let listed = gw.admin_get("/plugins").json();
    assert_eq!(
        listed["data"][0]["config"]["redis"]["password"], reference,
        "{listed}"
    );
    assert!(!listed.to_string().contains(SECRET), "{listed}");

    let posted = json!({
        "name": "rate-limiting",
        "config": {"minute": 100000, "policy": "redis",
                   "redis": {"host": "127.0.0.1", "port": 9, "password": reference}}
    });
    let r = admin_json(&gw, "POST", "/services/user-service/plugins", &posted);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["config"]["redis"]["password"], reference, "{r:?}");
    let id = id_of(&r.json());
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{id}"),
        &json!({"config": {"minute": 200000}}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let shown = gw.admin_get(&format!("/plugins/{id}")).json();
    assert_eq!(shown["config"]["minute"], 200000, "{shown}");
    // Kong's default, printed as Kong prints it.
    assert!(shown["config"]["sync_rate"].is_i64(), "{shown}");
    assert_eq!(shown["config"]["redis"]["password"], reference, "{shown}");
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    // Given in the shorthand spelling, the reference shows in both, the value in none.
    let r = admin_json(
        &gw,
        "POST",
        "/services/account-service/plugins",
        &json!({"name": "rate-limiting",
                "config": {"minute": 5, "policy": "redis", "redis_host": "127.0.0.1",
                           "redis_port": 9, "redis_password": reference}}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let config = &r.json()["config"];
    assert_eq!(
        (&config["redis_password"], &config["redis"]["password"]),
        (&json!(reference), &json!(reference)),
        "{config}"
    );
    assert!(!r.body_str().contains(SECRET), "{r:?}");
    // The two spellings are compared as written: a reference in one and the secret's
    // value in the other is refused, and the value reaches no state.
    let flat_id = id_of(&r.json());
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{flat_id}"),
        &json!({"config": {"redis": {"password": reference}, "redis_password": SECRET}}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.body_str().contains(SECRET), "{r:?}");
    let state = std::fs::read_to_string(gw.data_dir().join("state.json")).unwrap_or_default();
    assert!(!state.is_empty() && !state.contains(SECRET), "{state}");

    // Anywhere else in an Admin API entity, a reference is refused.
    let r = admin_json(
        &gw,
        "POST",
        "/services/account-service/plugins",
        &json!({"name": "rate-limiting",
                "config": {"minute": 1, "error_message": reference}}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let message = &r.json()["fields"]["config"]["error_message"];
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("only in secret fields")),
        "{r:?}"
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "{vault://env/ringway-redis-secret}")],
    );
    assert_field_error(&r, "username", "only in secret fields");
    assert_eq!(gw.admin_get("/consumers").json()["data"], json!([]));

    // A config posted to the Admin API is what it writes too: the same rule, for every
    // entity, nested ones included; the node section and secret fields may refer.
    let posted = json!({
        "_format_version": "3.0",
        "services": [{"name": "t", "url": o.url(), "routes": [
            {"name": "t", "paths": ["/t"], "plugins": [{"name": "rate-limiting",
             "config": {"minute": 5, "error_message": reference}}]}]}],
        "ringway": {"log_level": "info"}
    });
    let r = admin_json(&gw, "POST", "/config", &posted);
    assert_eq!(r.status, 400, "{r:?}");
    let text = r.body_str();
    assert!(
        text.contains("services[0].routes[0].plugins[0].config.error_message: a vault reference")
            && !text.contains(SECRET),
        "{text}"
    );
}

#[test]
fn consumer_and_credential_validation_errors() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));
    create_consumer(&gw, "alice");

    let r = admin_form(&gw, "POST", "/consumers", &[("username", "alice")]);
    assert_eq!(r.status, 409, "duplicate username: {r:?}");
    assert_eq!(r.json()["name"], "unique constraint violation", "{r:?}");
    let r = admin_json(&gw, "POST", "/consumers", &json!({"username": "alice"}));
    assert_eq!(r.status, 409, "duplicate username (JSON): {r:?}");
    // As Kong: the schema before unique keys, so a body with both problems is a 400.
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"username": "alice", "tags": "x"}),
    );
    assert_eq!(r.status, 400, "schema before uniqueness: {r:?}");
    assert_eq!(
        r.json()["fields"],
        json!({"tags": "expected a set"}),
        "{r:?}"
    );
    // custom_id is unique too, whichever write takes it; a consumer keeps its own.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "cid-holder"), ("custom_id", "c-1")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    for (method, path) in [
        ("POST", "/consumers"),
        ("PUT", "/consumers/alice"),
        ("PATCH", "/consumers/alice"),
    ] {
        let username = if method == "POST" { "newbie" } else { "alice" };
        let r = admin_form(
            &gw,
            method,
            path,
            &[("username", username), ("custom_id", "c-1")],
        );
        assert_eq!(r.status, 409, "{method} {path} taking a custom_id: {r:?}");
        let j = r.json();
        assert_eq!(j["code"], 5, "{j}");
        assert_eq!(
            j["message"], "UNIQUE violation detected on '{custom_id=\"c-1\"}'",
            "{j}"
        );
    }
    let r = admin_form(
        &gw,
        "PATCH",
        "/consumers/cid-holder",
        &[("custom_id", "c-1")],
    );
    assert_eq!(r.status, 200, "a consumer keeps its own custom_id: {r:?}");

    for (what, r) in [
        ("empty form", admin_form(&gw, "POST", "/consumers", &[])),
        (
            "tags only",
            admin_json(&gw, "POST", "/consumers", &json!({"tags": ["x"]})),
        ),
        (
            "unknown field",
            admin_json(
                &gw,
                "POST",
                "/consumers",
                &json!({"username": "z", "bogus": 1}),
            ),
        ),
    ] {
        assert_eq!(r.status, 400, "{what}: {r:?}");
        let j = r.json();
        assert!(j["fields"].is_object(), "{what}: 400 has `fields`: {j}");
        assert_eq!(j["name"], "schema violation", "{what}: {j}");
    }
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/consumers",
        &[],
        Some(("application/json", b"{not json")),
    );
    assert_eq!(r.status, 400, "malformed JSON body: {r:?}");

    let r = admin_form(
        &gw,
        "POST",
        "/consumers/alice/jwt",
        &[("algorithm", "HS999"), ("secret", "x")],
    );
    assert_eq!(r.status, 400, "algorithm=HS999: {r:?}");
    assert!(
        r.json()["fields"]["algorithm"].is_string() || r.json()["fields"]["algorithm"].is_array(),
        "fields.algorithm: {r:?}"
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/alice/jwt",
        &[("algorithm", "RS256")],
    );
    assert_eq!(r.status, 400, "RS256 without rsa_public_key: {r:?}");
    assert!(r.json()["fields"].is_object(), "{r:?}");
    // Every field error at once, as Kong's schema reports them.
    let r = admin_json(
        &gw,
        "POST",
        "/consumers/alice/jwt",
        &json!({"bogus": 1, "algorithm": "XX", "key": 5}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let fields = &r.json()["fields"];
    assert_eq!(fields["bogus"], "unknown field", "{r:?}");
    assert_eq!(fields["key"], "expected a string", "{r:?}");
    assert!(fields["algorithm"].is_string(), "{r:?}");
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"bogus": 1, "username": 5, "custom_id": 7}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let fields = &r.json()["fields"];
    assert_eq!(
        (&fields["bogus"], &fields["username"], &fields["custom_id"]),
        (
            &json!("unknown field"),
            &json!("expected a string"),
            &json!("expected a string")
        ),
        "{r:?}"
    );
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"username": "ok", "id": "x", "created_at": "y", "colour": 1}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let fields = &r.json()["fields"];
    assert_eq!(fields["id"], "expected a valid UUID", "{r:?}");
    assert_eq!(fields["created_at"], "expected an integer", "{r:?}");
    assert_eq!(fields["colour"], "unknown field", "{r:?}");
    let r = admin_form(&gw, "POST", "/consumers/nobody/jwt", &[("key", "k")]);
    assert_not_found(&r, "credential under an unknown consumer");

    // Kong's strings are at least one character: an empty one in JSON is a field error
    // (an empty form value is no value, so a key is generated).
    for (path, body, field) in [
        ("/consumers", json!({"username": ""}), "username"),
        ("/consumers/alice/jwt", json!({"key": ""}), "key"),
        ("/consumers/alice/jwt", json!({"secret": ""}), "secret"),
    ] {
        let r = admin_json(&gw, "POST", path, &body);
        assert_eq!(r.status, 400, "{path} {body}: {r:?}");
        assert_eq!(
            r.json()["fields"][field],
            "length must be at least 1",
            "{path} {body}: {r:?}"
        );
    }
    let r = admin_form(&gw, "POST", "/consumers/alice/jwt", &[("key", "")]);
    assert_eq!(r.status, 201, "key= in a form is no key: {r:?}");
    assert!(
        !r.json()["key"].as_str().unwrap_or_default().is_empty(),
        "{r:?}"
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/consumers/alice/jwt/{id}"),
        &json!({"key": ""}),
    );
    assert_eq!(r.status, 400, "PATCH key \"\": {r:?}");
    for field in ["username", "custom_id"] {
        let r = admin_json(&gw, "PATCH", "/consumers/alice", &json!({field: ""}));
        assert_eq!(r.status, 400, "PATCH consumer {field} \"\": {r:?}");
        assert_eq!(
            r.json()["fields"][field],
            "length must be at least 1",
            "{r:?}"
        );
    }

    // Tags as Kong takes them: `,` and `/` separate the `?tags=` filter, so no tag holds
    // them, and none is empty; a space and characters beyond ASCII are fine.
    for tags in [
        json!(["a,b"]),
        json!(["ok", "a/b"]),
        json!([""]),
        json!(["tab\there"]),
    ] {
        let body = json!({"username": "tagged", "tags": tags});
        let r = admin_json(&gw, "POST", "/consumers", &body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        // Each bad tag at its place in the list, good ones null, as Kong nests them.
        let fields = r.json()["fields"]["tags"].clone();
        let list = fields.as_array().unwrap_or_else(|| panic!("{body}: {r:?}"));
        assert_eq!(list.len(), tags.as_array().unwrap().len(), "{r:?}");
        let last = list.last().and_then(Value::as_str).unwrap_or_default();
        assert!(last.starts_with("invalid tag '"), "{body}: {r:?}");
        assert!(list[..list.len() - 1].iter().all(Value::is_null), "{r:?}");
    }
    // Very many bad tags: the first few are said, each quoted short; the answer stays small.
    let many: Vec<String> = (0..20_000)
        .map(|i| format!("{},{}", "x".repeat(200), i))
        .collect();
    let r = admin_json(
        &gw,
        "POST",
        "/consumers",
        &json!({"username": "many", "tags": many}),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.len() < 64 * 1024, "{} bytes", r.body.len());
    let said = r.json()["fields"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t.is_null())
        .count();
    assert_eq!(said, 32, "{r:?}");
    let body = json!({"username": "tagged", "tags": ["team a", "équipe-b", "x:y=z"]});
    let r = admin_json(&gw, "POST", "/consumers", &body);
    assert_eq!(r.status, 201, "{body}: {r:?}");
    assert_eq!(r.json()["tags"], body["tags"], "{r:?}");

    // A name in the path is percent-decoded, as Kong does; `+` is itself there.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers",
        &[("username", "joe smith@example.com")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let at = "/consumers/joe%20smith%40example.com";
    assert_eq!(admin_form(&gw, "GET", at, &[]).status, 200);
    let r = admin_form(&gw, "POST", &format!("{at}/jwt"), &[("key", "joe-key")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(admin_form(&gw, "DELETE", at, &[]).status, 204);
    assert_eq!(
        admin_form(&gw, "GET", at, &[]).status,
        404,
        "deleted, not just answered"
    );
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "a+b")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(admin_form(&gw, "GET", "/consumers/a+b", &[]).status, 200);
    assert_eq!(admin_form(&gw, "GET", "/consumers/a%2Bb", &[]).status, 200);
    assert_eq!(admin_form(&gw, "GET", "/consumers/%zz", &[]).status, 400);

    create_jwt(&gw, "alice", "dup-key", "s");
    create_consumer(&gw, "bob");
    let r = admin_form(&gw, "POST", "/consumers/bob/jwt", &[("key", "dup-key")]);
    assert_eq!(r.status, 409, "duplicate jwt key: {r:?}");

    // Values that go upstream in a header (X-Consumer-*, X-Credential-Identifier) carry
    // no CR or LF, which would end that header and start another, or a request.
    let injected = "x\r\nX-Injected: yes\r\n\r\nGET /smuggled HTTP/1.1";
    for (path, body, field) in [
        (
            "/consumers",
            json!({"username": "evil", "custom_id": injected}),
            "custom_id",
        ),
        ("/consumers", json!({"username": "ev\nil"}), "username"),
        ("/consumers/bob/jwt", json!({"key": "k\r\ney"}), "key"),
    ] {
        let r = admin_json(&gw, "POST", path, &body);
        assert_field_error(&r, field, "control characters");
    }
}

// ---------------------------------------------------------------------------------------
// JWT credentials

#[test]
fn jwt_credentials_crud_generated_values_and_effect_on_traffic() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let o = Origin::start();
    let gw = Gateway::start_with(&base_config(&o, ""), GatewayOpts::default().workers(2));
    let alice = create_consumer(&gw, "alice");
    let alice_id = id_of(&alice);
    create_consumer(&gw, "bob");

    // empty body: generated key and secret, HS256
    let r = admin_form(&gw, "POST", "/consumers/alice/jwt", &[]);
    assert_eq!(r.status, 201, "empty body: {r:?}");
    let gen = r.json();
    let gkey = gen["key"].as_str().unwrap_or("").to_string();
    let gsecret = gen["secret"].as_str().unwrap_or("").to_string();
    assert!(gkey.len() >= 16, "generated key: {gen}");
    assert!(gsecret.len() >= 16, "generated secret: {gen}");
    assert_eq!(gen["algorithm"], "HS256", "{gen}");
    assert_eq!(gen["consumer"]["id"], json!(alice_id), "{gen}");
    let r = get_with(&gw, "/api/users/1", &auth(&gkey, &gsecret));
    assert_eq!(r.status, 200, "token for the generated key/secret: {r:?}");

    // only key given: secret generated
    let r = admin_form(&gw, "POST", "/consumers/alice/jwt", &[("key", "given-key")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        r.json()["secret"]
            .as_str()
            .map(|s| s.len() >= 16)
            .unwrap_or(false),
        "{r:?}"
    );

    // JSON body, HS512
    let r = admin_json(
        &gw,
        "POST",
        "/consumers/alice/jwt",
        &json!({"key": "json-key", "secret": "json-secret", "algorithm": "HS512"}),
    );
    assert_eq!(r.status, 201, "JSON body: {r:?}");
    let t = py_token(
        r#"{"alg":"HS512","typ":"JWT"}"#,
        &json!({"iss": "json-key", "exp": unix_now() + 60}).to_string(),
        "json-secret",
        "sha512",
    );
    let r = get_with(&gw, "/api/users/1", &format!("Bearer {t}"));
    assert_eq!(r.status, 200, "HS512 credential created with JSON: {r:?}");

    // RS256 with a PEM through a form body
    let pem = String::from_utf8(jwt_fixture("rsa-public.pem")).unwrap();
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/bob/jwt",
        &[
            ("key", "bob-rsa"),
            ("algorithm", "RS256"),
            ("rsa_public_key", &pem),
        ],
    );
    assert_eq!(r.status, 201, "RS256 credential: {r:?}");
    let secret = &r.json()["secret"];
    assert!(
        secret.as_str().is_some_and(|s| s.len() >= 16),
        "a missing secret is generated whatever the algorithm, as Kong's: {r:?}"
    );
    let rsa = EncodingKey::from_rsa_pem(&jwt_fixture("rsa-private.pem")).unwrap();
    let t = encode(
        &Header::new(Algorithm::RS256),
        &json!({"iss": "bob-rsa", "exp": unix_now() + 60}),
        &rsa,
    )
    .unwrap();
    let r = get_with(&gw, "/api/users/1", &format!("Bearer {t}"));
    assert_eq!(r.status, 200, "RS256 via Admin API: {r:?}");

    // explicit key + secret, then read it every way
    let k1 = create_jwt(&gw, "alice", "k1", "s1");
    let k1_id = id_of(&k1);
    let list = assert_list(
        &gw.admin_get("/consumers/alice/jwt"),
        "GET /consumers/alice/jwt",
    );
    assert_eq!(list.len(), 4, "{list:?}");
    for path in [
        "/consumers/alice/jwt/k1".to_string(),
        format!("/consumers/alice/jwt/{k1_id}"),
        format!("/consumers/{alice_id}/jwt/k1"),
        "/jwts/k1".to_string(),
        format!("/jwts/{k1_id}"),
    ] {
        let r = gw.admin_get(&path);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert_eq!(r.json()["id"], json!(k1_id), "GET {path}: {r:?}");
        assert_eq!(r.json()["key"], "k1", "GET {path}");
        assert_eq!(
            r.json()["consumer"]["id"],
            json!(alice_id),
            "GET {path}: {r:?}"
        );
    }
    let all = assert_list(&gw.admin_get("/jwts"), "GET /jwts");
    assert_eq!(all.len(), 5, "{all:?}");
    assert_not_found(
        &gw.admin_get("/consumers/bob/jwt/k1"),
        "alice's credential under bob",
    );
    assert_not_found(&gw.admin_get("/jwts/nope"), "unknown credential");

    let r = get_with(&gw, "/api/users/1", &auth("k1", "s1"));
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn jwt_credential_patch_and_delete_take_effect_at_once() {
    let o = Origin::start();
    let gw = Gateway::start_with(&base_config(&o, ""), GatewayOpts::default().workers(2));
    create_consumer(&gw, "alice");
    let k1_id = id_of(&create_jwt(&gw, "alice", "k1", "s1"));
    assert_eq!(get_with(&gw, "/api/users/1", &auth("k1", "s1")).status, 200);

    // PATCH the secret: the old one stops working at once, the new one works
    let r = admin_form(&gw, "PATCH", "/consumers/alice/jwt/k1", &[("secret", "s2")]);
    assert_eq!(r.status, 200, "PATCH credential: {r:?}");
    assert_eq!(r.json()["id"], json!(k1_id));
    for _ in 0..4 {
        // fresh connections land on both workers
        let r = get_with(&gw, "/api/users/1", &auth("k1", "s1"));
        assert_eq!(r.status, 401, "old secret after PATCH: {r:?}");
        assert_eq!(r.json()["message"], "Invalid signature");
        let r = get_with(&gw, "/api/users/1", &auth("k1", "s2"));
        assert_eq!(r.status, 200, "new secret after PATCH: {r:?}");
    }

    // DELETE: 204, gone, token refused
    let r = admin_form(&gw, "DELETE", "/consumers/alice/jwt/k1", &[]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_not_found(&gw.admin_get("/jwts/k1"), "deleted credential");
    for _ in 0..4 {
        let r = get_with(&gw, "/api/users/1", &auth("k1", "s2"));
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(
            r.json()["message"],
            "No credentials found for given 'iss'",
            "{r:?}"
        );
    }
}

#[test]
fn deleting_a_consumer_removes_its_credentials() {
    let o = Origin::start();
    let gw = Gateway::start_with(&base_config(&o, ""), GatewayOpts::default().workers(2));
    let c = create_consumer(&gw, "temp");
    let cred = create_jwt(&gw, "temp", "temp-key", "temp-secret");
    let a = auth("temp-key", "temp-secret");
    assert_eq!(get_with(&gw, "/api/users/1", &a).status, 200);
    let r = admin_form(&gw, "DELETE", &format!("/consumers/{}", id_of(&c)), &[]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_not_found(
        &gw.admin_get("/jwts/temp-key"),
        "credential of a deleted consumer",
    );
    assert_not_found(
        &gw.admin_get(&format!("/jwts/{}", id_of(&cred))),
        "credential id of a deleted consumer",
    );
    for _ in 0..4 {
        let r = get_with(&gw, "/api/users/1", &a);
        assert_eq!(r.status, 401, "token of a deleted consumer: {r:?}");
    }
    // the key is free again
    create_consumer(&gw, "temp2");
    create_jwt(&gw, "temp2", "temp-key", "other");
}

// ---------------------------------------------------------------------------------------
// plugins at runtime

#[test]
fn post_plugins_with_service_takes_effect_without_restart() {
    let o = Origin::start();
    let gw = Gateway::start_with(&base_config(&o, ""), GatewayOpts::default().workers(2));
    create_consumer(&gw, "mobile-app");
    create_jwt(&gw, "mobile-app", "mobile-app", SECRET);
    let good = auth("mobile-app", SECRET);
    let r = gw.get("/api/accounts/1");
    assert_eq!(r.status, 200, "account-service is open before: {r:?}");

    // the seed's form: POST /plugins --data name=jwt --data service=account-service
    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "jwt"), ("service", "account-service")],
    );
    assert_eq!(
        r.status, 201,
        "POST /plugins name=jwt service=account-service: {r:?}"
    );
    let plugin = r.json();
    let pid = id_of(&plugin);
    assert_eq!(plugin["name"], "jwt", "{plugin}");
    for i in 0..4 {
        // fresh connections: both workers see it at once
        let r = gw.get("/api/accounts/1");
        assert_eq!(r.status, 401, "request {i} after POST /plugins: {r:?}");
        assert_eq!(r.json(), json!({"message": "Unauthorized"}));
        let r = get_with(&gw, "/api/accounts/1", &good);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let plugins = assert_list(&gw.admin_get("/plugins"), "GET /plugins");
    assert!(plugins.iter().any(|p| p["id"] == json!(pid)), "{plugins:?}");
    let r = gw.admin_get(&format!("/plugins/{pid}"));
    assert_eq!(r.status, 200, "GET /plugins/{{id}}: {r:?}");
    let r = admin_form(&gw, "DELETE", &format!("/plugins/{pid}"), &[]);
    assert_eq!(r.status, 204, "{r:?}");
    let r = gw.get("/api/accounts/1");
    assert_eq!(r.status, 200, "plugin deleted: {r:?}");
}

#[test]
fn scoped_plugin_endpoints_and_errors() {
    let o = Origin::start();
    let gw = Gateway::start_with(&base_config(&o, ""), GatewayOpts::default().workers(2));
    create_consumer(&gw, "mobile-app");
    create_jwt(&gw, "mobile-app", "mobile-app", SECRET);
    let no_exp = format!(
        "Bearer {}",
        py_hs256(&json!({"iss": "mobile-app"}).to_string(), SECRET)
    );
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "jwt-typo")]);
    assert_eq!(r.status, 400, "unknown plugin: {r:?}");
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "jwt", "config": {"no_such_field": 1}}),
    );
    assert_eq!(r.status, 400, "unknown jwt config field: {r:?}");
    assert_eq!(
        r.json()["fields"],
        json!({"config": {"no_such_field": "unknown field"}}),
        "Kong's wording: {r:?}"
    );
    // Every problem of a plugin at once, the schema's before its unique key (409).
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "correlation-id", "instance_name": "bad name", "enabled": "no", "config": {"bogus": 1}}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let fields = r.json()["fields"].clone();
    for field in ["instance_name", "enabled"] {
        assert!(fields.get(field).is_some(), "{field} in {fields}");
    }
    assert_eq!(
        fields["config"],
        json!({"bogus": "unknown field"}),
        "{fields}"
    );
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "correlation-id")]);
    assert_eq!(r.status, 201, "{r:?}");
    let correlation = id_of(&r.json());
    let r = admin_json(
        &gw,
        "POST",
        "/plugins",
        &json!({"name": "correlation-id", "enabled": "no"}),
    );
    assert_eq!(
        r.status, 400,
        "a schema problem answers before the 409: {r:?}"
    );
    let r = admin_form(&gw, "POST", "/plugins", &[("name", "correlation-id")]);
    assert_eq!(r.status, 409, "{r:?}");
    let r = admin_form(&gw, "DELETE", &format!("/plugins/{correlation}"), &[]);
    assert_eq!(r.status, 204, "{r:?}");
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/mobile-app/plugins",
        &[("name", "jwt")],
    );
    assert_eq!(
        r.status, 400,
        "consumer-scoped jwt (Kong's no_consumer): {r:?}"
    );

    // POST /routes/{r}/plugins with a JSON config: a route-scoped config beats the
    // user-service's service-scoped one from the file
    let r = admin_json(
        &gw,
        "POST",
        "/routes/user-routes/plugins",
        &json!({"name": "jwt", "config": {"claims_to_verify": ["exp"]}}),
    );
    assert_eq!(r.status, 201, "POST /routes/user-routes/plugins: {r:?}");
    let r = get_with(&gw, "/api/users/1", &no_exp);
    assert_eq!(r.status, 401, "route-scoped claims_to_verify [exp]: {r:?}");
    assert_eq!(r.json(), json!({"exp": "must be a number"}));
    let r = gw.get("/api/accounts/1");
    assert_eq!(r.status, 200, "account-service not affected: {r:?}");

    // POST /services/{s}/plugins
    let r = admin_form(
        &gw,
        "POST",
        "/services/account-service/plugins",
        &[("name", "jwt")],
    );
    assert_eq!(
        r.status, 201,
        "POST /services/account-service/plugins: {r:?}"
    );
    let r = gw.get("/api/accounts/1");
    assert_eq!(r.status, 401, "{r:?}");
    let r = get_with(&gw, "/api/accounts/1", &no_exp);
    assert_eq!(r.status, 200, "service-scoped default config: {r:?}");
    // a second jwt on the same scope is a unique violation
    let r = admin_form(
        &gw,
        "POST",
        "/services/account-service/plugins",
        &[("name", "jwt")],
    );
    assert_eq!(r.status, 409, "same plugin twice on one scope: {r:?}");
    // Kong's body names the whole unique key.
    let service = gw.admin_get("/services/account-service").json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.json(),
        json!({
            "code": 5,
            "name": "unique constraint violation",
            "message": format!("UNIQUE violation detected on '{{consumer=null,name=\"jwt\",route=null,service={{id=\"{service}\"}}}}'"),
            "fields": { "consumer": null, "name": "jwt", "route": null, "service": { "id": service } },
        }),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// two layers

#[test]
fn file_declared_entities_are_read_only_but_take_api_credentials() {
    let o = Origin::start();
    let extra = r#"consumers:
  - username: filer
    custom_id: file-1
    jwt_secrets:
      - key: file-key
        secret: file-secret
"#;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gw = Gateway::start(&base_config(&o, extra));
    let r = gw.admin_get("/consumers/filer");
    assert_eq!(r.status, 200, "file consumer is readable: {r:?}");
    let filer_id = id_of(&r.json());
    // Stamped when the file was read, as Kong's declarative import does.
    for (path, fields) in [
        ("/consumers/filer", &["created_at", "updated_at"][..]),
        ("/jwts/file-key", &["created_at"][..]),
        ("/services/user-service", &["created_at", "updated_at"][..]),
        ("/routes/user-routes", &["created_at", "updated_at"][..]),
    ] {
        let entity = gw.admin_get(path).json();
        for &field in fields {
            let at = entity[field].as_u64().unwrap_or_default();
            assert!(
                at >= before && at <= before + 60,
                "{path} {field}: {entity}"
            );
        }
    }
    assert_eq!(gw.admin_get(&format!("/consumers/{filer_id}")).status, 200);
    assert_eq!(gw.admin_get("/jwts/file-key").status, 200);
    assert_eq!(gw.admin_get("/consumers/filer/jwt/file-key").status, 200);

    let managed = json!({"message": "entity is managed by the declarative config file"});
    for (what, r) in [
        (
            "PATCH file consumer",
            admin_form(&gw, "PATCH", "/consumers/filer", &[("custom_id", "x")]),
        ),
        (
            "PATCH file consumer by id",
            admin_json(
                &gw,
                "PATCH",
                &format!("/consumers/{filer_id}"),
                &json!({"custom_id": "x"}),
            ),
        ),
        (
            "PUT file consumer",
            admin_form(&gw, "PUT", "/consumers/filer", &[("custom_id", "x")]),
        ),
        (
            "DELETE file consumer",
            admin_form(&gw, "DELETE", "/consumers/filer", &[]),
        ),
        (
            "PATCH file credential",
            admin_form(
                &gw,
                "PATCH",
                "/consumers/filer/jwt/file-key",
                &[("secret", "x")],
            ),
        ),
        (
            "DELETE file credential",
            admin_form(&gw, "DELETE", "/consumers/filer/jwt/file-key", &[]),
        ),
        (
            "PATCH file service",
            admin_form(&gw, "PATCH", "/services/user-service", &[("retries", "1")]),
        ),
    ] {
        assert_eq!(r.status, 405, "{what}: {r:?}");
        assert_eq!(r.json(), managed, "{what}: {r:?}");
    }
    // unchanged
    let r = gw.admin_get("/consumers/filer");
    assert_eq!(r.json()["custom_id"], "file-1", "{r:?}");
    assert_eq!(
        get_with(&gw, "/api/users/1", &auth("file-key", "file-secret")).status,
        200
    );

    // a credential created through the API under the file consumer
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/filer/jwt",
        &[("key", "api-key"), ("secret", "api-secret")],
    );
    assert_eq!(r.status, 201, "POST /consumers/filer/jwt: {r:?}");
    let r = get_with(&gw, "/api/users/1", &auth("api-key", "api-secret"));
    assert_eq!(r.status, 200, "{r:?}");
    let reqs = o.wait_complete(2, Duration::from_secs(10));
    assert_eq!(reqs[1].header("x-consumer-id"), Some(filer_id.as_str()));
    assert_eq!(reqs[1].header("x-credential-identifier"), Some("api-key"));
    // an API consumer may not take a file consumer's username
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "filer")]);
    assert_eq!(r.status, 409, "username taken by the file: {r:?}");
    // and that one is the API's to change
    let r = admin_form(
        &gw,
        "PATCH",
        "/consumers/filer/jwt/api-key",
        &[("secret", "api-secret-2")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = admin_form(&gw, "DELETE", "/consumers/filer/jwt/api-key", &[]);
    assert_eq!(r.status, 204, "{r:?}");
}

// ---------------------------------------------------------------------------------------
// durability

#[test]
fn kill9_right_after_201_loses_nothing() {
    let o = Origin::start();
    let mut gw = Gateway::start(&base_config(&o, ""));
    let c = create_consumer(&gw, "durable");
    let cred = create_jwt(&gw, "durable", "durable-key", "durable-secret");
    let r = admin_form(
        &gw,
        "POST",
        "/routes/account-routes/plugins",
        &[("name", "jwt")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let pid = id_of(&r.json());
    let put = admin_form(&gw, "PUT", "/consumers/put-one", &[("custom_id", "p1")]);
    assert_eq!(put.status, 200, "{put:?}");
    let put_id = id_of(&put.json());
    gw.kill9(); // no graceful shutdown: everything must already be on disk

    gw.restart_same_dir(GatewayOpts::default().workers(2))
        .unwrap_or_else(|e| panic!("restart on the same data dir: {e}"));
    let r = gw.admin_get("/consumers/durable");
    assert_eq!(r.status, 200, "consumer after kill -9: {r:?}");
    assert_eq!(r.json()["id"], c["id"], "same consumer id after restart");
    let r = gw.admin_get("/jwts/durable-key");
    assert_eq!(r.status, 200, "credential after kill -9: {r:?}");
    assert_eq!(r.json()["id"], cred["id"], "same credential id");
    assert_eq!(r.json()["consumer"]["id"], c["id"]);
    let r = gw.admin_get("/consumers/put-one");
    assert_eq!(r.status, 200, "PUT-created consumer after kill -9: {r:?}");
    assert_eq!(r.json()["id"], json!(put_id));
    assert_eq!(
        gw.admin_get(&format!("/plugins/{pid}")).status,
        200,
        "plugin after kill -9"
    );

    let r = get_with(&gw, "/api/users/1", &auth("durable-key", "durable-secret"));
    assert_eq!(r.status, 200, "token after restart: {r:?}");
    let reqs = o.wait_complete(1, Duration::from_secs(10));
    assert_eq!(reqs[0].header("x-consumer-id"), c["id"].as_str());
    let r = gw.get("/api/accounts/1");
    assert_eq!(
        r.status, 401,
        "Admin-created plugin still enforced after restart: {r:?}"
    );
}

#[test]
fn kill9_right_after_204_loses_nothing() {
    let o = Origin::start();
    let mut gw = Gateway::start(&base_config(&o, ""));
    create_consumer(&gw, "durable");
    create_jwt(&gw, "durable", "durable-key", "durable-secret");
    let r = admin_form(&gw, "DELETE", "/consumers/durable", &[]);
    assert_eq!(r.status, 204, "{r:?}");
    gw.kill9();
    gw.restart_same_dir(GatewayOpts::default())
        .unwrap_or_else(|e| panic!("second restart: {e}"));
    assert_not_found(
        &gw.admin_get("/consumers/durable"),
        "deleted before kill -9",
    );
    assert_not_found(&gw.admin_get("/jwts/durable-key"), "its credential");
}

// ---------------------------------------------------------------------------------------
// reloads

#[test]
fn sighup_reload_keeps_admin_entities() {
    let o = Origin::start();
    let mut gw = Gateway::start(&base_config(&o, ""));
    let c = create_consumer(&gw, "api-made");
    create_jwt(&gw, "api-made", "api-key", "api-secret");
    let hash0 = gw.status_json()["configuration_hash"].clone();

    let extra = r#"  - name: new-service
    url: URL
    routes:
      - name: new-route
        paths: ["/new"]
    plugins:
      - name: jwt
"#
    .replace("URL", &o.url());
    gw.write_config(&base_config(&o, &extra));
    gw.send_signal("HUP");
    let a = auth("api-key", "api-secret");
    let ok = wait_for(Duration::from_secs(15), || {
        (get_with(&gw, "/new/x", &a).status == 200).then_some(())
    });
    assert!(
        ok.is_some(),
        "new route not served after SIGHUP; stderr:\n{}",
        gw.stderr_text()
    );
    assert!(gw.is_running());
    assert_ne!(
        gw.status_json()["configuration_hash"],
        hash0,
        "hash changes on reload"
    );
    let r = gw.admin_get("/consumers/api-made");
    assert_eq!(r.status, 200, "Admin consumer after SIGHUP: {r:?}");
    assert_eq!(r.json()["id"], c["id"]);
    assert_eq!(gw.admin_get("/jwts/api-key").status, 200);
    assert_eq!(get_with(&gw, "/api/users/1", &a).status, 200);

    // an invalid file on SIGHUP: old config kept, still serving
    gw.write_config("_format_version: \"3.0\"\nservices:\n  - name: broken\n    bogus: 1\n");
    gw.send_signal("HUP");
    thread::sleep(Duration::from_millis(500));
    assert!(gw.is_running(), "invalid reload must not stop the gateway");
    assert_eq!(
        get_with(&gw, "/new/x", &a).status,
        200,
        "old config still serves"
    );

    // An Admin API write after the reload builds on the reloaded file, not on the one
    // the writes before it read.
    create_consumer(&gw, "after-reload");
    assert_eq!(
        get_with(&gw, "/new/x", &a).status,
        200,
        "the reloaded route after an Admin API write"
    );
    assert_eq!(gw.admin_get("/consumers/after-reload").status, 200);
}

/// The file layer stands alone, as the next start reads it: a file that names an entity
/// the Admin API created is refused by `POST /config` and by SIGHUP, and the running
/// config stays.
#[test]
fn a_file_may_not_name_admin_entities() {
    let o = Origin::start();
    let old = base_config(&o, "");
    let gw = Gateway::start(&old);
    create_consumer(&gw, "api-made");
    let leaning = format!(
        "{}plugins:\n  - name: rate-limiting\n    consumer: api-made\n    config: {{minute: 5}}\n",
        fresh_config(&o)
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", leaning.as_bytes())),
    );
    assert_eq!(r.status, 400, "a file naming an Admin consumer: {r:?}");
    assert!(
        r.body_str()
            .contains("plugins[0].consumer: no consumer named 'api-made'"),
        "{}",
        r.body_str()
    );
    assert_eq!(read_file(gw.config_path()), old, "the file is kept");
    assert_eq!(gw.get("/fresh/a").status, 404, "not applied");

    gw.write_config(&leaning);
    gw.send_signal("HUP");
    let logged = wait_for(Duration::from_secs(10), || {
        gw.stderr_text()
            .contains("no consumer named 'api-made'")
            .then_some(())
    });
    assert!(
        logged.is_some(),
        "the refused reload is logged: {}",
        gw.stderr_text()
    );
    assert_eq!(gw.get("/fresh/a").status, 404, "the old config serves");
    assert_eq!(gw.get("/api/users/1").status, 401);
    // The Admin consumer stays its own: nothing in the file holds it.
    assert_eq!(
        http_request(gw.admin_addr(), "DELETE", "/consumers/api-made", &[], None).status,
        204
    );
}

fn fresh_config(o: &Origin) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: fresh-service
    url: {u}
    routes:
      - name: fresh-route
        paths: ["/fresh"]
"#,
        u = o.url()
    )
}

/// A config file that is a symbolic link stays one: `POST /config` replaces the file it
/// leads to (where a checkout's next SIGHUP reads), and logs that it did.
#[test]
fn post_config_writes_through_a_symlinked_config_file() {
    let o = Origin::start();
    let old = base_config(&o, "");
    let opts = GatewayOpts {
        log_level: "info".into(),
        ..Default::default()
    };
    let gw = Gateway::start_with(&old, opts);
    let link = gw.config_path().to_path_buf();
    let real = gw.dir().join("checkout.yaml");
    std::fs::write(&real, &old).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // The file holds secrets: the operator made it private, and the rewrite keeps it so.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();

    let new = fresh_config(&o);
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", new.as_bytes())),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is kept"
    );
    assert_eq!(
        read_file(&real),
        new,
        "the file the link leads to is replaced"
    );
    assert_eq!(read_file(&gw.dir().join("kong.yaml.bak")), old);
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the rewritten file keeps its mode");
    let hash = r.json()["configuration_hash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gw.stderr_text().contains(&hash) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        gw.stderr_text().contains(&format!(
            "through the Admin API (configuration_hash {hash})"
        )),
        "{}",
        gw.stderr_text()
    );
}

#[test]
fn post_config_replaces_the_file_layer_with_a_backup() {
    let o = Origin::start();
    let old = base_config(&o, "");
    let gw = Gateway::start(&old);
    create_consumer(&gw, "keeper");
    let hash0 = gw.status_json()["configuration_hash"]
        .as_str()
        .unwrap_or("")
        .to_string();

    // A YAML body to POST /config, with a query.
    let post_check = |body: &str, query: &str| {
        http_request(
            gw.admin_addr(),
            "POST",
            &format!("/config{query}"),
            &[],
            Some(("application/yaml", body.as_bytes())),
        )
    };
    // invalid: 400 with every error, nothing changes
    let invalid = format!(
        "{}plugins:\n  - name: no-such-plugin\nconsumers:\n  - username: x\n    bogus_field: 1\n",
        fresh_config(&o)
    );
    let r = post_check(&invalid, "");
    assert_eq!(r.status, 400, "invalid config: {r:?}");
    let body = r.body_str();
    assert!(
        body.contains("plugins[0]") && body.contains("consumers[0]"),
        "400 lists every error with its path: {body}"
    );
    // Kong's `fields`: each problem where it is, entity lists as arrays.
    let fields = &r.json()["fields"];
    assert!(fields["plugins"][0]["name"].is_string(), "{body}");
    assert!(fields["consumers"][0].is_object(), "{body}");
    assert_eq!(gw.get("/fresh/a").status, 404, "invalid config not applied");
    assert_eq!(
        gw.get("/api/users/1").status,
        401,
        "old config still serves"
    );
    assert_eq!(
        read_file(gw.config_path()),
        old,
        "file untouched by an invalid POST /config"
    );
    assert_eq!(gw.status_json()["configuration_hash"], json!(hash0));
    // The gateway runs with --proxy-listen and --admin-listen; the file's own values
    // are checked all the same, or the next start without the flags would fail.
    let overridden = format!(
        "{}ringway:\n  proxy_listen: [nonsense]\n  admin_listen: 0.0.0.0:8001\n",
        fresh_config(&o)
    );
    let r = post_check(&overridden, "");
    assert_eq!(r.status, 400, "settings a flag overrides: {r:?}");
    let body = r.body_str();
    assert!(
        body.contains("ringway.proxy_listen[0]") && body.contains("is not a loopback address"),
        "{body}"
    );
    assert_eq!(read_file(gw.config_path()), old);

    // valid YAML
    let new = fresh_config(&o);
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", new.as_bytes())),
    );
    assert_eq!(r.status, 201, "POST /config: {r:?}");
    let hash1 = r.json()["configuration_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("configuration_hash in {r:?}"))
        .to_string();
    assert_ne!(hash1, hash0, "new configuration_hash");
    assert_eq!(gw.status_json()["configuration_hash"], json!(hash1));
    let r = gw.get("/fresh/a");
    assert_eq!(r.status, 200, "new route: {r:?}");
    assert_eq!(gw.get("/api/users/1").status, 404, "old route gone");
    let r = gw.admin_get("/config");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body_str().contains("fresh-route") && !r.body_str().contains("user-routes"),
        "GET /config returns the new file layer: {}",
        r.body_str()
    );
    let config_as_json = || {
        http_request(
            gw.admin_addr(),
            "GET",
            "/config",
            &[("Accept", "application/json")],
            None,
        )
    };
    let r = config_as_json();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json().is_object(), "GET /config as JSON: {r:?}");
    assert!(r.body_str().contains("fresh-route"));
    // Saved as a file, that answer is a config `check` accepts, as is Kong's own shape
    // (the YAML as a string).
    let yaml = gw.admin_get("/config").body_str();
    for saved in [
        r.body_str(),
        serde_json::json!({ "config": yaml }).to_string(),
    ] {
        let (code, err) = check_file(&saved);
        assert_eq!(code, Some(0), "{err}\n{saved}");
    }
    // Media types are case-insensitive (RFC 9110 §8.3.1); a weight of zero refuses one.
    for (accept, json) in [
        ("APPLICATION/Json", true),
        ("text/html, application/json;q=0.5", true),
        ("application/json;q=0, application/yaml", false),
        ("application/jsonx", false),
    ] {
        let r = http_request(
            gw.admin_addr(),
            "GET",
            "/config",
            &[("Accept", accept)],
            None,
        );
        assert_eq!(r.status, 200, "{accept}: {r:?}");
        let is_json = r
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        assert_eq!(is_json, json, "Accept: {accept}: {r:?}");
    }
    assert!(
        read_file(gw.config_path()).contains("fresh-route"),
        "the config file is rewritten"
    );
    let bak = gw.dir().join("kong.yaml.bak");
    assert_eq!(
        read_file(&bak),
        old,
        "the previous config is kept as kong.yaml.bak"
    );
    assert_eq!(
        gw.admin_get("/consumers/keeper").status,
        200,
        "Admin layer kept"
    );

    // Kong's `?check_hash=1`: the running config again is 304 and touches nothing (the
    // backup still holds the file before this one); without the flag it is reloaded.
    let r = post_check(&new, "?check_hash=1");
    assert_eq!(r.status, 304, "unchanged config with check_hash: {r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert_eq!(read_file(&bak), old, "a 304 writes nothing");
    let r = post_check(&old, "?check_hash=1");
    assert_eq!(r.status, 201, "a changed config with check_hash: {r:?}");
    assert_eq!(r.json()["configuration_hash"], json!(hash0), "{r:?}");
    let r = post_check(&new, "?check_hash=0");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["configuration_hash"], json!(hash1), "{r:?}");
    let r = post_check(&new, "");
    assert_eq!(r.status, 201, "no check_hash: reloaded as asked: {r:?}");
    // JSON body and Kong's `config=` form field
    let json_cfg = json!({
        "_format_version": "3.0",
        "services": [{"name": "json-service", "url": o.url(),
                      "routes": [{"name": "json-route", "paths": ["/json"]}]}]
    });
    // With a byte order mark first, as some editors save JSON: the same config.
    let mut with_bom = b"\xef\xbb\xbf".to_vec();
    with_bom.extend_from_slice(json_cfg.to_string().as_bytes());
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/json", &with_bom)),
    );
    assert_eq!(r.status, 201, "POST /config with a BOM'd JSON: {r:?}");
    let r = admin_json(&gw, "POST", "/config", &json_cfg);
    assert_eq!(r.status, 201, "POST /config with JSON: {r:?}");
    assert_eq!(gw.get("/json/a").status, 200);
    // The file layer posted as JSON reads back as YAML, as GET /config promises.
    let r = gw.admin_get("/config");
    let text = r.body_str();
    assert!(
        text.contains("_format_version: '3.0'") && text.contains("- name: json-route"),
        "GET /config after a JSON POST: {text}"
    );
    let reread: serde_json::Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(reread, json_cfg);
    // JSON is decoded as JSON, not as YAML: a surrogate pair escape is JSON only.
    // Keys keep the order they were sent in, wrapped in `config` or not.
    let raw = format!(
        r#"{{"config": {{"services": [{{"url": "{}", "name": "json-service", "routes": [{{"paths": ["/json"], "name": "json-route"}}]}}], "consumers": [{{"username": "smile", "custom_id": "\ud83d\ude00"}}], "_format_version": "3.0"}}}}"#,
        o.url()
    );
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/json", raw.as_bytes())),
    );
    assert_eq!(r.status, 201, "POST /config with JSON-only escapes: {r:?}");
    let r = gw.admin_get("/consumers/smile");
    assert_eq!(r.json()["custom_id"], "\u{1F600}", "{r:?}");
    let text = gw.admin_get("/config").body_str().to_string();
    let at = |key: &str| {
        text.find(key)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert!(
        at("services:") < at("consumers:") && at("consumers:") < at("_format_version:"),
        "{text}"
    );
    assert!(at("url:") < at("name: json-service"), "{text}");
    // Kept as JSON, its strings quoted, so a YAML 1.1 reader (Kong's) reads them as strings.
    let saved = read_file(gw.config_path());
    assert!(saved.contains(r#""username": "smile""#), "{saved}");
    let r = admin_form(&gw, "POST", "/config", &[("config", &fresh_config(&o))]);
    assert_eq!(r.status, 201, "POST /config with config= form: {r:?}");
    assert_eq!(gw.get("/fresh/a").status, 200);
    // What `GET /config` answers as JSON goes back as it is, and Kong's JSON shape (the
    // YAML as a string under `config`) is read too.
    let r = admin_json(&gw, "POST", "/config", &json!({ "config": json_cfg }));
    assert_eq!(
        r.status, 201,
        "POST /config with {{\"config\": {{...}}}}: {r:?}"
    );
    assert_eq!(gw.get("/json/a").status, 200);
    let exported = config_as_json();
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/json", exported.body.as_slice())),
    );
    assert_eq!(r.status, 201, "GET /config's JSON posted back: {r:?}");
    // The hash is the content's: the YAML file the JSON came from is the same config.
    let yaml_again = read_file(gw.config_path());
    let r = post_check(&yaml_again, "?check_hash=1");
    assert_eq!(r.status, 304, "the same content as YAML: {r:?}");
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config?check_hash=1",
        &[],
        Some(("application/json", exported.body.as_slice())),
    );
    assert_eq!(r.status, 304, "the same content as JSON again: {r:?}");
    let r = admin_json(
        &gw,
        "POST",
        "/config",
        &json!({ "config": fresh_config(&o) }),
    );
    assert_eq!(
        r.status, 201,
        "POST /config with Kong's {{\"config\": \"<yaml>\"}}: {r:?}"
    );
    assert_eq!(gw.get("/fresh/a").status, 200);
    assert_eq!(gw.get("/json/a").status, 404);

    // a file consumer colliding with an Admin consumer is refused with 409
    let colliding = format!("{}consumers:\n  - username: keeper\n", fresh_config(&o));
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("text/yaml", colliding.as_bytes())),
    );
    assert_eq!(
        r.status, 409,
        "reload colliding with an Admin-created consumer: {r:?}"
    );
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains(
            "consumers 'keeper' (created through the Admin API), field username: duplicate consumer 'keeper'"
        ),
        "409 names the Admin-created entity by what it is, not its place in a merged list: {r:?}"
    );

    // removing a file consumer that holds an Admin-created credential is refused, naming
    // the credential
    let with_owner = format!("{}consumers:\n  - username: owner\n", fresh_config(&o));
    let r = admin_form(&gw, "POST", "/config", &[("config", &with_owner)]);
    assert_eq!(r.status, 201, "{r:?}");
    create_jwt(&gw, "owner", "owner-key", "owner-secret");
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/owner/plugins",
        &[("name", "rate-limiting"), ("config.minute", "5")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = admin_form(&gw, "POST", "/config", &[("config", &fresh_config(&o))]);
    assert_eq!(r.status, 409, "{r:?}");
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains(
            "jwt_secrets 'owner-key' (created through the Admin API), field consumer: consumer 'owner' \
             is not in the new file"
        ),
        "{r:?}"
    );
    assert!(
        errors.contains("this plugin still refers to it (delete the plugin"),
        "a plugin is named a plugin: {r:?}"
    );
    // Kept under another id it is refused too, and the answer says it is the id.
    let new_id = format!(
        "{}consumers:\n  - username: owner\n    id: 2f0e7a3c-5b1d-4c8e-9f6a-1d2b3c4d5e6f\n",
        fresh_config(&o)
    );
    let r = admin_form(&gw, "POST", "/config", &[("config", &new_id)]);
    assert_eq!(r.status, 409, "{r:?}");
    let errors = r.json()["errors"].to_string();
    let owner = http_request(gw.admin_addr(), "GET", "/consumers/owner", &[], None);
    let owner_id = owner.json()["id"].as_str().unwrap().to_owned();
    assert!(
        errors.contains("consumer 'owner' has another id in the new file")
            && errors.contains(&format!("refers to the one it had, {owner_id}"))
            && !errors.contains("is not in the new file"),
        "{r:?}"
    );

    // so is removing a file service an Admin-created plugin is scoped to, naming the
    // service by its name
    let r = admin_form(
        &gw,
        "POST",
        "/services/fresh-service/plugins",
        &[("name", "correlation-id")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let without_service = "_format_version: \"3.0\"\nconsumers:\n  - username: owner\n";
    let r = admin_form(&gw, "POST", "/config", &[("config", without_service)]);
    assert_eq!(r.status, 409, "{r:?}");
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains(", field service: service 'fresh-service' is not in the new file"),
        "{r:?}"
    );
}

#[test]
fn reload_under_steady_traffic_fails_no_request() {
    let o = Origin::start();
    let cfg = |extra_route: &str| {
        format!(
            r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: steady
        paths: ["/steady"]
      - name: {extra_route}
        paths: ["/{extra_route}"]
"#,
            u = o.url()
        )
    };
    let gw = Gateway::start_with(&cfg("r0"), GatewayOpts::default().workers(2));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for n in 0..2 {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        let addr = gw.proxy_addr();
        clients.push(thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let req = get_req(&format!("/steady/{n}/{i}"), "test.local");
                if let Err(e) = c.send(&req) {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("client {n} req {i}: send: {e}"));
                    c = Client::connect(addr);
                    continue;
                }
                match c.read_response() {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if r.header("connection")
                            .map(|v| v.eq_ignore_ascii_case("close"))
                            == Some(true)
                        {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("client {n} req {i}: keep-alive connection closed"));
                            c = Client::connect(addr);
                        }
                    }
                    Ok(r) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("client {n} req {i}: {r:?}"));
                    }
                    Err(e) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("client {n} req {i}: {e:?}"));
                        c = Client::connect(addr);
                    }
                }
                i += 1;
            }
        }));
    }
    let wait_ok = |n: usize| {
        let target = ok.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(15);
        while ok.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_ok(20);
    for round in 1..=2 {
        gw.write_config(&cfg(&format!("hup{round}")));
        gw.send_signal("HUP");
        let ready = wait_for(Duration::from_secs(15), || {
            (gw.get(&format!("/hup{round}")).status == 200).then_some(())
        });
        assert!(ready.is_some(), "SIGHUP round {round} not applied");
        wait_ok(20);
        let body = cfg(&format!("post{round}"));
        let r = http_request(
            gw.admin_addr(),
            "POST",
            "/config",
            &[],
            Some(("application/yaml", body.as_bytes())),
        );
        assert_eq!(r.status, 201, "POST /config round {round}: {r:?}");
        assert_eq!(gw.get(&format!("/post{round}")).status, 200);
        wait_ok(20);
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let errors = errors.lock().unwrap();
    let total = ok.load(Ordering::SeqCst);
    assert!(
        errors.is_empty(),
        "{} failed requests out of {} during reloads:\n{}",
        errors.len(),
        total + errors.len(),
        errors
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total >= 100, "too little traffic to mean anything: {total}");
}

// ---------------------------------------------------------------------------------------
// admin security

/// Without `admin_token`, a loopback Admin API answers its operator's clients, not a web
/// page in a browser on the same machine: a cross-site form post (which needs no CORS
/// preflight) and a name rebound to 127.0.0.1 are refused before anything is written.
#[test]
fn a_tokenless_admin_api_refuses_what_a_web_page_sends() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));
    let port = gw.admin_addr().port();
    let post = |headers: &str| {
        let body = "username=from-a-page";
        Client::connect(gw.admin_addr()).roundtrip(
            format!(
                "POST /consumers HTTP/1.1\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    for headers in [
        format!("Host: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nSec-Fetch-Site: cross-site\r\n"),
        format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"),
        format!("Host: evil.example:{port}\r\nSec-Fetch-Site: same-origin\r\n"),
    ] {
        let r = post(&headers);
        assert_eq!(r.status, 403, "{headers:?}: {r:?}");
        assert!(r.json()["message"].is_string(), "{r:?}");
    }
    let r = gw.admin_get("/consumers/from-a-page");
    assert_eq!(r.status, 404, "nothing was written: {r:?}");
    // The operator's own clients: any Host from what is no browser; from a browser, an
    // address or localhost, same-origin.
    for (i, headers) in [
        format!("Host: gateway.test:{port}\r\n"),
        format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\nSec-Fetch-Site: same-origin\r\n"),
        String::new(),
    ]
    .iter()
    .enumerate()
    {
        let r = Client::connect(gw.admin_addr()).roundtrip(
            format!("GET /consumers HTTP/1.{}\r\n{headers}\r\n", u8::from(i < 2)).as_bytes(),
        );
        assert_eq!(r.status, 200, "{headers:?}: {r:?}");
    }
    // A body a page can send without asking (text/plain) is no config, as in Kong.
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("text/plain", b"_format_version: \"3.0\"\n")),
    );
    assert_eq!(r.status, 415, "{r:?}");
}

#[test]
fn admin_token_guards_every_endpoint_but_ready() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, "ringway:\n  admin_token: s3cret\n"));
    let a = gw.admin_addr();
    let probes: Vec<(&str, &str)> = vec![
        ("GET", "/consumers"),
        ("GET", "/consumers/x"),
        ("GET", "/jwts"),
        ("GET", "/plugins"),
        ("GET", "/services"),
        ("GET", "/routes"),
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/histograms"),
        ("GET", "/config"),
        ("DELETE", "/consumers/x"),
    ];
    for (m, p) in &probes {
        let r = http_request(a, m, p, &[], None);
        assert_eq!(r.status, 401, "{m} {p} without the token: {r:?}");
        let r = http_request(a, m, p, &[("Authorization", "Bearer wrong")], None);
        assert_eq!(r.status, 401, "{m} {p} with a wrong token: {r:?}");
    }
    let body = form_encode(&[("username", "sneaky")]);
    let r = http_request(
        a,
        "POST",
        "/consumers",
        &[],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 401, "POST without the token: {r:?}");
    let cfg = fresh_config(&o);
    let r = http_request(
        a,
        "POST",
        "/config",
        &[],
        Some(("application/yaml", cfg.as_bytes())),
    );
    assert_eq!(r.status, 401, "POST /config without the token: {r:?}");
    assert_eq!(gw.get("/api/users/1").status, 401, "config unchanged");

    let r = http_request(a, "GET", "/status/ready", &[], None);
    assert_eq!(r.status, 200, "/status/ready needs no token: {r:?}");
    // RFC 9112 §3.2.2: a target in absolute form names the same resource as its path.
    let r = http_request(a, "GET", "http://127.0.0.1/status/ready", &[], None);
    assert_eq!(r.status, 200, "absolute-form /status/ready: {r:?}");
    let r = http_request(a, "GET", "HTTP://127.0.0.1/status", &[], None);
    assert_eq!(
        r.status, 401,
        "the absolute form is no way past the token: {r:?}"
    );
    let r = http_request(
        a,
        "GET",
        "http://127.0.0.1/consumers?size=1",
        &[("Authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(r.status, 200, "absolute-form with the token: {r:?}");
    // What the proxy refuses as a target the Admin API refuses too (RFC 9110 §4.2.1,
    // §4.2.4): no host, credentials in it, a fragment.
    for target in [
        "http:///status/ready",
        "http://u:p@127.0.0.1/status/ready",
        "http://h#x/status/ready",
    ] {
        let r = http_request(a, "GET", target, &[], None);
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
    let r = http_request(a, "GET", "http://127.0.0.1?x=1", &[], None);
    assert_eq!(
        r.status, 401,
        "http://host?q is the root, with the token: {r:?}"
    );

    for h in [
        ("Authorization", "Bearer s3cret"),
        ("Kong-Admin-Token", "s3cret"),
    ] {
        let r = http_request(a, "GET", "/consumers", &[h], None);
        assert_eq!(r.status, 200, "GET /consumers with {h:?}: {r:?}");
        let r = http_request(a, "GET", "/status", &[h], None);
        assert_eq!(r.status, 200, "GET /status with {h:?}: {r:?}");
    }
    let r = http_request(
        a,
        "POST",
        "/consumers",
        &[("Kong-Admin-Token", "s3cret")],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 201, "POST with the token: {r:?}");
    let r = http_request(
        a,
        "GET",
        "/consumers",
        &[("Authorization", "Bearer s3cret")],
        None,
    );
    let list = assert_list(&r, "GET /consumers with the token");
    assert_eq!(
        list.len(),
        1,
        "only the authorised POST created a consumer: {list:?}"
    );
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().to_string()
}

#[test]
fn non_loopback_admin_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.to_string_lossy().to_string();
    let port = free_port();
    let proxy = free_addr().to_string();
    let svc = "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    routes:\n      - name: r\n        paths: [\"/\"]\n";
    let open = write_tmp(
        &dir,
        "open.yaml",
        &format!("{svc}ringway:\n  admin_listen: \"0.0.0.0:{port}\"\n"),
    );
    let guarded = write_tmp(
        &dir,
        "guarded.yaml",
        &format!("{svc}ringway:\n  admin_listen: \"0.0.0.0:{port}\"\n  admin_token: s3cret\n"),
    );
    let plain = write_tmp(&dir, "plain.yaml", svc);
    let t = Duration::from_secs(20);

    let mut bad = Vec::new();
    let mut refused = |what: &str, out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_no_panic(&err);
        let lines = nonempty_lines(&err);
        if out.status.success() || lines.len() != 1 || !err.contains("admin_token") {
            bad.push(format!(
                "{what}: want a non-zero exit and one line naming admin_token; got {:?}, stderr {err:?}",
                out.status.code()
            ));
        }
    };
    refused(
        "check, admin_listen 0.0.0.0 in the file",
        run_cli(&["check", "-c", &open], &[], t),
    );
    refused(
        "run, admin_listen 0.0.0.0 in the file",
        run_cli(
            &[
                "run",
                "-c",
                &open,
                "--proxy-listen",
                &proxy,
                "--data-dir",
                &data,
                "--workers",
                "1",
            ],
            &[],
            t,
        ),
    );
    let admin = format!("0.0.0.0:{port}");
    refused(
        "run, --admin-listen 0.0.0.0",
        run_cli(
            &[
                "run",
                "-c",
                &plain,
                "--proxy-listen",
                &proxy,
                "--admin-listen",
                &admin,
                "--data-dir",
                &data,
                "--workers",
                "1",
            ],
            &[],
            t,
        ),
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let out = run_cli(&["check", "-c", &guarded], &[], t);
    assert!(
        out.status.success(),
        "0.0.0.0 with admin_token is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn logs_at_trace_never_contain_secrets_or_tokens() {
    let o = Origin::start();
    let extra = "consumers:\n  - username: filer\n    jwt_secrets:\n      - key: file-key\n        secret: file-secret-xyz\nringway:\n  admin_token: s3cret\n";
    let opts = GatewayOpts {
        log_level: "trace".to_string(),
        ..Default::default()
    };
    let gw = Gateway::start_with(&base_config(&o, extra), opts);
    let a = gw.admin_addr();
    let tok_hdr = [("Authorization", "Bearer s3cret")];
    let body = form_encode(&[("username", "mobile-app")]);
    let r = http_request(
        a,
        "POST",
        "/consumers",
        &tok_hdr,
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let body = form_encode(&[
        ("key", "mobile-app"),
        ("secret", SECRET),
        ("algorithm", "HS256"),
    ]);
    let r = http_request(
        a,
        "POST",
        "/consumers/mobile-app/jwt",
        &[("Kong-Admin-Token", "s3cret")],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let good = token("mobile-app", SECRET);
    let bad_sig = token("mobile-app", "wrong-secret");
    let file_tok = token("file-key", "file-secret-xyz");
    assert_eq!(
        get_with(&gw, "/api/users/1", &format!("Bearer {good}")).status,
        200
    );
    assert_eq!(
        get_with(&gw, "/api/users/1", &format!("Bearer {bad_sig}")).status,
        401
    );
    assert_eq!(
        get_with(&gw, "/api/users/1", &format!("Bearer {file_tok}")).status,
        200
    );
    assert_eq!(
        proxy_get(&gw, &format!("/api/users/1?jwt={good}"), &[]).status,
        200
    );
    let r = http_request(
        a,
        "GET",
        "/consumers",
        &[("Authorization", "Bearer wrong-admin-token")],
        None,
    );
    assert_eq!(r.status, 401);
    let r = http_request(a, "GET", "/jwts/mobile-app", &tok_hdr, None);
    assert_eq!(r.status, 200);
    thread::sleep(Duration::from_millis(300));

    let log = gw.stderr_text();
    assert!(
        !nonempty_lines(&log).is_empty(),
        "trace level logged nothing, so this test proves nothing"
    );
    let sig = |t: &str| t.rsplit('.').next().unwrap().to_string();
    let mut leaks = Vec::new();
    for (what, needle) in [
        ("admin_token", "s3cret".to_string()),
        ("wrong admin token", "wrong-admin-token".to_string()),
        ("API secret", SECRET.to_string()),
        ("file secret", "file-secret-xyz".to_string()),
        ("token", good.clone()),
        ("token signature", sig(&good)),
        ("bad token signature", sig(&bad_sig)),
        ("file token signature", sig(&file_tok)),
        ("token claims", good.split('.').nth(1).unwrap().to_string()),
        ("Authorization value", "Bearer ".to_string()),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
            leaks.push(format!("{what} in: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the trace log:\n{}",
        leaks.join("\n")
    );
}

/// `GET /config` as JSON shows the config as it is read: merge keys expanded and YAML
/// 1.1 booleans as booleans (`"no"` is a true string to most JSON readers).
#[test]
fn config_as_json_reads_yaml_as_the_loader_does() {
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        r#"_format_version: "3.0"
_comment: &defaults {{url: "{u}", retries: 2}}
services:
  - <<: *defaults
    name: s
    routes:
      - name: r
        paths: [/a]
        strip_path: no
"#,
        u = o.url()
    ));
    let r = http_request(
        gw.admin_addr(),
        "GET",
        "/config",
        &[("Accept", "application/json")],
        None,
    );
    let service = &r.json()["config"]["services"][0];
    assert_eq!(service["retries"], 2, "{r:?}");
    assert_eq!(service["routes"][0]["strip_path"], false, "{r:?}");
}

/// A JSON config is saved so that the loader, a YAML reader, reads every string as JSON
/// did: a secret holding DEL, a C1 control, NEL or a line separator (YAML refuses the
/// first two unescaped and folds the others into spaces) is the same secret after
/// `POST /config`, and `GET /config` as JSON posts back to the same configuration.
#[test]
fn json_configs_keep_strings_yaml_reads_otherwise() {
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));
    let secret = "a\u{7f}b\u{80}c\u{85}d\u{2028}e";
    let config = json!({
        "_format_version": "3.0",
        "services": [{ "name": "s", "url": o.url(), "routes": [{ "name": "r", "paths": ["/j"] }] }],
        "consumers": [{ "username": "u", "jwt_secrets": [{ "key": "k", "secret": secret }] }],
    });
    let post = |body: &[u8]| {
        http_request(
            gw.admin_addr(),
            "POST",
            "/config",
            &[],
            Some(("application/json", body)),
        )
    };
    let r = post(config.to_string().as_bytes());
    assert_eq!(r.status, 201, "{r:?}");
    let hash = r.json()["configuration_hash"].clone();
    let stored = gw.admin_get("/jwts/k").json();
    assert_eq!(stored["secret"], secret, "{stored}");
    let exported = http_request(
        gw.admin_addr(),
        "GET",
        "/config",
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(exported.status, 200);
    assert!(
        !exported.body.windows(1).any(|b| b[0] == 0x7f),
        "DEL is escaped in the export"
    );
    let r = post(&exported.body);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["configuration_hash"],
        hash,
        "the same configuration"
    );
    assert_eq!(gw.admin_get("/jwts/k").json()["secret"], secret);
}

/// The Admin listener waits as the proxy's does (`keepalive_timeout` idle,
/// `client_header_timeout` for a head from its first byte), so a client that trickles a
/// head or never sends holds no connection for long; a body over the limit gets its 413.
/// (The number of connections: `admin_connections_at_the_limit_make_room_from_idle_ones`.)
#[test]
fn admin_connections_are_bounded_in_time() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = Gateway::start(&base_config(
        &o,
        "ringway:\n  client_header_timeout: 500\n  keepalive_timeout: 1000\n",
    ));
    let closed_within = |mut c: std::net::TcpStream, limit: Duration| {
        c.set_read_timeout(Some(limit)).unwrap();
        let mut byte = [0u8; 1];
        matches!(c.read(&mut byte), Ok(0))
    };
    // A head begun and never finished: a 408 at client_header_timeout, as on the proxy
    // listener, and the close; not kept a minute.
    let mut slow = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "a trickled head is cut off with a 408: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // A connection that sends nothing: closed (at client_header_timeout, as the proxy's).
    let idle = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    assert!(
        closed_within(idle, Duration::from_secs(4)),
        "an idle connection is closed"
    );

    // A body over the limit, still being sent: the 413 reaches the client (the close
    // lingers, as nginx's, rather than resetting the connection under the answer).
    let mut big = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    big.write_all(b"POST /consumers HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n")
        .unwrap();
    let mut sender = big.try_clone().unwrap();
    let upload = thread::spawn(move || {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..64 {
            if sender.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 64];
    let n = big.read(&mut answer).unwrap_or(0);
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    drop(big);
    let _ = upload.join();
}

/// At most 256 admin connections: at the limit a new one takes the place of one still
/// short of a whole request head (as nginx reuses idle connections): those that never
/// completed a request first, oldest first, so neither silent connections nor heads sent
/// a byte at a time keep `/status/ready` from a load balancer, and a client's keep-alive
/// connection outlasts them. When every one is being answered, the new one is closed.
#[test]
fn admin_connections_at_the_limit_make_room_from_idle_ones() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, ""));
    let closed_within = |mut c: &std::net::TcpStream, limit: Duration| {
        c.set_read_timeout(Some(limit)).unwrap();
        let mut byte = [0u8; 1];
        matches!(c.read(&mut byte), Ok(0))
    };
    let ready = || -> Option<()> {
        let mut c = std::net::TcpStream::connect(gw.admin_addr()).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET /status/ready HTTP/1.1\r\nHost: a\r\n\r\n")
            .ok()?;
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).ok()?;
        buf[..n].starts_with(b"HTTP/1.1 200").then_some(())
    };

    // Every connection being answered (a head whole, its body awaited): none can make
    // room.
    let busy: Vec<_> = (0..256)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
            c.write_all(b"POST /consumers HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // The heads reach the server before the next connection does.
    thread::sleep(Duration::from_millis(300));
    let extra = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    assert!(
        closed_within(&extra, Duration::from_secs(2)),
        "with every connection being answered, the 257th is closed at once"
    );
    drop(busy);
    // Until the server has seen the 256 closes a new connection may still be refused:
    // asked again until it is served.
    assert!(
        wait_for(Duration::from_secs(5), ready).is_some(),
        "served again once the others closed"
    );

    // A client's keep-alive connection, then 255 heads begun and never finished: a
    // health check gets in in the place of the oldest of those, not the client's.
    let mut client = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let ask = |c: &mut std::net::TcpStream| {
        c.write_all(b"GET /status/ready HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap_or(0);
        buf[..n].starts_with(b"HTTP/1.1 200")
    };
    assert!(ask(&mut client));
    let trickling: Vec<_> = (0..255)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
            c.write_all(b"G").unwrap();
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    // The oldest sends a byte more: it is still the oldest.
    (&trickling[0]).write_all(b"E").unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(
        ready().is_some(),
        "/status/ready answers past heads sent a byte at a time"
    );
    assert!(
        closed_within(&trickling[0], Duration::from_secs(2)),
        "the oldest begun head made room"
    );
    assert!(
        ask(&mut client),
        "the client's keep-alive connection is kept"
    );
    drop(trickling);
    drop(client);
    assert!(
        wait_for(Duration::from_secs(5), ready).is_some(),
        "served again once the others closed"
    );

    // 256 connections that never send: a health check still gets in, in the place of
    // the one that waited longest, which is closed.
    let idle: Vec<_> = (0..256)
        .map(|_| std::net::TcpStream::connect(gw.admin_addr()).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    assert!(ready().is_some(), "/status/ready answers at the limit");
    assert!(
        closed_within(&idle[0], Duration::from_secs(2)),
        "the connection that waited longest made room"
    );
    // The rest stay open (at most one more was closed for the connections the server
    // may have still counted from before).
    let open = idle[2..]
        .iter()
        .filter(|c| !closed_within(c, Duration::from_millis(5)))
        .count();
    assert!(
        open >= 253,
        "only the oldest are closed: {open} of 254 still open"
    );
}

/// A client that waits for `100 Continue` before its body (curl does past 1 KiB) gets it
/// at once, not after its own timeout; one without the token gets its 401 instead, its
/// body never asked for.
#[test]
fn admin_writes_answer_expect_100_continue() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = Gateway::start(&base_config(&o, "ringway:\n  admin_token: s3cret\n"));
    let read_some = |c: &mut std::net::TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let body = "username=waited";
    let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    write!(
        c,
        "POST /consumers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let interim = read_some(&mut c);
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(body.as_bytes()).unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    c.write_all(
        b"POST /consumers HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 15\r\n\r\n",
    )
    .unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Without Expect too: the 401 comes before the body, which is never waited for.
    let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    c.write_all(b"POST /consumers HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\n")
        .unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // What answers without the token does so with Expect too (a query string included).
    let mut c = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    c.write_all(
        b"GET /status/ready?probe=1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_some(&mut c), "HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"{}").unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
