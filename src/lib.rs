//! ringway: a thread-per-core API gateway on io_uring that reads Kong's declarative config.
//!
//! Dependencies point down the request path:
//! `cli` → `server` (workers, listeners, shutdown, reload) → `proxy` (the per-connection
//! loop) → leaves: `http` (parse, framing, chunked, generated responses), `route`,
//! `upstream` (connect, pool). Beside them sit `config` (file structs → validated model),
//! `admin` (its own thread) and `metrics` (per-worker counters published for the admin).

pub mod accesslog;
pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod plugins;
pub mod proxy;
pub mod route;
pub mod server;
pub mod store;
pub mod tls;
pub mod upstream;

/// The version string printed by `ringway version` and reported in `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Kong version whose file format and Admin API ringway answers as, where tools read
/// Kong's version to choose what to send: `GET /`'s `version` (decK reads it to pick the
/// 3.0 file format and the consumer-group scoped plugins of 3.4 on). ringway's own is
/// beside it there.
pub const KONG_COMPATIBLE_VERSION: &str = "3.9.0";
