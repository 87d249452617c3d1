//! HS256 verification of a typical token: ringway's path (prepared key, stack decode,
//! a visitor that reads only the claims it checks) beside the naive one (key built per
//! request, `serde_json::Value` trees) and the bare HMAC that bounds both.
//!
//! Run with `cargo bench --bench jwt`.

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use ringway::plugins::jwt::{
    authenticate, sign, Algorithm, Config, ConfigFile, Credential, Credentials, RequestParts,
};

const NOW: u64 = 1_800_000_000;

fn setup() -> (Config, Credentials, String) {
    let file: ConfigFile = serde_norway::from_str("{}").expect("defaults");
    let config = file.validate().expect("valid");
    let mut credentials = Credentials::new();
    let credential = Credential::new(
        "id".into(),
        "mobile-app".into(),
        Algorithm::HS256,
        Some("my-secret-key"),
        None,
        0,
    )
    .expect("credential");
    credentials.insert("mobile-app".into(), credential);
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), "mobile-app".into());
    claims.insert("sub".into(), "user123".into());
    claims.insert("exp".into(), (NOW + 3600).into());
    claims.insert("iat".into(), NOW.into());
    claims.insert("scope".into(), "accounts:read accounts:write".into());
    let token = sign(Algorithm::HS256, b"my-secret-key", &claims).expect("token");
    (config, credentials, token)
}

/// What a first implementation does: decode to owned buffers, build JSON trees, build
/// the HMAC key per request.
fn naive(token: &str, secret: &[u8]) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let header: serde_json::Value = match URL_SAFE_NO_PAD
        .decode(parts[0])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(v) => v,
        None => return false,
    };
    let claims: serde_json::Value = match URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(v) => v,
        None => return false,
    };
    if header["alg"] != "HS256" || claims["iss"].as_str().is_none() {
        return false;
    }
    let signature = match URL_SAFE_NO_PAD.decode(parts[2]) {
        Ok(s) => s,
        Err(_) => return false,
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::hmac::verify(&key, signed.as_bytes(), &signature).is_ok()
        && claims["exp"].as_f64().is_some_and(|e| e > NOW as f64)
}

fn hs256(c: &mut Criterion) {
    let (config, credentials, token) = setup();
    let header = format!("Bearer {token}");
    let headers = [httparse::Header {
        name: "Authorization",
        value: header.as_bytes(),
    }];
    let mut group = c.benchmark_group("jwt_hs256_verify");
    group.bench_function("ringway (find token + verify + claims)", |b| {
        b.iter(|| {
            let request = RequestParts {
                method: "GET",
                query: None,
                headers: black_box(&headers),
            };
            black_box(authenticate(&config, &request, &credentials, None, NOW).is_ok())
        })
    });
    let cache = ringway::plugins::jwt::Cache::default();
    group.bench_function("ringway, token reused (worker cache hit)", |b| {
        b.iter(|| {
            let request = RequestParts {
                method: "GET",
                query: None,
                headers: black_box(&headers),
            };
            black_box(authenticate(&config, &request, &credentials, Some(&cache), NOW).is_ok())
        })
    });
    group.bench_function("naive (Value trees, key per request)", |b| {
        b.iter(|| black_box(naive(black_box(&token), b"my-secret-key")))
    });
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"my-secret-key");
    let signed = &token[..token.rfind('.').expect("three parts")];
    group.bench_function("bare HMAC-SHA256 of the signing input", |b| {
        b.iter(|| black_box(ring::hmac::sign(&key, black_box(signed.as_bytes()))))
    });
    group.finish();
}

criterion_group!(benches, hs256);
criterion_main!(benches);
