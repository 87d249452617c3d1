//! The command line (SPEC §1, §2 validation and vault references).

mod support;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

fn write_tmp(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    fs::write(&p, text).unwrap();
    (dir, p.to_string_lossy().to_string())
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const VALID: &str = r#"_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:9/v1
    retries: 2
    connect_timeout: 1000
    read_timeout: 2000
    write_timeout: 2000
    routes:
      - name: users-api
        paths: ["/api/users", "~/api/u/(?<id>\\d+)$"]
        methods: [GET, POST]
        hosts: ["*.example.com", "api.example.*"]
        headers:
          x-version: ["v1"]
        strip_path: true
        preserve_host: false
        regex_priority: 3
  - name: orders
    url: http://127.0.0.1:9
routes:
  - name: orders-api
    service: orders
    paths: ["/orders"]
ringway:
  client_header_timeout: 5000
  keepalive_timeout: 1000
  max_request_line_bytes: 4096
  upstream_keepalive_idle_timeout: 2000
  log_level: warn
"#;

#[test]
fn check_valid_file_exits_0() {
    let (_d, p) = write_tmp("kong.yaml", VALID);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check on a valid file; stderr:\n{err}"
    );
    assert_no_panic(&err);
}

#[test]
fn check_finds_what_run_would_fail_on() {
    // Listeners that cannot all bind are errors; an access-log directory missing on this
    // machine is a warning (the file may be checked elsewhere than it runs).
    let cases = [
        (
            "  proxy_listen: [\"127.0.0.1:18080\", \"127.0.0.1:18080\"]\n",
            Some("ringway.proxy_listen[1]: 127.0.0.1:18080 overlaps ringway.proxy_listen[0]"),
        ),
        (
            "  proxy_listen: [\"0.0.0.0:18080\", \"127.0.0.1:18080 ssl\"]\n  ssl_cert: /x\n  ssl_cert_key: /y\n",
            Some("ringway.proxy_listen[1]: 127.0.0.1:18080 overlaps ringway.proxy_listen[0] (0.0.0.0:18080)"),
        ),
        (
            "  proxy_listen: [\"127.0.0.1:18080\"]\n  admin_listen: 127.0.0.1:18080\n",
            Some("ringway.admin_listen: 127.0.0.1:18080 overlaps ringway.proxy_listen[0]"),
        ),
        ("  proxy_listen: [\"127.0.0.1:18080\", \"127.0.0.1:18081\"]\n", None),
    ];
    for (node, error) in cases {
        let (_d, p) = write_tmp("kong.yaml", &format!("{VALID}{node}"));
        let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
        let err = stderr_of(&out);
        match error {
            Some(line) => {
                assert_eq!(out.status.code(), Some(78), "{node}: {err}");
                assert!(err.lines().any(|l| l.starts_with(line)), "{node}: {err}");
            }
            None => assert_eq!(out.status.code(), Some(0), "{node}: {err}"),
        }
    }
    let (_d, p) = write_tmp(
        "kong.yaml",
        &format!("{VALID}  access_log: /nonexistent-ringway-dir/access.log\n"),
    );
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: ringway.access_log: /nonexistent-ringway-dir")),
        "{err}"
    );
    let (d, p) = write_tmp("kong.yaml", "");
    let dir = d.path().display();
    std::fs::write(&p, format!("{VALID}  access_log: {dir}/\n")).unwrap();
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn check_format_version_2_1_is_valid() {
    let text = VALID.replace("\"3.0\"", "\"2.1\"");
    let (_d, p) = write_tmp("kong.yaml", &text);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr_of(&out));
}

