use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use super::limiter::{Bucket, Decision, Local, Store};
use super::*;

fn config(yaml: &str) -> Result<Config, Vec<(String, String)>> {
    serde_norway::from_str::<ConfigFile>(yaml)
        .unwrap()
        .validate()
}

fn limits(yaml: &str) -> Config {
    let mut config = config(yaml).unwrap();
    config.instance = 7;
    config
}

fn allowed(decision: Decision) -> bool {
    matches!(decision, Decision::Allow(_))
}

#[test]
fn validation_reports_each_problem_with_its_field() {
    let fields = |yaml: &str| -> Vec<String> {
        config(yaml)
            .unwrap_err()
            .into_iter()
            .map(|(field, _)| field)
            .collect()
    };
    // No period at all is the plugin's problem, not one field's (Kong's `@entity`).
    assert_eq!(fields("limit_by: ip"), [""]);
    assert_eq!(fields("minute: 0"), ["minute"]);
    assert_eq!(fields("minute: -3"), ["minute"]);
    assert_eq!(fields("minute: 1.5"), ["minute"]);
    // Periods out of order are the config's problem, the first pair only (Kong's check on
    // the record).
    assert_eq!(fields("minute: 10\nhour: 5"), ["."]);
    assert_eq!(fields("second: 9\nminute: 5\nhour: 1"), ["."]);
    // As Kong's schema: the conditional on the plugin, then the field's own problem.
    assert_eq!(fields("minute: 5\nlimit_by: header"), ["", "header_name"]);
    assert_eq!(fields("minute: 5\nlimit_by: path"), ["", "path"]);
    assert_eq!(fields("minute: 5\nlimit_by: path\npath: x"), ["path"]);
    // A path no normalized request path could equal would never match: refused.
    for path in [
        "/a/%78",
        "/b//x",
        "/c/y/../x",
        "\"/q?x=1\"",
        "/%zz",
        "'/v\\d'",
    ] {
        assert_eq!(
            fields(&format!("minute: 5\nlimit_by: path\npath: {path}")),
            ["path"],
            "{path}"
        );
    }
    assert_eq!(
        config("minute: 5\nlimit_by: path\npath: /a/%78").unwrap_err()[0].1,
        "non-normalized path, consider use '/a/x' instead"
    );
    // What a request path carries encoded may be written decoded, as for a route.
    let decoded = config("minute: 5\nlimit_by: path\npath: /café").unwrap();
    assert!(
        matches!(&decoded.limit_by, LimitBy::Path(p) if p == "/caf%C3%A9"),
        "{:?}",
        decoded.limit_by
    );
    assert_eq!(fields("minute: 5\nlimit_by: planet"), ["limit_by"]);
    assert_eq!(fields("minute: 5\npolicy: cluster"), ["policy"]);
    assert_eq!(fields("minute: 5\npolicy: redis"), ["redis.host"]);
    assert_eq!(
        fields("minute: 5\npolicy: redis\nredis: {host: r, ssl: true}"),
        ["redis.ssl"]
    );
    for code in [1000, 100, 101, 199, 204, 205, 304] {
        assert_eq!(
            fields(&format!("minute: 5\nerror_code: {code}")),
            ["error_code"],
            "{code}"
        );
    }
    // Kong's sync_rate checks: only with Redis, and at 0.02 s or more.
    let says = |yaml: &str| config(yaml).unwrap_err()[0].1.clone();
    assert_eq!(
        says("minute: 5\nsync_rate: 1"),
        "sync_rate can only be used with the redis policy"
    );
    assert_eq!(
        says("minute: 5\npolicy: redis\nredis: {host: r}\nsync_rate: 0.001"),
        "sync_rate must be greater than 0.02, or -1 to disable"
    );
    assert!(config("minute: 5\npolicy: redis\nredis: {host: r}\nsync_rate: 86400").is_ok());
    assert_eq!(
        fields("minute: 5\npolicy: redis\nredis: {host: r}\nsync_rate: .inf"),
        ["sync_rate"]
    );
    assert_eq!(
        says("minute: 10\nhour: 5"),
        "The limit for hour(5.0) cannot be lower than the limit for minute(10.0)"
    );
    assert_eq!(
        fields("minute: 5\nredis: {host: a}\nredis_host: b"),
        ["redis"]
    );
    assert!(serde_norway::from_str::<ConfigFile>("minute: 5\ncolour: red").is_err());
    // A host is a name or an address: a URL would carry its password into log lines.
    // And one as a service's host is: no empty label, none past DNS's 63 bytes.
    let long_label = "a".repeat(64);
    for host in [
        "redis://:pw@r",
        "user:pw@r",
        "r:6379",
        "r/0",
        "a..b",
        ".",
        &long_label,
    ] {
        let problem = format!("minute: 5\npolicy: redis\nredis: {{host: \"{host}\"}}");
        assert_eq!(fields(&problem), ["redis.host"], "{host}");
        assert!(!says(&problem).contains("pw"), "{host}");
    }
    // Named where it was written.
    let flat = "minute: 5\npolicy: redis\nredis_host: \"redis://:pw@r\"";
    assert_eq!(fields(flat), ["redis_host"]);
    for host in ["redis.internal", "10.0.0.7", "::1", "[::1]", "redis_1"] {
        let fine = format!("minute: 5\npolicy: redis\nredis: {{host: \"{host}\"}}");
        assert!(config(&fine).is_ok(), "{host}");
    }
}

