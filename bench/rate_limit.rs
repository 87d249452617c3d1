//! The per-request rate-limit check: ringway's (a lease spent from the worker's own
//! table, the shared bucket touched once per lease) beside the naive one (one token
//! bucket per key in a map behind a `Mutex`, locked on every request).
//!
//! Run with `cargo bench --bench rate_limit`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use ringway::plugins::rate_limiting::{ConfigFile, Decision, Local, Store};

/// A textbook token bucket: tokens refilled from the elapsed time on each check.
struct NaiveBucket {
    tokens: f64,
    last: Instant,
}

fn naive_check(
    map: &Mutex<HashMap<Vec<u8>, NaiveBucket>>,
    key: &[u8],
    limit: f64,
    per_s: f64,
) -> bool {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let bucket = map.entry(key.to_vec()).or_insert(NaiveBucket {
        tokens: limit,
        last: now,
    });
    bucket.tokens =
        (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * per_s).min(limit);
    bucket.last = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        true
    } else {
        false
    }
}

fn bench(c: &mut Criterion) {
    // A limit the bench never reaches: every check admits.
    let file: ConfigFile =
        serde_norway::from_str("second: 1000000000\nlimit_by: ip").expect("config");
    let mut config = file.validate().expect("valid");
    config.instance = 1;
    let store = Store::new(100_000, 2);
    let local = Local::new(0);
    let mut group = c.benchmark_group("rate_limit_check");
    group.bench_function("ringway_lease", |b| {
        b.iter(|| {
            let decision = local.check(&store, &config, black_box(b"203.0.113.7"));
            assert!(matches!(decision, Decision::Allow(_)));
        })
    });
    let naive = Mutex::new(HashMap::new());
    group.bench_function("naive_mutex_bucket", |b| {
        b.iter(|| assert!(naive_check(&naive, black_box(b"203.0.113.7"), 1e9, 1e9)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
