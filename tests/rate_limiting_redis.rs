//! `rate-limiting` with `policy: redis`: two ringway instances sharing limits through a
//! real redis-server (installed by `.ci/run`), and what happens when Redis goes away.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A redis-server on a free loopback port, stopped on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With more `redis-server` arguments (`--requirepass`, ...).
    fn start_with(args: &[&str]) -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed for these tests (.ci/run installs it): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(origin: &Origin, redis_port: u16, extra: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: {url}
  routes: [{{name: api, paths: [/]}}]
plugins:
- name: rate-limiting
  config:
    hour: 30
    limit_by: header
    header_name: X-Api-Key
    policy: redis
    sync_rate: 0.02
    redis: {{host: 127.0.0.1, port: {redis_port}, timeout: 300}}
{extra}"#,
        url = origin.url()
    )
}

fn status(gw: &Gateway, key: &str) -> u16 {
    proxy_get(gw, "/", &[("X-Api-Key", key)]).status
}

#[test]
fn two_instances_share_one_limit_through_redis() {
    let origin = Origin::start();
    let redis = Redis::start();
    let cfg = config(&origin, redis.port, "");
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    // Paced a little slower than the sync interval, alternating instances: each sees
    // what the other admitted, so together they admit the limit, not twice it.
    let mut admitted = 0;
    for i in 0..80 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match status(gw, "shared-key") {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    eprintln!("admitted {admitted} of 80 against a shared limit of 30");
    // The bound (docs/rate-limiting.md): at most what the other instance admits within
    // one sync interval beyond the limit; at most a stranded lease or so below it.
    assert!(
        (28..=32).contains(&admitted),
        "two instances admitted {admitted} requests against a shared limit of 30"
    );
    // Once the key is spent, both instances refuse it.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(&a, "shared-key"), 429);
    assert_eq!(status(&b, "shared-key"), 429);
    // Another key is untouched.
    assert_eq!(status(&a, "other-key"), 200);
    drop(redis);
}

/// Two instances that each admit the whole limit between two syncs overshoot it
/// together; the overshoot is not carried as a debt past one period: the refusals that
/// follow say the bucket is full again within the hour and a token comes back within
/// one interval (they said 7,200 s, twice the period, before).
#[test]
fn an_overshoot_between_syncs_is_not_carried_past_one_period() {
    let origin = Origin::start();
    let redis = Redis::start();
    let cfg = config(&origin, redis.port, "").replace("sync_rate: 0.02", "sync_rate: 1");
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    // A burst is far shorter than the second between syncs, but one may still fall in
    // it (and the instances then learn each other's counts): another key is tried.
    let (key, admitted) = (0..5)
        .map(|attempt| {
            let key = format!("burst-{attempt}");
            let admitted = (0..60)
                .filter(|i| status(if i % 2 == 0 { &a } else { &b }, &key) == 200)
                .count();
            (key, admitted)
        })
        .find(|(_, admitted)| *admitted > 30)
        .expect("two instances overshot a limit of 30 between syncs in none of 5 bursts");
    eprintln!("admitted {admitted} of 60 between syncs against a shared limit of 30");
    // Both instances have synced since.
    std::thread::sleep(Duration::from_millis(2500));
    for gw in [&a, &b] {
        let r = proxy_get(gw, "/", &[("X-Api-Key", key.as_str())]);
        assert_eq!(r.status, 429, "the spent key is refused: {r:?}");
        let number = |name: &str| -> u64 {
            r.header(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing or not a number: {r:?}"))
        };
        let reset = number("RateLimit-Reset");
        assert!(
            reset <= 3600,
            "RateLimit-Reset {reset} is past the hour: {r:?}"
        );
        let retry = number("Retry-After");
        assert!(
            retry <= 120,
            "Retry-After {retry} is past one interval (120 s): {r:?}"
        );
    }
    drop(redis);
}

#[test]
fn without_redis_requests_keep_flowing_under_the_local_limit() {
    let origin = Origin::start();
    let mut redis = Redis::start();
    let cfg = config(&origin, redis.port, "");
    let a = Gateway::start(&cfg);
    assert_eq!(status(&a, "before"), 200);
    redis.stop();
    // Every request is answered promptly (the sync is in the background), and the
    // limit still holds on this instance: never unlimited.
    let mut admitted = 0;
    for _ in 0..40 {
        let started = Instant::now();
        match status(&a, "during-outage") {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a request waited {:?} for an unreachable Redis",
            started.elapsed()
        );
    }
    assert_eq!(admitted, 30, "the local fallback enforces the limit");
    // The background sync finds the outage on its next round, not necessarily before
    // the requests above were answered.
    let logged = wait_for(Duration::from_secs(5), || {
        a.stderr_text().contains("unreachable").then_some(())
    });
    assert!(
        logged.is_some(),
        "the outage is logged:\n{}",
        a.stderr_text()
    );
}

#[test]
fn not_fault_tolerant_answers_500_while_redis_is_down() {
    let origin = Origin::start();
    let mut redis = Redis::start();
    let cfg = config(&origin, redis.port, "").replace(
        "    policy: redis\n",
        "    policy: redis\n    fault_tolerant: false\n",
    );
    let a = Gateway::start(&cfg);
    assert_eq!(status(&a, "k"), 200);
    redis.stop();
    // The first failed sync flips the instance to refusing with Kong's 500.
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        let response = proxy_get(&a, "/", &[("X-Api-Key", "k")]);
        if response.status == 500 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json()["message"],
        "An unexpected error occurred",
        "{}",
        response.body_str()
    );
}

/// Each plugin logs in with its own credentials: one with a wrong password is refused
/// by Redis (and, not fault tolerant, answers 500) even while another plugin is logged
/// in to the same Redis with the right one.
#[test]
fn each_plugin_logs_in_with_its_own_password() {
    let origin = Origin::start();
    let redis = Redis::start_with(&["--requirepass", "right-pw"]);
    let plugin = |service: &str, password: &str| {
        format!(
            "- name: rate-limiting\n  service: {service}\n  config:\n    hour: 30\n    policy: redis\n    fault_tolerant: false\n    sync_rate: 0.02\n    redis: {{host: 127.0.0.1, port: {port}, timeout: 300, password: {password}}}\n",
            port = redis.port
        )
    };
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: good\n  url: {url}\n  routes: [{{name: good, paths: [/good]}}]\n- name: bad\n  url: {url}\n  routes: [{{name: bad, paths: [/bad]}}]\nplugins:\n{}{}",
        plugin("good", "right-pw"),
        plugin("bad", "wrong-pw"),
        url = origin.url()
    );
    let gw = Gateway::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        assert_eq!(
            proxy_get(&gw, "/good", &[]).status,
            200,
            "the right password"
        );
        let response = proxy_get(&gw, "/bad", &[]);
        if response.status == 500 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        refused.status,
        500,
        "the wrong password: {}",
        refused.body_str()
    );
    // Some syncs later, the right login still works.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proxy_get(&gw, "/good", &[]).status, 200);
    assert_eq!(proxy_get(&gw, "/bad", &[]).status, 500);
    let log = gw.stderr_text();
    assert!(
        !log.contains("right-pw") && !log.contains("wrong-pw"),
        "{log}"
    );
}

#[test]
fn the_redis_policy_is_validated() {
    let origin = Origin::start();
    let cfg = config(&origin, 6379, "").replace("redis: {host: 127.0.0.1, ", "redis: {");
    let (code, stderr) = check_file(&cfg);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("plugins[0].config.redis.host: required when policy is 'redis'"),
        "{stderr}"
    );
}
