use super::*;
use crate::config::{Config, NodeOverrides};

fn upstream(body: &str, targets: &[(&str, u32)]) -> Config {
    let mut yaml =
        format!("_format_version: \"3.0\"\nupstreams:\n  - name: pool\n{body}    targets:\n");
    for (t, w) in targets {
        yaml.push_str(&format!("      - target: {t}\n        weight: {w}\n"));
    }
    Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default()).expect("valid config")
}

const LIMITS: Thresholds = Thresholds {
    successes: 2,
    tcp_failures: 2,
    timeouts: 1,
    http_failures: 3,
};

#[test]
fn a_success_clears_the_failures_of_a_healthy_target() {
    // lua-resty-healthcheck: "a success will reset _all three_ failure counters".
    let two_timeouts = Thresholds {
        timeouts: 2,
        ..LIMITS
    };
    let h = Health::default();
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::Timeout, two_timeouts), None);
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    // Both counts started over: one more of each is not enough.
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::Timeout, two_timeouts), None);
    assert!(h.is_healthy());
    // Without a success in between, failures need not be consecutive in time.
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), Some(false));
    assert!(!h.is_healthy());
    assert!(h.set(true));
    // Kinds count apart: two HTTP failures do not add to the TCP one.
    assert_eq!(h.report(Outcome::HttpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::HttpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::Neutral, LIMITS), None);
    assert_eq!(h.report(Outcome::HttpFailure, LIMITS), Some(false));
    // Unhealthy: a failure restarts the success count.
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    assert_eq!(h.report(Outcome::Timeout, LIMITS), None);
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    assert_eq!(h.report(Outcome::Success, LIMITS), Some(true));
    assert!(h.is_healthy());
}

#[test]
fn without_successes_nothing_clears_failures() {
    // Kong's default `successes: 0`: failures spread over time still add up.
    let limits = Thresholds {
        http_failures: 3,
        ..Thresholds::default()
    };
    let h = Health::default();
    for _ in 0..2 {
        assert_eq!(h.report(Outcome::HttpFailure, limits), None);
        for _ in 0..10 {
            assert_eq!(h.report(Outcome::Success, limits), None);
        }
    }
    assert_eq!(h.report(Outcome::HttpFailure, limits), Some(false));
}

#[test]
fn zero_thresholds_never_change_the_state() {
    let h = Health::default();
    for _ in 0..1000 {
        assert_eq!(h.report(Outcome::TcpFailure, Thresholds::default()), None);
    }
    assert!(h.is_healthy());
    assert!(h.set(false));
    assert!(!h.set(false), "already unhealthy");
    for _ in 0..10 {
        h.report(Outcome::Success, Thresholds::default());
    }
    assert!(!h.is_healthy(), "successes: 0 cannot heal");
}

