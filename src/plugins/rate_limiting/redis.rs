//! `policy: redis`: buckets shared by several ringway instances. Requests never wait
//! for Redis: every worker keeps deciding from the local buckets, and one background
//! thread reconciles them with Redis every `sync_rate` seconds. Each sync sends the
//! tokens this instance took since the last one and gets back the cluster-wide state,
//! computed by a script on the Redis server (with its clock, so instances' clocks need
//! not agree).
//!
//! Overshoot: what another instance admits reaches this one after that instance's next
//! sync and then this one's, so the cluster admits at most `limit` plus what the other
//! instances admit in two sync intervals (`2 × sync_rate × (instances − 1) × their
//! request rate`); a key an instance has not synced yet starts full there, so until its
//! first sync of it that instance may admit up to the whole limit (never more than
//! `instances × limit` in all). When Redis is unreachable each instance goes on enforcing the
//! limit on its own buckets (`instances × limit` at most, never unlimited); with
//! `fault_tolerant: false` requests get 500 instead until a sync succeeds again.
//!
//! The client is a small RESP implementation over a blocking socket with timeouts: the
//! sync thread needs one connection and three commands, and the maintained Redis crates
//! bring an async runtime or a URL-parsing stack for that.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::limiter::{Bucket, Store};
use super::{Config, Policy};

/// How often buckets are reconciled when `sync_rate` is not set (Kong's -1 means a
/// Redis round trip per request, which ringway never makes).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Whether the last sync with one Redis login (endpoint and credentials) succeeded;
/// shared by every config that logs in the same way.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Where one plugin instance's Redis is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: u32,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub sync_interval: Duration,
    pub health: Arc<Health>,
}

impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        self.endpoint() == other.endpoint()
            && self.username == other.username
            && self.password == other.password
            && self.connect_timeout == other.connect_timeout
            && self.io_timeout == other.io_timeout
            && self.sync_interval == other.sync_interval
    }
}

impl Eq for Settings {}

impl Settings {
    /// `host:port/db`, as logs name it.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// One connection and one health flag each: the endpoint and the login, so that
    /// plugins with other credentials for the same Redis never ride on another's.
    pub fn login(&self) -> String {
        login(
            &self.endpoint(),
            self.username.as_deref(),
            self.password.as_deref(),
        )
    }
}

/// The endpoint with a digest of the credentials (the password itself is not kept in
/// a key that may be printed).
pub fn login(endpoint: &str, username: Option<&str>, password: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in [username, password] {
        match part {
            Some(text) => {
                digest.update([1]);
                digest.update((text.len() as u64).to_le_bytes());
                digest.update(text.as_bytes());
            }
            None => digest.update([0]),
        }
    }
    let digest = digest.finalize();
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{endpoint}#{tag}")
}

/// The health flag for a login (one per process, so reloads keep it).
pub fn health(login: &str) -> Arc<Health> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Health>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(login.to_owned())
        .or_insert_with(|| {
            Arc::new(Health {
                up: AtomicBool::new(true),
            })
        })
        .clone()
}

/// The name a bucket has in Redis: a digest of the identifier, the same on every
/// instance (the in-process table hashes with a per-process key).
pub fn shared_name(identifier: &[u8]) -> Box<str> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(identifier);
    digest[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_boxed_str()
}

/// Applies a batch of token counts to the shared buckets and returns, per period, how
/// far (in microseconds) each bucket is from full. ARGV is (field, interval µs, count,
/// limit) quadruples; the key expires once every period would be full again.
/// The interval each period was drawn at is kept beside it: when a limit changes, the
/// tokens in use stay in use at the new interval. A bucket is at most empty: what the
/// instances admitted together beyond the limit between two syncs is not carried as a
/// debt past one period (Kong's windows forget an overshoot when they end).
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local ttl = 1000
for i = 1, #ARGV, 4 do
  local field = ARGV[i]
  local interval = tonumber(ARGV[i + 1])
  local count = tonumber(ARGV[i + 2])
  local limit = tonumber(ARGV[i + 3])
  local tat = tonumber(redis.call('HGET', KEYS[1], field)) or now
  if tat < now then tat = now end
  local was = tonumber(redis.call('HGET', KEYS[1], field .. '/interval'))
  if was and was ~= interval then
    tat = now + math.min(math.ceil((tat - now) / was), limit) * interval
  end
  tat = tat + count * interval
  if tat < now then tat = now end
  if tat > now + limit * interval then tat = now + limit * interval end
  redis.call('HSET', KEYS[1], field, string.format('%.0f', tat), field .. '/interval', interval)
  local debt = tat - now
  out[#out + 1] = string.format('%.0f', debt)
  if debt / 1000 + 1000 > ttl then ttl = debt / 1000 + 1000 end
end
redis.call('PEXPIRE', KEYS[1], math.floor(ttl))
return out
"#;

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Bounds on what a reply may claim, so a confused peer cannot make us allocate.
const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1 << 16;

/// One blocking connection with timeouts on every call.
pub struct Connection {
    reader: BufReader<TcpStream>,
    sha: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("redis: {0}")]
    Server(String),
    #[error("redis: unexpected reply")]
    Protocol,
}

