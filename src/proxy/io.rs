//! Socket reads and writes with deadlines, over monoio's owned buffers.
//!
//! With io_uring a buffer belongs to the kernel while an operation is in flight, so each
//! call takes the buffer and gives it back. A read or write cut off by its deadline
//! cannot give it back (the cancelled operation keeps it until the kernel lets go); the
//! caller gets an empty buffer and closes the connection anyway.
//!
//! Every race of an operation against its deadline (here and in the connection loop) is
//! `biased;` toward the operation: one that completed as the deadline passed counts as
//! done, not timed out, and no random pick is drawn per race.

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
        biased;
        (result, buf) = read => (result.map_err(|_| IoFail::Io), buf),
        _ = expired => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// How long a wait for an upstream's answer goes before it first looks whether its client
/// is still there (then as often again), on the housekeeping tick: an answer sooner costs
/// nothing more than `read_more_within`.
pub const CLIENT_CHECK_AFTER: Duration = Duration::from_millis(100);

/// How a wait for an upstream's answer ended.
pub enum Answered {
    Read(Result<usize, IoFail>),
    /// The client closed or reset its connection meanwhile.
    ClientGone,
}

/// `read_more_within` for an upstream's answer that also ends, as nginx's wait does, when
/// the client goes away meanwhile (its socket, `client`, closed or reset: a non-blocking
/// peek at each check, bytes there being a pipelined request, not a departure). Without
/// it a client that left would hold its connection slot, and the upstream its work, for
/// up to `timeout`.
pub async fn read_answer_within<S: AsyncReadRent>(
    deadlines: &IdleSlots,
    stream: &mut S,
    buf: Vec<u8>,
    space: usize,
    timeout: Duration,
    client: Option<std::os::fd::RawFd>,
) -> (Answered, Vec<u8>) {
    answer_within(deadlines, read_more(stream, buf, space), timeout, client).await
}

/// `read_answer_within` for a read already under way (the one posted on a pooled
/// upstream connection once its previous response was in).
pub async fn answer_within<F>(
    deadlines: &IdleSlots,
    read: F,
    timeout: Duration,
    client: Option<std::os::fd::RawFd>,
) -> (Answered, Vec<u8>)
where
    F: std::future::Future<Output = (io::Result<usize>, Vec<u8>)>,
{
    let deadline = deadlines.deadline_after(timeout);
    match watched(deadlines, std::pin::pin!(read), Some(deadline), client).await {
        Watched::Done((result, buf)) => (Answered::Read(result.map_err(|_| IoFail::Io)), buf),
        Watched::TimedOut => (Answered::Read(Err(IoFail::TimedOut)), Vec::new()),
        Watched::ClientGone => (Answered::ClientGone, Vec::new()),
    }
}

/// Runs `work` (an upstream connect, its TLS handshake) unless the client leaves first:
/// `None` then, `work` dropped, as nginx gives up a connect for a client that closed.
/// The client's socket is looked at as `read_answer_within` does; `work` is bounded by
/// its own deadline.
pub async fn unless_client_leaves<F: std::future::Future>(
    deadlines: &IdleSlots,
    work: F,
    client: Option<std::os::fd::RawFd>,
) -> Option<F::Output> {
    match watched(deadlines, std::pin::pin!(work), None, client).await {
        Watched::Done(output) => Some(output),
        Watched::TimedOut | Watched::ClientGone => None,
    }
}

/// How a `watched` wait ended.
enum Watched<T> {
    Done(T),
    TimedOut,
    ClientGone,
}

/// Runs `work` until it is done, `deadline` passes, or the client (its socket, `client`)
/// leaves, looked at every `CLIENT_CHECK_AFTER` on the worker's deadline slots. `work` is
/// pinned by the caller, so it is kept once in the caller's state, not again in this one.
async fn watched<F: std::future::Future>(
    deadlines: &IdleSlots,
    mut work: std::pin::Pin<&mut F>,
    deadline: Option<Instant>,
    client: Option<std::os::fd::RawFd>,
) -> Watched<F::Output> {
    let slot = deadlines.register();
    loop {
        let check = client.map(|_| deadlines.deadline_after(CLIENT_CHECK_AFTER));
        let Some(due) = check.into_iter().chain(deadline).min() else {
            return Watched::Done(work.await);
        };
        monoio::select! {
            biased;
            output = &mut work => return Watched::Done(output),
            _ = slot.arm_deadline(due) => {}
        }
        if deadline.is_some_and(|deadline| deadlines.coarse_now() >= deadline) {
            return Watched::TimedOut;
        }
        if client.is_some_and(peer_gone) {
            return Watched::ClientGone;
        }
    }
}

