//! The access log: one JSON line per request, to stdout or a file, off by default
//! (`ringway.access_log`). Each worker appends lines to its own buffer and hands the
//! buffer to a bounded queue every housekeeping tick (or when it reaches 64 KiB); one
//! writer thread drains the queue, looking at it every 50 ms when it is empty. A worker
//! never waits and never wakes the writer: when the queue is full the batch is dropped
//! and its lines counted (`ringway_access_log_dropped_total`), so a slow disk or a
//! blocked stdout cannot stall requests. The query string is not logged (it may carry a token).

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::config::AccessLog;
use crate::http::generated::{write_json_string, write_u64};

/// Batches queued at most; beyond it batches are dropped.
const QUEUE_BATCHES: usize = 64;
/// A worker hands its buffer over once it holds this much, without waiting for a tick.
const BATCH_BYTES: usize = 64 * 1024;

/// The writer side, shared by the workers.
#[derive(Debug, Clone)]
pub struct Log {
    queue: Sender<Vec<u8>>,
    /// Written batches coming back, emptied, so their memory is used again.
    spare: Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    /// Set by SIGUSR1: the writer opens the file's path again (logrotate's `postrotate`).
    reopen: Arc<AtomicBool>,
}

impl Log {
    /// Asks the writer to open the log file's path again, as nginx does on SIGUSR1: after
    /// a rotation renamed the file, lines go to a new one under the configured name. The
    /// writer does it before its next batch, within one nap (50 ms).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// Where the writer thread writes.
enum Sink {
    Open(Box<dyn Write + Send>),
    /// A FIFO: opened (blocking) by the writer thread, which waits there for a reader
    /// (an open for writing blocks until one comes); until then lines are dropped and
    /// counted. The non-blocking handle, when a reader was there, is held until then, so
    /// the reader never sees every writer gone (an end of file).
    Fifo(std::path::PathBuf, Option<std::fs::File>),
}

/// Opens the target and starts the writer thread. A file that cannot be opened fails
/// the start; a FIFO never holds it up.
pub fn start(target: &AccessLog, dropped: Arc<AtomicU64>) -> anyhow::Result<Log> {
    use std::os::unix::fs::FileTypeExt;
    let mut reopenable = None;
    let sink = match target {
        AccessLog::Stdout => Sink::Open(Box::new(std::io::stdout())),
        AccessLog::File(path) => match open_append(path) {
            Ok(file) if !file.metadata().is_ok_and(|m| m.file_type().is_fifo()) => {
                reopenable = Some(path.clone());
                Sink::Open(Box::new(file))
            }
            Ok(file) => Sink::Fifo(path.clone(), Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                log::warn!(
                        "access_log {} is a FIFO nobody reads yet: lines wait in the queue, and past it are dropped and counted, until a reader opens it",
                        path.display()
                    );
                Sink::Fifo(path.clone(), None)
            }
            Err(e) => {
                anyhow::bail!("cannot open access_log {}: {e}", path.display())
            }
        },
    };
    let (queue, batches) = crossbeam_channel::bounded(QUEUE_BATCHES);
    let (returns, spare) = crossbeam_channel::bounded(QUEUE_BATCHES);
    let lost = dropped.clone();
    let reopen = Arc::new(AtomicBool::new(false));
    let asked = Reopen {
        asked: reopen.clone(),
        path: reopenable,
    };
    std::thread::Builder::new()
        .name("ringway-access-log".into())
        .spawn(move || write_batches(batches, returns, sink, &lost, asked))?;
    Ok(Log {
        queue,
        spare,
        dropped,
        reopen,
    })
}

/// Opens the log file for appending, creating it. Non-blocking only to open: a FIFO
/// without a reader answers ENXIO at once instead of holding the start (and SIGTERM) up;
/// a regular file ignores it.
fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// The writer's side of [`Log::reopen`]: the flag, and the path to open again (a regular
/// file's; stdout and a FIFO have nothing to rotate).
struct Reopen {
    asked: Arc<AtomicBool>,
    path: Option<std::path::PathBuf>,
}

impl Reopen {
    /// The newly opened file, when a reopen was asked for and could be done. A file that
    /// cannot be opened leaves the writer on the one it had: lines are kept, and the log
    /// says why.
    fn take(&self) -> Option<std::fs::File> {
        if !self.asked.swap(false, Ordering::AcqRel) {
            return None;
        }
        let Some(path) = &self.path else {
            log::info!("SIGUSR1: the access log is not a file; nothing to reopen");
            return None;
        };
        // Non-blocking as at start: a FIFO put in the file's place cannot hold the writer.
        match open_append(path) {
            Ok(file) => {
                log::info!("SIGUSR1: reopened access_log {}", path.display());
                Some(file)
            }
            Err(e) => {
                log::error!(
                    "SIGUSR1: cannot reopen access_log {}: {e}; writing on to the file already open",
                    path.display()
                );
                None
            }
        }
    }
}

/// How long the writer sleeps when the queue is empty.
const WRITER_NAP: Duration = Duration::from_millis(50);

/// Writes batches as they come, and returns their buffers. An empty queue is looked at
/// again after a nap, not waited on: a blocking receive spins and yields before it
/// sleeps, on the very core a worker runs on, and makes every hand-over wake the
/// writer (a system call on the worker's side). Each wake-up takes the core from a
/// worker, so the nap is long: side by side, a 2 ms nap cost 9 % of a saturated worker's
/// throughput, 5 ms 6 %, 20 ms about 0.5 % more than 50 ms. Lines are batched for up to
/// a tick anyway; the nap adds at most 50 ms. The queue (64 batches of 64 KiB) takes
/// 4 MiB of lines within a nap: 80 MB/s, some 270,000 lines a second.
/// A write that fails (a full disk, a reader gone) loses its batch: its lines are
/// counted as dropped, and the failure is logged once, until writes succeed again.
fn write_batches(
    batches: Receiver<Vec<u8>>,
    returns: Sender<Vec<u8>>,
    sink: Sink,
    dropped: &AtomicU64,
    reopen: Reopen,
) {
    let mut sink = match sink {
        Sink::Open(sink) => sink,
        Sink::Fifo(path, _held) => match std::fs::OpenOptions::new().append(true).open(&path) {
            Ok(file) => Box::new(file) as Box<dyn Write + Send>,
            Err(e) => {
                log::error!(
                    "cannot open access_log {}: {e}; no lines are written",
                    path.display()
                );
                Box::new(std::io::sink())
            }
        },
    };
    let mut failing = false;
    loop {
        if let Some(file) = reopen.take() {
            let _ = sink.flush();
            sink = Box::new(file);
        }
        match batches.try_recv() {
            Ok(mut batch) => {
                match sink.write_all(&batch).and_then(|()| sink.flush()) {
                    Ok(()) if failing => {
                        failing = false;
                        log::warn!("access log: writes succeed again");
                    }
                    Ok(()) => {}
                    Err(e) => {
                        let lines = memchr::memchr_iter(b'\n', &batch).count();
                        dropped.fetch_add(lines as u64, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            log::warn!(
                                "access log: write failed ({e}); its lines are dropped and counted"
                            );
                        }
                    }
                }
                batch.clear();
                let _ = returns.try_send(batch);
            }
            Err(TryRecvError::Empty) => std::thread::sleep(WRITER_NAP),
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

/// A worker's buffer of lines not yet handed over.
#[derive(Debug)]
pub struct Batcher {
    log: Log,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
}

impl Batcher {
    pub fn new(log: Log) -> Batcher {
        Batcher {
            log,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
        }
    }

    /// Appends one line; hands the buffer over when it is full.
    pub fn push(&self, entry: &Entry<'_>) {
        let mut buf = self.buf.borrow_mut();
        if buf.capacity() == 0 {
            // Sized for a whole batch, so appending never reallocates and copies; only
            // a worker that logs holds one.
            *buf = self.log.spare.try_recv().unwrap_or_default();
            buf.reserve(BATCH_BYTES + 16 * 1024);
        }
        entry.write(&mut buf);
        self.lines.set(self.lines.get() + 1);
        if buf.len() >= BATCH_BYTES {
            drop(buf);
            self.flush();
        }
    }

    /// Hands the buffered lines to the writer; never blocks.
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut *buf);
        let lines = self.lines.replace(0);
        match self.log.queue.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.log.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }
}

/// A route's `service` and `route` fields of the log line, rendered when the config
/// loads rather than escaped on every request.
pub fn scope_json(service: &str, route: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(24 + service.len() + route.len());
    out.extend_from_slice(b",\"service\":");
    write_json_string(&mut out, service);
    out.extend_from_slice(b",\"route\":");
    write_json_string(&mut out, route);
    out.into_boxed_slice()
}

/// One request, as logged.
pub struct Entry<'a> {
    /// When the request ended, since the Unix epoch.
    pub time: Duration,
    /// Formatted from a socket address (written unescaped).
    pub client_ip: &'a str,
    /// As the request line had it: a request refused for a malformed line may have
    /// anything there, so it is escaped like the path.
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub request_us: u64,
    pub upstream_us: Option<u64>,
    pub proxy_us: u64,
    /// The routed request's service and route, as `scope_json` renders them once per
    /// config; both `null` when no route matched.
    pub scope: Option<&'a [u8]>,
    /// The `ip:port` connected to, formatted from a socket address (written unescaped).
    pub upstream: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Entry<'_> {
    /// Appends the JSON line, newline-terminated.
    pub fn write(&self, out: &mut Vec<u8>) {
        // Each key is written with its punctuation as one literal.
        fn string(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
            out.extend_from_slice(key);
            match value {
                Some(v) => write_json_string(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        // Values nothing in which needs escaping: socket addresses ringway formatted
        // itself (the client's IP, the upstream's `ip:port`).
        fn plain(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
            out.extend_from_slice(key);
            match value {
                Some(v) => {
                    out.push(b'"');
                    out.extend_from_slice(v.as_bytes());
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        fn number(out: &mut Vec<u8>, key: &[u8], value: Option<u64>) {
            out.extend_from_slice(key);
            match value {
                Some(v) => write_u64(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"{\"time\":\"");
        crate::logging::write_rfc3339(out, self.time);
        out.push(b'"');
        plain(out, b",\"client_ip\":", Some(self.client_ip));
        string(out, b",\"method\":", Some(self.method));
        string(out, b",\"path\":", Some(self.path));
        number(out, b",\"status\":", Some(u64::from(self.status)));
        number(out, b",\"request_us\":", Some(self.request_us));
        number(out, b",\"upstream_us\":", self.upstream_us);
        number(out, b",\"proxy_us\":", Some(self.proxy_us));
        out.extend_from_slice(self.scope.unwrap_or(b",\"service\":null,\"route\":null"));
        plain(out, b",\"upstream\":", self.upstream);
        string(out, b",\"consumer\":", self.consumer);
        string(out, b",\"request_id\":", self.request_id);
        number(out, b",\"bytes_in\":", Some(self.bytes_in));
        number(out, b",\"bytes_out\":", Some(self.bytes_out));
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        static SCOPE: std::sync::LazyLock<Box<[u8]>> =
            std::sync::LazyLock::new(|| scope_json("users", "by \"name\""));
        Entry {
            time: Duration::from_millis(1_700_000_000_123),
            client_ip: "10.0.0.1",
            method: "GET",
            path: "/a\"b",
            status: 200,
            request_us: 120,
            upstream_us: Some(80),
            proxy_us: 30,
            scope: Some(&SCOPE),
            upstream: Some("127.0.0.1:9001"),
            consumer: None,
            request_id: Some("id-1"),
            bytes_in: 10,
            bytes_out: 20,
        }
    }

    #[test]
    fn lines_are_json_and_batches_never_block() {
        let mut line = Vec::new();
        entry().write(&mut line);
        assert!(line.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["upstream_us"], 80);
        assert_eq!(v["service"], "users");
        assert_eq!(v["route"], "by \"name\"");
        assert_eq!(v["upstream"], "127.0.0.1:9001");
        let unrouted = Entry {
            scope: None,
            ..entry()
        };
        let mut line = Vec::new();
        unrouted.write(&mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (&v["service"], &v["route"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
        assert_eq!(v["time"].as_str().unwrap().len(), 24, "{v}");

        // A writer that never drains: batches beyond the queue are dropped with their
        // lines counted, not waited on.
        let (queue, _batches) = crossbeam_channel::bounded(1);
        let (_returns, spare) = crossbeam_channel::bounded(1);
        let batcher = Batcher::new(Log {
            queue,
            spare,
            dropped: Arc::default(),
            reopen: Arc::default(),
        });
        for _ in 0..3 {
            batcher.push(&entry());
            batcher.push(&entry());
            batcher.flush();
        }
        assert_eq!(batcher.log.dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn written_batches_come_back_for_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = start(&AccessLog::File(path.clone()), Arc::default()).unwrap();
        let batcher = Batcher::new(log.clone());
        batcher.push(&entry());
        batcher.flush();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.spare.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let back = log.spare.try_recv().expect("the written batch came back");
        assert!(back.is_empty() && back.capacity() >= BATCH_BYTES);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
