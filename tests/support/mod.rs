//! Shared support for ringway's black-box integration tests.
//!
//! - [`Gateway`]: the real binary (`CARGO_BIN_EXE_ringway`) on free loopback ports, with its
//!   config and stderr in a temp dir, ready once `GET /status/ready` answers 200.
//! - [`Origin`]: a scriptable upstream on std threads that counts connections and records
//!   every request it received (raw bytes and parsed).
//! - [`Client`]: a raw TCP HTTP/1.1 client that reads one response at a time with a deadline
//!   and can tell whether the server closed the connection afterwards.
//!
//! Everything runs on 127.0.0.1; every blocking read has a deadline.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringway");

/// Deadline for responses on the success path (generous: the machine may be loaded).
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// How long to wait for a server to close a connection when we expect it to.
pub const CLOSE_DEADLINE: Duration = Duration::from_millis(1500);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const ORIGIN_IDLE: Duration = Duration::from_secs(30);
const ORIGIN_HEAD_DEADLINE: Duration = Duration::from_secs(10);
const ORIGIN_BODY_DEADLINE: Duration = Duration::from_secs(60);
const MAX_HEAD_BYTES: usize = 1 << 20;
const RAW_LOG_CAP: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// ports

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, drop the listener).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------
// gateway process

/// Options for starting a [`Gateway`].
#[derive(Clone, Debug)]
pub struct GatewayOpts {
    pub workers: usize,
    pub env: Vec<(String, String)>,
    pub log_level: String,
    pub extra_args: Vec<String>,
    pub ready_timeout: Duration,
}

