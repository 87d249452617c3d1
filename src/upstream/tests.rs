//! The keep-alive pool over real sockets, on both of monoio's drivers: a quiet idle
//! connection carries the next exchange; one the upstream closed, reset or wrote to
//! while it was idle is never handed out.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::{Lease, Pool, PoolKey, Stream};

/// Runs `test` on an io_uring runtime (where the kernel allows one) and on epoll.
fn on_both_drivers<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        rt.block_on(test());
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(test());
}

/// How a pool checks an idle connection before reuse: the read of its next answer
/// posted while it sits idle, or (past the worker's posted reads, and for TLS) a peek.
const MODES: [usize; 2] = [super::MAX_POSTED, 0];

/// A listener, and `n` connections to it, pooled: the pool, the server sides.
async fn pooled(n: usize, max_posted: usize) -> (Pool, PoolKey, Vec<std::net::TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let key = (listener.local_addr().unwrap(), 0);
    let pool = Pool::with_posted_reads(8, Duration::from_secs(60), max_posted);
    let mut servers = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect_addr(key.0).await.unwrap();
        servers.push(listener.accept().unwrap().0);
        give_back(&pool, key, Lease::Whole(Stream::Plain(client))).await;
    }
    (pool, key, servers)
}

/// Returns a connection to the pool as an exchange does: its next read posted first,
/// then a write to the client (here a pause) that takes the worker through the kernel.
async fn give_back(pool: &Pool, key: PoolKey, mut lease: Lease) {
    lease.post(pool, buffer);
    monoio::time::sleep(Duration::from_millis(1)).await;
    pool.put(key, lease, Instant::now());
}

fn buffer() -> Vec<u8> {
    Vec::with_capacity(64)
}

/// Reads the answer to what was written on `lease`: through its posted read when it has
/// one (which makes it whole again), else a read of its own.
async fn answer(lease: &mut Lease) -> Vec<u8> {
    let (result, buf) = match lease.take_posted() {
        Some(posted) => posted.read(lease).await,
        None => lease.read(Vec::with_capacity(64)).await,
    };
    assert!(result.unwrap() > 0, "an answer");
    buf
}

/// One exchange on `lease` with `server`: `ping` up, `pong` back.
async fn ping(lease: &mut Lease, server: &mut std::net::TcpStream) {
    let (result, _) = lease.write_all(b"ping").await;
    result.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    server.write_all(b"pong").unwrap();
    assert_eq!(answer(lease).await, b"pong");
}

#[test]
fn a_quiet_idle_connection_carries_the_next_exchange() {
    on_both_drivers(|| async {
        for max_posted in MODES {
            let (pool, key, mut servers) = pooled(1, max_posted).await;
            assert_eq!(pool.posted(), max_posted.min(1));
            let mut lease = pool.take(key, Instant::now()).expect("the idle connection");
            assert_eq!(matches!(lease, Lease::Posted(_)), max_posted > 0);
            // Its read stays posted until the answer comes.
            assert_eq!(pool.posted(), max_posted.min(1));
            ping(&mut lease, &mut servers[0]).await;
            assert_eq!(pool.posted(), 0);
            // Whole again: the next exchange reads as any connection does.
            assert!(matches!(lease, Lease::Whole(_)));
            ping(&mut lease, &mut servers[0]).await;
            assert!(pool.take(key, Instant::now()).is_none());
            // Back in the pool and out again, it carries a third.
            give_back(&pool, key, lease).await;
            let mut lease = pool.take(key, Instant::now()).expect("the idle connection");
            ping(&mut lease, &mut servers[0]).await;
        }
    });
}

/// A request with a body to stream watches the socket itself, so the read posted on
/// its connection is abandoned first: the answer goes to the read made after, none of
/// it to the abandoned one.
#[test]
fn an_abandoned_posted_read_takes_nothing_of_the_answer() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(1, super::MAX_POSTED).await;
        // Idle a while: the posted read is with the kernel, not only queued for it.
        monoio::time::sleep(Duration::from_millis(10)).await;
        let lease = pool.take(key, Instant::now()).expect("the idle connection");
        assert!(matches!(lease, Lease::Posted(_)));
        let mut lease = lease.whole();
        assert!(matches!(lease, Lease::Whole(_)));
        for _ in 0..3 {
            let exchange = ping(&mut lease, &mut servers[0]);
            monoio::time::timeout(Duration::from_secs(5), exchange)
                .await
                .expect("the answer reaches the read made after the abandoned one");
        }
    });
}

#[test]
fn a_connection_closed_or_written_to_while_idle_is_never_handed_out() {
    on_both_drivers(|| async {
        for max_posted in MODES {
            let (pool, key, mut servers) = pooled(4, max_posted).await;
            // Taken newest first: the fourth is reset, the third closed, the second
            // hears bytes nobody asked for, the first stays quiet.
            socket2::SockRef::from(&servers[3])
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(servers.pop());
            drop(servers.pop());
            servers[1]
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            monoio::time::sleep(Duration::from_millis(20)).await;
            let mut quiet = pool
                .take(key, Instant::now())
                .expect("the quiet connection");
            assert!(pool.take(key, Instant::now()).is_none());
            // Only the quiet one's read is still posted.
            assert_eq!(pool.posted(), max_posted.min(1));
            // The one handed out is the first: its server sees what is written to it,
            // and its answer is the one read.
            ping(&mut quiet, &mut servers[0]).await;
            assert_eq!(pool.posted(), 0);
        }
    });
}