impl Connection {
    pub fn open(settings: &Settings) -> Result<Connection, RedisError> {
        let addr = (settings.host.as_str(), settings.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address for the Redis host"))?;
        let stream = TcpStream::connect_timeout(&addr, settings.connect_timeout)?;
        stream.set_read_timeout(Some(settings.io_timeout))?;
        stream.set_write_timeout(Some(settings.io_timeout))?;
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            reader: BufReader::new(stream),
            sha: None,
        };
        if let Some(password) = &settings.password {
            let reply = match &settings.username {
                Some(user) => connection.call(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => connection.call(&[b"AUTH", password.as_bytes()])?,
            };
            expect_ok(reply)?;
        }
        if settings.database != 0 {
            let db = settings.database.to_string();
            expect_ok(connection.call(&[b"SELECT", db.as_bytes()])?)?;
        }
        match connection.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()])? {
            Reply::Bulk(Some(sha)) => {
                connection.sha = Some(String::from_utf8(sha).map_err(|_| RedisError::Protocol)?)
            }
            Reply::Error(e) => return Err(RedisError::Server(e)),
            _ => return Err(RedisError::Protocol),
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.reader.get_mut().write_all(&out)?;
        read_reply(&mut self.reader, 0)
    }

    /// Sends several commands in one write and reads their replies in order.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut out = Vec::new();
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            encode(&mut out, &args);
        }
        self.reader.get_mut().write_all(&out)?;
        commands
            .iter()
            .map(|_| read_reply(&mut self.reader, 0))
            .collect()
    }
}

fn expect_ok(reply: Reply) -> Result<(), RedisError> {
    match reply {
        Reply::Status(_) => Ok(()),
        Reply::Error(e) => Err(RedisError::Server(e)),
        _ => Err(RedisError::Protocol),
    }
}

/// RESP: an array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply (nested arrays at most a few levels deep).
pub fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, RedisError> {
    if depth > 4 {
        return Err(RedisError::Protocol);
    }
    let mut line = Vec::new();
    reader.by_ref().take(512).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") || line.len() < 3 {
        return Err(if line.is_empty() {
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
        } else {
            RedisError::Protocol
        });
    }
    let text = std::str::from_utf8(&line[1..line.len() - 2]).map_err(|_| RedisError::Protocol)?;
    let number = || text.parse::<i64>().map_err(|_| RedisError::Protocol);
    match line[0] {
        b'+' => Ok(Reply::Status(text.to_owned())),
        b'-' => Ok(Reply::Error(text.to_owned())),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).map_err(|_| RedisError::Protocol)?;
            if n > MAX_BULK {
                return Err(RedisError::Protocol);
            }
            let mut data = vec![0; n + 2];
            reader.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(RedisError::Protocol);
            }
            data.truncate(n);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let n = usize::try_from(n).map_err(|_| RedisError::Protocol)?;
            if n > MAX_ARRAY {
                return Err(RedisError::Protocol);
            }
            (0..n)
                .map(|_| read_reply(reader, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(|items| Reply::Array(Some(items)))
        }
        _ => Err(RedisError::Protocol),
    }
}

/// The background side: one connection per login, reopened after failures.
#[derive(Default)]
pub struct Syncer {
    connections: HashMap<String, Connection>,
    last: HashMap<u64, Instant>,
    failing: HashMap<String, Instant>,
}

/// Buckets synced in one pipeline.
const BATCH: usize = 256;

