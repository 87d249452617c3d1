//! Tokens are made by an independent library (`jsonwebtoken`, pure-Rust crypto), not by
//! ringway's own signer, so a shared misunderstanding cannot make both sides agree.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config(yaml: &str) -> Config {
    let file: ConfigFile =
        serde_norway::from_str(if yaml.is_empty() { "{}" } else { yaml }).unwrap();
    file.validate().unwrap()
}

fn credentials(list: Vec<Credential>) -> Credentials {
    list.into_iter().map(|c| (c.key.clone(), c)).collect()
}

fn hs(key: &str, alg: Algorithm, secret: &str) -> Credential {
    Credential::new(format!("id-{key}"), key.into(), alg, Some(secret), None, 0).unwrap()
}

fn public(key: &str, alg: Algorithm, pem: &str) -> Credential {
    Credential::new(format!("id-{key}"), key.into(), alg, None, Some(pem), 0).unwrap()
}

fn sign_with(alg: jsonwebtoken::Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn check(
    config: &Config,
    creds: &Credentials,
    headers: &[(&str, &str)],
    query: Option<&str>,
) -> Result<String, Failure> {
    let headers: Vec<httparse::Header<'_>> = headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let request = RequestParts {
        method: "GET",
        query,
        headers: &headers,
    };
    let plain =
        authenticate(config, &request, creds, None, NOW).map(|found| found.credential.key.clone());
    // The worker's cache must never change an answer: a miss, then a hit.
    let cache = Cache::default();
    for _ in 0..2 {
        let cached = authenticate(config, &request, creds, Some(&cache), NOW)
            .map(|found| found.credential.key.clone());
        assert_eq!(cached, plain);
    }
    plain
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn message(result: Result<String, Failure>) -> String {
    match result {
        Err(Failure {
            body: FailureBody::Message(m),
            ..
        }) => m.into_owned(),
        other => panic!("expected a message failure, got {other:?}"),
    }
}

#[test]
fn every_algorithm_verifies_tokens_from_an_independent_library() {
    use jsonwebtoken::Algorithm as J;
    let claims = json!({ "iss": "k", "sub": "user123", "exp": NOW + 3600 });
    let cases: Vec<(Algorithm, J, EncodingKey, Credential)> = vec![
        (
            Algorithm::HS256,
            J::HS256,
            EncodingKey::from_secret(b"my-secret-key"),
            hs("k", Algorithm::HS256, "my-secret-key"),
        ),
        (
            Algorithm::HS384,
            J::HS384,
            EncodingKey::from_secret(b"s384"),
            hs("k", Algorithm::HS384, "s384"),
        ),
        (
            Algorithm::HS512,
            J::HS512,
            EncodingKey::from_secret(b"s512"),
            hs("k", Algorithm::HS512, "s512"),
        ),
        (
            Algorithm::RS256,
            J::RS256,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::RS256, &fixture("rsa-public.pem")),
        ),
        (
            Algorithm::RS384,
            J::RS384,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::RS384, &fixture("rsa-public.pem")),
        ),
        (
            Algorithm::RS512,
            J::RS512,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::RS512, &fixture("rsa-public.pem")),
        ),
        (
            Algorithm::ES256,
            J::ES256,
            EncodingKey::from_ec_pem(fixture("ec256-private.pk8.pem").as_bytes()).unwrap(),
            public("k", Algorithm::ES256, &fixture("ec256-public.pem")),
        ),
        (
            Algorithm::ES384,
            J::ES384,
            EncodingKey::from_ec_pem(fixture("ec384-private.pk8.pem").as_bytes()).unwrap(),
            public("k", Algorithm::ES384, &fixture("ec384-public.pem")),
        ),
        (
            Algorithm::PS256,
            J::PS256,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::PS256, &fixture("rsa-public.pem")),
        ),
        (
            Algorithm::PS384,
            J::PS384,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::PS384, &fixture("rsa-public.pem")),
        ),
        (
            Algorithm::PS512,
            J::PS512,
            EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::PS512, &fixture("rsa-public.pkcs1.pem")),
        ),
        (
            Algorithm::EdDSA,
            J::EdDSA,
            EncodingKey::from_ed_pem(fixture("ed25519-private.pem").as_bytes()).unwrap(),
            public("k", Algorithm::EdDSA, &fixture("ed25519-public.pem")),
        ),
    ];
    let conf = config("");
    for (alg, j, key, credential) in cases {
        let token = sign_with(j, &key, claims.clone());
        let creds = credentials(vec![credential]);
        assert_eq!(
            check(&conf, &creds, &[("Authorization", &bearer(&token))], None),
            Ok("k".into()),
            "{alg:?}"
        );
        // One flipped signature bit fails.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig_bytes = base64_url_decode(sig);
        sig_bytes[0] ^= 1;
        let tampered = format!("{head}.{}", base64_url(&sig_bytes));
        assert_eq!(
            message(check(
                &conf,
                &creds,
                &[("Authorization", &bearer(&tampered))],
                None
            )),
            "Invalid signature",
            "{alg:?}"
        );
    }
}

