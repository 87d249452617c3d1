//! `ringway-upstream`: the HTTP/1.1 origin server bundled with ringway.
//!
//! It stands behind the gateway in the demo, the integration tests and the
//! benchmarks. What it answers is chosen by the request path, so one binary can
//! play a plain origin, a bulk-data source, a slow or broken backend, and an
//! echo service that shows exactly what the gateway forwarded:
//!
//! | path           | response                                                     |
//! |----------------|--------------------------------------------------------------|
//! | `/size/N`      | 200, N bytes of `x`, `Content-Length` framing                 |
//! | `/chunked/N`   | 200, N bytes, chunked in 16 KiB chunks (`?chunk=K` to change) |
//! | `/close/N`     | 200, N bytes delimited by closing the connection             |
//! | `/status/CODE` | that status with a one-line body (1xx: interim, then `/`)     |
//! | `/delay/MS`    | waits MS milliseconds, then answers like `/`                  |
//! | `/echo[/...]`  | 200, a JSON account of the request, its headers and body      |
//! | anything else  | 200, `hello from NAME`                                        |
//!
//! Any request may also carry `X-Delay-Ms: N` (added to any delay) and
//! `X-Close: 1` (answer with `Connection: close`, then close).
//!
//! It has to hold its own against nginx in the benchmarks, so it is built
//! lean: one monoio runtime (io_uring, or epoll as a fallback) per worker
//! thread, each with its own `SO_REUSEPORT` listener; per-connection buffers
//! reused for every request; pipelined responses batched into one write; and
//! bulk bodies written straight from one static buffer.

use std::cell::Cell;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: ringway-upstream [--listen ADDR]... [--workers N] [--driver io_uring|epoll] [--name NAME]

  --listen ADDR   address to serve, repeatable (default 127.0.0.1:9001; port 0 picks one)
  --workers N     worker threads, each with its own runtime and listener (default 1)
  --driver KIND   io_uring (the default where the kernel has it) or epoll
  --name NAME     sent in X-Upstream-Name and the hello body";
const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
/// Largest request head accepted; it is also the read buffer's size.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line accepted in a chunked request body.
const MAX_LINE: usize = 4096;
/// Echoed bodies are cut here; the rest is read and counted only.
const ECHO_BODY_CAP: usize = 1 << 20;
/// Queued response bytes are written out once they reach this much.
const OUT_FLUSH: usize = 64 * 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a closing connection keeps draining what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Longest delay honoured, a day; it also keeps deadlines far from overflow.
const MAX_DELAY_MS: u64 = 86_400_000;
const DEFAULT_CHUNK: u64 = 16 * 1024;
const BULK: &str = "application/octet-stream";

/// The body of every bulk response is cut from this.
static FILL: [u8; OUT_FLUSH] = [b'x'; OUT_FLUSH];
/// Ids of accepted connections, shared by all workers.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This worker's `Date` value, refreshed each second by [`date_ticker`].
    static DATE: Cell<[u8; 29]> = const { Cell::new([b' '; 29]) };
}

#[derive(Clone, Copy, PartialEq)]
enum DriverKind {
    IoUring,
    Epoll,
}

struct Config {
    listen: Vec<SocketAddr>,
    workers: usize,
    /// `None` means io_uring where the kernel has it.
    driver: Option<DriverKind>,
    name: String,
}

/// What every connection needs to know about the process, fixed at start-up.
struct Shared {
    /// The `Server` and `X-Upstream-Name` lines, the same on every response.
    fixed_headers: String,
    /// The body of `/` and of every path without a mode.
    hello: String,
}

