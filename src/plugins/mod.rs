//! Plugins: per-plugin configuration and request handling, one module each.

pub mod jwt;
pub mod rate_limiting;