#[test]
fn check_reports_every_problem_with_its_path() {
    let text = r#"_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    bogus_field: 1
    routes:
      - name: r1
        paths: ["nope"]
routes:
  - name: r2
    service: missing-svc
    paths: ["/x"]
ringway:
  log_level: nope
"#;
    let (_d, p) = write_tmp("kong.yaml", text);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(78),
        "check on an invalid file must exit 78; stderr:\n{err}"
    );
    assert_no_panic(&err);
    let lines = nonempty_lines(&err);
    let has = |prefix: &str, contains: &str| {
        lines
            .iter()
            .any(|l| l.trim_start().starts_with(prefix) && l.contains(contains))
    };
    let mut missing = Vec::new();
    if !has("services[0]", "bogus_field") {
        missing.push("unknown field: a line starting with `services[0]` naming `bogus_field`");
    }
    if !has("services[0].routes[0].paths[0]", "") {
        missing.push(
            "path not starting with '/': a line starting with `services[0].routes[0].paths[0]`",
        );
    }
    if !has("routes[0]", "missing-svc") {
        missing.push(
            "route to a missing service: a line starting with `routes[0]` naming `missing-svc`",
        );
    }
    if !has("ringway.log_level", "") {
        missing.push("bad log level: a line starting with `ringway.log_level`");
    }
    assert!(
        missing.is_empty(),
        "missing problem lines: {missing:#?}\nstderr:\n{err}"
    );
    assert!(
        lines.len() >= 4,
        "each problem on its own line; stderr:\n{err}"
    );
}

#[test]
fn check_unknown_plugin_is_an_error_with_path() {
    let text = r#"_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes:
      - name: r1
        paths: ["/a"]
plugins:
  - name: acl-typo
"#;
    let (_d, p) = write_tmp("kong.yaml", text);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{err}");
    assert!(
        nonempty_lines(&err)
            .iter()
            .any(|l| l.trim_start().starts_with("plugins[0].name") && l.contains("acl-typo")),
        "expected `plugins[0].name: unknown plugin 'acl-typo'`; stderr:\n{err}"
    );
}

/// A reference giving both a name and an id must name one entity with them: Kong would
/// follow the id and drop the name unread.
#[test]
fn check_refuses_a_reference_whose_name_and_id_disagree() {
    let s1 = "0b0b0b0b-0000-4000-8000-000000000001";
    let s2 = "0b0b0b0b-0000-4000-8000-000000000002";
    let gold = "0b0b0b0b-0000-4000-8000-000000000003";
    let text = format!(
        r#"_format_version: "3.0"
services:
  - {{name: s1, id: {s1}, url: "http://127.0.0.1:9"}}
  - {{name: s2, id: {s2}, url: "http://127.0.0.1:9"}}
consumer_groups:
  - {{name: gold, id: {gold}}}
  - {{name: silver}}
consumers:
  - username: a
    groups: [{{name: silver, id: {gold}}}]
routes:
  - {{name: r, paths: [/r], service: {{name: s2, id: {s1}}}}}
  - {{name: fine, paths: [/f], service: {{name: s2, id: {s2}}}}}
"#
    );
    let (_d, p) = write_tmp("kong.yaml", &text);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{err}");
    for (path, words) in [
        ("routes[0].service", "name different services"),
        ("consumers[0].groups[0]", "name different consumer groups"),
    ] {
        assert!(
            nonempty_lines(&err)
                .iter()
                .any(|l| l.trim_start().starts_with(path) && l.contains(words)),
            "expected `{path}: ... {words}`; stderr:\n{err}"
        );
    }
    assert!(
        !err.contains("routes[1]"),
        "an agreeing reference is fine: {err}"
    );
    // An id naming nothing beside a name that names a service (a file exported from a
    // database whose ids were not kept): the name decides, with a warning.
    let text = format!(
        r#"_format_version: "3.0"
services:
  - {{name: s1, url: "http://127.0.0.1:9"}}
plugins:
  - {{name: correlation-id, service: {{name: s1, id: {s2}}}}}
"#
    );
    let (_d, p) = write_tmp("kong.yaml", &text);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(
        err.contains("plugins[0].service: no service has the id"),
        "{err}"
    );
}

