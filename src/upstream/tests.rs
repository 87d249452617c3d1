//! The keep-alive pool over real sockets, on both of monoio's drivers: a quiet idle
//! connection carries the next exchange; one the upstream closed, reset or wrote to
//! while it was idle is never handed out.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::{Pool, PoolKey, Stream};

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

/// A listener, and `n` connections to it, pooled: the pool, the server sides.
async fn pooled(n: usize) -> (Pool, PoolKey, Vec<std::net::TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let key = (listener.local_addr().unwrap(), 0);
    let pool = Pool::new(8, Duration::from_secs(60));
    let mut servers = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect_addr(key.0).await.unwrap();
        servers.push(listener.accept().unwrap().0);
        pool.put(key, Stream::Plain(client), Instant::now());
    }
    (pool, key, servers)
}

#[test]
fn a_quiet_idle_connection_carries_the_next_exchange() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(1).await;
        let mut stream = pool.take(key, Instant::now()).expect("the idle connection");
        let (result, _) = stream.write_all(b"ping").await;
        result.unwrap();
        let mut got = [0u8; 4];
        servers[0].read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        servers[0].write_all(b"pong").unwrap();
        let (result, buf) = stream.read(Vec::with_capacity(16)).await;
        assert_eq!(result.unwrap(), 4);
        assert_eq!(buf, b"pong");
        assert!(pool.take(key, Instant::now()).is_none());
    });
}

#[test]
fn a_connection_closed_or_written_to_while_idle_is_never_handed_out() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(4).await;
        // Taken newest first: the fourth is reset, the third closed, the second hears
        // bytes nobody asked for, the first stays quiet.
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
        // The one handed out is the first: its server sees what is written to it.
        let (result, _) = quiet.write_all(b"x").await;
        result.unwrap();
        let mut got = [0u8; 1];
        servers[0].read_exact(&mut got).unwrap();
    });
}

#[test]
fn past_the_idle_timeout_connections_are_closed() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(2).await;
        assert!(pool
            .take(key, Instant::now() + Duration::from_secs(61))
            .is_none());
        let (pool, _, more) = pooled(1).await;
        servers.extend(more);
        pool.sweep(Instant::now() + Duration::from_secs(61));
        // (With io_uring a socket is closed through the ring: let the loop submit that.)
        monoio::time::sleep(Duration::from_millis(20)).await;
        // Every side the pools held is closed: each server reads end of stream.
        for server in &mut servers {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
        }
    });
}

/// A reload's pool settings apply to the connections already idle: a lowered
/// `upstream_keepalive_max_idle` at the next return, a shorter idle timeout at once.
#[test]
fn reloaded_pool_settings_apply_to_idle_connections() {
    on_both_drivers(|| async {
        let (pool, key, mut servers) = pooled(5).await;
        let newest = pool.take(key, Instant::now()).expect("the newest");
        pool.configure(2, Duration::from_secs(60));
        pool.put(key, newest, Instant::now());
        monoio::time::sleep(Duration::from_millis(20)).await;
        // The three oldest were closed to make room: two are left.
        for server in &mut servers[..3] {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
        }
        pool.configure(2, Duration::from_millis(1));
        let later = Instant::now() + Duration::from_millis(5);
        assert!(pool.take(key, later).is_none());
    });
}