impl Default for GatewayOpts {
    fn default() -> Self {
        GatewayOpts {
            workers: 1,
            env: Vec::new(),
            log_level: "warn".to_string(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl GatewayOpts {
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

/// A running `ringway run` process. Killed on drop.
pub struct Gateway {
    dir: tempfile::TempDir,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    proxy: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    stderr_path: PathBuf,
}

impl Gateway {
    /// Starts the gateway with `config` (YAML text), 1 worker, and waits until ready.
    pub fn start(config: &str) -> Gateway {
        Self::start_with(config, GatewayOpts::default())
    }

    pub fn start_with(config: &str, opts: GatewayOpts) -> Gateway {
        match Self::try_start_with(config, opts) {
            Ok(g) => g,
            Err(e) => panic!("gateway did not start: {e}"),
        }
    }

    /// Starts the gateway; retries with new ports (up to 3 attempts) when the process exits
    /// before it is ready (e.g. a port race).
    pub fn try_start_with(config: &str, opts: GatewayOpts) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let config_path = dir.path().join("kong.yaml");
        fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let data_dir = dir.path().join("data");
        fs::create_dir_all(&data_dir).map_err(|e| format!("data dir: {e}"))?;
        let (child, proxy, admin, stderr_path) =
            spawn_ready(dir.path(), &config_path, &data_dir, "start", &opts)?;
        Ok(Gateway {
            dir,
            child: Some(child),
            exit: None,
            proxy,
            admin,
            config_path,
            stderr_path,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Replaces the config file atomically (write + rename), for SIGHUP tests.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join("kong.yaml.tmp");
        fs::write(&tmp, yaml).expect("write tmp config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Rewrites the config file, sends SIGHUP and waits until `/status` shows the new
    /// hash.
    pub fn reload(&self, yaml: &str) {
        let before = self.status_json()["configuration_hash"].clone();
        self.write_config(yaml);
        self.send_signal("HUP");
        let changed = wait_for(Duration::from_secs(10), || {
            let now = self.status_json()["configuration_hash"].clone();
            (now != before).then_some(())
        });
        assert!(
            changed.is_some(),
            "the reload was not applied (configuration_hash unchanged 10 s after SIGHUP); stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`, `KILL`) with `kill(1)`.
    pub fn send_signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(pid != 0, "no child process");
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exit {
            return Some(st);
        }
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.exit = Some(st);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(st))) => {
                self.exit = Some(st);
                false
            }
            _ => false,
        }
    }

    /// A new raw client connected to the proxy listener.
    pub fn client(&self) -> Client {
        Client::connect(self.proxy)
    }

    /// One GET on a fresh connection to the proxy.
    pub fn get(&self, path: &str) -> Response {
        let mut c = self.client();
        c.roundtrip(&get_req(path, "test.local"))
    }

    /// One GET on a fresh connection to the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        let mut c = Client::connect(self.admin);
        c.roundtrip(&get_req(path, "localhost"))
    }

    /// `GET /status` parsed as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.admin_get("/status");
        assert_eq!(r.status, 200, "GET /status: {}", r.body_str());
        r.json()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Status code of a one-shot GET, or None on any failure (short timeouts).
pub fn probe_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut c = Client::try_connect_timeout(addr, Duration::from_millis(500)).ok()?;
    c.send(&get_req(path, "localhost")).ok()?;
    c.read_response_within(Duration::from_millis(1000))
        .ok()
        .map(|r| r.status)
}

/// `ringway ARGS...` run to completion with a deadline; returns its output (killed and
/// reported as a panic when it outlives `timeout`).
pub fn run_cli(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RINGWAY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            fs::File::create(&out_path).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            fs::File::create(&err_path).expect("stderr file"),
        ));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ringway");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`ringway {}` still running after {:?}; stderr:\n{}",
                args.join(" "),
                timeout,
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// `ringway check` refuses `yaml` (exit 78) and says each of `expected` (a part of a
/// line); returns its stderr for further checks.
pub fn check_refuses(yaml: &str, expected: &[&str]) -> String {
    let (code, stderr) = check_file(yaml);
    assert_eq!(code, Some(78), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "missing {part:?} in:\n{stderr}");
    }
    stderr
}

/// `ringway check -c FILE` on `yaml` written to a fresh temp file: (exit code, stderr).
pub fn check_file(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kong.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = run_cli(
        &["check", "-c", p.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_no_panic(&err);
    (out.status.code(), err)
}

pub fn assert_no_panic(stderr: &str) {
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("panicked")
            && !lower.contains("stack backtrace")
            && !lower.contains("rust_backtrace"),
        "stderr shows a panic or backtrace:\n{stderr}"
    );
}

/// Asserts an Admin API 400 whose field error on `field` contains `needle` (Kong's
/// `{"fields": {FIELD: "..."}}`).
pub fn assert_field_error(r: &Response, field: &str, needle: &str) {
    assert_eq!(r.status, 400, "{field}: {r:?}");
    let j = r.json();
    assert!(
        j["fields"][field]
            .as_str()
            .is_some_and(|m| m.contains(needle)),
        "{field} should say '{needle}': {j}"
    );
}

/// The non-empty lines of a text.
pub fn nonempty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------------------
// config helpers

/// A config with one service at `url` and one catch-all route `/`, plus `extra` appended
/// verbatim (e.g. a `ringway:` section).
pub fn one_service_config(url: &str, extra: &str) -> String {
    format!(
        "_format_version: \"3.0\"\n\
         services:\n\
         \x20 - name: svc\n\
         \x20   url: {url}\n\
         \x20   routes:\n\
         \x20     - name: all\n\
         \x20       paths: [\"/\"]\n\
         {extra}"
    )
}

// ---------------------------------------------------------------------------------------
// buffered connection (shared by Client and Origin)

/// A TcpStream with a read buffer and deadline-based reads.
pub struct BufConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    stop: Option<Arc<AtomicBool>>,
    on_read: Option<ReadHook>,
}

/// Called with every chunk of bytes read (the origin's byte counter and raw log).
type ReadHook = Box<dyn FnMut(&[u8]) + Send>;

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl BufConn {
    pub fn new(stream: TcpStream) -> BufConn {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        BufConn {
            stream,
            buf: Vec::new(),
            pos: 0,
            stop: None,
            on_read: None,
        }
    }

    pub fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        assert!(self.pos <= self.buf.len());
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        v
    }

    /// Reads more bytes into the buffer. Ok(0) is EOF; a passed deadline is `TimedOut`.
    pub fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out());
            }
            if let Some(stop) = &self.stop {
                if stop.load(Ordering::SeqCst) {
                    return Err(io::Error::other("stopped"));
                }
            }
            let mut slice = deadline - now;
            if self.stop.is_some() {
                slice = slice.min(Duration::from_millis(200));
            }
            self.stream
                .set_read_timeout(Some(slice.max(Duration::from_millis(1))))?;
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    if n > 0 {
                        if let Some(f) = self.on_read.as_mut() {
                            f(&tmp[..n]);
                        }
                        self.buf.extend_from_slice(&tmp[..n]);
                    }
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a head up to and including the blank line. Ok(None) on clean EOF before any
    /// byte. `first_byte_deadline` bounds the wait for the first byte, `deadline` the rest.
    pub fn read_head(
        &mut self,
        first_byte_deadline: Instant,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0usize;
        loop {
            let avail = self.available();
            let from = searched.saturating_sub(3);
            if let Some(i) = find(&avail[from..], b"\r\n\r\n") {
                return Ok(Some(self.take(from + i + 4)));
            }
            searched = avail.len();
            if searched > MAX_HEAD_BYTES {
                return Err(invalid("head too large"));
            }
            let dl = if searched == 0 {
                first_byte_deadline
            } else {
                deadline
            };
            if self.fill(dl)? == 0 {
                if self.available().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside head",
                ));
            }
        }
    }

    /// Reads one CRLF-terminated line (strict: a bare LF or CR is an error); returns it
    /// without the CRLF.
    pub fn read_line(&mut self, deadline: Instant, max: usize) -> io::Result<Vec<u8>> {
        loop {
            let avail = self.available();
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                if i == 0 || avail[i - 1] != b'\r' {
                    return Err(invalid("bare LF in line"));
                }
                if avail[..i - 1].contains(&b'\r') {
                    return Err(invalid("bare CR in line"));
                }
                let line = avail[..i - 1].to_vec();
                self.consume(i + 1);
                return Ok(line);
            }
            if avail.len() > max {
                return Err(invalid("line too long"));
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside line",
                ));
            }
        }
    }

    /// Appends exactly `n` bytes to `out`.
    pub fn read_exact_into(
        &mut self,
        mut n: usize,
        out: &mut Vec<u8>,
        deadline: Instant,
    ) -> io::Result<()> {
        while n > 0 {
            if self.available().is_empty() && self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {n} bytes missing"),
                ));
            }
            let k = n.min(self.available().len());
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k;
        }
        Ok(())
    }

    /// Appends everything up to EOF to `out`.
    pub fn read_to_eof(&mut self, out: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
        loop {
            let k = self.available().len();
            out.extend_from_slice(&self.buf[self.pos..]);
            self.pos += k;
            if self.fill(deadline)? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads a chunked body strictly (RFC 9112 §7.1): decoded data into `out`, the raw
    /// framing into `raw`; returns the trailer fields.
    pub fn read_chunked(
        &mut self,
        out: &mut Vec<u8>,
        raw: &mut Vec<u8>,
        deadline: Instant,
    ) -> io::Result<Vec<(String, String)>> {
        loop {
            let line = self.read_line(deadline, 4096)?;
            raw.extend_from_slice(&line);
            raw.extend_from_slice(b"\r\n");
            let size_part = match line.iter().position(|&b| b == b';') {
                Some(i) => {
                    let ext = &line[i + 1..];
                    if ext.is_empty() || ext.iter().any(|&b| b < 0x20 || b == 0x7f) {
                        return Err(invalid("bad chunk extension"));
                    }
                    &line[..i]
                }
                None => &line[..],
            };
            if size_part.is_empty()
                || size_part.len() > 15
                || !size_part.iter().all(|b| b.is_ascii_hexdigit())
            {
                return Err(invalid(format!(
                    "bad chunk size {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
            let size = usize::from_str_radix(std::str::from_utf8(size_part).unwrap(), 16)
                .map_err(|_| invalid("chunk size"))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let t = self.read_line(deadline, 16384)?;
                    raw.extend_from_slice(&t);
                    raw.extend_from_slice(b"\r\n");
                    if t.is_empty() {
                        return Ok(trailers);
                    }
                    let s = String::from_utf8_lossy(&t).to_string();
                    match s.split_once(':') {
                        Some((k, v))
                            if !k.is_empty() && !k.ends_with(' ') && !k.starts_with(' ') =>
                        {
                            trailers.push((k.to_string(), v.trim().to_string()))
                        }
                        _ => return Err(invalid("bad trailer line")),
                    }
                }
            }
            let before = out.len();
            self.read_exact_into(size, out, deadline)?;
            raw.extend_from_slice(&out[before..]);
            let mut crlf = Vec::new();
            self.read_exact_into(2, &mut crlf, deadline)?;
            raw.extend_from_slice(&crlf);
            if crlf != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)?;
        self.stream.flush()
    }
}

// ---------------------------------------------------------------------------------------
// parsed heads

fn parse_header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) => headers.push((k.to_string(), v.trim().to_string())),
            None => headers.push((line.to_string(), String::new())),
        }
    }
    headers
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn headers_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers_all(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .rfind(|s| !s.is_empty())
        .map(|s| s == "chunked")
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// raw client

/// A response read by [`Client`].
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub chunked: bool,
    pub head_raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        headers_all(&self.headers, name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_str()))
    }
    /// `X-Origin-Conn` set by the test origin's default reply.
    pub fn origin_conn(&self) -> Option<usize> {
        self.header("x-origin-conn").and_then(|v| v.parse().ok())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).to_string();
        write!(
            f,
            "{}{}({} body bytes) {:?}",
            String::from_utf8_lossy(&self.head_raw),
            if self.chunked { "[chunked] " } else { "" },
            self.body.len(),
            body
        )
    }
}

