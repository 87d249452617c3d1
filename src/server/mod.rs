//! Start-up, workers, signals, reload and shutdown.
//!
//! Thread model: one worker thread per core, each with its own monoio runtime (io_uring,
//! or epoll where io_uring is missing), its own SO_REUSEPORT listener per proxy address,
//! its own upstream pool and counters. The kernel spreads connections over the workers'
//! listeners; a connection lives and dies on the worker that accepted it. The Admin API
//! runs on a thread of its own. The main thread only waits for signals: SIGHUP reloads,
//! SIGTERM / SIGINT / SIGQUIT drain and exit, SIGUSR1 reopens the access log file; SIGUSR2
//! (nginx's binary upgrade) is refused with a word on `--takeover`.

mod listen;
mod worker;

pub use worker::io_uring_runtime;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::config::{Config, Driver, LoadError, NodeOverrides};
use crate::control::Control;
use crate::proxy::{Shared, Snapshot};

/// Which io driver runs, as `/status` and `ringway version` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningDriver {
    IoUring,
    Epoll,
}

impl RunningDriver {
    pub fn name(self) -> &'static str {
        match self {
            RunningDriver::IoUring => "io_uring",
            RunningDriver::Epoll => "epoll",
        }
    }
}

/// Whether this kernel lets monoio run on io_uring.
pub fn io_uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Picks the driver: the config's choice, overridden by `RINGWAY_DRIVER`.
pub fn choose_driver(configured: Driver) -> anyhow::Result<RunningDriver> {
    let wanted = match std::env::var("RINGWAY_DRIVER").ok().as_deref() {
        None | Some("") => configured,
        Some("auto") => Driver::Auto,
        Some("io_uring") => Driver::IoUring,
        Some("epoll") => Driver::Epoll,
        Some(other) => bail!("RINGWAY_DRIVER: unknown driver '{other}' (auto, io_uring, epoll)"),
    };
    Ok(match wanted {
        Driver::Epoll => RunningDriver::Epoll,
        Driver::Auto if io_uring_available() => RunningDriver::IoUring,
        Driver::Auto => RunningDriver::Epoll,
        Driver::IoUring if io_uring_available() => RunningDriver::IoUring,
        Driver::IoUring => bail!("io_uring was requested but this kernel does not provide it"),
    })
}

/// Loads the config, describing every problem on its own line.
pub fn load(path: &std::path::Path, overrides: &NodeOverrides) -> anyhow::Result<Config> {
    match Config::load(path, overrides) {
        Ok(config) => Ok(config),
        Err(LoadError::Read(file, e)) => bail!("cannot read config file {file}: {e}"),
        Err(LoadError::Invalid(problems)) => {
            let lines: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
            bail!("invalid config {}: {}", path.display(), lines.join("; "))
        }
    }
}