#[test]
fn valid_configs_keep_kongs_defaults() {
    let c = config("minute: 100\nhour: 1000").unwrap();
    assert_eq!(c.limits.len(), 2);
    assert_eq!(c.limits[0].period, Period::Minute);
    assert_eq!(c.limits[0].interval, 600_000_000);
    assert_eq!(c.limit_by, LimitBy::Consumer);
    assert_eq!(c.policy, Policy::Local);
    assert!(c.fault_tolerant);
    assert!(!c.hide_client_headers);
    assert_eq!(c.error_code, 429);
    assert_eq!(c.error_message, "API rate limit exceeded");
    let c = config("second: 3\nlimit_by: header\nheader_name: X-Api-Key").unwrap();
    assert_eq!(c.limit_by, LimitBy::Header("x-api-key".into()));
    let c = config("minute: 3\npolicy: redis\nredis_host: cache\nredis_port: 6380\nsync_rate: 0.5")
        .unwrap();
    let Policy::Redis(redis) = &c.policy else {
        panic!("expected the redis policy")
    };
    assert_eq!((redis.host.as_str(), redis.port), ("cache", 6380));
    assert_eq!(redis.sync_interval, std::time::Duration::from_millis(500));
    // As Kong's exports write them: unset fields of the `redis` block as null, and (from
    // an Admin API that shows both spellings) the legacy fields beside it, agreeing.
    let c = config(
        "minute: 3\npolicy: local\nredis: {host: null, port: null, timeout: null, database: null, ssl: null, ssl_verify: null}",
    )
    .unwrap();
    assert_eq!(c.policy, Policy::Local);
    let c = config(
        "minute: 3\npolicy: redis\nredis: {host: cache, port: null, database: 0, timeout: 2000}\nredis_host: cache\nredis_port: 6379\nredis_database: 0\nredis_timeout: 2000\nredis_ssl: false",
    )
    .unwrap();
    let Policy::Redis(redis) = &c.policy else {
        panic!("expected the redis policy")
    };
    assert_eq!((redis.host.as_str(), redis.port), ("cache", 6379));
    let problems =
        config("minute: 3\nredis: {host: cache, port: 6380}\nredis_port: 6379\nredis_host: other")
            .unwrap_err();
    assert!(
        problems
            .iter()
            .any(|(f, m)| f == "redis" && m.ends_with("disagree on host, port")),
        "{problems:?}"
    );
}

/// A lease's tokens stay in use while it is held, however long: once the bucket has
/// refilled past them, the bucket and the lease together still hold the limit, not more
/// (a lease kept past a refill let a burst through a third over the limit).
#[test]
fn a_lease_held_past_a_refill_is_no_extra_token() {
    let store = Store::new(100, 1);
    let second = Limit::new(Period::Second, 100);
    let bucket = store.bucket((1, 3), || None);
    let now = store.now();
    // A worker leases 50, spends one, and holds the other 49.
    assert_eq!(bucket.take(&[second], now, |_| 50).got, 50);
    bucket.hold(0, 49);
    let later = now + 5_000_000_000;
    let mut got = 0;
    while bucket.take(&[second], later, |_| 1).got == 1 {
        got += 1;
    }
    assert_eq!(got + 49, 100, "the bucket and the lease: the limit");
    // Spending the lease frees nothing in the bucket.
    let mut spent = 0;
    while bucket.spend_held(0, &[second], later) {
        spent += 1;
    }
    assert_eq!(spent, 49);
    assert_eq!(
        bucket.take(&[second], later, |_| 1).got,
        0,
        "all 100 are used"
    );
}

