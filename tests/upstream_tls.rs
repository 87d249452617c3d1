//! TLS to upstreams (`https` services): verification against the service's
//! `ca_certificates` or the bundled roots, `tls_verify: false`, SNI, pooled reuse.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a leaf for `localhost` signed by it.
fn make_ca_and_leaf(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=ringway test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,DNS:preserved.example\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
    );
}

/// The Python TLS origin, stopped on drop.
struct TlsOrigin {
    child: Child,
    port: u16,
}

impl TlsOrigin {
    fn start(dir: &Path) -> TlsOrigin {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tls_origin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir.join("leaf.pem"))
            .arg(dir.join("leaf.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the TLS origin did not start");
        TlsOrigin { child, port }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on the kept connection `client`; `i` names the request in a failure.
fn get_on(client: &mut Client, path: &str, i: usize) -> Response {
    client
        .send(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .unwrap();
    client
        .read_response_within(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("request {i}: {e:?}"))
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

fn config(dir: &Path, port: u16, ca_id: &str) -> String {
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    format!(
        r#"_format_version: "3.0"
ca_certificates:
- id: 7b5d4a3c-1f2e-4d6c-9a8b-000000000001
  cert: |
{ca}services:
- name: verified
  url: https://localhost:{port}
  ca_certificates: [{ca_id}]
  routes: [{{name: verified, paths: [/verified]}}]
- name: public-roots
  url: https://localhost:{port}
  routes: [{{name: public-roots, paths: [/public]}}]
- name: unverified
  url: https://localhost:{port}
  tls_verify: false
  routes: [{{name: unverified, paths: [/unverified]}}]
"#,
        ca = indent(&ca)
    )
}

/// The id `config` gives the CA it writes into `ca_certificates`.
const CA_ID: &str = "7b5d4a3c-1f2e-4d6c-9a8b-000000000001";

/// A CA and a leaf it signed, an https origin serving the leaf, and a gateway on `config`
/// (the verifying service trusting that CA); the directory and the origin live as long
/// as they are held.
fn verifying_gateway() -> (tempfile::TempDir, TlsOrigin, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let origin = TlsOrigin::start(dir.path());
    let gw = Gateway::start(&config(dir.path(), origin.port, CA_ID));
    (dir, origin, gw)
}

#[test]
fn https_services_verify_their_upstream_and_reuse_connections() {
    let (dir, _origin, gw) = verifying_gateway();

    let mut client = gw.client();
    for i in 0..3 {
        let r = get_on(&mut client, "/verified/a", i);
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.body_str(), "secure upstream /a");
        assert_eq!(
            r.header("X-Seen-SNI"),
            Some("localhost"),
            "SNI sent upstream"
        );
    }
    let status = gw.status_json();
    assert!(
        status["upstream"]["connections_reused"].as_u64().unwrap() >= 2,
        "TLS upstream connections are pooled: {status}"
    );

    // Signed by a CA the bundled roots do not know: refused, 502, at once: the service's
    // retries (5 by default) would meet the same certificate (SPEC §3).
    let retries = |gw: &Gateway| gw.status_json()["upstream"]["retries"].as_u64().unwrap();
    let before = retries(&gw);
    let r = proxy_get(&gw, "/public/a", &[]);
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert_eq!(
        r.json()["message"],
        "An invalid response was received from the upstream server"
    );
    assert_eq!(retries(&gw), before, "a refused certificate is not retried");
    let log = gw.stderr_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS to upstream"))
        .collect();
    assert_eq!(refusals.len(), 1, "one attempt, logged once: {log}");
    assert!(
        refusals[0].contains("refused: invalid peer certificate"),
        "the log names the certificate problem: {log}"
    );

    // tls_verify: false talks to it anyway.
    let r = proxy_get(&gw, "/unverified/b", &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "secure upstream /b");

    // A chain longer than tls_verify_depth is a refused certificate too: one attempt.
    let chained = tempfile::tempdir().unwrap();
    let leaf = std::fs::read_to_string(dir.path().join("leaf.pem")).unwrap();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    std::fs::write(chained.path().join("leaf.pem"), format!("{leaf}{ca}")).unwrap();
    std::fs::copy(dir.path().join("leaf.key"), chained.path().join("leaf.key")).unwrap();
    let long_chain = TlsOrigin::start(chained.path());
    let ca_pem = indent(&ca);
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nca_certificates:\n- id: 7b5d4a3c-1f2e-4d6c-9a8b-000000000001\n  cert: |\n{ca_pem}services:\n- name: shallow\n  url: https://localhost:{}\n  ca_certificates: [7b5d4a3c-1f2e-4d6c-9a8b-000000000001]\n  tls_verify_depth: 0\n  routes: [{{name: shallow, paths: [/shallow]}}]\n",
        long_chain.port
    ));
    let r = proxy_get(&gw, "/shallow/a", &[]);
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert_eq!(
        retries(&gw),
        0,
        "a chain over tls_verify_depth is not retried"
    );
    let log = gw.stderr_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("TLS to upstream"))
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("longer than tls_verify_depth"), "{log}");
}

