//! JWT authentication, black box (SPEC §1 `ringway jwt sign`, §2 consumers / jwt_secrets /
//! consumer_groups / plugin precedence, §4 `jwt`; Kong's behaviour: research/kong-semantics.md
//! §1.2; the seed scenario: research/seed-scenarios.md).
//!
//! Tokens come from three independent signers: the gateway's own CLI, Python's stdlib
//! (hand-built headers), and the `jsonwebtoken` crate (RS256 / ES256).

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "my-secret-key";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Indents every line of `text` by `n` spaces (for PEM block scalars in YAML).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn pem(name: &str) -> String {
    String::from_utf8(jwt_fixture(name)).expect("PEM is UTF-8")
}

fn payload(v: Value) -> String {
    v.to_string()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 with exactly this JSON body and `WWW-Authenticate` value.
fn assert_401(r: &Response, body: &Value, www: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: status; response {r:?}");
    let got: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {r:?}"));
    assert_eq!(&got, body, "{what}: body; response {r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(www),
        "{what}: WWW-Authenticate; response {r:?}"
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: Content-Type {ct:?}; response {r:?}"
    );
}

fn good_claims(iss: &str) -> String {
    payload(json!({"iss": iss, "sub": "user123", "exp": unix_now() + 3600}))
}

// ---------------------------------------------------------------------------------------
// §1 `ringway jwt sign`

fn decode_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("token part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("part {i} of {token:?} is not base64url: {e}"));
    serde_json::from_slice(&bytes).expect("token part is JSON")
}

#[test]
fn cli_sign_refuses_bad_arguments_with_one_line() {
    for (args, says) in [
        (&["--alg", "none"][..], "unknown algorithm"),
        (&["--claim", "novalue"], "expected k=v"),
        (&["--claim", "n:={"], "invalid JSON"),
        (&["--claim", "=v"], "expected k=v"),
        (&["--claim", ":=1"], "expected k=v"),
        // A ttl that would wrap exp into the past, or past JSON's exact integers.
        (&["--ttl", "18446744073709551615"], "--ttl"),
        (&["--ttl", "9007199254740991"], "--ttl"),
    ] {
        let mut full = vec!["jwt", "sign", "--secret", SECRET];
        full.extend_from_slice(args);
        let out = run_cli(&full, &[], Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no token printed");
        assert!(
            stderr.contains(says) && stderr.trim_end().lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}

/// An expired token for a test: `--claim exp:=N` sets `exp` itself (the default ttl
/// steps aside), and a negative `--ttl` puts it in the past.
#[test]
fn cli_sign_makes_expired_tokens() {
    let t = cli_sign(&["--secret", SECRET, "--key", "k", "--claim", "exp:=1000"]);
    assert_eq!(decode_part(&t, 1)["exp"], 1000);
    let t = cli_sign(&["--secret", SECRET, "--claim", "exp=soon"]);
    assert_eq!(decode_part(&t, 1)["exp"], "soon");
    let before = unix_now();
    let t = cli_sign(&["--secret", SECRET, "--ttl", "-60"]);
    let exp = decode_part(&t, 1)["exp"].as_u64().expect("exp is a number");
    assert!(
        exp + 60 >= before && exp + 60 <= unix_now(),
        "exp {exp}, now {before}"
    );
}

#[test]
fn cli_sign_sets_iss_exp_alg_and_claims() {
    let before = unix_now();
    let t = cli_sign(&[
        "--secret",
        SECRET,
        "--key",
        "mobile-app",
        "--claim",
        "sub=user123",
    ]);
    assert_eq!(t.split('.').count(), 3, "{t}");
    let h = decode_part(&t, 0);
    let c = decode_part(&t, 1);
    assert_eq!(h["alg"], "HS256", "default alg: {h}");
    assert_eq!(c["iss"], "mobile-app", "{c}");
    assert_eq!(c["sub"], "user123", "{c}");
    let exp = c["exp"].as_u64().expect("exp is a number");
    assert!(
        exp >= before + 3590 && exp <= unix_now() + 3610,
        "default ttl 3600: exp {exp}, now {before}"
    );
    // signature checked by the independent signer: same header+payload, same HMAC
    let parts: Vec<&str> = t.split('.').collect();
    let hdr = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    let pl = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(py_token(&hdr, &pl, SECRET, "sha256"), t, "HS256 signature");

    let t = cli_sign(&[
        "--secret",
        SECRET,
        "--alg",
        "HS512",
        "--ttl",
        "0",
        "--claim",
        "n:=42",
        "--claim",
        "o:={\"a\":[1,true]}",
        "--claim",
        "url=http://x:=y",
        "--claim",
        "eq==",
    ]);
    let h = decode_part(&t, 0);
    let c = decode_part(&t, 1);
    assert_eq!(h["alg"], "HS512", "{h}");
    assert!(c.get("exp").is_none(), "--ttl 0 means no exp: {c}");
    assert!(c.get("iss").is_none(), "no --key, no iss: {c}");
    assert_eq!(c["n"], json!(42), "k:=JSON is a JSON value: {c}");
    assert_eq!(c["o"], json!({"a": [1, true]}), "{c}");
    // The first `=` decides: a string value may hold `:=` or `=`.
    assert_eq!(c["url"], "http://x:=y", "{c}");
    assert_eq!(c["eq"], "=", "{c}");

    let t = cli_sign(&["--secret", SECRET, "--alg", "HS384", "--ttl", "60"]);
    assert_eq!(decode_part(&t, 0)["alg"], "HS384");
    let exp = decode_part(&t, 1)["exp"].as_u64().expect("exp");
    assert!(
        exp >= before + 55 && exp <= unix_now() + 65,
        "ttl 60: {exp}"
    );
}

// ---------------------------------------------------------------------------------------
// the seed scenario

fn seed_config(origin: &Origin) -> String {
    seed_services_config(origin, true, "")
}

#[test]
fn seed_scenario_end_to_end() {
    let o = Origin::start();
    let gw = Gateway::start_with(&seed_config(&o), GatewayOpts::default().workers(2));

    let r = admin_form(&gw, "POST", "/consumers", &[("username", "mobile-app")]);
    assert_eq!(r.status, 201, "POST /consumers: {r:?}");
    let consumer = r.json();
    let id = consumer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("consumer has an id: {consumer}"))
        .to_string();
    assert!(!id.is_empty());
    assert_eq!(consumer["username"], "mobile-app", "{consumer}");

    let r = admin_form(
        &gw,
        "POST",
        "/consumers/mobile-app/jwt",
        &[
            ("algorithm", "HS256"),
            ("secret", SECRET),
            ("key", "mobile-app"),
        ],
    );
    assert_eq!(r.status, 201, "POST /consumers/mobile-app/jwt: {r:?}");
    let cred = r.json();
    assert_eq!(cred["key"], "mobile-app", "{cred}");
    assert_eq!(cred["algorithm"], "HS256", "{cred}");

    // no token
    let r = proxy_get(&gw, "/api/users/123", &[]);
    assert_401(
        &r,
        &json!({"message": "Unauthorized"}),
        "Bearer",
        "no token",
    );
    let r = proxy_get(&gw, "/api/accounts/9", &[]);
    assert_401(
        &r,
        &json!({"message": "Unauthorized"}),
        "Bearer",
        "no token (accounts)",
    );
    assert_eq!(
        o.requests().len(),
        0,
        "unauthenticated requests reached the origin"
    );

    // a token from the independent signer, and one from the CLI
    let py = py_hs256(&good_claims("mobile-app"), SECRET);
    let cli = cli_sign(&[
        "--secret",
        SECRET,
        "--key",
        "mobile-app",
        "--claim",
        "sub=user123",
    ]);
    for (n, (token, path)) in [(&py, "/api/users/123"), (&cli, "/api/accounts/7")]
        .into_iter()
        .enumerate()
    {
        let auth = bearer(token);
        let r = proxy_get(
            &gw,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("X-Consumer-Username", "admin"),
                ("X-Consumer-ID", "forged-id"),
                ("X-Credential-Identifier", "forged"),
            ],
        );
        assert_eq!(r.status, 200, "token #{n} on {path}: {r:?}");
        let reqs = o.wait_complete(n + 1, Duration::from_secs(10));
        let rec = &reqs[n];
        assert_eq!(
            rec.header_all("x-consumer-id"),
            vec![id.as_str()],
            "X-Consumer-ID: {rec:?}"
        );
        assert_eq!(
            rec.header_all("x-consumer-username"),
            vec!["mobile-app"],
            "X-Consumer-Username (client-sent `admin` must be removed): {rec:?}"
        );
        assert_eq!(
            rec.header_all("x-credential-identifier"),
            vec!["mobile-app"],
            "X-Credential-Identifier: {rec:?}"
        );
        assert!(
            rec.header("x-consumer-custom-id").is_none(),
            "no custom_id, no X-Consumer-Custom-ID: {rec:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// every failure, with Kong's bodies and headers

fn failures_config(origin: &Origin) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    plugins:
      - name: jwt
    routes:
      - name: api
        paths: ["/api"]
      - name: realm
        paths: ["/realm"]
        plugins:
          - name: jwt
            config:
              realm: x
      - name: quoted-realm
        paths: ["/quoted-realm"]
        plugins:
          - name: jwt
            config:
              realm: 'a"b\c'
consumers:
  - username: mobile-app
    custom_id: cust-1
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
  - username: rsa-user
    jwt_secrets:
      - key: rsa-iss
        algorithm: RS256
        rsa_public_key: |
{pem}"#,
        u = origin.url(),
        pem = indent(&pem("rsa-public.pem"), 10)
    )
}

#[test]
fn failure_messages_match_kong_and_nothing_reaches_origin() {
    let o = Origin::start();
    let gw = Gateway::start(&failures_config(&o));
    let now = unix_now();
    let good = py_hs256(&good_claims("mobile-app"), SECRET);
    let good2 = py_hs256(
        &payload(json!({"iss": "mobile-app", "sub": "other", "exp": now + 3600})),
        SECRET,
    );
    let claims = good_claims("mobile-app");
    let with_alg = |alg: &str| {
        py_token(
            &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
            &claims,
            SECRET,
            "sha256",
        )
    };
    let alg_none_unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.as_bytes())
    );
    let bad_json = format!(
        "{}.{}.{}",
        b64url(b"not json"),
        b64url(claims.as_bytes()),
        good.split('.').nth(2).unwrap()
    );
    let bad_json_claims = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        b64url(b"{\"iss\":"),
        good.split('.').nth(2).unwrap()
    );
    let invalid = r#"Bearer error="invalid_token""#;
    let msg = |m: &str| json!({ "message": m });

    struct Case {
        name: &'static str,
        target: String,
        auth: Option<String>,
        body: Value,
        www: &'static str,
    }
    let hdr = |name: &'static str, token: &str, body: Value| Case {
        name,
        target: "/api/x".into(),
        auth: Some(bearer(token)),
        body,
        www: invalid,
    };
    let mut cases = vec![
        Case {
            name: "no token",
            target: "/api/x".into(),
            auth: None,
            body: msg("Unauthorized"),
            www: "Bearer",
        },
        Case {
            name: "Authorization without Bearer scheme is no token",
            target: "/api/x".into(),
            auth: Some(format!("Basic {good}")),
            body: msg("Unauthorized"),
            www: "Bearer",
        },
        Case {
            name: "two different tokens: ?jwt= and header",
            target: format!("/api/x?jwt={good2}"),
            auth: Some(bearer(&good)),
            body: msg("Multiple tokens provided"),
            www: invalid,
        },
        hdr("alg none", &with_alg("none"), msg("Bad token; invalid alg")),
        hdr("alg None", &with_alg("None"), msg("Bad token; invalid alg")),
        hdr(
            "alg hs256",
            &with_alg("hs256"),
            msg("Bad token; invalid alg"),
        ),
        hdr(
            "alg none, empty signature",
            &alg_none_unsigned,
            msg("Bad token; invalid alg"),
        ),
        hdr("header not JSON", &bad_json, msg("Bad token; invalid JSON")),
        hdr(
            "claims not JSON",
            &bad_json_claims,
            msg("Bad token; invalid JSON"),
        ),
        hdr("one segment", "not-a-jwt", msg("Bad token; invalid JSON")),
        hdr(
            "missing iss",
            &py_hs256(&payload(json!({"sub": "u", "exp": now + 3600})), SECRET),
            msg("No mandatory 'iss' in claims"),
        ),
        hdr(
            "empty iss",
            &py_hs256(&payload(json!({"iss": "", "exp": now + 3600})), SECRET),
            msg("Invalid 'iss' in claims"),
        ),
        hdr(
            "unknown iss",
            &py_hs256(&good_claims("nobody"), SECRET),
            msg("No credentials found for given 'iss'"),
        ),
        hdr(
            "HS256 token for an RS256 credential",
            &py_hs256(&good_claims("rsa-iss"), SECRET),
            msg("Invalid algorithm"),
        ),
        hdr(
            "HS256 token signed with the RSA public key (alg confusion)",
            &py_hs256(&good_claims("rsa-iss"), &pem("rsa-public.pem")),
            msg("Invalid algorithm"),
        ),
        hdr(
            "wrong secret",
            &py_hs256(&good_claims("mobile-app"), "not-the-secret"),
            msg("Invalid signature"),
        ),
        hdr(
            "tampered payload",
            &format!(
                "{}.{}.{}",
                good.split('.').next().unwrap(),
                b64url(
                    payload(json!({"iss":"mobile-app","sub":"admin","exp":now+3600})).as_bytes()
                ),
                good.split('.').nth(2).unwrap()
            ),
            msg("Invalid signature"),
        ),
        hdr(
            "expired",
            &py_hs256(
                &payload(json!({"iss": "mobile-app", "exp": now - 30})),
                SECRET,
            ),
            json!({"exp": "token expired"}),
        ),
        hdr(
            "nbf in the future",
            &py_hs256(
                &payload(json!({"iss": "mobile-app", "nbf": now + 3600, "exp": now + 7200})),
                SECRET,
            ),
            json!({"nbf": "token not valid yet"}),
        ),
        hdr(
            "exp as a string",
            &py_hs256(
                &payload(json!({"iss": "mobile-app", "exp": (now + 3600).to_string()})),
                SECRET,
            ),
            json!({"exp": "must be a number"}),
        ),
        Case {
            name: "realm, no token",
            target: "/realm/x".into(),
            auth: None,
            body: msg("Unauthorized"),
            www: r#"Bearer realm="x""#,
        },
        Case {
            name: "a realm's quote and backslash are escaped",
            target: "/quoted-realm/x".into(),
            auth: None,
            body: msg("Unauthorized"),
            www: r#"Bearer realm="a\"b\\c""#,
        },
        Case {
            name: "realm, bad signature",
            target: "/realm/x".into(),
            auth: Some(bearer(&py_hs256(&good_claims("mobile-app"), "nope"))),
            body: msg("Invalid signature"),
            www: r#"Bearer realm="x", error="invalid_token""#,
        },
        Case {
            name: "realm, expired",
            target: "/realm/x".into(),
            auth: Some(bearer(&py_hs256(
                &payload(json!({"iss": "mobile-app", "exp": now - 30})),
                SECRET,
            ))),
            body: json!({"exp": "token expired"}),
            www: r#"Bearer realm="x", error="invalid_token""#,
        },
    ];
    // a bad token in the query parameter alone
    cases.push(Case {
        name: "bad signature in ?jwt=",
        target: format!(
            "/api/x?jwt={}",
            py_hs256(&good_claims("mobile-app"), "nope")
        ),
        auth: None,
        body: msg("Invalid signature"),
        www: invalid,
    });

    let mut failures = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c
            .auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = proxy_get(&gw, &c.target, &headers);
        let got: Option<Value> = serde_json::from_slice(&r.body).ok();
        let www = r.header("www-authenticate");
        if r.status != 401 || got.as_ref() != Some(&c.body) || www != Some(c.www) {
            failures.push(format!(
                "{}: want 401 {} WWW-Authenticate {:?}; got {} {} WWW-Authenticate {:?}",
                c.name,
                c.body,
                c.www,
                r.status,
                r.body_str(),
                www
            ));
        }
    }
    let leaked = o.requests().len();
    assert!(
        failures.is_empty() && leaked == 0,
        "{} of {} failure cases differ from Kong; {leaked} rejected requests reached the origin:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // sanity: the origin is reachable, and the same token twice counts as one token
    let auth = bearer(&good);
    let r = proxy_get(
        &gw,
        &format!("/api/x?jwt={good}"),
        &[("Authorization", &auth)],
    );
    assert_eq!(
        r.status, 200,
        "the same token in query and header is one token: {r:?}"
    );
    let r = proxy_get(
        &gw,
        "/api/x",
        &[("Authorization", &format!("bearer {good}"))],
    );
    assert_eq!(
        r.status, 200,
        "lower-case `bearer` is accepted (Kong's [Bb]earer): {r:?}"
    );
    let reqs = o.wait_complete(2, Duration::from_secs(10));
    assert_eq!(
        reqs[0].header("x-consumer-custom-id"),
        Some("cust-1"),
        "{:?}",
        reqs[0]
    );
}