#[test]
fn a_bucket_admits_exactly_its_capacity_then_refills_evenly() {
    let store = Store::new(100, 1);
    let minute = Limit::new(Period::Minute, 10);
    let bucket = store.bucket((1, 2), || None);
    let now = store.now();
    let mut got = 0;
    while bucket.take(&[minute], now, |_| 1).got == 1 {
        got += 1;
    }
    assert_eq!(got, 10);
    let denied = bucket.take(&[minute], now, |_| 1);
    assert_eq!(denied.got, 0);
    assert_eq!(denied.wait, 6_000_000_000, "one token every 6 s");
    // Half a token later: still nothing; a whole one later: exactly one.
    assert_eq!(bucket.take(&[minute], now + 3_000_000_000, |_| 1).got, 0);
    assert_eq!(bucket.take(&[minute], now + 6_000_000_000, |_| 1).got, 1);
    assert_eq!(bucket.take(&[minute], now + 6_000_000_000, |_| 1).got, 0);
    // A long idle never fills it beyond capacity.
    let later = now + 3_600_000_000_000;
    assert_eq!(
        Bucket::available(&minute, bucket.tat(Period::Minute), later),
        10
    );
}

#[test]
fn several_periods_are_taken_together_and_the_tightest_governs() {
    let store = Store::new(100, 1);
    let limits = [Limit::new(Period::Second, 100), Limit::new(Period::Hour, 3)];
    let bucket = store.bucket((1, 2), || None);
    let now = store.now();
    assert_eq!(bucket.take(&limits, now, |n| n).got, 3);
    assert_eq!(bucket.take(&limits, now, |n| n).got, 0);
    // The second-bucket gave 3 and kept 97: nothing was taken twice.
    assert_eq!(
        Bucket::available(&limits[0], bucket.tat(Period::Second), now),
        97
    );
}

#[test]
fn headers_count_down_and_the_refusal_says_when_to_retry() {
    let store = Store::new(100, 1);
    let local = Local::new(0);
    let config = limits("minute: 3\nhour: 100");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let Decision::Allow(h) = local.check(&store, &config, b"10.0.0.1") else {
            panic!("expected admission")
        };
        let mut out = Vec::new();
        h.write(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("X-RateLimit-Limit-Minute: 3\r\n"), "{text}");
        assert!(text.contains("X-RateLimit-Limit-Hour: 100\r\n"), "{text}");
        assert!(text.contains("RateLimit-Limit: 3\r\n"), "{text}");
        assert!(!text.contains("Retry-After"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("X-RateLimit-Remaining-Minute: "))
            .unwrap()
            .to_owned();
        remaining.push(line);
    }
    assert_eq!(
        remaining,
        [
            "X-RateLimit-Remaining-Minute: 2",
            "X-RateLimit-Remaining-Minute: 1",
            "X-RateLimit-Remaining-Minute: 0"
        ]
    );
    let Decision::Deny(h) = local.check(&store, &config, b"10.0.0.1") else {
        panic!("expected refusal")
    };
    let mut out = Vec::new();
    h.write(&mut out, true);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("RateLimit-Remaining: 0\r\n"), "{text}");
    assert!(text.contains("RateLimit-Reset: 60\r\n"), "{text}");
    assert!(text.contains("Retry-After: 20\r\n"), "{text}");
    // Another client is untouched.
    assert!(allowed(local.check(&store, &config, b"10.0.0.2")));
}