/// Whether the peer of a socket closed or reset it (a peek, which consumes nothing; bytes
/// there are not a departure).
fn peer_gone(fd: std::os::fd::RawFd) -> bool {
    match crate::upstream::peek(fd, &mut [0]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
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
        biased;
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

/// A head and a range of a body buffer, written with one `writev`: the body is not copied
/// behind the head. Gives both vectors back.
pub struct HeadBody {
    head: Vec<u8>,
    body: Vec<u8>,
    /// On the heap: the runtime takes the iovecs' address when it submits the write and
    /// moves this value afterwards.
    iov: Box<[libc::iovec; 2]>,
}

impl HeadBody {
    pub fn new(head: Vec<u8>, body: Vec<u8>, range: std::ops::Range<usize>) -> HeadBody {
        let range = range.start.min(body.len())..range.end.min(body.len());
        let iov = Box::new([
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body[range.clone()].as_ptr() as *mut libc::c_void,
                iov_len: range.len(),
            },
        ]);
        HeadBody { head, body, iov }
    }

    /// The first iovec with bytes left (the body's once the head is written).
    fn first(&self) -> usize {
        usize::from(self.iov[0].iov_len == 0)
    }

    fn remaining(&self) -> usize {
        self.iov[0].iov_len + self.iov[1].iov_len
    }

    /// Drops the first `n` unwritten bytes.
    fn advance(&mut self, mut n: usize) {
        for iov in self.iov.iter_mut() {
            let step = n.min(iov.iov_len);
            iov.iov_base = iov.iov_base.wrapping_add(step);
            iov.iov_len -= step;
            n -= step;
        }
    }

    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.head, self.body)
    }
}

// SAFETY: the iovec array is boxed and both iovecs point into the heap buffers of `head`
// and `body`, which this value owns and never resizes, so the array and what it points to
// stay valid and unmoved while the runtime holds the value (a move of `HeadBody` moves
// only the box pointer and the `Vec` headers); each length stays within its buffer
// (`advance` only shrinks them).
#[allow(unsafe_code)]
unsafe impl monoio::buf::IoVecBuf for HeadBody {
    // A written head is left out, not offered as an empty iovec: some writers (TLS) take
    // only the first iovec and would report 0 bytes written.
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.first()..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len() - self.first()
    }
}

/// Writes all of a [`HeadBody`] within `timeout` (a deadline slot, as for reads).
pub async fn write_head_body_within<S: AsyncWriteRent>(
    deadlines: &IdleSlots,
    stream: &mut S,
    mut buf: HeadBody,
    timeout: Duration,
) -> (Result<(), IoFail>, Option<HeadBody>) {
    let slot = deadlines.register();
    let expired = slot.arm_deadline(deadlines.deadline_after(timeout));
    let write = async move {
        while buf.remaining() > 0 {
            let (result, back) = stream.writev(buf).await;
            buf = back;
            match result {
                Ok(0) => return (Err(IoFail::Io), buf),
                Ok(n) => buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return (Err(IoFail::Io), buf),
            }
        }
        (Ok(()), buf)
    };
    monoio::select! {
        biased;
        (result, buf) = write => (result, Some(buf)),
        _ = expired => (Err(IoFail::TimedOut), None),
    }
}

#[cfg(test)]
mod tests {
    use super::HeadBody;

    /// The bytes a `HeadBody` still has to write, read through its iovecs' bounds.
    fn pending(buf: &HeadBody) -> Vec<u8> {
        let mut out = Vec::new();
        let head_written = buf.head.len() - buf.iov[0].iov_len;
        out.extend_from_slice(&buf.head[head_written..]);
        let body_end =
            buf.iov[1].iov_base as usize + buf.iov[1].iov_len - buf.body.as_ptr() as usize;
        out.extend_from_slice(&buf.body[body_end - buf.iov[1].iov_len..body_end]);
        out
    }

    #[test]
    fn partial_writes_advance_across_both_parts() {
        let head = b"HEAD\r\n".to_vec();
        let body = b"xxBODY-BYTESyy".to_vec();
        let mut buf = HeadBody::new(head, body, 2..12);
        assert_eq!(pending(&buf), b"HEAD\r\nBODY-BYTES");
        assert_eq!(buf.remaining(), 16);
        buf.advance(4);
        assert_eq!(pending(&buf), b"\r\nBODY-BYTES");
        assert_eq!(monoio::buf::IoVecBuf::read_iovec_len(&buf), 2);
        buf.advance(5);
        assert_eq!(pending(&buf), b"Y-BYTES");
        // The written head is not offered again, even as an empty iovec.
        assert_eq!(monoio::buf::IoVecBuf::read_iovec_len(&buf), 1);
        buf.advance(7);
        assert_eq!(buf.remaining(), 0);
        let (head, body) = buf.into_parts();
        assert_eq!(
            (head.as_slice(), body.as_slice()),
            (&b"HEAD\r\n"[..], &b"xxBODY-BYTESyy"[..])
        );
    }

    #[test]
    fn a_range_past_the_body_is_clamped() {
        let buf = HeadBody::new(b"H".to_vec(), b"abc".to_vec(), 1..10);
        assert_eq!(buf.remaining(), 3);
        assert_eq!(pending(&buf), b"Hbc");
    }
}