/// Why reading a response failed.
pub enum ReadErr {
    /// The deadline passed; what had arrived so far.
    Timeout(Vec<u8>),
    /// EOF before a complete response; what had arrived so far.
    Closed(Vec<u8>),
    /// The connection was reset (or another I/O error) before a complete response.
    Io(io::ErrorKind, Vec<u8>),
    /// The bytes are not a valid HTTP/1.1 response.
    Malformed(String, Vec<u8>),
}

impl ReadErr {
    pub fn received(&self) -> &[u8] {
        match self {
            ReadErr::Timeout(b)
            | ReadErr::Closed(b)
            | ReadErr::Io(_, b)
            | ReadErr::Malformed(_, b) => b,
        }
    }
}

impl fmt::Debug for ReadErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(400)]).to_string();
        match self {
            ReadErr::Timeout(b) => write!(f, "Timeout (received {} bytes: {:?})", b.len(), show(b)),
            ReadErr::Closed(b) => write!(
                f,
                "Closed before a complete response (received {} bytes: {:?})",
                b.len(),
                show(b)
            ),
            ReadErr::Io(k, b) => write!(
                f,
                "I/O error {k:?} (received {} bytes: {:?})",
                b.len(),
                show(b)
            ),
            ReadErr::Malformed(m, b) => {
                write!(f, "Malformed response: {m} (received: {:?})", show(b))
            }
        }
    }
}

/// What a connection did when we waited for it to close.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseState {
    /// EOF or reset.
    Closed,
    /// Still open at the deadline.
    Open,
    /// It sent more bytes instead.
    Data(Vec<u8>),
}