#[test]
fn smooth_round_robin_interleaves_by_weight() {
    let config = upstream(
        "",
        &[("10.9.0.1:80", 5), ("10.9.0.2:80", 1), ("10.9.0.3:80", 1)],
    );
    let up = &config.upstreams[0];
    let local = Local::default();
    local.reset(&config.upstreams);
    let picks: Vec<usize> = (0..7)
        .map(|_| local.pick(0, up, None, &[]).unwrap().target)
        .collect();
    // nginx's smooth sequence for 5:1:1: no burst of five in a row.
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn a_retry_avoids_tried_targets_while_any_other_is_usable() {
    let config = upstream("", &[("10.9.1.1:80", 1), ("10.9.1.2:80", 1)]);
    let up = &config.upstreams[0];
    let local = Local::default();
    local.reset(&config.upstreams);
    for _ in 0..4 {
        assert_eq!(local.pick(0, up, None, &[0]).unwrap().target, 1);
    }
    // Every target tried: they are used again rather than failing the request.
    assert!(local.pick(0, up, None, &[0, 1]).is_some());
    up.targets[0].health.set(false);
    up.targets[1].health.set(false);
    assert!(local.pick(0, up, None, &[]).is_none());
}

#[test]
fn leases_count_in_flight_requests_for_least_connections() {
    let config = upstream(
        "    algorithm: least-connections\n",
        &[("10.9.2.1:80", 100), ("10.9.2.2:80", 100)],
    );
    let up = &config.upstreams[0];
    let local = Local::default();
    local.reset(&config.upstreams);
    let held = local.pick(0, up, None, &[]).unwrap();
    let busy = held.target;
    for _ in 0..5 {
        assert_ne!(local.pick(0, up, None, &[]).unwrap().target, busy);
    }
    drop(held);
    // A reset (reload) forgets counts; a lease from before it changes nothing after.
    let stale = local.pick(0, up, None, &[]).unwrap();
    local.reset(&config.upstreams);
    drop(stale);
    let seen: std::collections::HashSet<usize> = (0..4)
        .map(|_| local.pick(0, up, None, &[]).unwrap().target)
        .collect();
    assert_eq!(seen.len(), 2);
}

#[test]
fn the_ring_moves_only_the_keys_of_a_removed_target() {
    let three = upstream(
        "    algorithm: consistent-hashing\n    hash_on: ip\n",
        &[
            ("10.9.3.1:80", 100),
            ("10.9.3.2:80", 100),
            ("10.9.3.3:80", 100),
        ],
    );
    let two = upstream(
        "    algorithm: consistent-hashing\n    hash_on: ip\n",
        &[("10.9.3.1:80", 100), ("10.9.3.2:80", 100)],
    );
    let (a, b) = (&three.upstreams[0], &two.upstreams[0]);
    let local = Local::default();
    let mut per_target = [0usize; 3];
    for key in 0..3000u64 {
        let key = hash64(&key.to_le_bytes());
        let before = local.pick(0, a, Some(key), &[]).unwrap().target;
        let after = local.pick(1, b, Some(key), &[]).unwrap().target;
        per_target[before] += 1;
        if before != 2 {
            assert_eq!(before, after, "a key on a kept target stays there");
        }
    }
    // Each of three equal targets holds roughly a third of the keys.
    for n in per_target {
        assert!((700..1300).contains(&n), "{per_target:?}");
    }
}

#[test]
fn a_request_on_an_older_config_leaves_the_current_state_alone() {
    let old = upstream(
        "    algorithm: least-connections\n",
        &[("10.9.5.1:80", 100), ("10.9.5.2:80", 100)],
    );
    let new = upstream(
        "",
        &[
            ("10.9.5.3:80", 100),
            ("10.9.5.4:80", 100),
            ("10.9.5.5:80", 100),
        ],
    );
    let local = Local::default();
    local.reset(&new.upstreams);
    let first = local.pick(0, &new.upstreams[0], None, &[]).unwrap().target;
    // The old config's upstream 0 picks from a scratch state, and its lease is inert.
    let stale = local.pick(0, &old.upstreams[0], None, &[]).unwrap();
    drop(stale);
    let next = local.pick(0, &new.upstreams[0], None, &[]).unwrap().target;
    assert_ne!(first, next, "round-robin kept its position");
}

#[test]
fn threshold_refuses_traffic_when_too_little_weight_is_healthy() {
    let config = upstream(
        "    healthchecks:\n      threshold: 60\n",
        &[("10.9.4.1:80", 50), ("10.9.4.2:80", 50)],
    );
    let up = &config.upstreams[0];
    let local = Local::default();
    local.reset(&config.upstreams);
    assert!(local.pick(0, up, None, &[]).is_some());
    up.targets[0].health.set(false);
    assert!(local.pick(0, up, None, &[]).is_none(), "50% healthy < 60%");
    up.targets[0].health.set(true);
    // At exactly the threshold the upstream is down too (Kong compares strictly).
    let config = upstream(
        "    healthchecks:\n      threshold: 50\n",
        &[("10.9.4.3:80", 50), ("10.9.4.4:80", 50)],
    );
    let up = &config.upstreams[0];
    up.targets[0].health.set(false);
    assert!(
        local.pick(0, up, None, &[]).is_none(),
        "50% healthy is not > 50%"
    );
}

#[test]
fn hash_is_pinned() {
    // Gateways behind one load balancer, and versions across an upgrade, must agree on
    // a key's target: the function's values are fixed.
    assert_eq!(hash64(b"user-1"), 0x41a2_fca5_c684_01c5);
    assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
}

#[test]
fn health_is_shared_while_a_config_holds_it_and_forgotten_after() {
    let a = health_of("registry-test", "10.9.6.1:80");
    let b = health_of("registry-test", "10.9.6.1:80");
    assert!(Arc::ptr_eq(&a, &b), "a reload keeps the same state");
    a.set(false);
    drop((a, b));
    // Many other targets come and go meanwhile; the old entry is swept, not revived.
    for i in 0..300 {
        drop(health_of("registry-test", &format!("10.9.7.{i}:80")));
    }
    assert!(health_of("registry-test", "10.9.6.1:80").is_healthy());
}

/// Hundreds of targets at the largest weights and slots keep the ring bounded (it is
/// rebuilt at every config change), their weights still splitting it in proportion.
#[test]
fn a_ring_of_heavy_targets_stays_bounded_and_proportional() {
    let targets: Vec<(String, u32)> = (0..300)
        .map(|i| {
            (
                format!("10.1.{}.{}:80", i / 250, i % 250),
                if i == 0 { 40_000 } else { 20_000 },
            )
        })
        .collect();
    let targets: Vec<(&str, u32)> = targets.iter().map(|(t, w)| (t.as_str(), *w)).collect();
    let config = upstream(
        "    algorithm: consistent-hashing\n    hash_on: ip\n    slots: 65536\n",
        &targets,
    );
    let ring = &config.upstreams[0].ring;
    assert!(ring.len() <= 1 << 20, "{} points", ring.len());
    let share = |target: u32| ring.iter().filter(|(_, t)| *t == target).count();
    let (heavy, light) = (share(0), share(1));
    assert!(
        (2 * light).abs_diff(heavy) <= 2,
        "weights 2:1 keep their points 2:1: {heavy} vs {light}"
    );
}