/// Bytes the upstream sent out of turn before the connection is pooled (a body after the
/// answer to a HEAD, in a segment of its own) are caught by then: the read is posted
/// before the last write to the client, so the kernel has it when the connection goes
/// into the pool, where it is never handed out.
#[test]
fn bytes_out_of_turn_before_pooling_keep_a_connection_out() {
    on_both_drivers(|| async {
        for (stray_first, max_posted) in [
            (true, super::MAX_POSTED),
            (false, super::MAX_POSTED),
            (true, 0),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let key = (listener.local_addr().unwrap(), 0);
            let pool = Pool::with_posted_reads(8, Duration::from_secs(60), max_posted);
            let client = TcpStream::connect_addr(key.0).await.unwrap();
            let mut server = listener.accept().unwrap().0;
            let stray = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
            if stray_first {
                server.write_all(stray).unwrap();
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut lease = Lease::Whole(Stream::Plain(client));
            lease.post(&pool, buffer);
            if !stray_first {
                server.write_all(stray).unwrap();
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
            pool.put(key, lease, Instant::now());
            assert!(
                pool.take(key, Instant::now()).is_none(),
                "stray bytes {} the read was posted, posted reads {max_posted}",
                if stray_first { "before" } else { "after" }
            );
            assert_eq!(pool.posted(), 0);
        }
    });
}

/// Past `MAX_POSTED`, idle connections hold no buffer and are peeked at instead; they
/// carry exchanges as well.
#[test]
fn posted_reads_stop_at_the_workers_maximum() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(3, 2).await;
        assert_eq!(pool.posted(), 2);
        // Newest first: the third went in past the maximum.
        let mut third = pool.take(key, Instant::now()).expect("the third");
        assert!(matches!(third, Lease::Whole(_)));
        ping(&mut third, &mut servers[2]).await;
        for server in servers[..2].iter_mut().rev() {
            let mut lease = pool.take(key, Instant::now()).expect("a posted one");
            assert!(matches!(lease, Lease::Posted(_)));
            ping(&mut lease, server).await;
        }
        assert_eq!(pool.posted(), 0);
        // Room again: the third, back in the pool, gets a read posted.
        give_back(&pool, key, third).await;
        assert_eq!(pool.posted(), 1);
        pool.clear();
        assert_eq!(pool.posted(), 0);
    });
}

/// A connection the upstream closed while idle gives back its buffer and its place
/// among the posted reads at the next sweep, not at its idle timeout.
#[test]
fn a_connection_the_upstream_closed_is_swept_at_once() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(2, super::MAX_POSTED).await;
        assert_eq!(pool.posted(), 2);
        drop(servers.pop());
        monoio::time::sleep(Duration::from_millis(20)).await;
        pool.sweep(Instant::now());
        assert_eq!(pool.posted(), 1);
        let mut lease = pool.take(key, Instant::now()).expect("the quiet one");
        ping(&mut lease, &mut servers[0]).await;
    });
}

#[test]
fn past_the_idle_timeout_connections_are_closed() {
    on_both_drivers(|| async {
        for max_posted in MODES {
            let (pool, key, mut servers) = pooled(2, max_posted).await;
            assert!(pool
                .take(key, Instant::now() + Duration::from_secs(61))
                .is_none());
            let (pool, _, more) = pooled(1, max_posted).await;
            servers.extend(more);
            pool.sweep(Instant::now() + Duration::from_secs(61));
            assert_eq!(pool.posted(), 0);
            // (With io_uring a socket is closed, and a posted read cancelled, through
            // the ring: let the loop submit that.)
            monoio::time::sleep(Duration::from_millis(20)).await;
            // Every side the pools held is closed: each server reads end of stream.
            for server in &mut servers {
                server
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
            }
        }
    });
}

/// A reload's pool settings apply to the connections already idle: a lowered
/// `upstream_keepalive_max_idle` at the next return, a shorter idle timeout at once.
#[test]
fn reloaded_pool_settings_apply_to_idle_connections() {
    on_both_drivers(|| async {
        for max_posted in MODES {
            let (pool, key, mut servers) = pooled(5, max_posted).await;
            let newest = pool.take(key, Instant::now()).expect("the newest");
            pool.configure(2, Duration::from_secs(60));
            give_back(&pool, key, newest).await;
            monoio::time::sleep(Duration::from_millis(20)).await;
            // The three oldest were closed to make room: two are left.
            for server in &mut servers[..3] {
                server
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
            }
            assert_eq!(pool.posted(), max_posted.min(2));
            pool.configure(2, Duration::from_millis(1));
            let later = Instant::now() + Duration::from_millis(5);
            assert!(pool.take(key, later).is_none());
        }
    });
}