#[test]
fn workers_together_never_admit_more_than_the_limit() {
    const WORKERS: usize = 4;
    const LIMIT: u64 = 500;
    let store = Arc::new(Store::new(1000, WORKERS));
    let config = Arc::new(limits(&format!("hour: {LIMIT}")));
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (store, config, admitted, start) = (
                store.clone(),
                config.clone(),
                admitted.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let local = Local::new(worker);
                start.wait();
                // Every worker keeps asking until it is refused twice in a row.
                let mut refusals = 0;
                while refusals < 2 {
                    if allowed(local.check(&store, &config, b"one-client")) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        refusals = 0;
                    } else {
                        refusals += 1;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    assert!(admitted <= LIMIT, "admitted {admitted} > {LIMIT}");
    assert!(
        admitted >= LIMIT - (WORKERS as u64 - 1),
        "admitted {admitted}, expected at least {}",
        LIMIT - (WORKERS as u64 - 1)
    );
}

#[test]
fn idle_leases_go_back_and_full_buckets_are_swept() {
    let store = Store::new(100, 2);
    let config = limits("hour: 1000");
    let a = Local::new(0);
    let b = Local::new(1);
    assert!(allowed(a.check(&store, &config, b"k")));
    let bucket = store.bucket(store.key(7, b"k"), || None);
    let now = store.now();
    let hour = config.limits[0];
    let shared_left = Bucket::available(&hour, bucket.tat(Period::Hour), now);
    assert!(shared_left < 999, "worker a leased more than one token");
    drop(bucket);
    // Worker b spends from the same bucket.
    assert!(allowed(b.check(&store, &config, b"k")));
    std::thread::sleep(limiter::LEASE_IDLE + std::time::Duration::from_millis(20));
    a.tick(&store);
    b.tick(&store);
    let bucket = store.bucket(store.key(7, b"k"), || None);
    let left = Bucket::available(&hour, bucket.tat(Period::Hour), store.now());
    assert_eq!(left, 998, "exactly the two admitted requests stay taken");
    drop(bucket);
    // Still held by the workers' tables (not full either): not swept.
    store.sweep();
    assert_eq!(store.len(), 1);
}

#[test]
fn a_flood_of_identifiers_is_bounded_by_the_table_size() {
    let store = Store::new(50, 1);
    let config = limits("hour: 2");
    let local = Local::new(0);
    for i in 0..1000u32 {
        local.check(&store, &config, &i.to_le_bytes());
    }
    assert!(store.len() <= 51, "{} keys", store.len());
    assert!(local.len() <= 51, "{} local keys", local.len());
    // Beyond the table the newcomers share one overflow bucket: limited, not unlimited.
    let newcomer_admitted = (0..10)
        .filter(|i| allowed(local.check(&store, &config, format!("new{i}").as_bytes())))
        .count();
    assert!(newcomer_admitted <= 2, "{newcomer_admitted} admitted");
}

#[test]
fn full_unreferenced_buckets_are_forgotten() {
    let store = Store::new(100, 1);
    let bucket = store.bucket((1, 5), || None);
    store.sweep();
    assert_eq!(store.len(), 1, "held by someone: kept");
    drop(bucket);
    store.sweep();
    assert_eq!(store.len(), 0, "full and unreferenced: dropped");
    let bucket = store.bucket((1, 6), || None);
    let minute = Limit::new(Period::Minute, 10);
    assert_eq!(bucket.take(&[minute], store.now(), |_| 1).got, 1);
    drop(bucket);
    store.sweep();
    assert_eq!(store.len(), 1, "not full: its count matters, kept");
}

#[test]
fn resp_round_trip() {
    use super::redis::{encode, read_reply, Reply};
    let mut out = Vec::new();
    encode(&mut out, &[b"GET", b"k"]);
    assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let mut input: &[u8] = b"*3\r\n$2\r\n42\r\n:7\r\n$-1\r\n+OK\r\n-ERR no\r\n";
    assert_eq!(
        read_reply(&mut input, 0).unwrap(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"42".to_vec())),
            Reply::Integer(7),
            Reply::Bulk(None)
        ]))
    );
    assert_eq!(
        read_reply(&mut input, 0).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        read_reply(&mut input, 0).unwrap(),
        Reply::Error("ERR no".into())
    );
    for bad in [
        &b"$5\r\nab\r\n"[..],
        b"*99999999\r\n",
        b"?\r\n",
        b":x\r\n",
        b"$3\r\nabcde",
    ] {
        let mut input = bad;
        assert!(read_reply(&mut input, 0).is_err(), "{bad:?}");
    }
}

/// Tokens in use stay in use when the limit changes; a lowered limit empties the bucket
/// and no more (the wait is at most one interval of the new limit).
#[test]
fn a_changed_limit_rescales_the_tokens_in_use() {
    let store = Store::new(10, 1);
    let bucket = store.bucket((1, 2), || None);
    let now = store.now();
    let ten = Limit::new(Period::Minute, 10);
    assert_eq!(bucket.take(&[ten], now, |_| 4).got, 4);
    let hundred = Limit::new(Period::Minute, 100);
    // The first draw at the new limit converts: 4 in use of 100.
    assert_eq!(bucket.take(&[hundred], now, |_| 1).got, 1);
    assert_eq!(
        Bucket::available(&hundred, bucket.tat(Period::Minute), now),
        95
    );
    let two = Limit::new(Period::Minute, 2);
    let take = bucket.take(&[two], now, |_| 1);
    assert_eq!(take.got, 0);
    assert_eq!(take.wait, two.interval);
}

