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

/// One service to `origin` with `plugins` and the access log written to `log`.
fn logged_config(origin: &Origin, plugins: &str, log: &std::path::Path) -> String {
    one_service_config(&origin.url(), plugins).replace(
        "_format_version: \"3.0\"\n",
        &format!(
            "_format_version: \"3.0\"\nringway:\n  access_log: {}\n",
            log.display()
        ),
    )
}

/// A gateway logging to a file in a fresh directory (kept alive by the caller).
fn logged_gateway(
    origin: &Origin,
    plugins: &str,
) -> (Gateway, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = Gateway::start(&logged_config(origin, plugins, &log));
    (gw, dir, log)
}

const CORRELATION_ID: &str =
    "plugins:\n  - name: correlation-id\n    config: {header_name: X-Request-ID}\n";

#[test]
fn every_request_is_one_json_line_without_the_query() {
    let origin = Origin::start();
    let (gw, _dir, log) = logged_gateway(&origin, CORRELATION_ID);
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
    assert_eq!(
        (&first["service"], &first["route"]),
        (&serde_json::json!("svc"), &serde_json::json!("all")),
        "{first}"
    );
    assert!(first["bytes_out"].as_u64().unwrap() > 0, "{first}");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(lines[1]["request_id"], "req-42", "{}", lines[1]);
    assert!(
        first["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "a generated ID is logged: {first}"
    );
    // A fragment (refused: 400) is left out as the query is.
    let r = gw
        .client()
        .roundtrip(b"GET /hide/x#jwt=fragment-token HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
    let lines = read_lines(&log, 3);
    assert_eq!(lines[2]["path"], "/hide/x", "{}", lines[2]);
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("fragment-token"));
}

/// logrotate's way, as with nginx: the file is renamed, SIGUSR1 sent, and the lines after
/// it go to a new file under the configured name; none is lost or doubled.
#[test]
fn sigusr1_reopens_the_file_after_a_rotation() {
    let origin = Origin::start();
    let (gw, dir, log) = logged_gateway(&origin, "");
    assert_eq!(proxy_get(&gw, "/before", &[]).status, 200);
    assert_eq!(read_lines(&log, 1).len(), 1);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.send_signal("USR1");
    // Reopening creates the file under its configured name.
    assert!(
        wait_for(Duration::from_secs(5), || log.exists().then_some(())).is_some(),
        "no new file after SIGUSR1: {}",
        gw.stderr_text()
    );
    assert_eq!(proxy_get(&gw, "/after", &[]).status, 200);
    let new = read_lines(&log, 1);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["path"], "/after", "{new:?}");
    let old = read_lines(&rotated, 1);
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0]["path"], "/before", "{old:?}");
}

