//! Process lifecycle and status (SPEC §1 signals, §5 `GET /status`, `GET /status/ready`).

mod support;

use std::time::{Duration, Instant};

use support::*;

fn two_route_config(origin: &Origin, with_new: bool) -> String {
    let new = if with_new {
        "      - name: new\n        paths: [\"/new\"]\n        strip_path: false\n"
    } else {
        ""
    };
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {}\n    routes:\n      - name: old\n        paths: [\"/old\"]\n        strip_path: false\n{new}",
        origin.url()
    )
}

/// The gateway runs without transparent huge pages: with them, every idle connection's
/// few KiB would commit a share of 2 MiB pages (memory per idle connection, SPEC §6).
#[test]
fn the_gateway_runs_without_transparent_huge_pages() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), ""));
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    // A kernel that does not report it leaves nothing to check.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}

#[test]
fn status_ready_answers_200_ready() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), ""));
    let r = gw.admin_get("/status/ready");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["message"], "ready", "{r:?}");
}

#[test]
fn status_reports_counters_hash_workers_driver() {
    let o = Origin::start();
    let gw = Gateway::start_with(
        &one_service_config(&o.url(), ""),
        GatewayOpts::default().workers(2),
    );
    let j = gw.status_json();
    let server = &j["server"];
    for k in [
        "connections_active",
        "connections_accepted",
        "total_requests",
    ] {
        assert!(server[k].is_u64(), "server.{k} must be a number: {j}");
    }
    assert!(
        j["configuration_hash"]
            .as_str()
            .map(|s| !s.is_empty())
            .unwrap_or(false),
        "configuration_hash: {j}"
    );
    assert_eq!(j["workers"], 2, "{j}");
    // The same hash `ringway check` prints for the file (nothing created through the
    // Admin API yet).
    let out = run_cli(
        &["check", "-c", gw.config_path().to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    let hash = j["configuration_hash"].as_str().unwrap_or("?");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("configuration_hash {hash}")),
        "check and /status disagree on the hash: {:?} vs {j}",
        String::from_utf8_lossy(&out.stdout)
    );
    let driver = j["driver"].as_str().unwrap_or("");
    assert!(driver == "io_uring" || driver == "epoll", "driver: {j}");

    // counters move with traffic: 5 requests on one connection
    let base_req = server["total_requests"].as_u64().unwrap_or(0);
    let base_acc = server["connections_accepted"].as_u64().unwrap_or(0);
    let mut c = gw.client();
    for i in 0..5 {
        assert_eq!(c.roundtrip(&get_req(&format!("/s{i}"), "a")).status, 200);
    }
    let got = wait_for(Duration::from_secs(5), || {
        let j = gw.status_json();
        let s = &j["server"];
        let ok = s["total_requests"].as_u64().unwrap_or(0) >= base_req + 5
            && s["connections_accepted"].as_u64().unwrap_or(0) > base_acc
            && s["connections_active"].as_u64().unwrap_or(0) >= 1;
        if ok {
            Some(j)
        } else {
            None
        }
    });
    assert!(
        got.is_some(),
        "counters did not reflect 5 requests on an open connection: {}",
        gw.status_json()
    );
    drop(c);
    // the closed connection leaves connections_active
    let drained = wait_for(Duration::from_secs(5), || {
        if gw.status_json()["server"]["connections_active"].as_u64() == Some(0) {
            Some(())
        } else {
            None
        }
    });
    assert!(
        drained.is_some(),
        "connections_active did not return to 0: {}",
        gw.status_json()
    );
}

#[test]
fn epoll_driver_can_be_forced() {
    let o = Origin::start();
    let gw = Gateway::start_with(
        &one_service_config(&o.url(), ""),
        GatewayOpts::default().env("RINGWAY_DRIVER", "epoll"),
    );
    assert_eq!(gw.status_json()["driver"], "epoll");
    let r = gw.get("/on-epoll");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok");
}

