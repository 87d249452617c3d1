//! The proxy: the per-connection loop and the per-core context it runs in.

pub mod access;
mod conn;
pub mod idle;
mod io;
pub mod request;
pub mod response;
pub mod worker;

pub use conn::serve;
pub use worker::{Admitted, Drain, Shared, Snapshot, Worker};

#[cfg(test)]
mod tests;