#[test]
fn check_missing_file_is_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("does-not-exist.yaml");
    let p = p.to_string_lossy().to_string();
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "missing file must fail; stderr:\n{err}"
    );
    assert_no_panic(&err);
    let lines = nonempty_lines(&err);
    assert_eq!(lines.len(), 1, "a one-line error; stderr:\n{err}");
    assert!(
        lines[0].contains("does-not-exist.yaml"),
        "the error names the file; stderr:\n{err}"
    );
}

#[test]
fn check_unreadable_yaml_is_one_line_error() {
    let (_d, p) = write_tmp(
        "broken.yaml",
        "_format_version: \"3.0\"\nservices: [\n  - name: {a: b\n\t:::\n",
    );
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "broken YAML must fail; stderr:\n{err}"
    );
    assert_no_panic(&err);
    assert_eq!(
        nonempty_lines(&err).len(),
        1,
        "a one-line error; stderr:\n{err}"
    );
}

#[test]
fn run_missing_file_is_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.yaml").to_string_lossy().to_string();
    let data = dir.path().join("data").to_string_lossy().to_string();
    let proxy = free_addr().to_string();
    let admin = free_addr().to_string();
    let out = run_cli(
        &[
            "run",
            "-c",
            &p,
            "--proxy-listen",
            &proxy,
            "--admin-listen",
            &admin,
            "--workers",
            "1",
            "--data-dir",
            &data,
            "--log-level",
            "warn",
        ],
        &[],
        CLI_TIMEOUT,
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "stderr:\n{err}");
    assert_no_panic(&err);
    let lines = nonempty_lines(&err);
    assert_eq!(lines.len(), 1, "a one-line error; stderr:\n{err}");
    assert!(
        lines[0].contains("nope.yaml"),
        "names the file; stderr:\n{err}"
    );
}

fn run_on_busy(port_is_proxy: bool) {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().to_string();
    let other = free_addr().to_string();
    let (proxy, admin) = if port_is_proxy {
        (busy.clone(), other)
    } else {
        (other, busy.clone())
    };
    let (d, p) = write_tmp("kong.yaml", &one_service_config("http://127.0.0.1:9", ""));
    let data = d.path().join("data").to_string_lossy().to_string();
    let start = Instant::now();
    let out = run_cli(
        &[
            "run",
            "-c",
            &p,
            "--proxy-listen",
            &proxy,
            "--admin-listen",
            &admin,
            "--workers",
            "1",
            "--data-dir",
            &data,
            "--log-level",
            "warn",
        ],
        &[],
        CLI_TIMEOUT,
    );
    let took = start.elapsed();
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "run on a busy port must fail; stderr:\n{err}"
    );
    assert!(
        took < Duration::from_secs(5),
        "must fail quickly, took {took:?}"
    );
    assert_no_panic(&err);
    // the error is one line naming the address (other warn-level lines, e.g. a driver
    // fallback notice, are tolerated)
    let naming: Vec<&str> = nonempty_lines(&err)
        .into_iter()
        .filter(|l| l.contains(&busy))
        .collect();
    assert_eq!(
        naming.len(),
        1,
        "one error line names the address {busy}; stderr:\n{err}"
    );
    drop(holder);
}

#[test]
fn run_on_busy_proxy_port_fails_fast_naming_the_address() {
    run_on_busy(true);
}

#[test]
fn run_on_busy_admin_port_fails_fast_naming_the_address() {
    run_on_busy(false);
}

#[test]
fn run_with_invalid_config_fails_without_panic() {
    let (d, p) = write_tmp("kong.yaml", "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://127.0.0.1:9\n    nonsense: true\n");
    let data = d.path().join("data").to_string_lossy().to_string();
    let proxy = free_addr().to_string();
    let admin = free_addr().to_string();
    let out = run_cli(
        &[
            "run",
            "-c",
            &p,
            "--proxy-listen",
            &proxy,
            "--admin-listen",
            &admin,
            "--workers",
            "1",
            "--data-dir",
            &data,
            "--log-level",
            "warn",
        ],
        &[],
        CLI_TIMEOUT,
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "stderr:\n{err}");
    assert_no_panic(&err);
    assert!(
        err.contains("nonsense"),
        "names the problem; stderr:\n{err}"
    );
}