/// A reload that changes what a CA id holds stops trusting the old CA at once:
/// connections pooled under it are not reused (they were verified against it).
#[test]
fn a_reload_that_changes_a_ca_drops_the_connections_it_verified() {
    let (_dir, origin, gw) = verifying_gateway();
    let mut client = gw.client();
    for i in 0..2 {
        let r = get_on(&mut client, "/verified/a", i);
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    // The same id now holds an unrelated CA.
    let other = tempfile::tempdir().unwrap();
    make_self_signed(other.path(), "elsewhere.test");
    gw.reload(&config(other.path(), origin.port, CA_ID));
    let r = get_on(&mut client, "/verified/b", 2);
    assert_eq!(
        r.status,
        502,
        "the upstream's certificate is no longer trusted, pooled connection or not: {}",
        r.body_str()
    );
}

#[test]
fn a_ca_certificate_reference_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    check_refuses(
        &config(dir.path(), 9, "no-such-ca"),
        &["services[0].ca_certificates[0]: no CA certificate with id 'no-such-ca'"],
    );
}

/// As Kong's loader: a CA certificate the file gives no id loads (one is made up for it);
/// nothing can name it, so it is simply unused.
#[test]
fn a_ca_certificate_without_an_id_loads() {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let (code, stderr) = check_file(&format!(
        "_format_version: \"3.0\"\nca_certificates:\n- cert: |\n{indented}"
    ));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_ca_certificate_item_holds_one_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    std::fs::write(dir.path().join("ca.pem"), format!("{ca}{ca}")).unwrap();
    check_refuses(
        &config(dir.path(), 9, CA_ID),
        &["ca_certificates[0].cert: please submit only one certificate at a time"],
    );
}

#[test]
fn a_balanced_https_service_verifies_each_target_by_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let origin = TlsOrigin::start(dir.path());
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let yaml = format!(
        r#"_format_version: "3.0"
ca_certificates:
- id: 7b5d4a3c-1f2e-4d6c-9a8b-000000000001
  cert: |
{ca}upstreams:
- name: secure.pool
  targets: [{{target: "localhost:{port}"}}]
services:
- name: balanced
  protocol: https
  host: secure.pool
  ca_certificates: [7b5d4a3c-1f2e-4d6c-9a8b-000000000001]
  routes: [{{name: balanced, paths: [/b]}}]
"#,
        ca = indent(&ca),
        port = origin.port
    );
    let gw = Gateway::start(&yaml);
    let r = proxy_get(&gw, "/b/x", &[]);
    // The certificate names `localhost`, the target's host, not the upstream's name.
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.header("X-Seen-SNI"), Some("localhost"));
}

/// With `preserve_host`, the client's host is the upstream connection's name, sent as SNI
/// and verified (Kong's `proxy_ssl_name $upstream_host`), without its port; connections
/// made for one name are not reused for another.
#[test]
fn a_preserved_host_names_the_upstream_tls_connection() {
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let origin = TlsOrigin::start(dir.path());
    let yaml = config(dir.path(), origin.port, CA_ID).replace(
        "  routes: [{name: verified, paths: [/verified]}]",
        "  routes:\n  - {name: verified, paths: [/verified]}\n  - {name: kept, paths: [/kept], preserve_host: true}",
    );
    let gw = Gateway::start(&yaml);
    let mut client = gw.client();
    let mut get = |path: &str, host: &str| {
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        client
            .read_response_within(Duration::from_secs(10))
            .unwrap()
    };
    for (path, host, sni) in [
        ("/kept/a", "Preserved.Example:8000", "preserved.example"),
        ("/kept/b", "localhost", "localhost"),
        ("/verified/c", "preserved.example", "localhost"),
        ("/kept/d", "preserved.example.", "preserved.example"),
    ] {
        let r = get(path, host);
        assert_eq!(r.status, 200, "{path} Host {host}: {}", r.body_str());
        assert_eq!(r.header("X-Seen-SNI"), Some(sni), "{path} Host {host}");
    }
    // A name the upstream's certificate does not cover is refused, as with any name.
    let r = get("/kept/e", "other.example");
    assert_eq!(r.status, 502, "{}", r.body_str());
}