fn main() {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("ringway-upstream: {message} (try --help)");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(config) {
        eprintln!("ringway-upstream: {error:#}");
        std::process::exit(1);
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut config = Config {
        listen: Vec::new(),
        workers: 1,
        driver: None,
        name: "ringway-upstream".to_owned(),
    };
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value` are accepted.
        let (flag, mut inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || {
            let value = inline.take().or_else(|| args.next());
            value.ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--listen" => {
                let value = value()?;
                let addr = value
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next());
                let addr = addr.ok_or_else(|| format!("--listen: cannot use {value:?}"))?;
                config.listen.push(addr);
            }
            "--workers" => {
                let value = value()?;
                config.workers = match value.parse::<usize>() {
                    Ok(n @ 1..=1024) => n,
                    _ => return Err(format!("--workers: expected 1 to 1024, got {value:?}")),
                };
            }
            "--driver" => {
                config.driver = match value()?.as_str() {
                    "io_uring" => Some(DriverKind::IoUring),
                    "epoll" => Some(DriverKind::Epoll),
                    other => {
                        return Err(format!(
                            "--driver: expected io_uring or epoll, got {other:?}"
                        ))
                    }
                };
            }
            "--name" => {
                let value = value()?;
                // The name goes into a header verbatim, so it must be a valid field value.
                if value.is_empty() || !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    return Err(format!("--name: expected printable ASCII, got {value:?}"));
                }
                config.name = value;
            }
            _ if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            _ => return Err(format!("unexpected argument {flag:?}")),
        }
    }
    if config.listen.is_empty() {
        config
            .listen
            .push(DEFAULT_LISTEN.parse().map_err(|_| "bad default address")?);
    }
    Ok(config)
}

fn run(config: Config) -> anyhow::Result<()> {
    let mut per_worker: Vec<Vec<StdListener>> = (0..config.workers).map(|_| Vec::new()).collect();
    for &addr in &config.listen {
        let bound = bind_address(addr, config.workers)?;
        per_worker
            .iter_mut()
            .zip(bound)
            .for_each(|(mine, listener)| mine.push(listener));
    }
    let driver = match config.driver {
        Some(DriverKind::Epoll) => DriverKind::Epoll,
        _ if monoio::utils::detect_uring() => DriverKind::IoUring,
        Some(DriverKind::IoUring) => {
            eprintln!("ringway-upstream: io_uring is not available here, using epoll");
            DriverKind::Epoll
        }
        None => DriverKind::Epoll,
    };
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        fixed_headers: format!(
            "Server: ringway-upstream\r\nX-Upstream-Name: {}\r\n",
            config.name
        ),
        hello: format!("hello from {}\n", config.name),
    }));

    // Exit at once on SIGINT/SIGTERM: there is no state worth winding down.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::process::exit(0);
            }
        })
        .context("cannot start the signal thread")?;

    let mut workers = Vec::with_capacity(config.workers);
    for (index, listeners) in per_worker.into_iter().enumerate() {
        let worker = std::thread::Builder::new()
            .name(format!("upstream-{index}"))
            .spawn(move || run_worker(driver, listeners, shared))
            .context("cannot start a worker thread")?;
        workers.push(worker);
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}

/// Binds `count` `SO_REUSEPORT` listeners to `addr` and announces it on stdout.
fn bind_address(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<StdListener>> {
    let cannot = |error: io::Error| anyhow!("cannot listen on {addr}: {}", os_message(&error));
    // A plain bind first: with SO_REUSEPORT alone we would quietly share the
    // port with whatever already listens there instead of reporting it busy.
    let probe = StdListener::bind(addr).map_err(cannot)?;
    // For port 0 the kernel picks the port; every worker must use that one.
    let actual = probe.local_addr().map_err(cannot)?;
    drop(probe);
    let listeners = (0..count)
        .map(|_| reuseport_listener(actual))
        .collect::<io::Result<_>>();
    let listeners = listeners.map_err(cannot)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {actual}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(listeners)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // monoio's own listeners are non-blocking, which its epoll driver needs.
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// An `io::Error`'s text without the trailing `(os error N)`.
fn os_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

fn run_worker(
    driver: DriverKind,
    listeners: Vec<StdListener>,
    shared: &'static Shared,
) -> anyhow::Result<()> {
    if driver == DriverKind::IoUring {
        let mut uring = io_uring::IoUring::builder();
        // The worker only ever waits inside the runtime, so completions need
        // no interrupt to be processed promptly.
        uring.setup_coop_taskrun().setup_taskrun_flag();
        let flagged = RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(uring)
            .enable_timer()
            .build();
        // Kernels before 5.19 lack those flags but run io_uring fine.
        let plain = || {
            RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .build()
        };
        match flagged.or_else(|_| plain()) {
            Ok(mut runtime) => return runtime.block_on(serve_listeners(listeners, shared)),
            Err(error) => eprintln!("ringway-upstream: io_uring failed ({error}), using epoll"),
        }
    }
    let runtime = RuntimeBuilder::<LegacyDriver>::new().enable_timer().build();
    let mut runtime = runtime.context("cannot start a runtime")?;
    runtime.block_on(serve_listeners(listeners, shared))
}

async fn serve_listeners(
    listeners: Vec<StdListener>,
    shared: &'static Shared,
) -> anyhow::Result<()> {
    refresh_date();
    monoio::spawn(date_ticker());
    let mut loops = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let listener = TcpListener::from_std(listener).context("cannot register a listener")?;
        loops.push(monoio::spawn(accept_loop(listener, shared)));
    }
    for accept in loops {
        accept.await;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: &'static Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Responses leave in whole writes; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                monoio::spawn(Conn::new(stream, peer, id, shared).run());
            }
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                eprintln!("ringway-upstream: accept failed: {}", os_message(&error));
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn date_ticker() {
    loop {
        refresh_date();
        // Wake just after each second turns, so the header is never a second stale.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let rest =
            Duration::from_secs(1).saturating_sub(Duration::from_nanos(now.subsec_nanos().into()));
        monoio::time::sleep(rest + Duration::from_millis(1)).await;
    }
}

fn refresh_date() {
    let mut date = [b' '; 29];
    // An IMF-fixdate is always exactly 29 bytes long.
    if write!(
        &mut date[..],
        "{}",
        httpdate::HttpDate::from(SystemTime::now())
    )
    .is_ok()
    {
        DATE.with(|cell| cell.set(date));
    }
}

/// What the request path asks for.
#[derive(Clone, Copy)]
enum Mode {
    Hello,
    Size(u64),
    Chunked {
        len: u64,
        chunk: u64,
    },
    Close(u64),
    Status(u16),
    Delay(u64),
    Echo,
    /// A mode with an argument that makes no sense, answered with 400.
    BadTarget(&'static str),
}

/// How a request body is delimited.
#[derive(Clone, Copy)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// How a response body is delimited.
enum Framing {
    Length(u64),
    Chunked,
    Close,
    /// 1xx, 204 and 304, which never have a body.
    Bodiless,
}

/// A parsed request head, reduced to what choosing the answer needs.
struct Request {
    mode: Mode,
    head_only: bool,
    http10: bool,
    keep_alive: bool,
    body: BodyFraming,
    delay_ms: u64,
    expect_continue: bool,
}

/// Why a connection stops being served.
enum Fail {
    /// The peer went away or went quiet: nothing more can be said to it.
    Gone,
    /// The request was unusable: answer with this status, then close.
    Bad(u16, &'static str),
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    served: u64,
    shared: &'static Shared,
    /// The headers that start every response on this connection.
    prefix: Vec<u8>,
    /// Received bytes; those before `rpos` are consumed.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Responses waiting to be written, in request order.
    out: Vec<u8>,
    /// The echo document under construction.
    echo: Vec<u8>,
    /// The captured part of an echoed request body.
    echo_body: Vec<u8>,
    /// How the response being queued is framed, from its request.
    keep_alive: bool,
    http10: bool,
    head_only: bool,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, id: u64, shared: &'static Shared) -> Self {
        let prefix = format!("{}X-Upstream-Conn: {id}\r\n", shared.fixed_headers).into_bytes();
        Self {
            stream,
            peer,
            id,
            served: 0,
            shared,
            prefix,
            // Memory is only touched as it is used, so the full head size
            // costs little on connections that send small requests.
            rbuf: Vec::with_capacity(MAX_HEAD),
            rpos: 0,
            out: Vec::with_capacity(OUT_FLUSH),
            echo: Vec::new(),
            echo_body: Vec::new(),
            keep_alive: true,
            http10: false,
            head_only: false,
        }
    }

    async fn run(mut self) {
        match self.serve().await {
            Ok(()) => self.linger().await,
            Err(Fail::Bad(status, why)) => {
                // Responses to earlier pipelined requests are still queued
                // ahead of this one, as they should be.
                (self.keep_alive, self.http10, self.head_only) = (false, false, false);
                self.push_text(status, &[why.as_bytes(), b"\n"]);
                if self.flush().await.is_ok() {
                    self.linger().await;
                }
            }
            Err(Fail::Gone) => {}
        }
    }

    /// Answers requests until one of them ends the connection.
    async fn serve(&mut self) -> Result<(), Fail> {
        loop {
            let (request, head_len) = loop {
                if self.rpos < self.rbuf.len() {
                    if let Some(parsed) = parse_head(&self.rbuf[self.rpos..], &mut self.echo)? {
                        break parsed;
                    }
                    if self.rbuf.len() - self.rpos >= MAX_HEAD {
                        return Err(Fail::Bad(431, "request head too large"));
                    }
                }
                if self.fill().await? == 0 {
                    return Err(Fail::Gone);
                }
            };
            self.rpos += head_len;
            if !self.answer(request).await? {
                return Ok(());
            }
        }
    }

    /// Reads the body and queues the response; returns whether to keep going.
    async fn answer(&mut self, request: Request) -> Result<bool, Fail> {
        let wants_body = !matches!(request.body, BodyFraming::None | BodyFraming::Length(0));
        if request.expect_continue && wants_body && self.rpos == self.rbuf.len() {
            // The client holds the body back until it hears from us.
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let echo = matches!(request.mode, Mode::Echo);
        self.echo_body.clear();
        let body_len = match request.body {
            BodyFraming::None => 0,
            BodyFraming::Length(len) => self.consume(len, echo).await.map(|()| len)?,
            BodyFraming::Chunked => self.consume_chunked(echo).await?,
        };
        self.served += 1;

        let mode_delay = if let Mode::Delay(ms) = request.mode {
            ms
        } else {
            0
        };
        let delay = request
            .delay_ms
            .saturating_add(mode_delay)
            .min(MAX_DELAY_MS);
        if delay > 0 {
            self.flush().await?;
            monoio::time::sleep(Duration::from_millis(delay)).await;
        }

        (self.keep_alive, self.http10, self.head_only) =
            (request.keep_alive, request.http10, request.head_only);
        let mode = match request.mode {
            // HTTP/1.0 clients cannot parse chunked framing: they get the
            // close-delimited form.
            Mode::Chunked { len, .. } if request.http10 => Mode::Close(len),
            mode => mode,
        };
        let hello = self.shared.hello.as_bytes();
        match mode {
            Mode::Hello | Mode::Delay(_) => self.push_text(200, &[hello]),
            Mode::Size(len) => {
                self.push_head(200, Some(BULK), Framing::Length(len));
                self.push_fill(len).await?;
            }
            Mode::Close(len) => {
                self.keep_alive = false;
                self.push_head(200, Some(BULK), Framing::Close);
                self.push_fill(len).await?;
            }
            Mode::Chunked { len, chunk } => {
                self.push_head(200, Some(BULK), Framing::Chunked);
                self.push_chunked(len, chunk).await?;
            }
            Mode::Status(status) if status < 200 => {
                // A 1xx is only ever interim (and not for HTTP/1.0 clients):
                // a final answer has to follow it.
                if !self.http10 {
                    push_status_line(&mut self.out, status);
                    put(&mut self.out, &[&self.prefix, b"\r\n"]);
                }
                self.push_text(200, &[hello]);
            }
            Mode::Status(status @ (204 | 304)) => self.push_head(status, None, Framing::Bodiless),
            Mode::Status(status) => {
                let line = [
                    &status_digits(status)[..],
                    b" ",
                    ringway::http::generated::reason(status).as_bytes(),
                    b"\n",
                ];
                self.push_text(status, &line);
            }
            Mode::Echo => {
                self.finish_echo(body_len);
                let len = self.echo.len() as u64;
                self.push_head(200, Some("application/json"), Framing::Length(len));
                if !self.head_only {
                    self.out.extend_from_slice(&self.echo);
                }
            }
            Mode::BadTarget(why) => self.push_text(400, &[why.as_bytes(), b"\n"]),
        }
        if !self.keep_alive || self.out.len() >= OUT_FLUSH {
            self.flush().await?;
        }
        Ok(self.keep_alive)
    }

    /// Queues a status line and the headers every response carries.
    fn push_head(&mut self, status: u16, content_type: Option<&str>, framing: Framing) {
        let out = &mut self.out;
        push_status_line(out, status);
        put(
            out,
            &[&self.prefix, b"Date: ", &DATE.with(Cell::get), b"\r\n"],
        );
        if let Some(content_type) = content_type {
            put(out, &[b"Content-Type: ", content_type.as_bytes(), b"\r\n"]);
        }
        match framing {
            Framing::Length(len) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, len);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::Close | Framing::Bodiless => {}
        }
        out.extend_from_slice(match (self.keep_alive, self.http10) {
            (false, _) => b"Connection: close\r\n\r\n",
            (true, true) => b"Connection: keep-alive\r\n\r\n",
            (true, false) => b"\r\n",
        });
    }

    /// Queues a whole `text/plain` response whose body is made of `parts`.
    fn push_text(&mut self, status: u16, parts: &[&[u8]]) {
        let len = parts.iter().map(|part| part.len() as u64).sum();
        self.push_head(status, Some("text/plain"), Framing::Length(len));
        if !self.head_only {
            put(&mut self.out, parts);
        }
    }

    /// Sends `len` filler bytes after whatever is queued (none for HEAD).
    async fn push_fill(&mut self, mut len: u64) -> Result<(), Fail> {
        while len > 0 && !self.head_only {
            if self.out.is_empty() && len >= FILL.len() as u64 {
                // Bulk goes straight from the static buffer, without a copy.
                let (result, _) = self.stream.write_all(FILL.as_slice()).await;
                result.map_err(|_| Fail::Gone)?;
                len -= FILL.len() as u64;
                continue;
            }
            let room = OUT_FLUSH.saturating_sub(self.out.len());
            if room == 0 {
                self.flush().await?;
                continue;
            }
            let take = usize::try_from(len).map_or(room, |len| len.min(room));
            self.out.extend_from_slice(&FILL[..take]);
            len -= take as u64;
        }
        Ok(())
    }

    /// Sends `len` filler bytes in chunks of `chunk`, then the last chunk.
    async fn push_chunked(&mut self, mut len: u64, chunk: u64) -> Result<(), Fail> {
        if self.head_only {
            return Ok(());
        }
        while len > 0 {
            let size = len.min(chunk);
            // Writing to a Vec cannot fail.
            let _ = write!(self.out, "{size:x}\r\n");
            self.push_fill(size).await?;
            self.out.extend_from_slice(b"\r\n");
            len -= size;
        }
        self.out.extend_from_slice(b"0\r\n\r\n");
        Ok(())
    }

    /// Completes the echo document begun by [`parse_head`].
    fn finish_echo(&mut self, body_len: u64) {
        json_str(&mut self.echo, &String::from_utf8_lossy(&self.echo_body));
        // Numbers and a socket address need no JSON escaping.
        let _ = write!(
            self.echo,
            r#","body_len":{body_len},"conn_requests":{},"conn_id":{},"peer":"{}"}}"#,
            self.served, self.id, self.peer
        );
    }

    /// Reads and drops `len` body bytes, keeping the first ones when echoing.
    async fn consume(&mut self, mut len: u64, capture: bool) -> Result<(), Fail> {
        loop {
            let available = &self.rbuf[self.rpos..];
            let take = usize::try_from(len).map_or(available.len(), |len| len.min(available.len()));
            if capture {
                let room = ECHO_BODY_CAP.saturating_sub(self.echo_body.len());
                self.echo_body
                    .extend_from_slice(&available[..take.min(room)]);
            }
            self.rpos += take;
            len -= take as u64;
            if len == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(Fail::Gone);
            }
        }
    }

    /// Reads a chunked body through its trailers; returns the decoded length.
    async fn consume_chunked(&mut self, capture: bool) -> Result<u64, Fail> {
        let mut total = 0u64;
        loop {
            let line = self.line().await?;
            let size = chunk_size(line).ok_or(Fail::Bad(400, "invalid chunk size"))?;
            if size == 0 {
                break;
            }
            self.consume(size, capture).await?;
            total = total.saturating_add(size);
            if !is_blank(self.line().await?) {
                return Err(Fail::Bad(400, "chunk data longer than its size"));
            }
        }
        // Trailer fields carry nothing this server uses: skip to the blank line.
        let mut trailers = 0;
        loop {
            let line = self.line().await?;
            if is_blank(line) {
                return Ok(total);
            }
            trailers += line.len();
            if trailers > MAX_HEAD {
                return Err(Fail::Bad(431, "trailer section too large"));
            }
        }
    }

    /// Waits for a whole line of input and consumes it, LF included.
    async fn line(&mut self) -> Result<&[u8], Fail> {
        loop {
            let available = &self.rbuf[self.rpos..];
            if let Some(end) = available.iter().position(|&b| b == b'\n') {
                let start = self.rpos;
                self.rpos += end + 1;
                return Ok(&self.rbuf[start..self.rpos]);
            }
            if available.len() >= MAX_LINE {
                return Err(Fail::Bad(400, "chunked framing line too long"));
            }
            if self.fill().await? == 0 {
                return Err(Fail::Gone);
            }
        }
    }

    /// Sends what is queued, then reads more input; returns 0 at end of input.
    async fn fill(&mut self) -> Result<usize, Fail> {
        // What is queued may answer requests the client waits on before it
        // sends more.
        self.flush().await?;
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.len() == self.rbuf.capacity() {
            self.rbuf.reserve(MAX_LINE);
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (start, end) = (buf.len(), buf.capacity());
        let read = self.stream.read(buf.slice_mut(start..end));
        // On timeout the buffer stays with the abandoned read, but the
        // connection is finished anyway.
        let (result, buf) = monoio::time::timeout(IDLE_TIMEOUT, read)
            .await
            .map_err(|_| Fail::Gone)?;
        self.rbuf = buf.into_inner();
        result.map_err(|_| Fail::Gone)
    }

    async fn flush(&mut self) -> Result<(), Fail> {
        if self.out.is_empty() {
            return Ok(());
        }
        let (result, mut out) = self.stream.write_all(std::mem::take(&mut self.out)).await;
        out.clear();
        self.out = out;
        result.map(drop).map_err(|_| Fail::Gone)
    }

    /// Closes gracefully after a final response.
    async fn linger(&mut self) {
        // Closing with unread input makes the kernel reset the connection,
        // which can destroy the response still in flight: half-close and
        // drain the client's leftovers for a moment first.
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = monoio::time::Instant::now() + LINGER;
        let mut buf = std::mem::take(&mut self.rbuf);
        loop {
            buf.clear();
            match monoio::time::timeout_at(deadline, self.stream.read(buf)).await {
                Ok((Ok(read), returned)) if read > 0 => buf = returned,
                _ => return,
            }
        }
    }
}

/// Parses one request head from the start of `buf`; `None` if incomplete.
///
/// For `/echo` it also starts the echo document in `echo`, since the head is
/// only borrowed here and the body is read after it.
fn parse_head(buf: &[u8], echo: &mut Vec<u8>) -> Result<Option<(Request, usize)>, Fail> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Fail::Bad(431, "too many header fields"))
        }
        Err(_) => return Err(Fail::Bad(400, "malformed request head")),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Fail::Bad(400, "malformed request head"));
    };

    let mut mode = route(target);
    let (mut content_length, mut transfer_encoding, mut chunked) = (None, false, false);
    let (mut close, mut keep_alive, mut delay_ms, mut expect_continue) = (false, false, 0, false);
    for header in request.headers.iter() {
        let (name, value) = (header.name, header.value.trim_ascii());
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_u64(value).ok_or(Fail::Bad(400, "invalid Content-Length"))?;
            if content_length.is_some_and(|seen| seen != len) {
                return Err(Fail::Bad(400, "conflicting Content-Length"));
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding frames the body, and it must be chunked.
            transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("x-delay-ms") {
            match parse_u64(value) {
                Some(ms) => delay_ms = ms,
                None => mode = Mode::BadTarget("invalid X-Delay-Ms"),
            }
        } else if name.eq_ignore_ascii_case("x-close") {
            close |= value == b"1";
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if transfer_encoding && !chunked {
        return Err(Fail::Bad(400, "unsupported Transfer-Encoding"));
    }
    if transfer_encoding && content_length.is_some() {
        return Err(Fail::Bad(400, "both Transfer-Encoding and Content-Length"));
    }
    let http10 = minor == 0;
    let body = match content_length {
        _ if chunked => BodyFraming::Chunked,
        Some(len) => BodyFraming::Length(len),
        None => BodyFraming::None,
    };

    if matches!(mode, Mode::Echo) {
        echo.clear();
        echo.extend_from_slice(br#"{"method":"#);
        json_str(echo, method);
        echo.extend_from_slice(br#","path":"#);
        json_str(echo, target);
        let version = if http10 { "1.0" } else { "1.1" };
        let _ = write!(echo, r#","version":"HTTP/{version}","headers":["#);
        for (index, header) in request.headers.iter().enumerate() {
            echo.extend_from_slice(if index == 0 { b"[" } else { b",[" });
            json_str(echo, header.name);
            echo.push(b',');
            json_str(echo, &String::from_utf8_lossy(header.value));
            echo.push(b']');
        }
        echo.extend_from_slice(br#"],"body":"#);
    }

    // HTTP/1.0 closes unless asked not to; an HTTP/1.0 message with
    // Transfer-Encoding has suspect framing (RFC 9112, section 6.1), so
    // nothing after it is trusted.
    let persistent = if http10 {
        keep_alive && !transfer_encoding
    } else {
        true
    };
    let request = Request {
        mode,
        head_only: method == "HEAD",
        http10,
        keep_alive: persistent && !close,
        body,
        delay_ms,
        expect_continue: expect_continue && !http10,
    };
    Ok(Some((request, head_len)))
}

/// Chooses the mode from the request target.
fn route(target: &str) -> Mode {
    // Origin servers must accept the absolute form too (RFC 9112, 3.2.2).
    // Anything else that is not a path (`*`, authority form) gets `/`.
    let target = if target.starts_with('/') {
        target
    } else {
        let rest = target.split_once("://").map_or("", |(_, rest)| rest);
        rest.find('/').map_or("/", |at| &rest[at..])
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/echo" || path.starts_with("/echo/") {
        return Mode::Echo;
    }
    let Some((kind, arg)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/')) else {
        return Mode::Hello;
    };
    let number = parse_u64(arg.as_bytes());
    match kind {
        "size" => number.map_or(Mode::BadTarget("bad /size length"), Mode::Size),
        "close" => number.map_or(Mode::BadTarget("bad /close length"), Mode::Close),
        "delay" => match number {
            Some(ms) if ms <= MAX_DELAY_MS => Mode::Delay(ms),
            _ => Mode::BadTarget("bad /delay milliseconds"),
        },
        "status" => match number.and_then(|code| u16::try_from(code).ok()) {
            // 101 would switch protocols on the client and leave it stranded.
            Some(code @ 100..=599) if code != 101 => Mode::Status(code),
            _ => Mode::BadTarget("bad /status code"),
        },
        "chunked" => {
            let chunk = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("chunk="));
            match (
                number,
                chunk.map_or(Some(DEFAULT_CHUNK), |k| parse_u64(k.as_bytes())),
            ) {
                (Some(len), Some(chunk @ 1..)) => Mode::Chunked { len, chunk },
                _ => Mode::BadTarget("bad /chunked length or chunk size"),
            }
        }
        _ => Mode::Hello,
    }
}

/// Parses a plain decimal number, rejecting signs, spaces and overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses a chunk-size line, ignoring chunk extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        Some(acc << 4 | u64::from((b as char).to_digit(16)?))
    })
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

fn put(out: &mut Vec<u8>, parts: &[&[u8]]) {
    parts.iter().for_each(|part| out.extend_from_slice(part));
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break out.extend_from_slice(&digits[start..]);
        }
    }
}

fn json_str(out: &mut Vec<u8>, text: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

fn push_status_line(out: &mut Vec<u8>, status: u16) {
    put(
        out,
        &[
            b"HTTP/1.1 ",
            &status_digits(status),
            b" ",
            ringway::http::generated::reason(status).as_bytes(),
            b"\r\n",
        ],
    );
}

/// The three digits of a status code, which is always 100 to 599 here.
fn status_digits(status: u16) -> [u8; 3] {
    let digit = |value: u16| b'0' + (value % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}