/// An empty data directory would put the lock and the Admin API's state in whatever
/// directory ringway was started from.
#[test]
fn an_empty_data_dir_is_refused() {
    let (_d, p) = write_tmp("kong.yaml", VALID);
    let admin = free_addr().to_string();
    let proxy = free_addr().to_string();
    let out = run_cli(
        &[
            "run",
            "-c",
            &p,
            "--data-dir",
            "",
            "--admin-listen",
            &admin,
            "--proxy-listen",
            &proxy,
        ],
        &[],
        CLI_TIMEOUT,
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--data-dir: must not be empty"), "{err}");
    let (_d, p) = write_tmp(
        "kong.yaml",
        &VALID.replace("ringway:\n", "ringway:\n  data_dir: \"\"\n"),
    );
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("ringway.data_dir: must not be empty"), "{err}");
}

/// The configs the repository ships (the documented example, the demo, the seed
/// scenario's) are valid as they are.
#[test]
fn the_bundled_configs_pass_check() {
    for name in ["kong.example.yaml", "demo.yaml", "seed.yaml"] {
        let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = run_cli(&["check", "-c", &path], &[], CLI_TIMEOUT);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr_of(&out));
    }
}

/// The gateway's config is a regular file: a named pipe (which it would read again on
/// every SIGHUP, blocking until something wrote to it) is refused at once, on one line.
#[test]
fn run_refuses_a_config_that_is_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("kong.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = run_cli(
        &["run", "-c", &fifo.display().to_string()],
        &[],
        CLI_TIMEOUT,
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(nonempty_lines(&err).len(), 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

/// A data directory that is a file is named as such, on one line.
#[test]
fn a_data_dir_that_is_a_file_is_one_line() {
    let (d, p) = write_tmp("kong.yaml", VALID);
    let file = d.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let out = run_cli(
        &[
            "run",
            "-c",
            &p,
            "--data-dir",
            &file.display().to_string(),
            "--admin-listen",
            &free_addr().to_string(),
            "--proxy-listen",
            &free_addr().to_string(),
        ],
        &[],
        CLI_TIMEOUT,
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(nonempty_lines(&err).len(), 1, "{err}");
    assert!(err.contains("is not a directory"), "{err}");
}

/// A config file is read up to a bound: `-c /dev/zero` is a one-line error, not a
/// process that reads until memory runs out.
#[test]
fn an_endless_config_file_is_refused_at_a_bound() {
    let out = run_cli(&["check", "-c", "/dev/zero"], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert_no_panic(&err);
    let lines = nonempty_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("larger than 64 MiB"), "{err}");
}

/// A command line clap refuses (a flag's value of the wrong type, a missing argument, an
/// unknown command) is one line on stderr and exit 2, as every other error; `--version`
/// prints the version.
#[test]
fn a_usage_error_is_one_line() {
    for (args, says) in [
        (
            &["run", "-c", "x.yaml", "--workers", "abc"][..],
            "'abc' for '--workers",
        ),
        (&["check"][..], "--config <FILE>"),
        (&["frob"][..], "unrecognized subcommand 'frob'"),
        (
            &["jwt", "sign", "--ttl", "soon", "--secret", "s"][..],
            "invalid value 'soon' for '--ttl",
        ),
    ] {
        let out = run_cli(args, &[], CLI_TIMEOUT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_no_panic(&err);
        let lines = nonempty_lines(&err);
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(says), "{args:?}: {err}");
    }
    for flag in ["--version", "-V"] {
        let out = run_cli(&[flag], &[], CLI_TIMEOUT);
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ringway "), "{flag}: {text}");
    }
}

/// A bad flag value is named by the flag, not as a problem of the file, which is valid.
#[test]
fn run_with_a_bad_flag_value_names_the_flag() {
    let (d, p) = write_tmp("kong.yaml", VALID);
    let data = d.path().join("data").to_string_lossy().to_string();
    let admin = free_addr().to_string();
    let proxy = free_addr().to_string();
    for (flags, says) in [
        (["--workers", "0"], "--workers: must be between 1 and 1024"),
        (
            ["--proxy-listen", "127.0.0.1:65536"],
            "--proxy-listen 127.0.0.1:65536: ",
        ),
        (
            ["--admin-listen", "0.0.0.0:1"],
            "--admin-listen: 0.0.0.0:1 is not a loopback",
        ),
        (["--log-level", "loud"], "--log-level: unknown level 'loud'"),
    ] {
        let mut args = vec!["run", "-c", &p, "--data-dir", &data];
        if flags[0] != "--admin-listen" {
            args.extend(["--admin-listen", &admin]);
        }
        if flags[0] != "--proxy-listen" {
            args.extend(["--proxy-listen", &proxy]);
        }
        args.extend(flags);
        let out = run_cli(&args, &[], CLI_TIMEOUT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert_no_panic(&err);
        let lines = nonempty_lines(&err);
        assert_eq!(lines.len(), 1, "{flags:?}: {err}");
        assert!(
            lines[0].starts_with("ringway: invalid command line: ") && lines[0].contains(says),
            "{flags:?}: {err}"
        );
    }
}

#[test]
fn version_prints_version_and_driver() {
    let out = run_cli(&["version"], &[], CLI_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "output:\n{text}");
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "prints version {}; output:\n{text}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.contains("io_uring") || text.contains("epoll"),
        "names the driver; output:\n{text}"
    );
    // The driver line says what run would use, RINGWAY_DRIVER included.
    let out = run_cli(&["version"], &[("RINGWAY_DRIVER", "epoll")], CLI_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("driver: epoll\n"), "output:\n{text}");
}

#[test]
fn vault_env_reference_is_substituted() {
    let origin = Origin::start();
    let config = one_service_config("\"{vault://env/ringway-test-origin-url}\"", "");
    let gw = Gateway::start_with(
        &config,
        GatewayOpts::default().env("RINGWAY_TEST_ORIGIN_URL", &origin.url()),
    );
    let r = gw.get("/through-vault");
    assert_eq!(r.status, 200, "{r:?}\nstderr:\n{}", gw.stderr_text());
    assert_eq!(r.body, b"ok");
    assert_eq!(origin.requests()[0].target, "/through-vault");
}

#[test]
fn check_with_vault_reference_resolves_env() {
    let config = one_service_config("\"{vault://env/ringway-test-check-url}\"", "");
    let (_d, p) = write_tmp("kong.yaml", &config);
    let out = run_cli(
        &["check", "-c", &p],
        &[("RINGWAY_TEST_CHECK_URL", "http://127.0.0.1:9/x")],
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr_of(&out));
}

/// A host that does not resolve loads (a reload may resolve it) with one warning: printed
/// by `check` beside the OK, logged once by `run`, and its requests answered 503.
#[test]
fn unresolved_host_is_one_warning_not_an_error() {
    let config = one_service_config("http://no-such-host.invalid:8080", "");
    let warning = "service 'svc': host 'no-such-host.invalid' did not resolve";
    let (_d, p) = write_tmp("kong.yaml", &config);
    let out = run_cli(&["check", "-c", &p], &[], CLI_TIMEOUT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert_eq!(
        nonempty_lines(&err),
        [format!(
            "warning: {warning}; its requests get 503 until a reload resolves it"
        )],
        "stderr:\n{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK ("));

    let gw = Gateway::start(&config);
    let r = gw.get("/anything");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.json()["message"],
        "The upstream server is currently unavailable",
        "SPEC §3's 503 message: {r:?}"
    );
    let logged = gw.stderr_text();
    assert_eq!(logged.matches(warning).count(), 1, "stderr:\n{logged}");

    // Its plugins run first, as in Kong (which resolves after them): a limit counts
    // the 503s and then refuses, and a missing token is a 401.
    let limited = one_service_config(
        "http://no-such-host.invalid:8080",
        "plugins:\n  - name: rate-limiting\n    config: {hour: 2}\n",
    );
    let gw = Gateway::start(&limited);
    let first = gw.get("/anything");
    assert_eq!(first.status, 503, "{first:?}");
    assert_eq!(
        first.header("x-ratelimit-remaining-hour"),
        Some("1"),
        "{first:?}"
    );
    assert_eq!(gw.get("/anything").status, 503);
    assert_eq!(gw.get("/anything").status, 429);
    let guarded = one_service_config(
        "http://no-such-host.invalid:8080",
        "plugins:\n  - name: jwt\n",
    );
    let gw = Gateway::start(&guarded);
    assert_eq!(gw.get("/anything").status, 401);
}

/// A one-shot command whose output cannot be written (stdout on a full disk) says so on
/// one line and exits 74 (EX_IOERR), never with a panic.
#[test]
fn one_shot_output_that_cannot_be_written_is_an_error_not_a_panic() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kong.yaml");
    fs::write(&config, "_format_version: \"3.0\"\n").unwrap();
    let config = config.display().to_string();
    for args in [
        &["version"][..],
        &["jwt", "sign", "--key", "k", "--secret", "s"][..],
        &["check", "-c", &config][..],
    ] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(BIN)
            .args(args)
            .env_remove("RINGWAY_LOG")
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("ringway: cannot write to stdout"),
            "{args:?}: {stderr}"
        );
    }
}