/// ES512 (P-521, outside ring): a token signed with the key verifies, a flipped bit or a
/// DER-encoded signature does not, and a key of another curve does not make a credential.
#[test]
fn es512_tokens_verify() {
    use p521::ecdsa::signature::Signer;
    use p521::pkcs8::DecodePrivateKey;
    let secret = p521::SecretKey::from_pkcs8_pem(&fixture("ec521-private.pk8.pem")).unwrap();
    let signer = p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes()).unwrap();
    let input = format!(
        "{}.{}",
        base64_url(br#"{"alg":"ES512","typ":"JWT"}"#),
        base64_url(format!(r#"{{"iss":"k","exp":{}}}"#, NOW + 60).as_bytes())
    );
    let signature: p521::ecdsa::Signature = signer.sign(input.as_bytes());
    let token = format!("{input}.{}", base64_url(&signature.to_bytes()));
    let creds = credentials(vec![public(
        "k",
        Algorithm::ES512,
        &fixture("ec521-public.pem"),
    )]);
    let conf = config("");
    let offer = |token: &str| check(&conf, &creds, &[("Authorization", &bearer(token))], None);
    assert_eq!(offer(&token), Ok("k".into()));

    let mut flipped = signature.to_bytes().to_vec();
    flipped[70] ^= 1;
    let tampered = format!("{input}.{}", base64_url(&flipped));
    assert_eq!(message(offer(&tampered)), "Invalid signature");
    let der = format!("{input}.{}", base64_url(signature.to_der().as_bytes()));
    assert_eq!(message(offer(&der)), "Invalid signature");
    // The same key under ES384's name is refused; so is a P-256 key under ES512.
    let head384 = format!(
        "{}.{}",
        base64_url(br#"{"alg":"ES384"}"#),
        input.split_once('.').unwrap().1
    );
    let es384 = format!("{head384}.{}", base64_url(&signature.to_bytes()));
    assert_eq!(message(offer(&es384)), "Invalid algorithm");
    for (alg, pem) in [
        (Algorithm::ES512, "ec256-public.pem"),
        (Algorithm::ES384, "ec521-public.pem"),
    ] {
        assert!(
            Credential::new("i".into(), "k".into(), alg, None, Some(&fixture(pem)), 0).is_err(),
            "{alg:?} with {pem}"
        );
    }
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn raw_token(header: &str, claims: &str, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        base64_url(header.as_bytes()),
        base64_url(claims.as_bytes())
    );
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        signing_input.as_bytes(),
    );
    format!("{signing_input}.{}", base64_url(tag.as_ref()))
}

#[test]
fn kong_messages_for_bad_tokens() {
    let conf = config("");
    let creds = credentials(vec![
        hs("k", Algorithm::HS256, "s"),
        public("rsa", Algorithm::RS256, &fixture("rsa-public.pem")),
    ]);
    let good_claims = format!("{{\"iss\":\"k\",\"exp\":{}}}", NOW + 60);
    let cases: Vec<(String, &str)> = vec![
        (
            raw_token(r#"{"alg":"none"}"#, &good_claims, b"s"),
            "Bad token; invalid alg",
        ),
        (
            raw_token(r#"{"alg":"None"}"#, &good_claims, b"s"),
            "Bad token; invalid alg",
        ),
        (
            raw_token(r#"{"alg":"hs256"}"#, &good_claims, b"s"),
            "Bad token; invalid alg",
        ),
        (
            raw_token(r#"{"alg":"HS256 "}"#, &good_claims, b"s"),
            "Bad token; invalid alg",
        ),
        (
            raw_token(r#"{"alg":5}"#, &good_claims, b"s"),
            "Bad token; invalid alg",
        ),
        (
            raw_token("not json", &good_claims, b"s"),
            "Bad token; invalid JSON",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, "[1,2]", b"s"),
            "Bad token; invalid JSON",
        ),
        (
            raw_token(
                r#"{"alg":"HS256"}"#,
                r#"{"exp":1,"exp":9999999999,"iss":"k"}"#,
                b"s",
            ),
            "Bad token; invalid JSON",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#, b"s"),
            "No mandatory 'iss' in claims",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":""}"#, b"s"),
            "Invalid 'iss' in claims",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":false}"#, b"s"),
            "No mandatory 'iss' in claims",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":true}"#, b"s"),
            "No credentials found for given 'iss'",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":7}"#, b"s"),
            "No credentials found for given 'iss'",
        ),
        (
            raw_token(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"../../../../dev/null"}"#,
                b"s",
            ),
            "No credentials found for given 'iss'",
        ),
        (
            raw_token(r#"{"alg":"HS256"}"#, &good_claims, b"wrong"),
            "Invalid signature",
        ),
        // HS256 signed with the RSA public key as the secret: alg confusion.
        (
            raw_token(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"rsa"}"#,
                fixture("rsa-public.pem").as_bytes(),
            ),
            "Invalid algorithm",
        ),
        ("a.b".into(), "Bad token; invalid JSON"),
        ("a.b.c.d".into(), "Bad token; invalid JSON"),
    ];
    for (token, expected) in cases {
        let got = check(&conf, &creds, &[("Authorization", &bearer(&token))], None);
        assert_eq!(message(got), expected, "{token}");
    }
    // An empty signature, padding and the standard alphabet are refused.
    let token = raw_token(r#"{"alg":"HS256"}"#, &good_claims, b"s");
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    for bad in [
        format!("{signing_input}."),
        format!("{token}="),
        format!(
            "{signing_input}.{}",
            sig.replace('-', "+").replace('_', "/") + "+"
        ),
    ] {
        assert!(
            check(&conf, &creds, &[("Authorization", &bearer(&bad))], None).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn token_sources_and_multiple_tokens() {
    let creds = credentials(vec![hs("k", Algorithm::HS256, "s")]);
    let token = raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":"k"}"#, b"s");
    let other = raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":"k","x":1}"#, b"s");
    let conf = config("cookie_names: [auth]\nuri_param_names: [jwt, token]");
    assert_eq!(
        check(&conf, &creds, &[], Some(&format!("a=1&jwt={token}"))),
        Ok("k".into())
    );
    assert_eq!(
        check(&conf, &creds, &[], Some(&format!("token={token}"))),
        Ok("k".into())
    );
    assert_eq!(
        check(
            &conf,
            &creds,
            &[("Cookie", &format!("x=1; auth={token}"))],
            None
        ),
        Ok("k".into())
    );
    assert_eq!(
        check(
            &conf,
            &creds,
            &[("authorization", &format!("  bearer   {token}"))],
            None
        ),
        Ok("k".into())
    );
    // The same token twice is one token; two different ones are refused.
    assert_eq!(
        check(
            &conf,
            &creds,
            &[("Authorization", &bearer(&token))],
            Some(&format!("jwt={token}"))
        ),
        Ok("k".into())
    );
    let got = check(
        &conf,
        &creds,
        &[("Authorization", &bearer(&other))],
        Some(&format!("jwt={token}")),
    );
    assert_eq!(message(got), "Multiple tokens provided");
    // No token at all: plain Unauthorized without error="invalid_token".
    let missing = check(&conf, &creds, &[("Authorization", "Basic abc")], None).unwrap_err();
    assert_eq!(missing.body, FailureBody::Message("Unauthorized".into()));
    assert!(!missing.invalid_token);
    // Only the first header of a name counts (`kong.request.get_header`), and so only
    // the first cookie of a name (nginx's `$cookie_NAME`).
    let first_is_basic = check(
        &conf,
        &creds,
        &[
            ("Authorization", "Basic abc"),
            ("Authorization", &bearer(&token)),
        ],
        None,
    );
    assert_eq!(message(first_is_basic), "Unauthorized");
    assert_eq!(
        check(
            &conf,
            &creds,
            &[
                ("Authorization", &bearer(&token)),
                ("authorization", &bearer(&other))
            ],
            None
        ),
        Ok("k".into())
    );
    assert_eq!(
        check(
            &conf,
            &creds,
            &[
                ("Cookie", &format!("auth={token}")),
                ("Cookie", &format!("auth={other}"))
            ],
            None
        ),
        Ok("k".into())
    );
    // nginx matches a cookie's name without regard to case.
    assert_eq!(
        check(
            &conf,
            &creds,
            &[("Cookie", &format!("x=1; AUTH={token}"))],
            None
        ),
        Ok("k".into())
    );
    // Kong's pattern is not anchored: the first `Bearer` followed by whitespace.
    for value in [
        format!("Token Bearer {token}"),
        format!("Bearer{token} bearer {token}"),
        format!("\tBearer\t{token}"),
    ] {
        assert_eq!(
            check(&conf, &creds, &[("Authorization", &value)], None),
            Ok("k".into()),
            "{value}"
        );
    }
    for value in [
        format!("Bearer{token}"),
        "Bearer ".to_owned(),
        format!("Xearer {token}"),
    ] {
        let got = check(&conf, &creds, &[("Authorization", &value)], None);
        assert_eq!(message(got), "Unauthorized", "{value}");
    }
    let with_realm = config("realm: gw");
    assert_eq!(with_realm.www_authenticate, "Bearer realm=\"gw\"");
    assert_eq!(
        with_realm.www_authenticate_error,
        "Bearer realm=\"gw\", error=\"invalid_token\""
    );
}

#[test]
fn registered_claims() {
    let creds = credentials(vec![hs("k", Algorithm::HS256, "s")]);
    let run = |conf: &Config, claims: String| {
        let token = raw_token(r#"{"alg":"HS256"}"#, &claims, b"s");
        check(conf, &creds, &[("Authorization", &bearer(&token))], None)
    };
    let claims_errors = |r: Result<String, Failure>| match r {
        Err(Failure {
            body: FailureBody::Claims(errors),
            invalid_token: true,
        }) => errors,
        other => panic!("expected claim errors, got {other:?}"),
    };
    let plain = config("");
    // exp and nbf are checked whenever present, stricter than Kong.
    assert_eq!(
        claims_errors(run(&plain, format!(r#"{{"iss":"k","exp":{NOW}}}"#))),
        vec![("exp", "token expired")]
    );
    assert_eq!(
        run(&plain, format!(r#"{{"iss":"k","exp":{}}}"#, NOW + 1)),
        Ok("k".into())
    );
    assert_eq!(
        run(&plain, format!(r#"{{"iss":"k","exp":{}.5}}"#, NOW)),
        Ok("k".into())
    );
    assert_eq!(
        claims_errors(run(
            &plain,
            format!(r#"{{"iss":"k","exp":"{}"}}"#, NOW + 60)
        )),
        vec![("exp", "must be a number")]
    );
    assert_eq!(
        claims_errors(run(&plain, format!(r#"{{"iss":"k","nbf":{}}}"#, NOW + 1))),
        vec![("nbf", "token not valid yet")]
    );
    assert_eq!(
        run(&plain, format!(r#"{{"iss":"k","nbf":{NOW}}}"#)),
        Ok("k".into())
    );
    assert_eq!(run(&plain, r#"{"iss":"k"}"#.into()), Ok("k".into()));
    // Leeway moves both edges.
    let lenient = config("leeway: 30");
    assert_eq!(
        run(&lenient, format!(r#"{{"iss":"k","exp":{}}}"#, NOW - 29)),
        Ok("k".into())
    );
    assert!(run(&lenient, format!(r#"{{"iss":"k","exp":{}}}"#, NOW - 30)).is_err());
    assert_eq!(
        run(&lenient, format!(r#"{{"iss":"k","nbf":{}}}"#, NOW + 30)),
        Ok("k".into())
    );
    assert!(run(&lenient, format!(r#"{{"iss":"k","nbf":{}}}"#, NOW + 31)).is_err());
    // claims_to_verify makes them mandatory.
    let strict = config("claims_to_verify: [exp, nbf]\nmaximum_expiration: 600");
    assert_eq!(
        claims_errors(run(&strict, r#"{"iss":"k"}"#.into())),
        vec![("exp", "must be a number"), ("nbf", "must be a number")]
    );
    assert_eq!(
        claims_errors(run(
            &strict,
            format!(r#"{{"iss":"k","exp":{},"nbf":{NOW}}}"#, NOW + 601)
        )),
        vec![("exp", "exceeds maximum allowed expiration")]
    );
}

#[test]
fn rfc7515_example_with_a_base64_secret_and_key_claim_from_the_header() {
    // RFC 7515 A.1: the key is the base64url JWK `k`; exp is 1300819380.
    let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let k =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    let creds = credentials(vec![hs("joe", Algorithm::HS256, k)]);
    let conf = config("secret_is_base64: true");
    let headers: Vec<httparse::Header<'_>> = vec![];
    let query = format!("jwt={token}");
    let request = RequestParts {
        method: "GET",
        query: Some(&query),
        headers: &headers,
    };
    assert!(authenticate(&conf, &request, &creds, None, 1_300_819_379).is_ok());
    assert!(matches!(
        authenticate(&conf, &request, &creds, None, 1_300_819_380),
        Err(Failure {
            body: FailureBody::Claims(_),
            ..
        })
    ));
    // Without secret_is_base64 the same secret is the wrong key.
    assert!(authenticate(&config(""), &request, &creds, None, 1_300_819_379).is_err());

    let kid_conf = config("key_claim_name: kid");
    let creds = credentials(vec![hs("key-7", Algorithm::HS256, "s")]);
    // The key in the token's header, with none in the claims; and with a claim of
    // `false`, which is no claim (Kong's `claims[k] or header[k]`).
    for claims in [r#"{"sub":"x"}"#, r#"{"sub":"x","kid":false}"#] {
        let token = raw_token(r#"{"alg":"HS256","kid":"key-7"}"#, claims, b"s");
        assert_eq!(
            check(
                &kid_conf,
                &creds,
                &[("Authorization", &bearer(&token))],
                None
            ),
            Ok("key-7".into()),
            "{claims}"
        );
    }
}

#[test]
fn config_and_credential_validation() {
    let bad: ConfigFile =
        serde_norway::from_str("claims_to_verify: [iat]\nmaximum_expiration: 10").unwrap();
    let problems = bad.validate().unwrap_err();
    assert!(problems.iter().any(|(f, _)| f == "claims_to_verify[0]"));
    assert!(problems.iter().any(|(f, _)| f == "maximum_expiration"));
    assert!(serde_norway::from_str::<ConfigFile>("colour: blue").is_err());
    assert!(Credential::new("i".into(), "k".into(), Algorithm::RS256, None, None, 0).is_err());
    assert!(Credential::new(
        "i".into(),
        "k".into(),
        Algorithm::RS256,
        None,
        Some("garbage"),
        0
    )
    .is_err());
    // An EC key does not fit an RSA algorithm.
    assert!(Credential::new(
        "i".into(),
        "k".into(),
        Algorithm::RS256,
        None,
        Some(&fixture("ec256-public.pem")),
        0
    )
    .is_err());
    assert!(Credential::new(
        "i".into(),
        "k".into(),
        Algorithm::ES384,
        None,
        Some(&fixture("ec256-public.pem")),
        0
    )
    .is_err());
    assert!(Credential::new("i".into(), "k".into(), Algorithm::HS256, None, None, 0).is_err());
}

#[test]
fn ringway_signer_round_trips() {
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), json!("k"));
    claims.insert("exp".into(), json!(NOW + 60));
    let token = sign(Algorithm::HS512, b"s", &claims).unwrap();
    let creds = credentials(vec![hs("k", Algorithm::HS512, "s")]);
    assert_eq!(
        check(
            &config(""),
            &creds,
            &[("Authorization", &bearer(&token))],
            None
        ),
        Ok("k".into())
    );
    assert!(sign(Algorithm::RS256, b"s", &claims).is_err());
}

#[test]
fn cached_tokens_still_expire_and_follow_their_config() {
    let creds = credentials(vec![hs("k", Algorithm::HS256, "s")]);
    let token = raw_token(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"iss":"k","exp":{}}}"#, NOW + 10),
        b"s",
    );
    let header = bearer(&token);
    let headers = [httparse::Header {
        name: "Authorization",
        value: header.as_bytes(),
    }];
    let request = RequestParts {
        method: "GET",
        query: None,
        headers: &headers,
    };
    let cache = Cache::default();
    let conf = config("");
    assert!(authenticate(&conf, &request, &creds, Some(&cache), NOW).is_ok());
    assert_eq!(cache.len(), 1);
    // Past exp the cached token is refused like any other.
    let later = authenticate(&conf, &request, &creds, Some(&cache), NOW + 10).unwrap_err();
    assert_eq!(
        later.body,
        FailureBody::Claims(vec![("exp", "token expired")])
    );
    // A different plugin config does not reuse the entry (here it needs a base64 secret
    // that "s" is not).
    let other = config("secret_is_base64: true");
    assert!(authenticate(&other, &request, &creds, Some(&cache), NOW).is_err());
    // Failures are never cached.
    let bad = raw_token(r#"{"alg":"HS256"}"#, r#"{"iss":"k"}"#, b"wrong");
    let bad_header = bearer(&bad);
    let bad_headers = [httparse::Header {
        name: "Authorization",
        value: bad_header.as_bytes(),
    }];
    let bad_request = RequestParts {
        method: "GET",
        query: None,
        headers: &bad_headers,
    };
    for _ in 0..2 {
        assert!(authenticate(&conf, &bad_request, &creds, Some(&cache), NOW).is_err());
    }
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn pkcs1_rsa_public_keys_load_and_malformed_ones_are_refused() {
    use super::keys::public_key;
    assert!(public_key(Algorithm::RS256, &fixture("rsa-public.pkcs1.pem")).is_ok());
    let refused = |pem: &str, algorithm| match public_key(algorithm, pem) {
        Ok(_) => panic!("{pem} loaded for {algorithm:?}"),
        Err(e) => e,
    };
    let wrapped = |body: &str| {
        format!("-----BEGIN RSA PUBLIC KEY-----\n{body}\n-----END RSA PUBLIC KEY-----\n")
    };
    // An empty SEQUENCE; one INTEGER only; trailing bytes after the key.
    for body in ["MAA=", "MAMCAQE=", "MAYCAQECAQEA"] {
        let e = refused(&wrapped(body), Algorithm::RS256);
        assert!(e.contains("PKCS#1"), "{body}: {e}");
    }
    let e = refused(&fixture("rsa-public.pkcs1.pem"), Algorithm::ES256);
    assert!(e.contains("does not fit"), "{e}");
    // An Ed25519 key is EdDSA's only, and EdDSA takes no other.
    let e = refused(&fixture("ed25519-public.pem"), Algorithm::RS256);
    assert!(e.contains("does not fit"), "{e}");
    let e = refused(&fixture("ec256-public.pem"), Algorithm::EdDSA);
    assert!(e.contains("does not fit"), "{e}");
    // A private key kept in the same PEM is never stored (every read would show it).
    let bundle = format!(
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n{}",
        fixture("rsa-public.pkcs1.pem")
    );
    let e = refused(&bundle, Algorithm::RS256);
    assert!(
        e.contains("holds a private key") && !e.contains("MC4C"),
        "{e}"
    );
    assert!(Algorithm::unknown("HS999").starts_with("expected one of: HS256"));
}

/// An RSA key no signature can be verified with is found out when the credential is
/// made (the file and the Admin API refuse it), not by every token failing.
#[test]
fn rsa_keys_no_token_can_verify_with_are_found() {
    use super::keys::rsa_key_problem;
    use base64::Engine;
    let pem = fixture("rsa-public.pkcs1.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    // SEQUENCE (30 82 LL LL) { INTEGER modulus (02 82 01 01 00 ...), INTEGER exponent }
    let modulus = &der[4..4 + 4 + 257];
    let pkcs1 = |inner: &[u8], after: &[u8]| {
        let mut key = vec![0x30, 0x82, (inner.len() >> 8) as u8, inner.len() as u8];
        key.extend_from_slice(inner);
        key.extend_from_slice(after);
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        format!("-----BEGIN RSA PUBLIC KEY-----\n{text}\n-----END RSA PUBLIC KEY-----\n")
    };
    let with = |exponent: &[u8]| {
        let mut inner = modulus.to_vec();
        inner.extend_from_slice(exponent);
        inner
    };
    assert_eq!(rsa_key_problem(&pkcs1(&with(&[2, 3, 1, 0, 1]), &[])), None);
    assert_eq!(rsa_key_problem(&fixture("rsa-public.pem")), None);
    assert_eq!(
        rsa_key_problem(&fixture("ec256-public.pem")),
        None,
        "not RSA"
    );
    for (what, key) in [
        ("e = 1", pkcs1(&with(&[2, 1, 1]), &[])),
        ("e = 2", pkcs1(&with(&[2, 1, 2]), &[])),
        ("negative e", pkcs1(&with(&[2, 1, 0x81]), &[])),
        ("e not minimal", pkcs1(&with(&[2, 3, 0, 0, 3]), &[])),
        (
            "e = 2^32 + 1 ... past 2^33",
            pkcs1(&with(&[2, 5, 2, 0, 0, 0, 1]), &[]),
        ),
        (
            "e's length in long form",
            pkcs1(&with(&[2, 0x81, 3, 1, 0, 1]), &[]),
        ),
        (
            "a third INTEGER",
            pkcs1(&with(&[2, 3, 1, 0, 1, 2, 1, 1]), &[]),
        ),
        (
            "bytes after the key",
            pkcs1(&with(&[2, 3, 1, 0, 1]), &[0, 0]),
        ),
        ("an even modulus", {
            let mut inner = modulus.to_vec();
            *inner.last_mut().unwrap() &= 0xfe;
            inner.extend_from_slice(&[2, 3, 1, 0, 1]);
            pkcs1(&inner, &[])
        }),
        ("a 2040-bit modulus", {
            // 255 bytes of the fixture's modulus, a minimal length (81 ff).
            let mut inner = vec![2, 0x81, 0xff];
            inner.extend_from_slice(&modulus[6..]);
            inner.extend_from_slice(&[2, 3, 1, 0, 1]);
            pkcs1(&inner, &[])
        }),
    ] {
        assert!(rsa_key_problem(&key).is_some(), "{what} passed");
    }
}

/// The key parser stays lenient about DER length forms (a key an earlier version took
/// that way verifies, and a saved one must load); only the RSA check is strict.
#[test]
fn keys_with_long_form_lengths_still_load() {
    use super::keys::{public_key, rsa_key_problem};
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let pem = fixture("ec256-public.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = engine.decode(body).unwrap();
    assert_eq!(&der[..2], [0x30, 0x59]);
    let mut long = vec![0x30, 0x81, 0x59];
    long.extend_from_slice(&der[2..]);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        engine.encode(long)
    );
    assert!(public_key(Algorithm::ES256, &pem).is_ok());
    assert_eq!(rsa_key_problem(&pem), None);
}
