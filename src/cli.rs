//! The command line (SPEC §1): `run`, `check`, `version`.
//!
//! Every failure ends in one line on stderr and a non-zero exit code; nothing here
//! panics on bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LoadError, NodeOverrides};

/// A line on stderr, as `eprintln!` writes it, but a stderr that cannot be written (a
/// full disk, a closed descriptor) is no panic: the exit code still tells.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a command line that cannot be acted on, as the argument parser's own.
const EXIT_USAGE: u8 = 2;
/// Output that could not be written: sysexits' EX_IOERR.
const EXIT_IOERR: u8 = 74;
/// An internal error (a panic): sysexits' EX_SOFTWARE.
const EXIT_PANIC: i32 = 70;

#[derive(Parser)]
#[command(
    name = "ringway",
    about = "A thread-per-core io_uring API gateway that reads Kong's declarative config",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The declarative config file (Kong's kong.yaml format plus a `ringway:` section).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// A proxy listen address (repeatable); replaces ringway.proxy_listen.
        #[arg(long = "proxy-listen", value_name = "ADDR")]
        proxy_listen: Vec<String>,
        /// The Admin API address; replaces ringway.admin_listen.
        #[arg(long = "admin-listen", value_name = "ADDR")]
        admin_listen: Option<String>,
        /// Worker threads (default: one per CPU).
        #[arg(long, value_name = "N")]
        workers: Option<u64>,
        /// Where Admin API state is kept.
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<String>,
        /// error, warn, info, debug or trace (also RINGWAY_LOG).
        #[arg(long = "log-level", value_name = "LEVEL")]
        log_level: Option<String>,
        /// Share the listening ports with a running ringway (a binary upgrade): start,
        /// then send the old process SIGTERM; see the README.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a config file: every problem is printed with its path.
    Check {
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the version, the commit and which io drivers this kernel offers.
    Version,
    /// JWT helpers.
    Jwt {
        #[command(subcommand)]
        command: JwtCommand,
    },
}

#[derive(Subcommand)]
enum JwtCommand {
    /// Print a signed token (HS256, HS384 or HS512) and a newline.
    Sign {
        /// The credential's secret.
        #[arg(long)]
        secret: String,
        /// Sets `iss`, the claim the jwt plugin looks the credential up by.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "HS256")]
        alg: String,
        /// Seconds until `exp` (default 3600, unless `--claim` gives `exp`; negative for
        /// a token already expired); 0 leaves `exp` out.
        #[arg(long, allow_negative_numbers = true)]
        ttl: Option<i64>,
        /// `k=v` adds a string claim, `k:=JSON` any JSON value (repeatable).
        #[arg(long = "claim", value_name = "CLAIM")]
        claims: Vec<String>,
    },
}

/// A panic anywhere in the gateway ends the process, logged on one line. A worker
/// thread that died would leave its listening socket open, and the kernel would keep
/// handing it connections nobody accepts; a whole process that exits is restarted by
/// its service manager (the bundled unit restarts on failure) or noticed by a takeover.
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        log::error!(
            "{} panicked{place}: {}; exiting",
            thread.name().unwrap_or("a thread"),
            message.replace('\n', "; ")
        );
        std::process::exit(EXIT_PANIC);
    }));
}