/// A stderr that cannot be written changes no exit code and panics nothing: an invalid
/// config is still 78, a bad flag 2.
#[test]
fn an_unwritable_stderr_is_no_panic() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "_format_version: \"3.0\"\nservices: 5\n").unwrap();
    let bad = bad.display().to_string();
    for (args, code) in [
        (&["check", "-c", &bad][..], 78),
        (&["run", "-c", &bad][..], 78),
        (&["check", "-c", "/nonexistent/kong.yaml"][..], 78),
        (&["jwt", "sign", "--secret", "s", "--alg", "XX"][..], 2),
    ] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let status = Command::new(BIN)
            .args(args)
            .env_remove("RINGWAY_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(full))
            .status()
            .expect("run");
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
}

/// A one-shot command whose reader has gone (`ringway version | head -0`) ends quietly, as
/// Unix tools do, instead of panicking on the write.
#[test]
fn one_shot_output_to_a_closed_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    for args in [
        &["version"][..],
        &["jwt", "sign", "--key", "k", "--secret", "s"][..],
    ] {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RINGWAY_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {status:?}"
        );
    }
}

/// `jwt sign` refuses what would make a token anyone can forge or Kong refuses, or one
/// with a claim set twice.
#[test]
fn jwt_sign_refuses_an_empty_secret_and_a_second_issuer_or_expiry() {
    for (args, says) in [
        (
            &["jwt", "sign", "--secret", ""][..],
            "--secret: must not be empty",
        ),
        (
            &[
                "jwt", "sign", "--secret", "s", "--key", "k", "--claim", "iss=x",
            ][..],
            "iss is set by --key already",
        ),
        (
            &[
                "jwt", "sign", "--secret", "s", "--ttl", "60", "--claim", "exp=5",
            ][..],
            "exp is set by --ttl already",
        ),
        (
            &[
                "jwt", "sign", "--secret", "s", "--ttl", "60", "--claim", "exp:=5",
            ][..],
            "exp is set by --ttl already",
        ),
        (
            &["jwt", "sign", "--secret", "s", "--key", ""][..],
            "--key: must not be empty",
        ),
        (
            &[
                "jwt", "sign", "--secret", "s", "--claim", "a=1", "--claim", "a:=2",
            ][..],
            "a is given twice",
        ),
    ] {
        let out = run_cli(args, &[], CLI_TIMEOUT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no token printed");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