impl Syncer {
    /// Syncs every Redis-backed plugin instance that is due. Returns how long the
    /// caller may sleep before the next one is due.
    pub fn run(&mut self, store: &Store, configs: &[Arc<Config>]) -> Duration {
        let mut next = Duration::from_secs(1);
        for config in configs {
            let Policy::Redis(settings) = &config.policy else {
                continue;
            };
            next = next.min(settings.sync_interval);
            let now = Instant::now();
            if self
                .last
                .get(&config.instance)
                .is_some_and(|at| now.duration_since(*at) < settings.sync_interval)
            {
                continue;
            }
            self.last.insert(config.instance, now);
            let login = settings.login();
            if let Err(e) = self.sync(store, config, settings, &login) {
                self.connections.remove(&login);
                if self.failing.insert(login, now).is_none() {
                    // One line for the address, whichever instances share it: what
                    // requests meet meanwhile depends on each one's fault_tolerant.
                    log::warn!(
                        "rate-limiting: Redis at {} unreachable ({e}); until it is back, limits are enforced locally (a 500 where fault_tolerant is false)",
                        settings.endpoint()
                    );
                }
                settings.health.set(false);
            } else {
                if self.failing.remove(&login).is_some() {
                    log::info!(
                        "rate-limiting: Redis at {} reachable again",
                        settings.endpoint()
                    );
                }
                settings.health.set(true);
            }
        }
        next
    }

    fn sync(
        &mut self,
        store: &Store,
        config: &Config,
        settings: &Settings,
        login: &str,
    ) -> Result<(), RedisError> {
        if !self.connections.contains_key(login) {
            let connection = Connection::open(settings)?;
            self.connections.insert(login.to_owned(), connection);
        }
        let Some(connection) = self.connections.get_mut(login) else {
            return Ok(());
        };
        let now = store.now();
        // Buckets with something to send, or not full (others may have drawn them).
        let due: Vec<Arc<Bucket>> = store
            .buckets_of(config.instance)
            .into_iter()
            .filter(|b| {
                b.shared_name.is_some()
                    && (b.pending.load(Ordering::Acquire) != 0
                        || config.limits.iter().any(|l| b.tat(l.period) > now))
            })
            .collect();
        for batch in due.chunks(BATCH) {
            let sha = connection.sha.clone().unwrap_or_default();
            let mut sent = Vec::with_capacity(batch.len());
            let mut commands = Vec::with_capacity(batch.len());
            for bucket in batch {
                let count = bucket.pending.swap(0, Ordering::AcqRel);
                sent.push(count);
                let key = format!(
                    "ringway:rate-limiting:{:016x}:{}",
                    config.instance,
                    bucket.shared_name.as_deref().unwrap_or_default()
                );
                let mut command = vec![
                    b"EVALSHA".to_vec(),
                    sha.clone().into_bytes(),
                    b"1".to_vec(),
                    key.into_bytes(),
                ];
                for limit in &config.limits {
                    command.push(limit.period.name().as_bytes().to_vec());
                    command.push((limit.interval / 1000).max(1).to_string().into_bytes());
                    command.push(count.to_string().into_bytes());
                    command.push(limit.limit.to_string().into_bytes());
                }
                commands.push(command);
            }
            let replies = match connection.pipeline(&commands) {
                Ok(replies) => replies,
                Err(e) => {
                    // Nothing was applied that we know of: keep the counts for next time.
                    for (bucket, count) in batch.iter().zip(&sent) {
                        bucket.pending.fetch_add(*count, Ordering::AcqRel);
                    }
                    return Err(e);
                }
            };
            let now = store.now();
            for ((bucket, reply), count) in batch.iter().zip(replies).zip(&sent) {
                let Reply::Array(Some(debts)) = reply else {
                    bucket.pending.fetch_add(*count, Ordering::AcqRel);
                    if let Reply::Error(e) = reply {
                        return Err(RedisError::Server(e));
                    }
                    return Err(RedisError::Protocol);
                };
                // Tokens taken here since the counts were swapped out are not in Redis's
                // answer yet: they stay on top of it.
                let unsent = bucket.pending.load(Ordering::Acquire).max(0) as u64;
                if debts.len() != config.limits.len() {
                    return Err(RedisError::Protocol);
                }
                for (limit, debt) in config.limits.iter().zip(debts) {
                    let Reply::Bulk(Some(debt)) = debt else {
                        return Err(RedisError::Protocol);
                    };
                    let debt_us: u64 = std::str::from_utf8(&debt)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(RedisError::Protocol)?;
                    // What Redis says is not trusted to stay in range: a bucket drawn
                    // ahead saturates instead of wrapping the clock.
                    let tat = debt_us
                        .saturating_mul(1000)
                        .saturating_add(unsent.saturating_mul(limit.interval))
                        .min(limit.capacity())
                        .saturating_add(now);
                    bucket.set_tat(limit, tat);
                }
            }
        }
        Ok(())
    }
}