/// A raw HTTP/1.1 client.
pub struct Client {
    pub conn: BufConn,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        Self::try_connect_timeout(addr, CONNECT_TIMEOUT)
    }

    pub fn try_connect_timeout(addr: SocketAddr, t: Duration) -> io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, t)?;
        Ok(Client {
            conn: BufConn::new(s),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.conn.stream.local_addr().expect("local_addr")
    }

    /// Writes all bytes (errors returned, e.g. when the server already closed).
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.write_all(data)
    }

    /// Writes bytes one slice at a time with a pause in between (for trickle tests).
    pub fn send_slowly(&mut self, data: &[u8], step: usize, pause: Duration) -> io::Result<()> {
        for chunk in data.chunks(step.max(1)) {
            self.send(chunk)?;
            thread::sleep(pause);
        }
        Ok(())
    }

    pub fn shutdown_write(&self) {
        let _ = self.conn.stream.shutdown(Shutdown::Write);
    }

    /// Reads one response (not to a HEAD request) within [`RESPONSE_DEADLINE`].
    pub fn read_response(&mut self) -> Result<Response, ReadErr> {
        self.read_response_ext(false, RESPONSE_DEADLINE)
    }

    pub fn read_response_within(&mut self, t: Duration) -> Result<Response, ReadErr> {
        self.read_response_ext(false, t)
    }

    /// Reads one response to a HEAD request (no body whatever the headers say).
    pub fn read_head_response(&mut self) -> Result<Response, ReadErr> {
        self.read_response_ext(true, RESPONSE_DEADLINE)
    }

    /// Reads one response. Interim 1xx responses are returned as responses of their own.
    pub fn read_response_ext(
        &mut self,
        head_request: bool,
        t: Duration,
    ) -> Result<Response, ReadErr> {
        let deadline = Instant::now() + t;
        let mut got: Vec<u8> = Vec::new();
        let conv = |e: io::Error, got: &[u8]| -> ReadErr {
            match e.kind() {
                io::ErrorKind::TimedOut => ReadErr::Timeout(got.to_vec()),
                io::ErrorKind::UnexpectedEof => ReadErr::Closed(got.to_vec()),
                io::ErrorKind::InvalidData => ReadErr::Malformed(e.to_string(), got.to_vec()),
                k => ReadErr::Io(k, got.to_vec()),
            }
        };
        let head = match self.conn.read_head(deadline, deadline) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(ReadErr::Closed(Vec::new())),
            Err(e) => {
                let partial = self.conn.available().to_vec();
                return Err(conv(e, &partial));
            }
        };
        got.extend_from_slice(&head);
        let text = String::from_utf8_lossy(&head[..head.len() - 4]).to_string();
        if text.contains('\n')
            && text
                .split("\r\n")
                .any(|l| l.contains('\n') || l.contains('\r'))
        {
            return Err(ReadErr::Malformed(
                "bare CR or LF in response head".into(),
                got,
            ));
        }
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 =
            match parts
                .next()
                .and_then(|s| if s.len() == 3 { s.parse().ok() } else { None })
            {
                Some(s) => s,
                None => {
                    return Err(ReadErr::Malformed(
                        format!("bad status line {status_line:?}"),
                        got,
                    ))
                }
            };
        if !version.starts_with("HTTP/1.") {
            return Err(ReadErr::Malformed(
                format!("bad version {status_line:?}"),
                got,
            ));
        }
        let reason = parts.next().unwrap_or("").to_string();
        let headers = parse_header_lines(lines);
        let mut resp = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            chunked: false,
            head_raw: head,
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let mut body = Vec::new();
        if is_chunked(&resp.headers) {
            resp.chunked = true;
            let mut raw = Vec::new();
            match self.conn.read_chunked(&mut body, &mut raw, deadline) {
                Ok(tr) => resp.trailers = tr,
                Err(e) => {
                    got.extend_from_slice(&raw);
                    return Err(conv(e, &got));
                }
            }
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = match cl.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    return Err(ReadErr::Malformed(
                        format!("bad Content-Length {cl:?}"),
                        got,
                    ))
                }
            };
            if let Err(e) = self.conn.read_exact_into(n, &mut body, deadline) {
                got.extend_from_slice(&body);
                return Err(conv(e, &got));
            }
        } else if let Err(e) = self.conn.read_to_eof(&mut body, deadline) {
            got.extend_from_slice(&body);
            return Err(conv(e, &got));
        }
        resp.body = body;
        Ok(resp)
    }

    /// Sends `req` and reads the response; panics with context on failure.
    pub fn roundtrip(&mut self, req: &[u8]) -> Response {
        self.send(req).unwrap_or_else(|e| {
            panic!(
                "send failed: {e}; request {:?}",
                String::from_utf8_lossy(req)
            )
        });
        let head = req.starts_with(b"HEAD ");
        self.read_response_ext(head, RESPONSE_DEADLINE)
            .unwrap_or_else(|e| {
                panic!(
                    "no response: {e:?}; request {:?}",
                    String::from_utf8_lossy(&req[..req.len().min(300)])
                )
            })
    }

    /// Waits up to `t` for the server to close the connection.
    pub fn wait_close(&mut self, t: Duration) -> CloseState {
        if !self.conn.available().is_empty() {
            let d = self.conn.available().to_vec();
            let k = d.len();
            self.conn.consume(k);
            return CloseState::Data(d);
        }
        match self.conn.fill(Instant::now() + t) {
            Ok(0) => CloseState::Closed,
            Ok(_) => {
                let d = self.conn.available().to_vec();
                let k = d.len();
                self.conn.consume(k);
                CloseState::Data(d)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => CloseState::Open,
            Err(_) => CloseState::Closed,
        }
    }

    /// True when the server closed the connection within `t` (and sent nothing more).
    pub fn closed_within(&mut self, t: Duration) -> bool {
        self.wait_close(t) == CloseState::Closed
    }
}