#[test]
fn sigterm_finishes_in_flight_request_then_exits_0() {
    let o =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(500), Box::new(Action::Ok)));
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let addr = gw.proxy_addr();
    let mut c = gw.client();
    c.send(&get_req("/slow", "a")).unwrap();
    o.wait_requests(1, RESPONSE_DEADLINE);
    gw.send_signal("TERM");
    // A reload asked for while draining is said to come to nothing.
    std::thread::sleep(Duration::from_millis(100));
    gw.send_signal("HUP");
    let r = c
        .read_response()
        .expect("the in-flight request completes during drain");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok");
    // The connection will not serve another request, and the answer says so (RFC 9112
    // §9.6), so the client reconnects instead of failing its next request.
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a response written while draining: {r:?}"
    );
    let st = gw.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "still running 10 s after SIGTERM; stderr:\n{}",
            gw.stderr_text()
        )
    });
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM; stderr:\n{}",
        gw.stderr_text()
    );
    assert!(
        Client::try_connect_timeout(addr, Duration::from_secs(1)).is_err(),
        "new connections refused after exit"
    );
    assert!(
        gw.stderr_text()
            .contains("SIGHUP while draining: not reloaded"),
        "{}",
        gw.stderr_text()
    );
    assert_no_panic(&gw.stderr_text());
}

/// The signals nginx (and so Kong) gives meanings to do not kill the process: SIGUSR1
/// and SIGUSR2 leave it serving, SIGQUIT (nginx's graceful stop) drains as SIGTERM does.
#[test]
fn sigquit_drains_and_user_signals_do_not_kill() {
    let o =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(300), Box::new(Action::Ok)));
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let mut c = gw.client();
    for signal in ["USR1", "USR2"] {
        gw.send_signal(signal);
        assert_eq!(
            c.roundtrip(&get_req("/after", "a")).status,
            200,
            "after SIG{signal}"
        );
    }
    assert!(
        wait_for(Duration::from_secs(5), || gw
            .stderr_text()
            .contains("SIGUSR2 ignored")
            .then_some(()))
        .is_some(),
        "{}",
        gw.stderr_text()
    );
    c.send(&get_req("/slow", "a")).unwrap();
    o.wait_requests(3, RESPONSE_DEADLINE);
    gw.send_signal("QUIT");
    let r = c.read_response().expect("the in-flight request completes");
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("close")),
        "{r:?}"
    );
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("running 10 s after SIGQUIT:\n{}", gw.stderr_text()));
    assert_eq!(st.code(), Some(0), "{}", gw.stderr_text());
    assert_no_panic(&gw.stderr_text());
}

#[test]
fn sigterm_idle_gateway_exits_0_promptly() {
    let o = Origin::start();
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    // an idle keep-alive connection must not hold the drain for drain_timeout (30 s)
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/x", "a")).status, 200);
    let start = Instant::now();
    gw.send_signal("TERM");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(c);
}

/// A keep-alive connection in use when the drain begins is not closed under the
/// client's next request (which would fail it): for a moment such requests are still
/// answered, with `Connection: close`, and the client moves to a new connection.
#[test]
fn a_busy_keep_alive_client_sees_no_failure_through_a_drain() {
    let o = Origin::start();
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/x", "a")).status, 200);
    gw.send_signal("TERM");
    // The client's next request, a moment after the drain began, as a busy one sends it.
    std::thread::sleep(Duration::from_millis(200));
    c.send(&get_req("/y", "a")).unwrap();
    let r = c
        .read_response()
        .expect("a request on a connection open when the drain began is answered");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(st.code(), Some(0));
}

