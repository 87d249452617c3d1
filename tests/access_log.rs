//! The access log (`ringway.access_log`): one JSON line per request, written off the
//! request path, and never a reason for a request to wait.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn read_lines(path: &std::path::Path, want: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_request_is_one_json_line_without_the_query() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = one_service_config(
        &origin.url(),
        "plugins:\n  - name: correlation-id\n    config: {header_name: X-Request-ID}\n",
    )
    .replace(
        "_format_version: \"3.0\"\n",
        &format!(
            "_format_version: \"3.0\"\nringway:\n  access_log: {}\n",
            log.display()
        ),
    );
    let gw = Gateway::start(&cfg);
    assert_eq!(proxy_get(&gw, "/users/7?jwt=secret-token", &[]).status, 200);
    assert_eq!(
        proxy_get(&gw, "/x", &[("X-Request-ID", "req-42")]).status,
        200
    );
    let lines = read_lines(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["path"], "/users/7",
        "the query is not logged: {first}"
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("secret-token"),
        "a token in the query string must not reach the log"
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["request_us"].as_u64().is_some(), "{first}");
    assert!(first["upstream_us"].as_u64().is_some(), "{first}");
    assert!(first["proxy_us"].as_u64().is_some(), "{first}");
    assert_eq!(first["upstream"], origin.addr().to_string(), "{first}");
    assert!(first["bytes_out"].as_u64().unwrap() > 0, "{first}");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(lines[1]["request_id"], "req-42", "{}", lines[1]);
    assert!(
        first["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "a generated ID is logged: {first}"
    );
}

#[test]
fn a_log_nobody_reads_never_blocks_requests() {
    // The log is a FIFO the test opens and never reads: once the pipe (64 KiB) and the
    // queue are full, lines are dropped and counted, and requests keep being answered.
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader_path = fifo.clone();
    // Opening a FIFO's read end waits for its writer (the gateway, at startup).
    let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
    let cfg = one_service_config(&origin.url(), "").replace(
        "_format_version: \"3.0\"\n",
        &format!(
            "_format_version: \"3.0\"\nringway:\n  access_log: {}\n",
            fifo.display()
        ),
    );
    let gw = Gateway::start(&cfg);
    let _held_open_never_read = reader.join().unwrap();
    let long_path = format!("/{}", "a".repeat(4000));
    let mut client = gw.client();
    for i in 0..4400 {
        client
            .send(format!("GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let response = client
            .read_response_within(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("request {i} was not answered: {e:?}"));
        assert_eq!(response.status, 200);
    }
    let metrics = http_request(gw.admin_addr(), "GET", "/metrics", &[], None).body_str();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringway_access_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped counter in:\n{metrics}"));
    // 4400 lines of 4 KiB against a 64 KiB pipe and a 4096-line queue.
    assert!(
        dropped > 0,
        "the undrained log cannot have taken every line; none were counted as dropped"
    );
}