/// `GET path HTTP/1.1` with a Host header.
pub fn get_req(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A request with a Content-Length body.
pub fn req_with_body(method: &str, path: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Deterministic test data: byte i is `i % 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    let base: Vec<u8> = (0..251u32).map(|i| i as u8).collect();
    let mut v = Vec::with_capacity(len + 251);
    while v.len() < len {
        v.extend_from_slice(&base);
    }
    v.truncate(len);
    v
}

/// FNV-1a 64 of a byte string (a cheap checksum for large bodies).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// test origin

/// A request as the origin received it.
#[derive(Clone)]
pub struct Recorded {
    /// Connection number (1-based, in accept order).
    pub conn: usize,
    /// Index of this request on its connection (0-based).
    pub conn_req: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub head_raw: Vec<u8>,
    /// Chunked body framing bytes as received (empty for Content-Length bodies: see `body`).
    pub body_raw: Vec<u8>,
    /// Decoded body.
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// True once the whole request (head and correctly framed body) arrived.
    pub complete: bool,
    /// Why the body could not be read, if it could not.
    pub error: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        headers_all(&self.headers, name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// Path part of the target (no query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

impl fmt::Debug for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{}.{} complete={} {:?} +{} body bytes{}",
            self.conn,
            self.conn_req,
            self.complete,
            String::from_utf8_lossy(&self.head_raw),
            self.body.len(),
            self.error
                .as_ref()
                .map(|e| format!(" error={e}"))
                .unwrap_or_default()
        )
    }
}

/// What the origin does after it has read a complete request.
pub enum Action {
    /// The default reply: 200, body `ok`, `X-Origin-Conn`, `X-Origin-Target`, `X-Origin-Method`.
    Ok,
    /// 200 whose body is the raw request head followed by the decoded body.
    Echo,
    /// Write these bytes, keep the connection.
    Respond(Vec<u8>),
    /// Write these bytes, then close.
    RespondClose(Vec<u8>),
    /// Write the head, then `n` bytes of [`pattern`] as the body, keep the connection.
    Pattern { head: String, n: usize },
    /// Close without answering.
    Close,
    /// Never answer; keep the connection open until the peer closes or the origin stops.
    Silent,
    /// Wait, then do the inner action.
    Delay(Duration, Box<Action>),
}

/// What the handler sees.
pub struct Ctx<'a> {
    pub conn: usize,
    pub conn_req: usize,
    /// Global request index (0-based, in arrival order).
    pub index: usize,
    pub req: &'a Recorded,
}

pub type Handler = Arc<dyn Fn(&Ctx) -> Action + Send + Sync>;

/// Origin options.
#[derive(Clone, Copy, Debug, Default)]
pub struct OriginOpts {
    /// Close a keep-alive connection when no new request starts within this time.
    pub idle_close: Option<Duration>,
    /// Do not send `100 Continue` on `Expect: 100-continue`.
    pub no_continue: bool,
}

struct OriginState {
    conns: AtomicUsize,
    closed: AtomicUsize,
    closed_ids: Mutex<Vec<usize>>,
    bytes: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    raw: Mutex<Vec<(usize, Vec<u8>)>>,
    script: Mutex<VecDeque<Action>>,
    handler: Handler,
    opts: OriginOpts,
    stop: Arc<AtomicBool>,
}

/// A scriptable test upstream on 127.0.0.1:0.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

/// The default 200 reply.
pub fn ok_reply(conn: usize, req: &Recorded) -> Vec<u8> {
    let body = "ok";
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Origin-Conn: {}\r\nX-Origin-Target: {}\r\nX-Origin-Method: {}\r\n\r\n{}",
        body.len(),
        conn,
        req.target,
        req.method,
        body
    )
    .into_bytes()
}

/// 200 with the request echoed in the body (raw head, then the decoded body).
pub fn echo_reply(conn: usize, req: &Recorded) -> Vec<u8> {
    let mut body = req.head_raw.clone();
    body.extend_from_slice(&req.body);
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Origin-Conn: {}\r\nX-Origin-Target: {}\r\n\r\n",
        body.len(),
        conn,
        req.target
    )
    .into_bytes();
    v.extend_from_slice(&body);
    v
}

impl Origin {
    /// Default behaviour: [`Action::Ok`] for every request.
    pub fn start() -> Origin {
        Self::with_handler(|_| Action::Ok)
    }

    pub fn echo() -> Origin {
        Self::with_handler(|_| Action::Echo)
    }

    /// Always answers with these raw bytes (keeping the connection).
    pub fn raw(bytes: &[u8]) -> Origin {
        let b = bytes.to_vec();
        Self::with_handler(move |_| Action::Respond(b.clone()))
    }

    /// The i-th request (global order) gets the i-th action; later ones get [`Action::Ok`].
    pub fn script(actions: Vec<Action>) -> Origin {
        let o = Self::start();
        *o.state.script.lock().unwrap() = actions.into();
        o
    }

    pub fn with_handler(f: impl Fn(&Ctx) -> Action + Send + Sync + 'static) -> Origin {
        Self::with_opts(OriginOpts::default(), f)
    }

    pub fn with_opts(
        opts: OriginOpts,
        f: impl Fn(&Ctx) -> Action + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("origin bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            conns: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            closed_ids: Mutex::new(Vec::new()),
            bytes: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            handler: Arc::new(f),
            opts,
            stop: Arc::new(AtomicBool::new(false)),
        });
        let st = state.clone();
        let accept_thread = thread::spawn(move || {
            for s in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let s = match s {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let id = st.conns.fetch_add(1, Ordering::SeqCst) + 1;
                let st2 = st.clone();
                thread::spawn(move || {
                    serve_conn(s, id, &st2);
                    st2.closed_ids.lock().unwrap().push(id);
                    st2.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Origin {
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.conns.load(Ordering::SeqCst)
    }
    /// Connections that have ended.
    pub fn closed_connections(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }
    /// True once the origin's side of connection `id` has ended.
    pub fn is_closed(&self, id: usize) -> bool {
        self.state.closed_ids.lock().unwrap().contains(&id)
    }
    /// Bytes received over all connections.
    pub fn bytes_received(&self) -> usize {
        self.state.bytes.load(Ordering::SeqCst)
    }
    /// Everything received, per connection (first 1 MiB of each), in accept order.
    pub fn raw_received(&self) -> Vec<(usize, Vec<u8>)> {
        let mut v = self.state.raw.lock().unwrap().clone();
        v.sort_by_key(|(c, _)| *c);
        v
    }
    /// Every request whose head arrived (complete or not), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
    pub fn complete_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.complete).collect()
    }
    /// Waits until at least `n` request heads arrived.
    pub fn wait_requests(&self, n: usize, t: Duration) -> Vec<Recorded> {
        wait_for(t, || {
            let r = self.requests();
            if r.len() >= n {
                Some(r)
            } else {
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "origin saw {} requests, wanted {n}: {:?}",
                self.requests().len(),
                self.requests()
            )
        })
    }
    /// Waits until at least `n` complete requests arrived.
    pub fn wait_complete(&self, n: usize, t: Duration) -> Vec<Recorded> {
        wait_for(t, || {
            let r = self.complete_requests();
            if r.len() >= n {
                Some(r)
            } else {
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "origin saw {} complete requests, wanted {n}: {:?}",
                self.complete_requests().len(),
                self.requests()
            )
        })
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // wake the accept loop
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_conn(stream: TcpStream, id: usize, st: &Arc<OriginState>) {
    let raw_idx = {
        let mut raw = st.raw.lock().unwrap();
        raw.push((id, Vec::new()));
        raw.len() - 1
    };
    let mut conn = BufConn::new(stream);
    conn.stop = Some(st.stop.clone());
    {
        let st2 = st.clone();
        conn.on_read = Some(Box::new(move |b: &[u8]| {
            st2.bytes.fetch_add(b.len(), Ordering::SeqCst);
            let mut raw = st2.raw.lock().unwrap();
            let v = &mut raw[raw_idx].1;
            let room = RAW_LOG_CAP.saturating_sub(v.len());
            v.extend_from_slice(&b[..b.len().min(room)]);
        }));
    }
    let mut conn_req = 0usize;
    loop {
        let now = Instant::now();
        let first = match (conn_req, st.opts.idle_close) {
            (n, Some(idle)) if n > 0 => now + idle,
            _ => now + ORIGIN_IDLE,
        };
        let head = match conn.read_head(first, now + ORIGIN_HEAD_DEADLINE.max(first - now)) {
            Ok(Some(h)) => h,
            _ => break,
        };
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let rl = lines.next().unwrap_or("");
        let mut parts = rl.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let headers = parse_header_lines(lines);
        let mut rec = Recorded {
            conn: id,
            conn_req,
            method,
            target,
            version,
            headers,
            head_raw: head,
            body_raw: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            complete: false,
            error: None,
        };
        let index = {
            let mut reqs = st.requests.lock().unwrap();
            reqs.push(rec.clone());
            reqs.len() - 1
        };
        if !st.opts.no_continue
            && rec
                .header("expect")
                .map(|v| v.eq_ignore_ascii_case("100-continue"))
                .unwrap_or(false)
            && conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            break;
        }
        // body
        let deadline = Instant::now() + ORIGIN_BODY_DEADLINE;
        let res: io::Result<()> = if is_chunked(&rec.headers) {
            let mut body = Vec::new();
            let mut raw = Vec::new();
            let r = conn.read_chunked(&mut body, &mut raw, deadline);
            rec.body = body;
            rec.body_raw = raw;
            r.map(|t| rec.trailers = t)
        } else if !rec.header_all("transfer-encoding").is_empty() {
            Err(invalid("transfer-encoding without final chunked"))
        } else if let Some(cl) = rec.header("content-length") {
            match cl.parse::<usize>() {
                Ok(n) if rec.header_all("content-length").len() == 1 => {
                    let mut body = Vec::new();
                    let r = conn.read_exact_into(n, &mut body, deadline);
                    rec.body = body;
                    r
                }
                _ => Err(invalid(format!("bad Content-Length {cl:?}"))),
            }
        } else {
            Ok(())
        };
        if let Err(e) = res {
            rec.error = Some(e.to_string());
            st.requests.lock().unwrap()[index] = rec;
            break;
        }
        rec.complete = true;
        st.requests.lock().unwrap()[index] = rec.clone();
        let scripted = st.script.lock().unwrap().pop_front();
        let action = match scripted {
            Some(a) => a,
            None => (st.handler)(&Ctx {
                conn: id,
                conn_req,
                index,
                req: &rec,
            }),
        };
        if !perform(&mut conn, action, id, &rec, st) {
            break;
        }
        conn_req += 1;
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
}

/// Carries out an action; false when the connection must end.
fn perform(
    conn: &mut BufConn,
    action: Action,
    id: usize,
    rec: &Recorded,
    st: &Arc<OriginState>,
) -> bool {
    match action {
        Action::Ok => conn.write_all(&ok_reply(id, rec)).is_ok(),
        Action::Echo => conn.write_all(&echo_reply(id, rec)).is_ok(),
        Action::Respond(b) => conn.write_all(&b).is_ok(),
        Action::RespondClose(b) => {
            let _ = conn.write_all(&b);
            false
        }
        Action::Pattern { head, n } => {
            if conn.write_all(head.as_bytes()).is_err() {
                return false;
            }
            let block = pattern(251 * 1024);
            let mut sent = 0usize;
            while sent < n {
                // keep the pattern continuous across blocks: block length is a multiple of 251
                let k = (n - sent).min(block.len());
                if conn.stream.write_all(&block[..k]).is_err() {
                    return false;
                }
                sent += k;
            }
            true
        }
        Action::Close => false,
        Action::Silent => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match conn.fill(deadline) {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {
                        let k = conn.available().len();
                        conn.consume(k);
                    }
                }
            }
        }
        Action::Delay(d, inner) => {
            let end = Instant::now() + d;
            while Instant::now() < end {
                if st.stop.load(Ordering::SeqCst) {
                    return false;
                }
                thread::sleep(
                    Duration::from_millis(10).min(end.saturating_duration_since(Instant::now())),
                );
            }
            perform(conn, *inner, id, rec, st)
        }
    }
}

/// A free port with nothing listening on it (for connect-refused tests).
pub fn closed_port() -> u16 {
    // Bound but never listening, and held for the life of the test process: a connect is
    // refused, and no other test's listener (nor any other process) can take the port, as
    // it could a port merely free a moment ago.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local_addr")
        .port();
    std::mem::forget(socket);
    port
}

/// Spawns a thread that runs `f` and returns its handle (sugar for concurrent client work).
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::spawn(f)
}

/// Reads a file to string, empty when missing.
pub fn read_file(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Admin API, restarts and JWT tokens (added for tests/jwt.rs and tests/admin.rs)

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One HTTP/1.1 request on a fresh connection: `method path` with extra headers and an
/// optional `(content type, body)`; the body (when given) is sent with Content-Length.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut bytes = match body {
        Some((ct, b)) => {
            req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut v = req.into_bytes();
            v.extend_from_slice(b);
            v
        }
        None => {
            if matches!(method, "POST" | "PUT" | "PATCH") {
                req.push_str("Content-Length: 0\r\n");
            }
            req.push_str("\r\n");
            req.into_bytes()
        }
    };
    let mut c = Client::connect(addr);
    let head = method == "HEAD";
    c.send(&bytes)
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    bytes.clear();
    c.read_response_ext(head, RESPONSE_DEADLINE)
        .unwrap_or_else(|e| panic!("no response to {method} {path}: {e:?}"))
}

/// An Admin API call with a form-encoded body (no body when `form` is empty and the method
/// is GET or DELETE).
pub fn admin_form(gw: &Gateway, method: &str, path: &str, form: &[(&str, &str)]) -> Response {
    let body = form_encode(form);
    if form.is_empty() && matches!(method, "GET" | "DELETE") {
        http_request(gw.admin_addr(), method, path, &[], None)
    } else {
        http_request(
            gw.admin_addr(),
            method,
            path,
            &[],
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
    }
}

/// An Admin API call with a JSON body.
pub fn admin_json(gw: &Gateway, method: &str, path: &str, json: &serde_json::Value) -> Response {
    let body = json.to_string();
    http_request(
        gw.admin_addr(),
        method,
        path,
        &[],
        Some(("application/json", body.as_bytes())),
    )
}

/// A proxy GET with extra headers, on a fresh connection.
pub fn proxy_get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(gw.proxy_addr(), "GET", path, headers, None)
}

static RESTARTS: AtomicUsize = AtomicUsize::new(0);

impl Gateway {
    /// `kill -9` the gateway and wait until it is gone.
    pub fn kill9(&mut self) {
        self.send_signal("KILL");
        assert!(
            self.wait_exit(Duration::from_secs(10)).is_some(),
            "gateway still running after kill -9"
        );
    }

    /// The gateway's data directory (its Admin API state).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the gateway again (after it exited or was killed) with the same temp dir,
    /// config file and data dir, on new ports, and waits until it is ready.
    pub fn restart_same_dir(&mut self, opts: GatewayOpts) -> Result<(), String> {
        if self.is_running() {
            self.kill9();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let data_dir = self.dir.path().join("data");
        let label = format!("restart-{}", RESTARTS.fetch_add(1, Ordering::SeqCst));
        let (child, proxy, admin, stderr_path) =
            spawn_ready(self.dir.path(), &self.config_path, &data_dir, &label, &opts)?;
        self.child = Some(child);
        self.exit = None;
        self.proxy = proxy;
        self.admin = admin;
        self.stderr_path = stderr_path;
        Ok(())
    }
}

/// A token from `ringway jwt sign ARGS...` (stdout, trimmed); panics when it fails.
pub fn cli_sign(args: &[&str]) -> String {
    let mut full = vec!["jwt", "sign"];
    full.extend_from_slice(args);
    let out = run_cli(&full, &[], Duration::from_secs(30));
    assert!(
        out.status.success(),
        "`ringway {}` failed: {}",
        full.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        s.ends_with('\n'),
        "jwt sign output must end with a newline: {s:?}"
    );
    s.trim().to_string()
}

const PY_SIGN: &str = r#"
import sys, hmac, hashlib, base64
header, payload, secret, digest = sys.argv[1:5]
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b'=').decode()
si = b(header.encode()) + '.' + b(payload.encode())
sig = hmac.new(secret.encode(), si.encode(), getattr(hashlib, digest)).digest()
print(si + '.' + b(sig))
"#;

/// A token signed by Python's stdlib (an independent signer): the header and payload JSON
/// are used verbatim, the signature is HMAC-`digest` (`sha256`, `sha384`, `sha512`) with
/// `secret` over `b64url(header).b64url(payload)`.
pub fn py_token(header_json: &str, payload_json: &str, secret: &str, digest: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_SIGN)
        .arg(header_json)
        .arg(payload_json)
        .arg(secret)
        .arg(digest)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 signer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An HS256 token from Python with the standard header and the given payload.
pub fn py_hs256(payload_json: &str, secret: &str) -> String {
    py_token(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        payload_json,
        secret,
        "sha256",
    )
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `tests/fixtures/jwt/NAME` as bytes.
pub fn jwt_fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Spawns `ringway run` on free ports and waits for `/status/ready`; retries with new
/// ports (up to 3 attempts) when the process exits before it is ready (a port race).
fn spawn_ready(
    dir: &Path,
    config_path: &Path,
    data_dir: &Path,
    label: &str,
    opts: &GatewayOpts,
) -> Result<(Child, SocketAddr, SocketAddr, PathBuf), String> {
    let mut last_err = String::new();
    for attempt in 0..3 {
        let proxy = free_addr();
        let mut admin = free_addr();
        while admin == proxy {
            admin = free_addr();
        }
        let stderr_path = dir.join(format!("stderr-{label}-{attempt}.log"));
        let stderr_file =
            fs::File::create(&stderr_path).map_err(|e| format!("stderr file: {e}"))?;
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("-c")
            .arg(config_path)
            .arg("--proxy-listen")
            .arg(proxy.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--workers")
            .arg(opts.workers.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-level")
            .arg(&opts.log_level)
            .args(&opts.extra_args)
            .env_remove("RINGWAY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_file));
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_err = format!(
                    "{label} attempt {attempt}: exited early with {status}; stderr:\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
                break;
            }
            if probe_status(admin, "/status/ready") == Some(200) {
                return Ok((child, proxy, admin, stderr_path));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{label}: not ready within {:?}; stderr:\n{}",
                    opts.ready_timeout,
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                ));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
    Err(last_err)
}

/// The seed scenario's config: user-service (/api/users) with a service-scoped jwt and
/// account-service (/api/accounts), which has jwt too when `jwt_on_accounts`; `extra` is
/// appended verbatim.
pub fn seed_services_config(origin: &Origin, jwt_on_accounts: bool, extra: &str) -> String {
    let account_plugins = if jwt_on_accounts {
        "    plugins:\n      - name: jwt\n"
    } else {
        ""
    };
    format!(
        r#"_format_version: "3.0"
services:
  - name: user-service
    url: {u}
    routes:
      - name: user-routes
        paths:
          - /api/users
    plugins:
      - name: jwt
  - name: account-service
    url: {u}
    routes:
      - name: account-routes
        paths:
          - /api/accounts
{account_plugins}{extra}"#,
        u = origin.url()
    )
}