/// An answer decided in the moment after the signal, before the worker's own tick saw
/// the drain, already says `Connection: close`: the client is not left to send its next
/// request on a connection about to close.
#[test]
fn an_answer_right_after_the_signal_says_close() {
    let o =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(20), Box::new(Action::Ok)));
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/warm", "a")).status, 200);
    c.send(&get_req("/x", "a")).unwrap();
    gw.send_signal("TERM");
    let r = c
        .read_response()
        .expect("the in-flight request is answered");
    assert_eq!(r.status, 200, "{r:?}");
    if r.header("connection") != Some("close") {
        // Told keep-alive: the connection must then take the next request.
        c.send(&get_req("/y", "a")).unwrap();
        let next = c
            .read_response()
            .expect("a connection told keep-alive serves on");
        assert_eq!(next.status, 200, "{next:?}");
    }
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn sigint_drains_like_sigterm() {
    let o = Origin::start();
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    gw.send_signal("INT");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGINT");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn draining_ready_answers_503_and_new_connections_refused() {
    let o =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(2500), Box::new(Action::Ok)));
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let addr = gw.proxy_addr();
    let mut c = gw.client();
    c.send(&get_req("/slow", "a")).unwrap();
    o.wait_requests(1, RESPONSE_DEADLINE);
    gw.send_signal("TERM");
    // while the slow request drains, /status/ready says 503 draining
    let ready = wait_for(Duration::from_millis(2000), || {
        let mut a =
            Client::try_connect_timeout(gw.admin_addr(), Duration::from_millis(500)).ok()?;
        a.send(&get_req("/status/ready", "localhost")).ok()?;
        let r = a.read_response_within(Duration::from_millis(1000)).ok()?;
        if r.status == 503 {
            Some(r)
        } else {
            None
        }
    });
    let ready = ready.expect("/status/ready answers 503 while draining");
    assert_eq!(ready.json()["message"], "draining", "{ready:?}");
    // stop accepting: a new proxy connection gets no service
    let refused = match Client::try_connect_timeout(addr, Duration::from_millis(500)) {
        Err(_) => true,
        Ok(mut n) => {
            let _ = n.send(&get_req("/new", "a"));
            !matches!(n.read_response_within(Duration::from_millis(1000)), Ok(r) if r.status == 200)
        }
    };
    assert!(refused, "a new connection was served while draining");
    let r = c.read_response().expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after drain");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn sighup_with_invalid_file_keeps_old_config() {
    let o = Origin::start();
    let mut gw = Gateway::start(&two_route_config(&o, false));
    let hash = gw.status_json()["configuration_hash"].clone();
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/old", "a")).status, 200);
    gw.write_config("_format_version: \"3.0\"\nservices:\n  - name: broken\n    url: http://127.0.0.1:9\n    no_such_field: 1\n");
    let before = gw.stderr_text();
    gw.send_signal("HUP");
    let logged = wait_for(Duration::from_secs(5), || {
        if gw.stderr_text().len() > before.len() {
            Some(())
        } else {
            None
        }
    });
    assert!(
        logged.is_some(),
        "an invalid reload is logged (at warn or error)"
    );
    let log = gw.stderr_text();
    assert!(
        log[before.len()..].contains("no_such_field"),
        "the log says why: {log}"
    );
    assert!(gw.is_running(), "still running after an invalid reload");
    assert_eq!(
        c.roundtrip(&get_req("/old", "a")).status,
        200,
        "old config still served on an open connection"
    );
    assert_eq!(
        gw.get("/old").status,
        200,
        "old config still served on a new connection"
    );
    assert_eq!(
        gw.status_json()["configuration_hash"],
        hash,
        "configuration_hash unchanged"
    );
    assert_no_panic(&log);
}

/// Reloads with a new `/new` route; returns once `/status` reports the new hash.
fn reload_adding_route(gw: &Gateway, o: &Origin) {
    let hash = gw.status_json()["configuration_hash"].clone();
    gw.write_config(&two_route_config(o, true));
    gw.send_signal("HUP");
    let changed = wait_for(Duration::from_secs(10), || {
        let h = gw.status_json()["configuration_hash"].clone();
        if h != hash {
            Some(h)
        } else {
            None
        }
    });
    assert!(
        changed.is_some(),
        "configuration_hash did not change after SIGHUP; stderr:\n{}",
        gw.stderr_text()
    );
}