/// An `https` service whose upstream speaks plain HTTP fails every attempt's handshake:
/// the 502 comes after the retries, and stderr gets one line a second for them, not one
/// per attempt.
#[test]
fn failed_upstream_handshakes_do_not_flood_the_log() {
    // A plain HTTP server's answer to anything it cannot read, at once, then a close.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in plain.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        }
    });
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: wrong\n  url: https://127.0.0.1:{port}\n  tls_verify: false\n  routes: [{{name: wrong, paths: [/]}}]\n"
    ));
    for _ in 0..2 {
        let r = proxy_get(&gw, "/x", &[]);
        assert_eq!(r.status, 502, "{}", r.body_str());
    }
    assert_eq!(
        gw.status_json()["upstream"]["retries"],
        10,
        "5 retries each"
    );
    let log = gw.stderr_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("TLS to upstream"))
        .count();
    assert_eq!(lines, 1, "12 failed handshakes, one line: {log}");
}

/// A self-signed certificate made the usual way: `openssl req -x509` marks it a CA.
fn make_self_signed(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.pem",
        ],
    );
    std::fs::copy(dir.join("leaf.pem"), dir.join("ca.pem")).unwrap();
}

#[test]
fn a_self_signed_upstream_listed_in_ca_certificates_is_trusted_for_its_name() {
    // As with Kong (OpenSSL): a CA certificate that the service trusts may be the
    // upstream's own certificate. Its name is still checked.
    for (name, want) in [("localhost", 200), ("elsewhere.test", 502)] {
        let dir = tempfile::tempdir().unwrap();
        make_self_signed(dir.path(), name);
        let origin = TlsOrigin::start(dir.path());
        let gw = Gateway::start(&config(
            dir.path(),
            origin.port,
            "7b5d4a3c-1f2e-4d6c-9a8b-000000000001",
        ));
        let r = proxy_get(&gw, "/verified/a", &[]);
        assert_eq!(r.status, want, "certificate for {name}: {}", r.body_str());
        // The same certificate is no trust anchor for a service that does not list it.
        assert_eq!(proxy_get(&gw, "/public/a", &[]).status, 502, "{name}");
    }
}