// ---------------------------------------------------------------------------------------
// algorithms, tokens from jsonwebtoken and Python

#[test]
fn rs256_es256_es512_hs384_hs512_from_independent_signers() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: api
        paths: ["/api"]
plugins:
  - name: jwt
consumers:
  - username: rsa-user
    jwt_secrets:
      - key: rsa-iss
        algorithm: RS256
        rsa_public_key: |
{rsa}  - username: rsa-pkcs1-user
    jwt_secrets:
      - key: rsa-pkcs1-iss
        algorithm: RS256
        rsa_public_key: |
{rsa_pkcs1}  - username: ec-user
    jwt_secrets:
      - key: ec-iss
        algorithm: ES256
        rsa_public_key: |
{ec}  - username: ec512-user
    jwt_secrets:
      - key: ec512-iss
        algorithm: ES512
        rsa_public_key: |
{ec512}  - username: hs-user
    jwt_secrets:
      - key: hs384-iss
        algorithm: HS384
        secret: s384
      - key: hs512-iss
        algorithm: HS512
        secret: s512
"#,
        u = o.url(),
        rsa = indent(&pem("rsa-public.pem"), 10),
        rsa_pkcs1 = indent(&pem("rsa-public.pkcs1.pem"), 10),
        ec = indent(&pem("ec256-public.pem"), 10),
        ec512 = indent(&pem("ec521-public.pem"), 10),
    );
    let gw = Gateway::start(&cfg);
    let claims = |iss: &str| json!({"iss": iss, "sub": "user123", "exp": unix_now() + 3600});
    let rsa_key = EncodingKey::from_rsa_pem(&jwt_fixture("rsa-private.pem")).expect("rsa key");
    let ec_key = EncodingKey::from_ec_pem(&jwt_fixture("ec256-private.pk8.pem")).expect("ec key");
    let rs = encode(&Header::new(Algorithm::RS256), &claims("rsa-iss"), &rsa_key).unwrap();
    let es = encode(&Header::new(Algorithm::ES256), &claims("ec-iss"), &ec_key).unwrap();
    let es512 = es512_token(&claims("ec512-iss"));
    // The same key pair, the public half given as PKCS#1 (`RSA PUBLIC KEY`).
    let rs_pkcs1 = encode(
        &Header::new(Algorithm::RS256),
        &claims("rsa-pkcs1-iss"),
        &rsa_key,
    )
    .unwrap();
    let hs384 = py_token(
        r#"{"alg":"HS384","typ":"JWT"}"#,
        &claims("hs384-iss").to_string(),
        "s384",
        "sha384",
    );
    let hs512 = py_token(
        r#"{"alg":"HS512","typ":"JWT"}"#,
        &claims("hs512-iss").to_string(),
        "s512",
        "sha512",
    );
    let hs384_cli = cli_sign(&["--secret", "s384", "--key", "hs384-iss", "--alg", "HS384"]);
    let hs512_cli = cli_sign(&["--secret", "s512", "--key", "hs512-iss", "--alg", "HS512"]);

    let mut bad = Vec::new();
    for (name, tok, want_user) in [
        ("RS256", &rs, "rsa-user"),
        ("RS256, PKCS#1 public key", &rs_pkcs1, "rsa-pkcs1-user"),
        ("ES256", &es, "ec-user"),
        ("ES512", &es512, "ec512-user"),
        ("HS384 (python)", &hs384, "hs-user"),
        ("HS512 (python)", &hs512, "hs-user"),
        ("HS384 (cli)", &hs384_cli, "hs-user"),
        ("HS512 (cli)", &hs512_cli, "hs-user"),
    ] {
        let before = o.requests().len();
        let r = proxy_get(&gw, "/api/a", &[("Authorization", &bearer(tok))]);
        if r.status != 200 {
            bad.push(format!("{name}: {} {}", r.status, r.body_str()));
            continue;
        }
        let reqs = o.wait_complete(before + 1, Duration::from_secs(10));
        let got = reqs[before].header("x-consumer-username").unwrap_or("");
        if got != want_user {
            bad.push(format!(
                "{name}: X-Consumer-Username {got:?}, want {want_user}"
            ));
        }
    }

    // wrong keys / wrong algorithms
    let other_rsa = encode(&Header::new(Algorithm::RS256), &claims("ec-iss"), &rsa_key).unwrap();
    // flip one character in the middle of the signature (the last one carries padding bits)
    let tampered = {
        let mut b = rs.clone().into_bytes();
        let i = rs.rfind('.').unwrap() + 100;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let es_tampered = {
        let p: Vec<&str> = es.split('.').collect();
        format!(
            "{}.{}.{}",
            p[0],
            b64url(
                claims("ec-iss")
                    .to_string()
                    .replace("user123", "root")
                    .as_bytes()
            ),
            p[2]
        )
    };
    let hs384_as_512 = py_token(
        r#"{"alg":"HS512","typ":"JWT"}"#,
        &claims("hs384-iss").to_string(),
        "s384",
        "sha512",
    );
    for (name, tok, want) in [
        (
            "RS256 token for an ES256 credential",
            &other_rsa,
            "Invalid algorithm",
        ),
        (
            "RS256 with a changed signature",
            &tampered,
            "Invalid signature",
        ),
        (
            "ES256 with a changed payload",
            &es_tampered,
            "Invalid signature",
        ),
        (
            "HS512 token for an HS384 credential",
            &hs384_as_512,
            "Invalid algorithm",
        ),
    ] {
        let r = proxy_get(&gw, "/api/a", &[("Authorization", &bearer(tok))]);
        let body: Option<Value> = serde_json::from_slice(&r.body).ok();
        if r.status != 401 || body != Some(json!({ "message": want })) {
            bad.push(format!(
                "{name}: want 401 {want:?}, got {} {}",
                r.status,
                r.body_str()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "algorithm cases failed:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// config features

#[test]
fn file_consumers_groups_and_top_level_jwt_secrets() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: api
        paths: ["/api"]
    plugins:
      - name: jwt
consumer_groups:
  - name: premium
  - name: free
    plugins: []
consumers:
  - username: alice
    custom_id: alice-1
    groups: [premium]
    jwt_secrets:
      - key: alice-key
        secret: alice-secret
  - username: bob
    groups:
      - name: premium
jwt_secrets:
  - consumer: bob
    key: bob-key
    secret: bob-secret
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let alice = py_hs256(&good_claims("alice-key"), "alice-secret");
    let bob = cli_sign(&["--secret", "bob-secret", "--key", "bob-key"]);

    let r = proxy_get(&gw, "/api/1", &[("Authorization", &bearer(&bob))]);
    assert_eq!(
        r.status, 200,
        "top-level jwt_secrets with `consumer: bob`: {r:?}"
    );
    let reqs = o.wait_complete(1, Duration::from_secs(10));
    assert_eq!(reqs[0].header("x-consumer-username"), Some("bob"));

    let r = proxy_get(&gw, "/api/1", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status, 200, "alice: {r:?}");
    let reqs = o.wait_complete(2, Duration::from_secs(10));
    assert_eq!(reqs[1].header("x-consumer-username"), Some("alice"));
    assert_eq!(reqs[1].header("x-consumer-custom-id"), Some("alice-1"));
    // file consumers are readable through the Admin API
    let r = gw.admin_get("/consumers/alice");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["custom_id"], "alice-1");
    let r = gw.admin_get("/jwts/bob-key");
    assert_eq!(r.status, 200, "GET /jwts/bob-key: {r:?}");
}

#[test]
fn hide_credentials_removes_token_from_header_query_and_cookie() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: hide
        paths: ["/hide"]
        plugins:
          - name: jwt
            config:
              hide_credentials: true
              cookie_names: [auth]
      - name: keep
        paths: ["/keep"]
        plugins:
          - name: jwt
            config:
              cookie_names: [auth]
consumers:
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let tok = py_hs256(&good_claims("mobile-app"), SECRET);
    let auth = bearer(&tok);
    // The cookie's name matched without regard to case, and so taken out.
    let cookie = format!("theme=dark; AUTH={tok}; lang=en");

    let r = proxy_get(
        &gw,
        "/hide/h",
        &[
            ("Authorization", &auth),
            ("X-Other", "1"),
            ("authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = proxy_get(&gw, &format!("/hide/q?a=1&jwt={tok}&b=2"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = proxy_get(&gw, "/hide/c", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{r:?}");
    // without hide_credentials the token is forwarded (Kong's default)
    let r = proxy_get(&gw, "/keep/h", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}");
    let reqs = o.wait_complete(4, Duration::from_secs(10));

    let h = &reqs[0];
    assert!(
        h.header_all("authorization").is_empty(),
        "hide_credentials: no Authorization header may reach the origin: {h:?}"
    );
    assert_eq!(h.header("x-other"), Some("1"), "{h:?}");
    let q = &reqs[1];
    assert!(
        !q.target.contains(&tok) && !q.target.contains("jwt="),
        "hide_credentials: ?jwt= must be removed: target {:?}",
        q.target
    );
    assert!(
        q.target.contains("a=1") && q.target.contains("b=2"),
        "other query parameters are kept: target {:?}",
        q.target
    );
    let c = &reqs[2];
    let sent_cookie = c.header_all("cookie").join("; ");
    assert!(
        !sent_cookie.contains(&tok) && !sent_cookie.to_ascii_lowercase().contains("auth="),
        "hide_credentials: the auth cookie must be removed: Cookie {sent_cookie:?}"
    );
    assert!(
        sent_cookie.contains("theme=dark") && sent_cookie.contains("lang=en"),
        "other cookies are kept: Cookie {sent_cookie:?}"
    );
    assert_eq!(
        reqs[3].header("authorization"),
        Some(auth.as_str()),
        "without hide_credentials the token is forwarded: {:?}",
        reqs[3]
    );
    for r in &reqs[..3] {
        assert!(
            !String::from_utf8_lossy(&r.head_raw).contains(&tok),
            "hide_credentials: the token reached the origin: {r:?}"
        );
    }

    // A parameter name is read decoded, as Kong reads it: `?j%77t=` is `?jwt=`, found
    // and hidden alike; the pairs left empty do not leave a dangling `?`.
    let r = proxy_get(&gw, &format!("/hide/e?j%77t={tok}&"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let e = o.wait_complete(5, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(e.target, "/e", "{e:?}");

    // The same token in several places is one token, and hidden from all of them.
    let r = proxy_get(
        &gw,
        &format!("/hide/all?jwt={tok}"),
        &[("Authorization", &auth), ("Cookie", &format!("auth={tok}"))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let all = o.wait_complete(6, Duration::from_secs(10)).pop().unwrap();
    assert!(
        !String::from_utf8_lossy(&all.head_raw).contains(&tok),
        "hide_credentials: a copy of the token reached the origin: {all:?}"
    );
    assert_eq!(all.target, "/all", "{all:?}");
}

/// A token that fails, its request going on as the anonymous consumer, is a credential
/// all the same: `hide_credentials` removes it wherever it came, two different ones too.
#[test]
fn hide_credentials_removes_a_failed_token_from_an_anonymous_request() {
    let o = Origin::start();
    let gw = Gateway::start(&anonymous_config(
        &o,
        "              hide_credentials: true\n",
    ));
    let bad = py_hs256(&good_claims("mobile-app"), "not-the-secret");
    let other = py_hs256(&good_claims("nobody"), SECRET);
    let r = proxy_get(
        &gw,
        &format!("/api/x?a=1&jwt={bad}"),
        &[("Authorization", &bearer(&other))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = o.wait_complete(1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(
        seen.header("x-anonymous-consumer"),
        Some("true"),
        "{seen:?}"
    );
    let head = String::from_utf8_lossy(&seen.head_raw).to_string();
    assert!(
        !head.contains(&bad) && !head.contains(&other) && seen.target == "/x?a=1",
        "{seen:?}"
    );
}

/// One service at `/api` whose jwt plugin maps a failure to the `guest` consumer
/// (`extra`: more of the plugin's config lines), and the consumer `mobile-app` with a
/// credential.
fn anonymous_config(o: &Origin, extra: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: api
        paths: ["/api"]
        plugins:
          - name: jwt
            config:
              anonymous: guest
{extra}consumers:
  - username: guest
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    )
}

#[test]
fn anonymous_consumer_on_failure() {
    let o = Origin::start();
    let cfg = anonymous_config(&o, "");
    let gw = Gateway::start(&cfg);
    let guest_id = gw.admin_get("/consumers/guest").json()["id"]
        .as_str()
        .unwrap_or("")
        .to_string();

    let r = proxy_get(&gw, "/api/a", &[("X-Anonymous-Consumer", "false")]);
    assert_eq!(r.status, 200, "no token with anonymous set: {r:?}");
    let bad = bearer(&py_hs256(&good_claims("mobile-app"), "wrong"));
    let r = proxy_get(&gw, "/api/b", &[("Authorization", &bad)]);
    assert_eq!(r.status, 200, "bad signature with anonymous set: {r:?}");
    let good = bearer(&py_hs256(&good_claims("mobile-app"), SECRET));
    let r = proxy_get(
        &gw,
        "/api/c",
        &[("Authorization", &good), ("X-Anonymous-Consumer", "true")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let reqs = o.wait_complete(3, Duration::from_secs(10));
    for rec in &reqs[..2] {
        assert_eq!(
            rec.header_all("x-anonymous-consumer"),
            vec!["true"],
            "{rec:?}"
        );
        assert_eq!(rec.header("x-consumer-username"), Some("guest"), "{rec:?}");
        if !guest_id.is_empty() {
            assert_eq!(
                rec.header("x-consumer-id"),
                Some(guest_id.as_str()),
                "{rec:?}"
            );
        }
    }
    assert_eq!(
        reqs[2].header("x-consumer-username"),
        Some("mobile-app"),
        "{:?}",
        reqs[2]
    );
    assert!(
        reqs[2].header("x-anonymous-consumer").is_none(),
        "an authenticated request has no X-Anonymous-Consumer (client copy removed): {:?}",
        reqs[2]
    );
}

#[test]
fn anonymous_consumer_that_does_not_exist() {
    // Kong answers 500 at request time; refusing the config up front is stricter and fine.
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: missing
        paths: ["/missing"]
        plugins:
          - name: jwt
            config:
              anonymous: ghost
"#,
        u = o.url()
    );
    match Gateway::try_start_with(&cfg, GatewayOpts::default()) {
        Err(e) => assert!(
            e.contains("ghost") && e.contains("anonymous"),
            "a refused config must name the anonymous consumer: {e}"
        ),
        Ok(gw) => {
            let r = proxy_get(&gw, "/missing/a", &[]);
            assert_eq!(r.status, 500, "anonymous consumer missing: {r:?}");
            assert_eq!(
                r.json(),
                json!({"message": "anonymous consumer ghost is configured but doesn't exist"}),
                "{r:?}"
            );
            assert_eq!(o.requests().len(), 0);
        }
    }
}

#[test]
fn claims_to_verify_exp_makes_exp_mandatory() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: strict
        paths: ["/strict"]
        plugins:
          - name: jwt
            config:
              claims_to_verify: [exp]
      - name: lax
        paths: ["/lax"]
        plugins:
          - name: jwt
consumers:
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let no_exp = bearer(&py_hs256(&payload(json!({"iss": "mobile-app"})), SECRET));
    let no_exp_cli = bearer(&cli_sign(&[
        "--secret",
        SECRET,
        "--key",
        "mobile-app",
        "--ttl",
        "0",
    ]));
    let with_exp = bearer(&py_hs256(&good_claims("mobile-app"), SECRET));

    let r = proxy_get(&gw, "/lax/a", &[("Authorization", &no_exp)]);
    assert_eq!(
        r.status, 200,
        "exp is optional without claims_to_verify: {r:?}"
    );
    let r = proxy_get(&gw, "/strict/a", &[("Authorization", &with_exp)]);
    assert_eq!(r.status, 200, "{r:?}");
    for t in [&no_exp, &no_exp_cli] {
        let r = proxy_get(&gw, "/strict/a", &[("Authorization", t)]);
        assert_401(
            &r,
            &json!({"exp": "must be a number"}),
            r#"Bearer error="invalid_token""#,
            "claims_to_verify [exp], token without exp",
        );
    }
    assert_eq!(o.requests().len(), 2, "{:?}", o.requests());
}

#[test]
fn key_claim_name_kid_reads_the_header() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: api
        paths: ["/api"]
    plugins:
      - name: jwt
        config:
          key_claim_name: kid
consumers:
  - username: rotator
    jwt_secrets:
      - key: kid-2024
        secret: old-secret
      - key: kid-2025
        secret: new-secret
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let exp = unix_now() + 3600;
    let in_header = |kid: &str, secret: &str| {
        py_token(
            &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
            &payload(json!({"sub": "u", "exp": exp})),
            secret,
            "sha256",
        )
    };
    let r = proxy_get(
        &gw,
        "/api/a",
        &[(
            "Authorization",
            &bearer(&in_header("kid-2024", "old-secret")),
        )],
    );
    assert_eq!(r.status, 200, "kid in the JWT header: {r:?}");
    let r = proxy_get(
        &gw,
        "/api/a",
        &[(
            "Authorization",
            &bearer(&in_header("kid-2025", "new-secret")),
        )],
    );
    assert_eq!(r.status, 200, "second kid: {r:?}");
    let in_claims = py_hs256(
        &payload(json!({"kid": "kid-2025", "exp": exp})),
        "new-secret",
    );
    let r = proxy_get(&gw, "/api/a", &[("Authorization", &bearer(&in_claims))]);
    assert_eq!(r.status, 200, "kid in the claims: {r:?}");
    let r = proxy_get(
        &gw,
        "/api/a",
        &[(
            "Authorization",
            &bearer(&in_header("kid-2025", "old-secret")),
        )],
    );
    assert_401(
        &r,
        &json!({"message": "Invalid signature"}),
        r#"Bearer error="invalid_token""#,
        "kid-2025 signed with the old secret",
    );
    let iss_only = py_hs256(&good_claims("kid-2024"), "old-secret");
    let r = proxy_get(&gw, "/api/a", &[("Authorization", &bearer(&iss_only))]);
    assert_401(
        &r,
        &json!({"message": "No mandatory 'kid' in claims"}),
        r#"Bearer error="invalid_token""#,
        "iss but no kid",
    );
    let r = proxy_get(
        &gw,
        "/api/a",
        &[("Authorization", &bearer(&in_header("kid-1999", "x")))],
    );
    assert_401(
        &r,
        &json!({"message": "No credentials found for given 'kid'"}),
        r#"Bearer error="invalid_token""#,
        "unknown kid",
    );
    let reqs = o.wait_complete(3, Duration::from_secs(10));
    assert_eq!(reqs[0].header("x-credential-identifier"), Some("kid-2024"));
    assert_eq!(reqs[1].header("x-credential-identifier"), Some("kid-2025"));
}

#[test]
fn run_on_preflight_false_lets_options_through() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: open
        paths: ["/open"]
        plugins:
          - name: jwt
            config:
              run_on_preflight: false
      - name: closed
        paths: ["/closed"]
        plugins:
          - name: jwt
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let opt = |path: &str| {
        http_request(
            gw.proxy_addr(),
            "OPTIONS",
            path,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
    };
    let r = opt("/open/a");
    assert_eq!(r.status, 200, "OPTIONS with run_on_preflight: false: {r:?}");
    let r = opt("/closed/a");
    assert_401(
        &r,
        &json!({"message": "Unauthorized"}),
        "Bearer",
        "OPTIONS, run_on_preflight default true",
    );
    let r = proxy_get(&gw, "/open/a", &[]);
    assert_401(
        &r,
        &json!({"message": "Unauthorized"}),
        "Bearer",
        "GET with run_on_preflight: false",
    );
    let reqs = o.wait_complete(1, Duration::from_secs(10));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "OPTIONS");
}

#[test]
fn route_scoped_jwt_beats_service_scoped_and_global() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    plugins:
      - name: jwt
        config:
          uri_param_names: [svc_token]
    routes:
      - name: by-service
        paths: ["/svc"]
      - name: by-route
        paths: ["/route"]
        plugins:
          - name: jwt
            config:
              claims_to_verify: [exp]
              uri_param_names: [route_token]
  - name: other
    url: {u}
    routes:
      - name: global-only
        paths: ["/global"]
plugins:
  - name: jwt
    config:
      claims_to_verify: [exp]
consumers:
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let no_exp = py_hs256(&payload(json!({"iss": "mobile-app"})), SECRET);
    let mut problems = Vec::new();
    let mut expect = |what: &str, r: Response, status: u16, body: Option<Value>| {
        let got: Option<Value> = serde_json::from_slice(&r.body).ok();
        if r.status != status || (body.is_some() && got != body) {
            problems.push(format!(
                "{what}: want {status} {:?}, got {} {}",
                body,
                r.status,
                r.body_str()
            ));
        }
    };
    // service scope: no claims_to_verify, token in ?svc_token=
    expect(
        "service scope, ?svc_token=, no exp",
        proxy_get(&gw, &format!("/svc/a?svc_token={no_exp}"), &[]),
        200,
        None,
    );
    expect(
        "service scope ignores ?route_token=",
        proxy_get(&gw, &format!("/svc/a?route_token={no_exp}"), &[]),
        401,
        Some(json!({"message": "Unauthorized"})),
    );
    // route scope: claims_to_verify [exp], token in ?route_token=
    expect(
        "route scope, ?route_token=, no exp",
        proxy_get(&gw, &format!("/route/a?route_token={no_exp}"), &[]),
        401,
        Some(json!({"exp": "must be a number"})),
    );
    expect(
        "route scope ignores the service's ?svc_token=",
        proxy_get(&gw, &format!("/route/a?svc_token={no_exp}"), &[]),
        401,
        Some(json!({"message": "Unauthorized"})),
    );
    let with_exp = py_hs256(&good_claims("mobile-app"), SECRET);
    expect(
        "route scope, ?route_token= with exp",
        proxy_get(&gw, &format!("/route/a?route_token={with_exp}"), &[]),
        200,
        None,
    );
    // global scope applies where nothing narrower exists
    expect(
        "global scope, no exp",
        proxy_get(&gw, "/global/a", &[("Authorization", &bearer(&no_exp))]),
        401,
        Some(json!({"exp": "must be a number"})),
    );
    expect(
        "global scope, with exp",
        proxy_get(&gw, "/global/a", &[("Authorization", &bearer(&with_exp))]),
        200,
        None,
    );
    assert!(problems.is_empty(), "precedence:\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// `ringway check` rejects what would silently weaken jwt

#[test]
fn check_rejects_bad_jwt_configs_with_paths() {
    let base = r#"_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes:
      - name: api
        paths: ["/api"]
"#;
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown plugin name",
            format!("{base}    plugins:\n      - name: jwtt\n"),
            "services[0].plugins[0].name",
            "jwtt",
        ),
        (
            "unknown jwt config field",
            format!(
                "{base}    plugins:\n      - name: jwt\n        config:\n          claims_to_verfy: [exp]\n"
            ),
            "services[0].plugins[0].config",
            "claims_to_verfy",
        ),
        (
            "consumer-scoped jwt",
            format!("{base}consumers:\n  - username: a\n    plugins:\n      - name: jwt\n"),
            "consumers[0].plugins[0]",
            "",
        ),
        (
            "top-level jwt plugin scoped to a consumer",
            format!("{base}consumers:\n  - username: a\nplugins:\n  - name: jwt\n    consumer: a\n"),
            "plugins[0]",
            "",
        ),
        (
            "unknown jwt algorithm",
            format!(
                "{base}consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n        secret: s\n        algorithm: HS999\n"
            ),
            "consumers[0].jwt_secrets[0].algorithm",
            "",
        ),
        (
            "RS256 credential without rsa_public_key",
            format!(
                "{base}consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n        algorithm: RS256\n"
            ),
            "consumers[0].jwt_secrets[0]",
            "",
        ),
        (
            "maximum_expiration without exp in claims_to_verify",
            format!(
                "{base}    plugins:\n      - name: jwt\n        config:\n          maximum_expiration: 60\n"
            ),
            "services[0].plugins[0].config",
            "",
        ),
        (
            "claims_to_verify with an unsupported claim",
            format!(
                "{base}    plugins:\n      - name: jwt\n        config:\n          claims_to_verify: [aud]\n"
            ),
            "services[0].plugins[0].config.claims_to_verify",
            "",
        ),
        (
            "a realm with a line break (it would add headers to every 401)",
            format!(
                "{base}    plugins:\n      - name: jwt\n        config:\n          realm: \"x\\r\\nSet-Cookie: a=b\"\n"
            ),
            "services[0].plugins[0].config.realm",
            "control characters",
        ),
    ];
    let mut bad = Vec::new();
    for (name, text, path, word) in &cases {
        let (code, err) = check_file(text);
        let ok_line = nonempty_lines(&err)
            .iter()
            .any(|l| l.trim_start().starts_with(path) && l.contains(word));
        if code != Some(78) || !ok_line {
            bad.push(format!(
                "{name}: want exit 78 and a line starting with `{path}`{}; got {code:?}, stderr {err:?}",
                if word.is_empty() { String::new() } else { format!(" naming `{word}`") }
            ));
        }
    }
    assert!(bad.is_empty(), "`ringway check`:\n{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------
// extension options and less common Kong options

/// HS256 by Python with a raw (hex-given) key.
fn py_hs256_raw_key(payload_json: &str, key_hex: &str) -> String {
    let script = r#"
import sys, hmac, hashlib, base64
p, k = sys.argv[1], bytes.fromhex(sys.argv[2])
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b'=').decode()
si = b(b'{"alg":"HS256","typ":"JWT"}') + '.' + b(p.encode())
print(si + '.' + b(hmac.new(k, si.encode(), hashlib.sha256).digest()))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(payload_json)
        .arg(key_hex)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn secret_is_base64_accepts_both_alphabets_and_header_names() {
    // raw key fb ff bf fb ef be 01 02: standard `+/+/++++AQI=`, URL-safe `-_-_----AQI=`
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: b64
        paths: ["/b64"]
        plugins:
          - name: jwt
            config:
              secret_is_base64: true
      - name: hdr
        paths: ["/hdr"]
        plugins:
          - name: jwt
            config:
              header_names: [x-token]
      - name: under
        paths: ["/under"]
        plugins:
          - name: jwt
            config:
              header_names: [x_token]
consumers:
  - username: b64-user
    jwt_secrets:
      - {{key: std-padded, secret: "+/+/++++AQI="}}
      - {{key: std-unpadded, secret: "+/+/++++AQI"}}
      - {{key: url-padded, secret: "-_-_----AQI="}}
      - {{key: url-unpadded, secret: "-_-_----AQI"}}
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let mut bad = Vec::new();
    for key in ["std-padded", "std-unpadded", "url-padded", "url-unpadded"] {
        let t = py_hs256_raw_key(&good_claims(key), "fbffbffbefbe0102");
        let r = proxy_get(&gw, "/b64/a", &[("Authorization", &bearer(&t))]);
        if r.status != 200 {
            bad.push(format!(
                "secret_is_base64, {key}: {} {}",
                r.status,
                r.body_str()
            ));
        }
    }
    // the base64 text itself is not the key
    let t = py_hs256(&good_claims("std-padded"), "+/+/++++AQI=");
    let r = proxy_get(&gw, "/b64/a", &[("Authorization", &bearer(&t))]);
    if r.status != 401 || r.json() != json!({"message": "Invalid signature"}) {
        bad.push(format!(
            "secret_is_base64: a token signed with the undecoded text must fail: {} {}",
            r.status,
            r.body_str()
        ));
    }
    let tok = bearer(&py_hs256(&good_claims("mobile-app"), SECRET));
    let r = proxy_get(&gw, "/hdr/a", &[("X-Token", &tok)]);
    if r.status != 200 {
        bad.push(format!(
            "header_names [x-token]: {} {}",
            r.status,
            r.body_str()
        ));
    }
    let r = proxy_get(&gw, "/hdr/a", &[("Authorization", &tok)]);
    if r.status != 401 || r.json() != json!({"message": "Unauthorized"}) {
        bad.push(format!(
            "header_names [x-token] ignores Authorization: {} {}",
            r.status,
            r.body_str()
        ));
    }
    // As Kong's `get_header`: `x_token` names the `X-Token` header.
    let r = proxy_get(&gw, "/under/a", &[("X-Token", &tok)]);
    if r.status != 200 {
        bad.push(format!(
            "header_names [x_token] reads X-Token: {} {}",
            r.status,
            r.body_str()
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn leeway_and_maximum_expiration() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: lee
        paths: ["/lee"]
        plugins:
          - name: jwt
            config:
              leeway: 120
      - name: max
        paths: ["/max"]
        plugins:
          - name: jwt
            config:
              claims_to_verify: [exp]
              maximum_expiration: 600
consumers:
  - username: mobile-app
    jwt_secrets:
      - key: mobile-app
        secret: {SECRET}
"#,
        u = o.url()
    );
    let gw = Gateway::start(&cfg);
    let now = unix_now();
    let tok = |claims: Value| bearer(&py_hs256(&claims.to_string(), SECRET));
    let mut bad = Vec::new();
    let mut expect = |what: &str, path: &str, t: String, status: u16, body: Option<Value>| {
        let r = proxy_get(&gw, path, &[("Authorization", &t)]);
        let got: Option<Value> = serde_json::from_slice(&r.body).ok();
        if r.status != status || (body.is_some() && got != body) {
            bad.push(format!(
                "{what}: want {status} {body:?}, got {} {}",
                r.status,
                r.body_str()
            ));
        }
    };
    expect(
        "leeway 120, expired 30 s ago",
        "/lee/a",
        tok(json!({"iss": "mobile-app", "exp": now - 30})),
        200,
        None,
    );
    expect(
        "leeway 120, nbf 30 s ahead",
        "/lee/a",
        tok(json!({"iss": "mobile-app", "nbf": now + 30, "exp": now + 600})),
        200,
        None,
    );
    expect(
        "leeway 120, expired 600 s ago",
        "/lee/a",
        tok(json!({"iss": "mobile-app", "exp": now - 600})),
        401,
        Some(json!({"exp": "token expired"})),
    );
    expect(
        "leeway 120, nbf 600 s ahead",
        "/lee/a",
        tok(json!({"iss": "mobile-app", "nbf": now + 600, "exp": now + 1200})),
        401,
        Some(json!({"nbf": "token not valid yet"})),
    );
    expect(
        "maximum_expiration 600, exp in 300 s",
        "/max/a",
        tok(json!({"iss": "mobile-app", "exp": now + 300})),
        200,
        None,
    );
    expect(
        "maximum_expiration 600, exp in 3600 s",
        "/max/a",
        tok(json!({"iss": "mobile-app", "exp": now + 3600})),
        401,
        Some(json!({"exp": "exceeds maximum allowed expiration"})),
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A path or Host spelled another way reaches the route it names, so its `jwt` runs:
/// repeated slashes merge (as Kong's router merges them) and the root's trailing dot
/// goes (as nginx validates a host). The upstream is told the path and host that were
/// authenticated, never another spelling of them.
#[test]
fn another_spelling_of_a_protected_path_or_host_is_still_protected() {
    let origin = Origin::start();
    let gw = Gateway::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: app
    url: {url}
    routes:
      - name: public
        paths: ["/"]
        strip_path: false
      - name: admin
        paths: ["/admin"]
        strip_path: false
        plugins:
          - name: jwt
      - name: admin-host
        hosts: ["admin.example"]
        paths: ["/"]
        strip_path: false
        plugins:
          - name: jwt
"#,
        url = origin.url()
    ));
    for (target, host) in [
        ("/admin/users", "a"),
        ("//admin/users", "a"),
        ("///admin", "a"),
        ("/.//admin", "a"),
        ("/x//..//admin/", "a"),
        ("/x", "admin.example"),
        ("/x", "admin.example."),
        ("/x", "ADMIN.example.:8000"),
    ] {
        let r = gw
            .client()
            .roundtrip(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 401, "GET {target} Host: {host}: {r:?}");
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
    // The public route gets the merged path.
    let r = gw
        .client()
        .roundtrip(b"GET //pub//x/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.wait_requests(1, RESPONSE_DEADLINE);
    assert_eq!(seen[0].target, "/pub/x/");
}

/// An ES512 token (P-521, which `jsonwebtoken` does not sign) from RustCrypto's `p521`.
fn es512_token(claims: &Value) -> String {
    use p521::ecdsa::signature::Signer;
    use p521::pkcs8::DecodePrivateKey;
    let pem = String::from_utf8(jwt_fixture("ec521-private.pk8.pem")).unwrap();
    let secret = p521::SecretKey::from_pkcs8_pem(&pem).expect("P-521 key");
    let signer = p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes()).unwrap();
    let input = format!(
        "{}.{}",
        b64url(br#"{"alg":"ES512","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    let signature: p521::ecdsa::Signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature.to_bytes()))
}