#[test]
fn sighup_with_valid_file_adds_route_without_dropping_connections() {
    let o = Origin::start();
    let opts = GatewayOpts {
        log_level: "info".into(),
        ..GatewayOpts::default()
    };
    let mut gw = Gateway::start_with(&two_route_config(&o, false), opts);
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/old", "a")).status, 200);
    assert_eq!(c.roundtrip(&get_req("/new", "a")).status, 404);
    reload_adding_route(&gw, &o);
    assert_eq!(gw.get("/new").status, 200, "new route on a new connection");
    // The log line gives the running hash, and says it covers the Admin API's entities
    // only when there are some.
    let hash = gw.status_json()["configuration_hash"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let plain = format!("(running configuration_hash {hash})");
    let logged = wait_for(Duration::from_secs(5), || {
        gw.stderr_text().contains(&plain).then_some(())
    });
    assert!(logged.is_some(), "no '{plain}' in:\n{}", gw.stderr_text());
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "api-made")]);
    assert_eq!(r.status, 201, "{r:?}");
    gw.send_signal("HUP");
    let logged = wait_for(Duration::from_secs(5), || {
        gw.stderr_text()
            .contains("the file with the Admin API's entities")
            .then_some(())
    });
    assert!(logged.is_some(), "stderr:\n{}", gw.stderr_text());
    // the open keep-alive connection is still served and picks up the new route
    let mut last = None;
    let picked_up = wait_for(Duration::from_secs(5), || {
        let r = c.roundtrip(&get_req("/new", "a"));
        let ok = r.status == 200;
        last = Some(r);
        if ok {
            Some(())
        } else {
            None
        }
    });
    assert!(
        picked_up.is_some(),
        "the existing connection never saw the new route: {last:?}"
    );
    assert_eq!(c.roundtrip(&get_req("/old", "a")).status, 200);
    assert!(gw.is_running());
}

#[test]
fn after_reload_is_reported_every_request_uses_the_new_config() {
    // once /status reports the new configuration_hash, a request on a connection opened
    // before the reload must be routed by the new config, like one on a new connection
    let o = Origin::start();
    let gw = Gateway::start(&two_route_config(&o, false));
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/old", "a")).status, 200);
    reload_adding_route(&gw, &o);
    let r = c.roundtrip(&get_req("/new", "a"));
    assert_eq!(
        r.status, 200,
        "existing connection still on the old config after the new hash was reported: {r:?}"
    );
}

#[test]
fn sighup_during_in_flight_request_does_not_fail_it() {
    let o =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(700), Box::new(Action::Ok)));
    let gw = Gateway::start(&two_route_config(&o, false));
    let mut c = gw.client();
    c.send(&get_req("/old", "a")).unwrap();
    o.wait_requests(1, RESPONSE_DEADLINE);
    gw.write_config(&two_route_config(&o, true));
    gw.send_signal("HUP");
    let r = c
        .read_response()
        .expect("in-flight request survives a reload");
    assert_eq!(r.status, 200);
    let ok = wait_for(Duration::from_secs(10), || {
        if gw.get("/new").status == 200 {
            Some(())
        } else {
            None
        }
    });
    assert!(ok.is_some(), "reload applied");
}

#[test]
fn drain_timeout_bounds_the_drain() {
    let o = Origin::with_handler(|_| Action::Delay(Duration::from_secs(20), Box::new(Action::Ok)));
    // Started with a long drain_timeout, reloaded to a short one: the drain takes the
    // config's value as it is when the drain starts.
    let mut gw = Gateway::start(&one_service_config(
        &o.url(),
        "ringway:\n  drain_timeout: 60000\n",
    ));
    let hash = gw.status_json()["configuration_hash"].clone();
    gw.write_config(&one_service_config(
        &o.url(),
        "ringway:\n  drain_timeout: 500\n",
    ));
    gw.send_signal("HUP");
    let reloaded = wait_for(Duration::from_secs(10), || {
        (gw.status_json()["configuration_hash"] != hash).then_some(())
    });
    assert!(reloaded.is_some(), "stderr:\n{}", gw.stderr_text());
    let mut c = gw.client();
    c.send(&get_req("/forever", "a")).unwrap();
    o.wait_requests(1, RESPONSE_DEADLINE);
    let start = Instant::now();
    gw.send_signal("TERM");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits once drain_timeout passed");
    let took = start.elapsed();
    assert_eq!(st.code(), Some(0), "stderr:\n{}", gw.stderr_text());
    assert!(
        took >= Duration::from_millis(400),
        "exited before drain_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "drain_timeout 500 ms, exit after {took:?}"
    );
    drop(c);
}

