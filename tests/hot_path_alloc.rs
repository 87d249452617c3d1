//! Parse → decide → write-head allocates nothing once warm.
//!
//! A counting global allocator wraps the system one; after a warm-up round the request
//! step (`request::prepare`) and the response-head step (`response::rewrite`) run again
//! with reused buffers and must not allocate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringway::config::{Config, NodeOverrides};
use ringway::proxy::request::{prepare, ClientInfo};
use ringway::proxy::response::rewrite;
use ringway::proxy::Snapshot;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only a thread-local cell, which does not allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const REQUESTS: [&[u8]; 3] = [
    b"GET /api/users/42?fields=a,b HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\nX-Forwarded-For: 203.0.113.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
    b"POST /api/orders HTTP/1.1\r\nHost: api.example.com:8000\r\nContent-Length: 0013\r\nContent-Type: application/json\r\n\r\n",
    b"GET /api/users/%34%32/../7 HTTP/1.1\r\nHost: a\r\n\r\n",
];

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";

#[test]
fn request_and_response_steps_do_not_allocate_once_warm() {
    let yaml = "_format_version: \"3.0\"\nservices:\n  - name: api\n    url: http://127.0.0.1:9001/v1\n    routes:\n      - name: users\n        paths: [/api/users]\n      - name: orders\n        paths: [\"~/api/orders$\"]\n        methods: [POST]\n        hosts: [\"*.example.com\"]\n";
    let snapshot =
        Snapshot::new(Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default()).unwrap());
    let client = ClientInfo {
        ip: "192.0.2.7".into(),
        port: "8000".into(),
        trusted: false,
        https: false,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(4096);
    let mut head = Vec::with_capacity(4096);

    // Warm-up: regex caches, the thread-local Date cache and buffers fill once.
    for raw in REQUESTS.iter().take(2) {
        out.clear();
        let exchange = prepare(raw, &client, &snapshot, 0, None, &mut out).unwrap();
        head.clear();
        rewrite(RESPONSE, &exchange, true, &Default::default(), &mut head).unwrap();
    }

    let before = allocations();
    for _ in 0..100 {
        for raw in REQUESTS.iter().take(2) {
            out.clear();
            let exchange = prepare(raw, &client, &snapshot, 0, None, &mut out).unwrap();
            head.clear();
            rewrite(RESPONSE, &exchange, true, &Default::default(), &mut head).unwrap();
        }
    }
    assert_eq!(allocations() - before, 0, "the hot path allocated");

    // A path that needs normalizing (escapes, dot segments) is the rare case that builds
    // a new path; it stays a small, fixed number of allocations.
    out.clear();
    let before = allocations();
    prepare(REQUESTS[2], &client, &snapshot, 0, None, &mut out).unwrap();
    let normalizing = allocations() - before;
    assert!(
        (1..=4).contains(&normalizing),
        "normalizing allocated {normalizing} times"
    );
}
