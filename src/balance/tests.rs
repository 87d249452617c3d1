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
fn failures_must_be_consecutive_and_successes_bring_a_target_back() {
    let h = Health::default();
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), None);
    // A success in between resets the failure count.
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), None);
    assert!(h.is_healthy());
    // Other kinds count apart: two HTTP failures do not add to the TCP one.
    assert_eq!(h.report(Outcome::HttpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::HttpFailure, LIMITS), None);
    assert_eq!(h.report(Outcome::Neutral, LIMITS), None);
    assert_eq!(h.report(Outcome::TcpFailure, LIMITS), Some(false));
    assert!(!h.is_healthy());
    // Unhealthy: a failure resets the success run.
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    assert_eq!(h.report(Outcome::Timeout, LIMITS), None);
    assert_eq!(h.report(Outcome::Success, LIMITS), None);
    assert_eq!(h.report(Outcome::Success, LIMITS), Some(true));
    assert!(h.is_healthy());
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
    let held = local.pick(0, up, None, &[]).unwrap();
    let busy = held.target;
    for _ in 0..5 {
        assert_ne!(local.pick(0, up, None, &[]).unwrap().target, busy);
    }
    drop(held);
    // A reset (reload) forgets counts; a lease from before it changes nothing after.
    let stale = local.pick(0, up, None, &[]).unwrap();
    local.reset();
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
fn threshold_refuses_traffic_when_too_little_weight_is_healthy() {
    let config = upstream(
        "    healthchecks:\n      threshold: 60\n",
        &[("10.9.4.1:80", 50), ("10.9.4.2:80", 50)],
    );
    let up = &config.upstreams[0];
    let local = Local::default();
    assert!(local.pick(0, up, None, &[]).is_some());
    up.targets[0].health.set(false);
    assert!(local.pick(0, up, None, &[]).is_none(), "50% healthy < 60%");
    up.targets[0].health.set(true);
}

#[test]
fn hash_is_pinned() {
    // Gateways behind one load balancer, and versions across an upgrade, must agree on
    // a key's target: the function's values are fixed.
    assert_eq!(hash64(b"user-1"), 0x41a2_fca5_c684_01c5);
    assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
}
