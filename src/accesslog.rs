//! The access log: one JSON line per request, to stdout or a file, off by default
//! (`ringway.access_log`). Workers format the line and hand it to a bounded queue; one
//! writer thread drains it. A worker never waits: when the queue is full the line is
//! dropped and counted (`ringway_access_log_dropped_total`), so a slow disk or a
//! blocked stdout cannot stall requests. The query string is not logged (it may carry
//! a token).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::config::AccessLog;
use crate::http::generated::{write_json_string, write_u64};

/// Lines queued at most; beyond it lines are dropped. A line is a few hundred bytes
/// (at most the request line's limit more), so the queue stays within a few MiB.
const QUEUE_LINES: usize = 4096;

/// A worker's handle on the queue.
#[derive(Debug, Clone)]
pub struct Log {
    queue: Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Log {
    /// Queues a line; never blocks.
    pub fn send(&self, line: Vec<u8>) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Opens the target and starts the writer thread.
pub fn start(target: &AccessLog, dropped: Arc<AtomicU64>) -> anyhow::Result<Log> {
    let sink: Box<dyn Write + Send> = match target {
        AccessLog::Stdout => Box::new(std::io::stdout()),
        AccessLog::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open access_log {}: {e}", path.display()))?,
        ),
    };
    let (queue, lines) = crossbeam_channel::bounded(QUEUE_LINES);
    std::thread::Builder::new()
        .name("ringway-access-log".into())
        .spawn(move || write_lines(lines, sink))?;
    Ok(Log { queue, dropped })
}

/// Writes lines as they come, flushing whenever the queue runs dry.
fn write_lines(lines: Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = out.write_all(&line);
                while let Ok(line) = lines.try_recv() {
                    let _ = out.write_all(&line);
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

/// One request, as logged.
pub struct Entry<'a> {
    pub client_ip: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub request_us: u64,
    pub upstream_us: Option<u64>,
    pub proxy_us: u64,
    pub service: Option<&'a str>,
    pub route: Option<&'a str>,
    pub upstream: Option<std::net::SocketAddr>,
    pub consumer: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Entry<'_> {
    /// The JSON line, newline-terminated.
    pub fn line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        let time = crate::logging::rfc3339(std::time::SystemTime::now());
        out.extend_from_slice(b"{\"time\":");
        write_json_string(&mut out, &time);
        let string = |out: &mut Vec<u8>, key: &str, value: Option<&str>| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match value {
                Some(v) => write_json_string(out, v),
                None => out.extend_from_slice(b"null"),
            }
        };
        string(&mut out, "client_ip", Some(self.client_ip));
        string(&mut out, "method", Some(self.method));
        string(&mut out, "path", Some(self.path));
        let number = |out: &mut Vec<u8>, key: &str, value: Option<u64>| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match value {
                Some(v) => write_u64(out, v),
                None => out.extend_from_slice(b"null"),
            }
        };
        number(&mut out, "status", Some(u64::from(self.status)));
        number(&mut out, "request_us", Some(self.request_us));
        number(&mut out, "upstream_us", self.upstream_us);
        number(&mut out, "proxy_us", Some(self.proxy_us));
        string(&mut out, "service", self.service);
        string(&mut out, "route", self.route);
        let upstream = self.upstream.map(|a| a.to_string());
        string(&mut out, "upstream", upstream.as_deref());
        string(&mut out, "consumer", self.consumer);
        string(&mut out, "request_id", self.request_id);
        number(&mut out, "bytes_in", Some(self.bytes_in));
        number(&mut out, "bytes_out", Some(self.bytes_out));
        out.extend_from_slice(b"}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_and_never_block() {
        let entry = Entry {
            client_ip: "10.0.0.1",
            method: "GET",
            path: "/a\"b",
            status: 200,
            request_us: 120,
            upstream_us: Some(80),
            proxy_us: 30,
            service: Some("users"),
            route: None,
            upstream: Some("127.0.0.1:9001".parse().unwrap()),
            consumer: None,
            request_id: Some("id-1"),
            bytes_in: 10,
            bytes_out: 20,
        };
        let line = entry.line();
        assert!(line.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["upstream_us"], 80);
        assert_eq!(v["route"], serde_json::Value::Null);
        assert_eq!(v["upstream"], "127.0.0.1:9001");

        // A writer that never drains: sends beyond the queue are dropped, not waited on.
        let (queue, _lines) = crossbeam_channel::bounded(2);
        let log = Log {
            queue,
            dropped: Arc::default(),
        };
        for _ in 0..5 {
            log.send(line.clone());
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 3);
    }
}