#[test]
fn hostile_request_bytes_still_make_json_lines_at_the_right_time() {
    // Quotes, backslashes, tabs and invalid UTF-8 in what a client controls
    // (the path, an incoming request ID) are escaped: every line stays JSON.
    use std::io::{Read, Write};
    let origin = Origin::start();
    let (gw, _dir, log) = logged_gateway(&origin, CORRELATION_ID);
    let requests: [&[u8]; 6] = [
        b"GET /a\\b/\xc3\xa9/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /id HTTP/1.1\r\nHost: x\r\nX-Request-ID: say \"hi\"\t\\ x\r\nConnection: close\r\n\r\n",
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        // A method that would forge fields if it went in unescaped, and control bytes in
        // a refused request line.
        b"GET\",\"status\":200,\"client_ip\":\"6.6.6.6\",\"path\":\"/forged /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GE\x01T\t/x HTTP/1.1\r\nHost: a\r\n\r\n",
        // An absolute-form target: its credentials stay out of the log.
        b"GET http://alice:S3cret@x/abs?token=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    for raw in requests {
        let mut c = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(raw).unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
    }
    // Each line parses (read_lines panics on one that does not).
    let lines = read_lines(&log, 6);
    assert_eq!(lines.len(), 6, "{lines:?}");
    for line in &lines {
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    }
    let forged = lines
        .iter()
        .find(|l| l["method"].as_str().is_some_and(|m| m.contains("6.6.6.6")))
        .expect("the forging line");
    assert_eq!(forged["status"], 400, "{forged}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("S3cret"), "{text}");
    assert!(
        lines.iter().any(|l| l["path"] == "/abs"),
        "the absolute-form target logs its path: {lines:?}"
    );
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert!(
        paths.iter().any(|p| p.starts_with("/a\\b/\u{e9}/")),
        "{paths:?}"
    );
    let id = lines
        .iter()
        .find(|l| l["path"] == "/id")
        .expect("the /id line");
    assert_eq!(id["request_id"], "say \"hi\"\t\\ x", "{id}");
    // The time comes from the worker's clock anchor: it must be now, within seconds.
    // Timestamps of this one shape order as text the way they order in time.
    let now = std::time::SystemTime::now();
    let slack = Duration::from_secs(5);
    let (earliest, latest) = (
        ringway::logging::rfc3339(now - slack),
        ringway::logging::rfc3339(now + slack),
    );
    for line in &lines {
        let time = line["time"].as_str().unwrap();
        assert!(
            time.len() == earliest.len() && earliest.as_str() <= time && time <= latest.as_str(),
            "logged at {time}, expected between {earliest} and {latest}"
        );
    }
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
    let gw = Gateway::start(&logged_config(&origin, "", &fifo));
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

/// A failed upstream attempt still names the upstream it tried.
#[test]
fn a_failed_attempt_logs_the_upstream_it_tried() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = one_service_config(&format!("http://{dead}"), "").replace(
        "_format_version: \"3.0\"\n",
        &format!(
            "_format_version: \"3.0\"\nringway:\n  access_log: {}\n",
            log.display()
        ),
    );
    let gw = Gateway::start(&config);
    assert_eq!(gw.get("/x").status, 502);
    let lines = read_lines(&log, 1);
    assert_eq!(lines[0]["status"], 502, "{lines:?}");
    assert_eq!(lines[0]["upstream"], dead.to_string(), "{lines:?}");
    // Nothing went out: no upstream time, it is all ringway's (README: `proxy`
    // includes the pool or connect).
    assert_eq!(
        lines[0]["upstream_us"],
        serde_json::Value::Null,
        "{lines:?}"
    );
}

/// A FIFO nobody reads yet never holds the start up (an open for writing would wait
/// for a reader): the gateway serves at once, and a reader that comes later gets the
/// lines from then on.
#[test]
fn a_fifo_without_a_reader_does_not_hold_the_start() {
    use std::io::BufRead;
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let gw = Gateway::start(&logged_config(&origin, "", &fifo));
    assert_eq!(gw.get("/before-a-reader").status, 200);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(std::fs::File::open(reader_path).unwrap());
        for line in reader.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Requests until one's line comes through the reader (the writer opens the FIFO
    // once the reader is there; what the queue held until then comes first).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut paths = Vec::new();
    while !paths.iter().any(|p| p == "/with-a-reader") {
        assert_eq!(gw.get("/with-a-reader").status, 200);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            paths.push(v["path"].as_str().unwrap_or_default().to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "no line reached the reader: {paths:?}"
        );
    }
    assert_eq!(paths[0], "/before-a-reader", "held in the queue: {paths:?}");
}

/// A write that fails (a full disk) loses lines: they are counted as dropped, and the
/// failure is logged once.
#[test]
fn lines_a_failed_write_loses_are_counted() {
    let origin = Origin::start();
    let gw = Gateway::start(&logged_config(
        &origin,
        "",
        std::path::Path::new("/dev/full"),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        assert_eq!(gw.get("/x").status, 200);
        let metrics = http_request(gw.admin_addr(), "GET", "/metrics", &[], None).body_str();
        let dropped: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ringway_access_log_dropped_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if dropped > 0 || Instant::now() > deadline {
            break dropped;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(dropped > 0, "no dropped line counted");
    let stderr = gw.stderr_text();
    assert_eq!(
        stderr.matches("access log: write failed").count(),
        1,
        "{stderr}"
    );
}

/// A head refused before it was whole (a request line or a header over its limit, a
/// head that stalls) is a request too: it has its line, with what came of it.
#[test]
fn heads_refused_before_they_were_whole_are_logged() {
    use std::io::{Read, Write};
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = logged_config(&origin, "", &log)
        .replace("ringway:\n", "ringway:\n  client_header_timeout: 300\n");
    let gw = Gateway::start(&config);
    let long_line = format!("GET /long/{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(9000));
    let long_header = format!(
        "GET /header HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "y".repeat(9000)
    );
    for raw in [
        long_line.as_str(),
        long_header.as_str(),
        "GET /stalled HTTP/1.1\r\nHost: a\r\n",
    ] {
        let mut c = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(raw.as_bytes());
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 4"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let lines = read_lines(&log, 3);
    let mut statuses: Vec<(u64, String)> = lines
        .iter()
        .map(|l| {
            let path = l["path"].as_str().unwrap_or_default();
            (
                l["status"].as_u64().unwrap_or(0),
                path.chars().take(6).collect(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (408, "/stall".to_owned()),
            (414, "/long/".to_owned()),
            (431, "/heade".to_owned())
        ],
        "{lines:?}"
    );
    // The 408's request lasted from its first byte to the deadline (300 ms), not the
    // moment of the answer.
    let stalled = lines
        .iter()
        .find(|l| l["status"] == 408)
        .and_then(|l| l["request_us"].as_u64())
        .unwrap_or(0);
    assert!(stalled >= 250_000, "request_us {stalled}: {lines:?}");
}
