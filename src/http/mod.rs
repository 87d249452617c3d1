//! HTTP/1.1 wire handling: head scanning and parsing, message framing, chunked coding,
//! and the responses ringway generates itself.
//!
//! Everything here is synchronous and works on byte slices, so it can be unit-tested,
//! benched and fuzzed without sockets. Parsing is zero-copy: httparse fills a stack array
//! of header slots that borrow the connection's read buffer.

pub mod chunked;
pub mod framing;
pub mod generated;
pub mod head;

pub use framing::{BodyKind, RequestFraming};
pub use head::{HeadScanner, HeadStatus};

/// A configured header name as Kong's `get_header` reads it (and its router, for a
/// route's `headers`): lower case, `_` standing for `-` (`x_token` reads `X-Token`; a
/// client's own underscored headers are not read, as nginx drops them).
pub fn header_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Whether two configured header names read the same request header (`header_key`).
pub fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let key = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            key(x) == key(y)
        })
}

/// `tchar` from RFC 9110 §5.6.2.
pub const fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// The `Via` line ringway adds to what it forwards (RFC 9110 §7.6.3), naming the
/// protocol version it received the message in (httparse's minor version); no version
/// of ringway in it.
pub fn via_line(minor_version: u8) -> &'static [u8] {
    if minor_version == 0 {
        b"Via: 1.0 ringway\r\n"
    } else {
        b"Via: 1.1 ringway\r\n"
    }
}

/// Whether a request method is one nginx (and so Kong) serves: upper-case letters, `_`
/// and `-`. Methods are case-sensitive (RFC 9110 §9.1), and a route's `methods` are
/// upper-case, so `post` would pass by a route limited to POST (and its plugins) and
/// reach a backend that reads it as POST.
pub fn is_served_method(method: &str) -> bool {
    !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
}

/// The value of the first cookie called `name`, quotes taken off, over every `Cookie`
/// line. Names match without regard to case, as nginx's `$cookie_NAME` (which Kong's
/// plugins and balancer read) matches them.
pub fn cookie<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim_matches('"'))
        })
}

/// Splits a comma-separated header value into trimmed elements (RFC 9110 §5.6.1).
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim_ows)
}

/// Trims optional whitespace (SP / HTAB) from both ends.
pub fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Splits a request target into an optional authority (absolute-form) and the
/// origin-form path with query. RFC 9112 §3.2.2: with absolute-form the target's
/// authority replaces `Host`.
pub fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
    if target.contains('#') {
        return None;
    }
    if target.starts_with('/') {
        return Some((None, target));
    }
    let (start, end) = split_absolute(target.as_bytes())?;
    let authority = &target[start..end];
    // An empty path (`http://host` or `http://host?q`) is `/` (RFC 9110 §4.2.3); the
    // caller reads `?q` as that.
    let path = if end == target.len() {
        "/"
    } else {
        &target[end..]
    };
    // The authority is the request's Host: the same grammar (no userinfo, ASCII only).
    if authority.is_empty() || !framing::valid_host_value(authority.as_bytes()) {
        return None;
    }
    Some((Some(authority), path))
}

/// Where an absolute-form target's authority starts and ends (`http://` or `https://`,
/// any case, up to the first `/` or `?`); `None` for any other form.
pub fn split_absolute(target: &[u8]) -> Option<(usize, usize)> {
    let start = [&b"http://"[..], b"https://"]
        .into_iter()
        .find_map(|scheme| {
            let prefix = target.get(..scheme.len())?;
            prefix.eq_ignore_ascii_case(scheme).then_some(scheme.len())
        })?;
    let end = memchr::memchr2(b'/', b'?', &target[start..]).map_or(target.len(), |i| start + i);
    Some((start, end))
}

/// Whether a method may be replayed after a failure (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}
