//! Socket reads and writes with deadlines, over monoio's owned buffers.
//!
//! With io_uring a buffer belongs to the kernel while an operation is in flight, so each
//! call takes the buffer and gives it back. A read or write cut off by its deadline
//! cannot give it back (the cancelled operation keeps it until the kernel lets go); the
//! caller gets an empty buffer and closes the connection anyway.

use std::io;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};

use super::idle::IdleSlots;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Free space for reads of a request head: heads are small, and an idle connection's
/// pending read holds its buffer, so this bounds the memory of an idle connection.
pub const HEAD_READ_SPACE: usize = 1024;
/// Free space for body reads, so large bodies move in few syscalls.
pub const BODY_READ_SPACE: usize = 16 * 1024;

/// Why a read or write did not finish.
#[derive(Debug)]
pub enum IoFail {
    TimedOut,
    Io,
}

/// Reads more bytes after those already in `buf`, with at least `space` bytes free.
/// `Ok(0)` is end of stream.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    space: usize,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < space {
        buf.reserve(space);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (result, slice) = stream.read(buf.slice_mut(len..cap)).await;
    (result, slice.into_inner())
}

/// `read_more` with a deadline.
pub async fn read_more_until<S: AsyncReadRent>(
    stream: &mut S,
    buf: Vec<u8>,
    space: usize,
    deadline: Instant,
) -> (Result<usize, IoFail>, Vec<u8>) {
    match monoio::time::timeout_at(deadline.into(), read_more(stream, buf, space)).await {
        Ok((Ok(n), buf)) => (Ok(n), buf),
        Ok((Err(_), buf)) => (Err(IoFail::Io), buf),
        Err(_) => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// `read_more` that gives up after `timeout`. The deadline is a slot in the worker's
/// `IdleSlots` (kept to within one housekeeping tick), not a monoio timer: a timer is a
/// 640-byte, cache-aligned value that would be built, moved and registered for every
/// read of every request.
pub async fn read_more_within<S: AsyncReadRent>(
    deadlines: &IdleSlots,
    stream: &mut S,
    buf: Vec<u8>,
    space: usize,
    timeout: Duration,
) -> (Result<usize, IoFail>, Vec<u8>) {
    let slot = deadlines.register();
    let expired = slot.arm_deadline(deadlines.deadline_after(timeout));
    let read = read_more(stream, buf, space);
    monoio::select! {
        (result, buf) = read => (result.map_err(|_| IoFail::Io), buf),
        _ = expired => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// Writes all of `buf` within `timeout` (a deadline slot, as for reads).
pub async fn write_all_within<S: AsyncWriteRent, T: IoBuf + 'static>(
    deadlines: &IdleSlots,
    stream: &mut S,
    buf: T,
    timeout: Duration,
) -> (Result<(), IoFail>, Option<T>) {
    let slot = deadlines.register();
    let expired = slot.arm_deadline(deadlines.deadline_after(timeout));
    let write = stream.write_all(buf);
    monoio::select! {
        (result, buf) = write => (result.map(|_| ()).map_err(|_| IoFail::Io), Some(buf)),
        _ = expired => (Err(IoFail::TimedOut), None),
    }
}

/// Writes `buf[start..end]` within `timeout`, giving the whole vector back.
pub async fn write_range_within<S: AsyncWriteRent>(
    deadlines: &IdleSlots,
    stream: &mut S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
) -> (Result<(), IoFail>, Vec<u8>) {
    let (result, slice) = write_all_within(deadlines, stream, buf.slice(start..end), timeout).await;
    (result, slice.map(|s| s.into_inner()).unwrap_or_default())
}
