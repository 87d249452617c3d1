//! An upstream's response head, rewritten for the client.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringway::proxy::request::{prepare, ClientInfo, Exchange};
use ringway::proxy::response::{rewrite, Parsed};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static EXCHANGES: OnceLock<Vec<Exchange>> = OnceLock::new();
    let exchanges = EXCHANGES.get_or_init(|| {
        let snapshot = common::snapshot();
        let client = ClientInfo {
            ip: "192.0.2.1".into(),
            port: "8000".into(),
            local_port: 8000,
            ..Default::default()
        };
        [
            &b"GET /api/users/1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /x HTTP/1.0\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ]
        .iter()
        .map(|raw| prepare(raw, &client, &snapshot, 0, None, &mut Vec::new()).expect("routes"))
        .collect()
    });
    let Some((&pick, head)) = data.split_first() else {
        return;
    };
    let exchange = &exchanges[usize::from(pick) % exchanges.len()];
    let mut out = Vec::new();
    if let Ok(Parsed::Final(plan)) =
        rewrite(head, exchange, pick & 1 == 0, &Default::default(), &mut out)
    {
        assert!(out.starts_with(b"HTTP/1.1 "));
        assert!(out.ends_with(b"\r\n\r\n"));
        assert!((100..600).contains(&plan.status), "status {}", plan.status);
    }
});