/// Runs the gateway until SIGTERM / SIGINT; returns once drained.
pub fn run(path: PathBuf, overrides: NodeOverrides) -> anyhow::Result<()> {
    let (config, store, layers) =
        Control::open(path.clone(), overrides.clone()).map_err(anyhow::Error::msg)?;
    crate::logging::init(config.node.log_level);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let node = config.node.clone();
    let driver = choose_driver(node.driver)?;

    // Bind everything before starting anything, so a busy port is a clean error.
    if overrides.takeover {
        takeover_notice();
    }
    let listeners = listen::bind_proxy(&node.proxy_listen, node.workers, overrides.takeover)?;
    let bound: Vec<std::net::SocketAddr> = listeners[0]
        .iter()
        .filter_map(|(l, _)| l.local_addr().ok())
        .collect();
    let admin = listen::bind_admin(node.admin_listen, overrides.takeover)
        .with_context(|| format!("cannot listen on {} (admin_listen)", node.admin_listen))?;
    let admin_addr = admin.local_addr().unwrap_or(node.admin_listen);

    // Signals are registered before workers start so none is lost.
    // Every signal nginx (and so Kong) gives a meaning to is handled: left to its default
    // action, SIGQUIT, SIGUSR1 or SIGUSR2 from a habit or a logrotate hook would kill the
    // process and every request in flight.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("cannot install signal handlers")?;

    let node_id = store.node_id();
    let shared = Arc::new(Shared::new(Snapshot::new(config), node.workers));
    if let Some(target) = &node.access_log {
        let log = crate::accesslog::start(target, shared.access_log_dropped.clone())?;
        let _ = shared.access_log.set(log);
    }
    let control = Arc::new(Control::new(
        shared.clone(),
        path.clone(),
        overrides.clone(),
        store,
        layers,
    ));
    if !control.writable() {
        log::info!("takeover: the Admin API is read-only until the previous process has ended");
        let control = control.clone();
        std::thread::Builder::new()
            .name("ringway-takeover".into())
            .spawn(move || control.take_over_state())
            .context("cannot start the takeover thread")?;
    }
    let running = Arc::new(AtomicUsize::new(node.workers));
    let mut threads = Vec::new();
    for (id, worker_listeners) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let running = running.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringway-worker-{id}"))
            .spawn(move || {
                if let Err(e) = worker::run(id, shared, worker_listeners, driver) {
                    log::error!("worker {id} stopped: {e}");
                }
                running.fetch_sub(1, Ordering::AcqRel);
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let admin_control = control.clone();
    let admin_config = crate::admin::Settings {
        token: node.admin_token.clone(),
        driver,
        workers: node.workers,
        node_id,
    };
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || crate::admin::run(admin, admin_control, admin_config))
        .context("cannot start the admin thread")?;

    let limits_shared = shared.clone();
    std::thread::Builder::new()
        .name("ringway-limits".into())
        .spawn(move || maintain_rate_limits(&limits_shared))
        .context("cannot start the rate-limiting thread")?;

    crate::balance::active::spawn(shared.clone())
        .context("cannot start the health-check thread")?;

    // The bound addresses, so `:0` shows the port the kernel chose.
    let addresses: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    log::info!(
        "ringway {} listening on {} (admin {}), {} worker{} on {}",
        crate::VERSION,
        addresses.join(", "),
        admin_addr,
        node.workers,
        if node.workers == 1 { "" } else { "s" },
        driver.name()
    );

    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&control),
            SIGUSR1 | SIGUSR2 => on_user_signal(&shared, signal),
            // SIGTERM, SIGINT, and SIGQUIT (nginx's graceful stop): all drain.
            _ => break,
        }
    }

    // As the config is now: a reload may have changed it.
    let drain_timeout = shared.snapshot().config.node.drain_timeout;
    log::info!(
        "draining: no new connections; finishing in-flight requests (up to {drain_timeout:?})"
    );
    shared.draining.store(true, Ordering::Release);
    let deadline = Instant::now() + drain_timeout;
    // The workers, and the Admin API requests under way (the Admin API itself stays up
    // to the end, answering /status/ready with 503).
    while running.load(Ordering::Acquire) > 0 || shared.admin_in_flight.load(Ordering::Acquire) > 0
    {
        if Instant::now() >= deadline {
            log::warn!("drain_timeout reached with connections still open; exiting");
            return Ok(());
        }
        for signal in signals.pending() {
            match signal {
                // A reload asked for now would come to nothing: said, not silently dropped.
                SIGHUP => log::warn!("SIGHUP while draining: not reloaded, the process is exiting"),
                SIGUSR1 | SIGUSR2 => on_user_signal(&shared, signal),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for thread in threads {
        let _ = thread.join();
    }
    log::info!("drained; exiting");
    Ok(())
}

/// A binary upgrade: this process binds beside the old one (SO_REUSEPORT). When the old
/// one closes its listeners on SIGTERM, connections still in their accept queues move
/// here only if the kernel migrates them (`net.ipv4.tcp_migrate_req`, Linux 5.14+).
fn takeover_notice() {
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    if migrate {
        log::info!("takeover: sharing the listening ports; send the old process SIGTERM");
    } else {
        log::warn!(
            "takeover: net.ipv4.tcp_migrate_req is off: connections queued on the old process's listeners when it stops may be reset (sysctl -w net.ipv4.tcp_migrate_req=1)"
        );
    }
}

/// The rate-limiting background work: dropping buckets nobody needs (every second) and
/// reconciling Redis-backed ones with Redis (every `sync_rate`). Never on a worker, so
/// a slow Redis cannot stall requests.
fn maintain_rate_limits(shared: &Shared) {
    use crate::config::PluginConfig;
    use crate::plugins::rate_limiting::{redis::Syncer, Policy};
    let mut syncer = Syncer::default();
    let mut last_sweep = Instant::now();
    while !shared.draining.load(Ordering::Acquire) {
        let snapshot = shared.snapshot();
        let redis: Vec<_> = snapshot
            .config
            .plugins
            .iter()
            .filter(|p| p.enabled)
            .filter_map(|p| match &p.config {
                PluginConfig::RateLimiting(c) if matches!(c.policy, Policy::Redis(_)) => {
                    Some(c.clone())
                }
                _ => None,
            })
            .collect();
        drop(snapshot);
        let next = syncer.run(&shared.rate_store, &redis);
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            shared.rate_store.sweep();
            last_sweep = Instant::now();
        }
        std::thread::sleep(next.min(Duration::from_millis(250)));
    }
}

/// SIGUSR1 reopens the access log file, as nginx reopens its logs (logrotate's
/// `postrotate`); SIGUSR2, nginx's binary upgrade, is not how ringway upgrades.
fn on_user_signal(shared: &Shared, signal: i32) {
    if signal == SIGUSR2 {
        log::warn!(
            "SIGUSR2 ignored: to upgrade, start the new binary with `ringway run --takeover` beside this process, then send this one SIGTERM"
        );
    } else if let Some(log) = shared.access_log.get() {
        log.reopen();
    } else {
        log::info!("SIGUSR1: no access log to reopen (stderr needs none)");
    }
}

/// Re-reads the config file; an invalid file leaves the running config in place.
fn reload(control: &Control) {
    match control.reload_file() {
        Ok((hash, with_admin)) => {
            let what = if with_admin {
                ": the file with the Admin API's entities"
            } else {
                ""
            };
            log::info!(
                "reloaded {} (running configuration_hash {hash}{what})",
                control.config_path.display()
            );
        }
        Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
    }
}
