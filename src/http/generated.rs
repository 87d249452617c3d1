//! Responses ringway writes itself: JSON errors in Kong's shape, `100 Continue`, and the
//! per-core cached `Date` value.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::ErrorKind;

/// The interim response sent when a client waits with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of a status ringway generates (a plugin's `error_code` may be any
/// of them), and of the bundled upstream's: RFC 9110's, or IANA's registered one; empty
/// for an unregistered code, as RFC 9112 §4 allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// The `Date` header value, formatted at most once a second per worker thread.
struct DateCache {
    second: u64,
    value: [u8; 29],
}

thread_local! {
    static DATE: RefCell<DateCache> = const { RefCell::new(DateCache { second: u64::MAX, value: [0; 29] }) };
}

/// Appends the current IMF-fixdate (RFC 9110 §5.6.7).
pub fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.second != second {
            // Formatted in place: the proxy path never allocates, even once a second.
            use std::io::Write;
            let mut value = [0u8; 29];
            let mut at = &mut value[..];
            if write!(at, "{}", httpdate::HttpDate::from(now)).is_ok() && at.is_empty() {
                cache.value = value;
            }
            cache.second = second;
        }
        out.extend_from_slice(&cache.value);
    });
}

/// Appends a decimal number without allocating.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Almost every string needs no escaping; this scan has no branch per byte.
    if !bytes
        .iter()
        .fold(false, |e, &b| e | (b < 0x20) | (b == b'"') | (b == b'\\'))
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        // Runs of bytes that need no escaping are copied at once (UTF-8 passes through:
        // its bytes are all >= 0x80).
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// `{"message": ...}`.
pub fn message_body(message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + message.len());
    body.extend_from_slice(b"{\"message\":");
    write_json_string(&mut body, message);
    body.push(b'}');
    body
}

/// Appends a complete JSON response `{"message": ...}` with Kong's content type.
/// `close` adds `Connection: close`; `head` leaves the body out but keeps its length.
pub fn json_response(out: &mut Vec<u8>, status: u16, message: &str, close: bool, head: bool) {
    let mut body = Vec::with_capacity(64 + message.len());
    body.extend_from_slice(b"{\"message\":");
    write_json_string(&mut body, message);
    body.extend_from_slice(b"}");
    response(
        out,
        status,
        b"application/json; charset=utf-8",
        &body,
        close,
        head,
        &[],
    );
}

/// Appends a complete response with a body and any extra header lines (each ending CRLF).
pub fn response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &[u8],
    body: &[u8],
    close: bool,
    head: bool,
    extra: &[&[u8]],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    write_date(out);
    // A 204 has no content, and so neither its type nor a length (RFC 9110 §8.6); a
    // 304 would describe the representation it stands for, which it does not carry.
    if !matches!(status, 204 | 304) {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type);
        out.extend_from_slice(b"\r\nContent-Length: ");
        write_u64(out, body.len() as u64);
    }
    out.extend_from_slice(b"\r\nServer: ringway\r\n");
    // One `Connection` field: a close joins the options an extra line gives (a 426's
    // `Upgrade`) rather than following them in a second field.
    let mut connection_said = false;
    for block in extra {
        for line in block.split_inclusive(|&b| b == b'\n') {
            match line.get(..11) {
                Some(name) if close && name.eq_ignore_ascii_case(b"connection:") => {
                    out.extend_from_slice(line.strip_suffix(b"\r\n").unwrap_or(line));
                    out.extend_from_slice(b", close\r\n");
                    connection_said = true;
                }
                _ => out.extend_from_slice(line),
            }
        }
    }
    if close && !connection_said {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head && !matches!(status, 204 | 304) {
        out.extend_from_slice(body);
    }
}

/// Appends the generated response for a failed request.
pub fn error_response(out: &mut Vec<u8>, kind: ErrorKind, close: bool, head: bool) {
    json_response(out, kind.status(), kind.message(), close, head);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_kongs() {
        let mut out = Vec::new();
        error_response(&mut out, ErrorKind::NoRoute, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json; charset=utf-8\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["message"], "no Route matched with those values");
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        // A close joins an extra line's `Connection` options: one field, not two.
        let mut out = Vec::new();
        response(
            &mut out,
            426,
            b"application/json",
            b"{}",
            true,
            false,
            &[b"Upgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n"],
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Connection:").count(), 1, "{text}");
        assert!(
            text.contains("\r\nConnection: Upgrade, close\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n"),
            "{text}"
        );
    }

    /// A 204 and a 304 carry no content: no type, no length, no body.
    #[test]
    fn no_content_has_no_content_headers() {
        for status in [204, 304] {
            let mut out = Vec::new();
            response(
                &mut out,
                status,
                b"application/json",
                b"",
                false,
                false,
                &[],
            );
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("Content-Length"), "{text}");
            assert!(!text.contains("Content-Type"), "{text}");
            assert!(text.ends_with("Server: ringway\r\n\r\n"), "{text}");
        }
    }

    /// A plugin's `error_code` may be any status: its registered reason, or none.
    #[test]
    fn status_lines_name_registered_codes_only() {
        for (status, line) in [
            (418, "HTTP/1.1 418 I'm a teapot\r\n"),
            (422, "HTTP/1.1 422 Unprocessable Content\r\n"),
            (429, "HTTP/1.1 429 Too Many Requests\r\n"),
            (499, "HTTP/1.1 499 \r\n"),
        ] {
            let mut out = Vec::new();
            response(
                &mut out,
                status,
                b"application/json",
                b"{}",
                false,
                false,
                &[],
            );
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(line), "{text}");
        }
    }

    #[test]
    fn numbers_and_strings() {
        let mut out = Vec::new();
        write_u64(&mut out, 0);
        out.push(b' ');
        write_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\n\u{1}");
        assert_eq!(out, b"\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