/// An https upstream that answers a large upload at its head (413) and closes without
/// reading the body: the client gets that answer, not a 502 (README: over TLS the answer
/// is read once the upstream closes), on every try.
#[test]
fn an_https_upstream_answer_before_the_body_reaches_the_client() {
    let (_dir, _origin, gw) = verifying_gateway();
    for round in 0..8 {
        let mut c = gw.client();
        let body = vec![b'x'; 8 << 20];
        let mut sender = c.conn.stream.try_clone().unwrap();
        let head = format!(
            "POST /verified/upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let upload = std::thread::spawn(move || {
            let _ = sender.write_all(head.as_bytes());
            let _ = sender.write_all(&body);
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(
            (r.status, r.body_str()),
            (413, "too large".to_owned()),
            "round {round}: {r:?}"
        );
        drop(c);
        let _ = upload.join();
    }
}

/// Kong's `/ca_certificates` endpoints (decK writes every CA with a PUT by id): a CA made
/// through the Admin API verifies a service written there too, is listed, read and
/// validated as Kong's, cannot go while a service names it, and goes once none does.
#[test]
fn ca_certificates_through_the_admin_api() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_leaf(dir.path());
    let origin = TlsOrigin::start(dir.path());
    let gw = Gateway::start("_format_version: \"3.0\"\n");
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let leaf = std::fs::read_to_string(dir.path().join("leaf.pem")).unwrap();
    let id = "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/ca_certificates/{id}"),
        &json!({"cert": ca, "tags": ["t"]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let shown = r.json();
    assert_eq!(
        (&shown["id"], &shown["tags"]),
        (&json!(id), &json!(["t"])),
        "{shown}"
    );
    assert!(
        shown["cert_digest"].as_str().is_some_and(|d| d.len() == 64),
        "{shown}"
    );
    let r = admin_json(
        &gw,
        "POST",
        "/services",
        &json!({"name": "via-ca", "url": format!("https://localhost:{}", origin.port), "ca_certificates": [id]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = admin_json(
        &gw,
        "POST",
        "/services/via-ca/routes",
        &json!({"paths": ["/via-ca"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = proxy_get(&gw, "/via-ca/a", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "secure upstream /a".to_owned()),
        "{r:?}"
    );

    let list = gw.admin_get("/ca_certificates").json();
    assert_eq!(list["data"][0]["id"], id, "{list}");
    assert_eq!(gw.admin_get(&format!("/ca_certificates/{id}")).status, 200);
    let r = admin_json(
        &gw,
        "POST",
        "/schemas/ca_certificates/validate",
        &json!({"cert": ca}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Not a CA: refused, written or validated.
    for path in ["/ca_certificates", "/schemas/ca_certificates/validate"] {
        let r = admin_json(&gw, "POST", path, &json!({"cert": leaf}));
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    let r = admin_json(
        &gw,
        "PUT",
        "/ca_certificates/not-an-id",
        &json!({"cert": ca}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // An id taken: Kong's primary key violation, before anything else is looked at.
    let r = admin_json(
        &gw,
        "POST",
        "/ca_certificates",
        &json!({"id": id, "cert": ca}),
    );
    assert_eq!((r.status, &r.json()["code"]), (400, &json!(3)), "{r:?}");
    // One entity per certificate (Kong's unique cert_digest); a PUT of its own is fine.
    let r = admin_json(&gw, "POST", "/ca_certificates", &json!({"cert": ca}));
    assert_eq!(
        (r.status, &r.json()["name"]),
        (409, &json!("unique constraint violation")),
        "{r:?}"
    );
    let r = admin_json(
        &gw,
        "PUT",
        &format!("/ca_certificates/{id}"),
        &json!({"cert": ca, "tags": ["t"]}),
    );
    assert_eq!(r.status, 200, "{r:?}");

    // Named by a service: it stays, and so does what it verifies.
    let r = admin_form(&gw, "DELETE", &format!("/ca_certificates/{id}"), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    let service = gw.admin_get("/services/via-ca").json()["id"].clone();
    assert_eq!(
        r.json(),
        json!({
            "code": 19,
            "name": "referenced by others",
            "message": format!(
                "ca certificate {id} is still referenced by services (id = {})",
                service.as_str().unwrap()
            ),
        }),
        "as Kong's CA certificates DAO"
    );
    assert_eq!(proxy_get(&gw, "/via-ca/b", &[]).status, 200);
    for path in ["/routes", "/services/via-ca"] {
        let path = if path == "/routes" {
            let routes = gw.admin_get("/routes").json();
            format!("/routes/{}", routes["data"][0]["id"].as_str().unwrap())
        } else {
            path.to_owned()
        };
        assert_eq!(admin_form(&gw, "DELETE", &path, &[]).status, 204, "{path}");
    }
    assert_eq!(
        admin_form(&gw, "DELETE", &format!("/ca_certificates/{id}"), &[]).status,
        204
    );
    assert_eq!(gw.admin_get(&format!("/ca_certificates/{id}")).status, 404);
}

/// A self-signed CA certificate valid from `start` to `end` (`YYYYMMDDHHMMSSZ`), made with
/// `openssl ca`, which (unlike `req -x509`) takes dates in the past.
fn ca_valid_between(dir: &Path, name: &str, start: &str, end: &str) -> String {
    let at = dir.join(name);
    std::fs::create_dir_all(&at).unwrap();
    std::fs::write(at.join("index.txt"), "").unwrap();
    std::fs::write(at.join("serial"), "01\n").unwrap();
    std::fs::write(
        at.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n\
         default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl(
        &at,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.csr",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    openssl(
        &at,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "ca.key",
            "-in",
            "ca.csr",
            "-startdate",
            start,
            "-enddate",
            end,
            "-out",
            "ca.pem",
        ],
    );
    std::fs::read_to_string(at.join("ca.pem")).unwrap()
}

/// A CA certificate already expired is refused when it is written (created, replaced,
/// patched or validated), as Kong refuses it; one that expires later, while the Admin
/// API holds it, stops no other write.
#[test]
fn expired_ca_certificates_are_refused_when_written_only() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let expired = ca_valid_between(dir.path(), "old", "20200101000000Z", "20200102000000Z");
    let gw = Gateway::start("_format_version: \"3.0\"\n");
    // Made once the gateway is up, so its few seconds are the test's, not the start's.
    let soon = std::process::Command::new("date")
        .args(["-u", "-d", "+3 seconds", "+%Y%m%d%H%M%SZ"])
        .output()
        .unwrap();
    let soon = String::from_utf8(soon.stdout).unwrap();
    let expiring = ca_valid_between(dir.path(), "brief", "20200101000000Z", soon.trim());
    let r = admin_json(&gw, "POST", "/ca_certificates", &json!({"cert": expiring}));
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for (method, path) in [
        ("POST", "/ca_certificates".to_owned()),
        ("POST", "/schemas/ca_certificates/validate".to_owned()),
    ] {
        let r = admin_json(&gw, method, &path, &json!({"cert": expired}));
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(
            r.json()["fields"]["cert"]
                .as_str()
                .is_some_and(|m| m.contains("expired")),
            "{r:?}"
        );
    }
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/ca_certificates/{id}"),
        &json!({"cert": expired}),
    );
    assert_eq!(r.status, 400, "PATCH to an expired one: {r:?}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    // Expired now: as Kong checks what a PATCH leaves, it takes no other change.
    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/ca_certificates/{id}"),
        &json!({"tags": ["t"]}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // Held by the Admin API: other writes go on.
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "after")]);
    assert_eq!(r.status, 201, "{r:?}");
    let r = http_request(
        gw.admin_addr(),
        "POST",
        "/config",
        &[],
        Some(("application/yaml", b"_format_version: \"3.0\"\n")),
    );
    assert_eq!(r.status, 201, "{r:?}");
}