/// Leases taken under the old limit are not in use: lowered with workers holding them,
/// the limit is not undone by their return (it admitted about a fresh bucket).
#[test]
fn a_lowered_limit_holds_across_workers_with_leases() {
    let store = Store::new(100, 2);
    let (a, b) = (Local::new(0), Local::new(1));
    // Requests alternating between the two workers; how many were admitted.
    let burst = |config: &Config, requests: usize| {
        (0..requests)
            .filter(|i| {
                let local = if i % 2 == 0 { &a } else { &b };
                allowed(local.check(&store, config, b"10.0.0.1"))
            })
            .count()
    };
    assert_eq!(burst(&limits("hour: 1000"), 30), 30);
    assert_eq!(
        burst(&limits("hour: 20"), 60),
        0,
        "30 counted against a limit of 20"
    );
    // Raised again: the bucket was made empty (20 in use), no more, so the 10 used
    // beyond the lower limit are forgiven (as a Kong window forgets its count when it
    // ends, within the period): 80 of 100 left.
    let admitted = burst(&limits("hour: 100"), 100);
    assert!(
        (79..=80).contains(&admitted),
        "admitted {admitted}, want 80"
    );
}

#[test]
fn a_bucket_drawn_far_ahead_refuses_without_overflowing() {
    // Redis's answer is not trusted to be in range: a huge debt saturates.
    let store = Store::new(10, 1);
    let minute = Limit::new(Period::Minute, 10);
    let bucket = store.bucket((1, 2), || None);
    bucket.set_tat(&minute, u64::MAX - 1);
    let take = bucket.take(&[minute], store.now(), |n| n);
    assert_eq!(take.got, 0);
    assert!(take.wait > 0);
}

/// A worker that leased tokens for one request and went quiet does not cost a burst on
/// another worker any of them: the other takes them from the unspent lease, so the burst
/// gets everything the first request left (the probe: 1 request on one worker, then 150
/// on the other, admitted 74 of 100 before), and every answer's Remaining counts down by
/// one across both workers.
#[test]
fn a_quiet_workers_lease_serves_a_burst_on_another() {
    let store = Store::new(100, 2);
    let config = limits("minute: 100");
    let (a, b) = (Local::new(0), Local::new(1));
    let remaining = |decision: Decision| match decision {
        Decision::Allow(h) | Decision::Deny(h) => {
            let mut text = Vec::new();
            h.write(&mut text, false);
            let text = String::from_utf8(text).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("RateLimit-Remaining: "))
                .map(|v| v.trim().parse::<u64>().unwrap())
                .unwrap()
        }
        Decision::Unavailable => panic!("no Redis here"),
    };
    assert_eq!(remaining(a.check(&store, &config, b"k")), 99);
    assert_eq!(remaining(b.check(&store, &config, b"k")), 98);
    assert_eq!(remaining(a.check(&store, &config, b"k")), 97);
    let mut admitted = 3;
    while allowed(b.check(&store, &config, b"k")) {
        admitted += 1;
        assert!(admitted <= 100, "more than the limit");
    }
    assert_eq!(admitted, 100, "every token, wherever it was leased");
    assert!(!allowed(a.check(&store, &config, b"k")));
}

/// Identifiers past the table's capacity share their instance's overflow bucket, each with
/// its own entry on a worker: a new entry must not settle the worker's lease in that
/// shared bucket as if it held none (63 tokens vanished for two requests).
#[test]
fn new_entries_on_the_overflow_bucket_lose_no_tokens() {
    let store = Store::new(3, 2);
    let config = limits("hour: 1000");
    let (a, b) = (Local::new(0), Local::new(1));
    for id in [&b"id1"[..], b"id2", b"id3"] {
        assert!(allowed(b.check(&store, &config, id)));
    }
    assert!(allowed(a.check(&store, &config, b"id4")));
    assert!(allowed(a.check(&store, &config, b"id5")));
    std::thread::sleep(limiter::LEASE_IDLE + std::time::Duration::from_millis(20));
    a.tick(&store);
    b.tick(&store);
    let overflow = store.bucket((7, 0), || None);
    let hour = config.limits[0];
    let left = Bucket::available(&hour, overflow.tat(Period::Hour), store.now());
    assert_eq!(left, 998, "exactly the two overflow requests stay taken");
}
