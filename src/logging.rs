//! A stderr logger behind the `log` facade: one line per event, level set at start-up.
//!
//! Lines are written with a single `write` so lines from different workers do not
//! interleave. Nothing on the request path logs at `info` or above in normal operation.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries may log per connection, which a client controls: of their lines only
        // errors are kept, so nobody can flood the log through them.
        metadata.level() <= log::max_level()
            && (metadata.target().starts_with("ringway") || metadata.level() <= Level::Error)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = rfc3339(std::time::SystemTime::now());
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let line = format!("{now} {level} {}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// `2026-11-28T13:50:11.123Z`, computed from the Unix time (civil-from-days).
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Appends the current time as `rfc3339`, formatting the date and time of day at
/// most once a second per thread.
pub fn write_rfc3339_now(out: &mut Vec<u8>) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    write_rfc3339(out, since);
}

/// Appends the time `since` the Unix epoch as `write_rfc3339_now` does.
pub fn write_rfc3339(out: &mut Vec<u8>, since: std::time::Duration) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != since.as_secs() {
            let text = rfc3339(std::time::UNIX_EPOCH + since);
            // `...T13:50:11.` without the milliseconds and zone.
            *cache = (since.as_secs(), text[..text.len() - 4].to_owned());
        }
        out.extend_from_slice(cache.1.as_bytes());
    });
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Parses a level name as accepted by `--log-level`, `RINGWAY_LOG` and `log_level`, in
/// any case (`DEBUG`, as other loggers take it).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Installs the logger once; later calls only change the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| super::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_300_819_380), "2011-03-22T18:43:00.000Z");
    }

    #[test]
    fn level_names_in_any_case() {
        use log::LevelFilter;
        assert_eq!(super::parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(super::parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(super::parse_level("Warn"), Some(LevelFilter::Warn));
        assert_eq!(super::parse_level("verbose"), None);
        assert_eq!(super::parse_level("ringway=debug"), None);
    }
}
