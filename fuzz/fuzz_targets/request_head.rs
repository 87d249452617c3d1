//! A client's request head, arriving in two pieces: the scanner's limits and hygiene,
//! then parsing, framing, routing, path normalization and the upstream head.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringway::config::Limits;
use ringway::http::{HeadScanner, HeadStatus};
use ringway::proxy::request::{prepare, ClientInfo};
use ringway::proxy::Snapshot;

#[path = "common.rs"]
mod common;

const LIMITS: Limits = Limits {
    max_request_line_bytes: 8192,
    max_header_line_bytes: 8192,
    max_header_bytes: 32768,
    max_headers: 100,
};

fuzz_target!(|data: &[u8]| {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    let snapshot = SNAPSHOT.get_or_init(common::snapshot);
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let mut scanner = HeadScanner::new();
    let mut status = scanner.scan(&data[..split], &LIMITS);
    if matches!(status, Ok(HeadStatus::Partial)) {
        status = scanner.scan(data, &LIMITS);
    }
    let Ok(HeadStatus::Complete { start, end }) = status else {
        return;
    };
    assert!(start <= end && end <= data.len());
    let client = ClientInfo {
        ip: "192.0.2.1".into(),
        port: "8000".into(),
        local_port: 8000,
        trusted: data.len() % 2 == 0,
        https: false,
        ..Default::default()
    };
    let mut out = Vec::new();
    if let Ok(exchange) = prepare(&data[start..end], &client, snapshot, 0, None, &mut out) {
        // A balanced service's head leaves the Host value to the chosen target.
        if let Some(at) = exchange.balance.as_ref().and_then(|b| b.host_at) {
            assert!(out[..at].ends_with(b"\r\nHost: ") && out[at..].starts_with(b"\r\n"));
        }
        // A routed request always leaves a complete upstream head, free of bare CR/LF
        // smuggled from the client.
        assert!(
            out.ends_with(b"\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        let head = &out[..out.len() - 2];
        for line in head.split(|&b| b == b'\n') {
            assert!(
                line.is_empty() || line.ends_with(b"\r"),
                "a bare LF upstream"
            );
            assert!(
                !line[..line.len().saturating_sub(1)].contains(&b'\r'),
                "a bare CR upstream"
            );
        }
    }
});