/// An Admin API write under way when the drain starts is finished and answered before
/// the process exits, even with no proxy request keeping it up, and is on disk.
#[test]
fn sigterm_finishes_an_admin_write_under_way() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let mut admin = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = b"username=mid-drain";
    let head = format!(
        "POST /consumers HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    admin.write_all(head.as_bytes()).unwrap();
    admin.write_all(&body[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gw.send_signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    admin.write_all(&body[5..]).unwrap();
    let mut answer = String::new();
    let _ = admin.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", gw.stderr_text());
    gw.restart_same_dir(GatewayOpts::default()).unwrap();
    assert_eq!(
        probe_status(gw.admin_addr(), "/consumers/mid-drain"),
        Some(200)
    );
}

/// A supervisor that restarts ringway at once after `kill -9` gets it back on the same
/// ports: the killed process's sockets outlive it by a few milliseconds while the
/// kernel tears its io_uring down, and a busy port is asked again for a moment.
#[test]
fn a_restart_right_after_kill_9_binds_the_same_ports() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kong.yaml");
    std::fs::write(&config, "_format_version: \"3.0\"\n").unwrap();
    let (proxy, admin) = (free_addr().to_string(), free_addr().to_string());
    let data = dir.path().join("data");
    let spawn = || {
        std::process::Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .args(["--proxy-listen", &proxy, "--admin-listen", &admin])
            .args(["--workers", "2", "--log-level", "warn", "--data-dir"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ringway")
    };
    let ready = |admin: &str| {
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(admin).ok().map(drop)
        })
        .is_some()
    };
    for round in 0..3 {
        let mut first = spawn();
        assert!(ready(&admin), "round {round}: the first start");
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = spawn();
        let up = ready(&admin) && {
            std::thread::sleep(Duration::from_millis(300));
            second.try_wait().unwrap().is_none()
        };
        let _ = second.kill();
        let out = second.wait_with_output().unwrap();
        assert!(
            up,
            "round {round}: the restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn several_proxy_listeners() {
    let o = Origin::start();
    let second = free_addr();
    let opts = GatewayOpts {
        extra_args: vec!["--proxy-listen".into(), second.to_string()],
        ..Default::default()
    };
    let gw = Gateway::start_with(&one_service_config(&o.url(), ""), opts);
    assert_eq!(gw.get("/one").status, 200);
    let r = Client::connect(second).roundtrip(&get_req("/two", "a"));
    assert_eq!(r.status, 200, "second --proxy-listen serves too: {r:?}");
}

#[test]
fn flags_override_the_file_section() {
    let o = Origin::start();
    // The file's addresses are taken: the flags' are used instead.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_too = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!(
        "ringway:\n  proxy_listen: [\"{}\"]\n  admin_listen: \"{}\"\n  workers: 3\n",
        busy.local_addr().unwrap(),
        busy_too.local_addr().unwrap()
    );
    let gw = Gateway::start(&one_service_config(&o.url(), &extra));
    assert_eq!(gw.get("/flags").status, 200);
    assert_eq!(
        gw.status_json()["workers"],
        1,
        "--workers overrides ringway.workers"
    );
}

#[test]
fn authorization_values_never_logged_even_at_trace() {
    let o = Origin::start();
    let opts = GatewayOpts {
        log_level: "trace".into(),
        ..Default::default()
    };
    let gw = Gateway::start_with(&one_service_config(&o.url(), ""), opts);
    let secret = "s3cr3t-T0KEN-value-42";
    let mut c = gw.client();
    let r = c.roundtrip(
        format!("GET /log HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {secret}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    // a malformed request carrying the token, and one that matches no route
    let _ = gw.client().send(
        format!(
            "GET /log HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {secret}\r\nX-A : b\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = gw.client().roundtrip(
        format!("GET /log HTTP/1.1\r\nHost: a\r\nKong-Admin-Token: {secret}\r\nAuthorization: Basic {secret}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.stderr_text();
    assert!(!log.contains(secret), "a secret reached the log:\n{log}");
}

/// A reload that changes what a running process keeps until restart (here the Admin API
/// token) says so in the log, and the running value stays: nothing is silently ignored.
#[test]
fn a_reload_names_the_settings_that_wait_for_a_restart() {
    let o = Origin::start();
    let config = |token: &str| {
        format!(
            "{}ringway:\n  admin_token: {token}\n",
            two_route_config(&o, false)
        )
    };
    let gw = Gateway::start(&config("first-token"));
    let with = |token: &str| {
        http_request(
            gw.admin_addr(),
            "GET",
            "/status",
            &[("Kong-Admin-Token", token)],
            None,
        )
        .status
    };
    assert_eq!(with("first-token"), 200);
    gw.write_config(&config("second-token"));
    gw.send_signal("HUP");
    let logged = wait_for(Duration::from_secs(10), || {
        let log = gw.stderr_text();
        log.contains("admin_token changed: takes effect on restart only")
            .then_some(log)
    });
    assert!(logged.is_some(), "stderr:\n{}", gw.stderr_text());
    assert_eq!(with("first-token"), 200, "the running token stays");
    assert_eq!(with("second-token"), 401);
    // Said once: Admin API writes while it waits do not say it again.
    for name in ["w1", "w2"] {
        let r = http_request(
            gw.admin_addr(),
            "POST",
            "/consumers",
            &[("Kong-Admin-Token", "first-token")],
            Some((
                "application/json",
                format!("{{\"username\":\"{name}\"}}").as_bytes(),
            )),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let said = gw
        .stderr_text()
        .matches("takes effect on restart only")
        .count();
    assert_eq!(said, 1, "stderr:\n{}", gw.stderr_text());

    // Back to the running value: nothing waits for a restart any more, so no warning.
    let hash = |gw: &Gateway| {
        let r = http_request(
            gw.admin_addr(),
            "GET",
            "/status",
            &[("Kong-Admin-Token", "first-token")],
            None,
        );
        r.json()["configuration_hash"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let before = hash(&gw);
    gw.write_config(&config("first-token"));
    gw.send_signal("HUP");
    let reloaded = wait_for(Duration::from_secs(10), || {
        (hash(&gw) != before).then_some(())
    });
    assert!(reloaded.is_some(), "stderr:\n{}", gw.stderr_text());
    let log = gw.stderr_text();
    assert_eq!(
        log.matches("admin_token changed").count(),
        1,
        "a reload back to the running value warns of nothing: {log}"
    );
}

/// A config warning is logged when it first appears, not again with every Admin API
/// write that leaves its cause in place; gone and back, it is logged again.
#[test]
fn a_warning_is_logged_once_not_with_every_write() {
    let o = Origin::start();
    let cfg = one_service_config(
        &o.url(),
        "plugins:\n  - name: jwt\n    config: {anonymous: ghost}\n",
    );
    let gw = Gateway::start(&cfg);
    let warning = "anonymous consumer 'ghost' does not exist";
    let said = |gw: &Gateway| gw.stderr_text().matches(warning).count();
    assert_eq!(said(&gw), 1, "{}", gw.stderr_text());
    for name in ["c1", "c2", "c3"] {
        let r = admin_form(&gw, "POST", "/consumers", &[("username", name)]);
        assert_eq!(r.status, 201, "{r:?}");
    }
    assert_eq!(said(&gw), 1, "{}", gw.stderr_text());
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "ghost")]);
    assert_eq!(r.status, 201, "{r:?}");
    let r = admin_form(&gw, "DELETE", "/consumers/ghost", &[]);
    assert_eq!(r.status, 204, "{r:?}");
    let back = wait_for(Duration::from_secs(3), || (said(&gw) == 2).then_some(()));
    assert!(back.is_some(), "{}", gw.stderr_text());
}

/// A file that no longer loads beside the Admin API's state stops the start with a
/// message naming the Admin entity as the operator knows it, and saying what to do.
#[test]
fn a_start_refused_by_admin_state_names_the_entity_and_the_way_out() {
    let o = Origin::start();
    let mut gw = Gateway::start(&one_service_config(&o.url(), ""));
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "zed")]);
    assert_eq!(r.status, 201, "{r:?}");
    gw.kill9();
    gw.write_config(&one_service_config(
        &o.url(),
        "consumers:\n  - username: zed\n",
    ));
    let refused = gw
        .restart_same_dir(GatewayOpts::default())
        .expect_err("the start is refused");
    for expected in [
        "does not load beside",
        "consumers 'zed' (created through the Admin API)",
        "in the state file while ringway is stopped",
    ] {
        assert!(refused.contains(expected), "{expected:?} in {refused}");
    }
}