/// No transparent huge pages for the gateway's heap. The allocator's regions are large
/// and aligned, so where the kernel backs them with 2 MiB pages, the first byte touched
/// in one commits all of it: thousands of idle connections of a few KiB each then cost
/// far more memory than they use (measured: 4.7 KiB per idle connection with huge
/// pages, 3.3 without). The heap is small enough that huge pages save little.
#[allow(unsafe_code)]
fn without_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version output go to stdout with success.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A usage error is one line on stderr, as every other error.
        Err(e) => {
            // clap's first paragraph (a list of missing arguments runs onto the next
            // lines), without the usage and the hint after it.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "{} (ringway --help lists the commands and flags)",
                first.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    crate::logging::init(log::LevelFilter::Info);
    if !matches!(cli.command, Command::Run { .. }) {
        // A one-shot command piped into `head` ends quietly when the reader goes, as Unix
        // tools do; Rust's runtime ignores SIGPIPE, which would make the next print
        // panic. The gateway keeps ignoring it (its writes to sockets handle EPIPE).
        restore_sigpipe();
    }
    match cli.command {
        Command::Version => version(),
        Command::Check { config } => check(&config),
        Command::Jwt {
            command:
                JwtCommand::Sign {
                    secret,
                    key,
                    alg,
                    ttl,
                    claims,
                },
        } => match sign(&secret, key, &alg, ttl, &claims) {
            Ok(token) => emit(&format!("{token}\n")),
            Err(e) => {
                say!("ringway: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run {
            config,
            proxy_listen,
            admin_listen,
            workers,
            data_dir,
            log_level,
            takeover,
        } => {
            let source = if log_level.is_some() {
                "--log-level"
            } else {
                "RINGWAY_LOG"
            };
            let log_level =
                log_level.or_else(|| std::env::var("RINGWAY_LOG").ok().filter(|v| !v.is_empty()));
            if let Some(level) = &log_level {
                match crate::logging::parse_level(level) {
                    Some(level) => crate::logging::init(level),
                    None => {
                        say!("ringway: invalid command line: {source}: unknown level '{level}' (error, warn, info, debug, trace)");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
            }
            exit_on_panic();
            without_huge_pages();
            let overrides = NodeOverrides {
                proxy_listen,
                admin_listen,
                workers,
                data_dir,
                log_level,
                takeover,
            };
            match crate::server::run(config, overrides) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let message = format!("{e:#}");
                    say!("ringway: {}", message.replace('\n', "; "));
                    if message.starts_with("invalid config") {
                        ExitCode::from(EXIT_CONFIG)
                    } else if message.starts_with("invalid command line") {
                        ExitCode::from(EXIT_USAGE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn sign(
    secret: &str,
    key: Option<String>,
    alg: &str,
    ttl: Option<i64>,
    claims: &[String],
) -> Result<String, String> {
    use crate::plugins::jwt::{self, Algorithm};
    let algorithm =
        Algorithm::parse(alg).ok_or_else(|| format!("--alg: unknown algorithm '{alg}'"))?;
    // As a credential's secret: an empty key signs what anyone can forge.
    if secret.is_empty() {
        return Err("--secret: must not be empty".into());
    }
    // Kong's jwt plugin refuses an empty `iss` ("Invalid 'iss' in claims").
    if key.as_deref() == Some("") {
        return Err("--key: must not be empty".into());
    }
    let mut map = serde_json::Map::new();
    let keyed = key.is_some();
    if let Some(key) = key {
        map.insert("iss".into(), key.into());
    }
    // An `exp` of its own (an expired token for a test) stands in for the default.
    let exp_claimed = claims.iter().any(|claim| {
        claim
            .split_once('=')
            .is_some_and(|(name, _)| name.trim_end_matches(':') == "exp")
    });
    let ttl_given = ttl.is_some();
    let ttl = match ttl {
        Some(ttl) => ttl,
        None if exp_claimed => 0,
        None => 3600,
    };
    if ttl != 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Past 2^53 a JSON number is no longer an exact integer to most parsers (RFC
        // 8259 §6); before 1970 it is no time at all.
        const MAX_EXACT: u64 = (1 << 53) - 1;
        let exp = now
            .checked_add_signed(ttl)
            .filter(|&exp| exp <= MAX_EXACT)
            .ok_or_else(|| format!("--ttl {ttl}: exp would be outside 0..={MAX_EXACT}"))?;
        map.insert("exp".into(), exp.into());
    }
    for claim in claims {
        // The first `=` decides, as httpie reads `k=v` and `k:=JSON`: a string value may
        // hold `:=` (`url=http://x:=y`).
        let Some((name, value)) = claim.split_once('=').filter(|(name, _)| !name.is_empty()) else {
            return Err(format!("--claim {claim}: expected k=v or k:=JSON"));
        };
        if keyed && name.trim_end_matches(':') == "iss" {
            return Err(format!("--claim {claim}: iss is set by --key already"));
        }
        if ttl_given && ttl != 0 && name.trim_end_matches(':') == "exp" {
            return Err(format!(
                "--claim {claim}: exp is set by --ttl already (without --ttl, --claim sets it)"
            ));
        }
        if map.contains_key(name.trim_end_matches(':')) {
            return Err(format!(
                "--claim {claim}: {} is given twice",
                name.trim_end_matches(':')
            ));
        }
        match name.strip_suffix(':') {
            Some("") => return Err(format!("--claim {claim}: expected k=v or k:=JSON")),
            Some(name) => {
                let value = serde_json::from_str(value)
                    .map_err(|e| format!("--claim {claim}: invalid JSON: {e}"))?;
                map.insert(name.into(), value);
            }
            None => {
                map.insert(name.into(), value.into());
            }
        }
    }
    jwt::sign(algorithm, secret.as_bytes(), &map)
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &NodeOverrides::default()) {
        Ok(config) => {
            for warning in &config.warnings {
                say!("warning: {warning}");
            }
            // A fact of this machine, not of the file (which may be checked elsewhere than
            // it runs): a warning.
            if let Some(crate::config::AccessLog::File(log)) = &config.node.access_log {
                let dir = log
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    say!(
                        "warning: ringway.access_log: {} is not a directory here, so run cannot open {}",
                        dir.display(),
                        log.display()
                    );
                } else if log.is_dir() || log.as_os_str().to_string_lossy().ends_with('/') {
                    say!(
                        "warning: ringway.access_log: {} is a directory, not a file run can open",
                        log.display()
                    );
                }
            }
            emit(&format!(
                "{}: OK ({} services, {} routes, configuration_hash {})\n",
                path.display(),
                config.services.len(),
                config.routes.len(),
                config.hash
            ))
        }
        Err(LoadError::Read(file, e)) => {
            say!("ringway: cannot read config file {file}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(LoadError::Invalid(problems)) => {
            for problem in &problems.0 {
                say!("{problem}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn version() -> ExitCode {
    let uring = crate::server::io_uring_available();
    // What `run` would pick without a `driver` in the config: RINGWAY_DRIVER decides.
    let driver = match crate::server::choose_driver(crate::config::Driver::Auto) {
        Ok(driver) => driver.name().to_owned(),
        Err(e) => format!("none ({e})"),
    };
    emit(&format!(
        "ringway {} (commit {})\nio_uring: {}\nepoll: available\ndriver: {driver}\n",
        crate::VERSION,
        env!("RINGWAY_COMMIT"),
        if uring { "available" } else { "unavailable" }
    ))
}

/// Writes a command's output to stdout; one that cannot be written (a full disk, a
/// closed pipe) is a one-line error and sysexits' EX_IOERR, not a panic.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("ringway: cannot write to stdout: {e}");
            ExitCode::from(EXIT_IOERR)
        }
    }
}

#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called on the main thread before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
