//! Plugins: per-plugin configuration and request handling, one module each.

pub mod correlation_id;
pub mod jwt;
pub mod prometheus;
pub mod rate_limiting;
