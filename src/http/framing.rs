//! Message framing: how long a body is, decided once from the head (RFC 9112 §6).
//!
//! A gateway that frames a message differently from the server behind it opens a
//! request-smuggling hole, so every ambiguity is refused rather than resolved. Each rule
//! names the section it enforces; do not "simplify" them.

use httparse::Header;

use super::{is_token_byte, list_elements, trim_ows};
use crate::error::ErrorKind;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the upstream closes (RFC 9112 §6.3 rule 8).
    UntilClose,
}

/// What the head of a client request says about the rest of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFraming {
    pub body: BodyKind,
    /// No body, declared as `Content-Length: 0`: forwarded so (a POST usually says so,
    /// and some servers answer 411 without it).
    pub zero_length: bool,
    /// The client wants the connection kept after the response.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: an answer that keeps its connection must say so
    /// (`Connection: keep-alive`), or the client takes it as the last.
    pub http10: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header offering a protocol other than h2c.
    pub upgrade: bool,
    /// The `Upgrade` offers h2c, which is taken out of what goes upstream.
    pub h2c: bool,
    /// Index of the `Host` header, when there is one.
    pub host: Option<usize>,
}

/// Parses `Content-Length` values: every element of every line must be `1*DIGIT` and all
/// must be equal (RFC 9110 §8.6; RFC 9112 §6.3 rule 5). Leading zeros are decimal.
fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    for value in values {
        for element in list_elements(value) {
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let mut n: u64 = 0;
            for digit in element {
                // RFC 9112 §6.3: anticipate large numerals; overflow is an error. The
                // bound is a signed 64-bit length (nginx's `off_t`), which the upstream
                // may parse into: a larger value would wrap there, not here.
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit - b'0')))
                    .filter(|&n| n <= i64::MAX as u64)
                    .ok_or(())?;
            }
            match found {
                Some(previous) if previous != n => return Err(()),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// The outcome of reading `Transfer-Encoding`.
#[derive(Debug, PartialEq, Eq)]
enum Coding {
    Absent,
    Chunked,
    /// A coding ringway does not implement (RFC 9112 §6.1: 501).
    Unsupported,
}

/// RFC 9112 §6.1, §7: only `chunked` is understood, it must be final and applied once.
fn transfer_coding<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Coding, ErrorKind> {
    let mut seen_any = false;
    let mut chunked_seen = false;
    let mut other_seen = false;
    for value in values {
        for element in list_elements(value) {
            seen_any = true;
            // An empty element (`,chunked`) or a malformed coding is refused outright.
            let name = element
                .split(|b| *b == b';')
                .next()
                .map(trim_ows)
                .unwrap_or_default();
            if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
                return Err(ErrorKind::BadRequest);
            }
            if chunked_seen {
                // `chunked` must be the final coding, and applied only once.
                return Err(ErrorKind::BadRequest);
            }
            if name.eq_ignore_ascii_case(b"chunked") {
                if element.len() != name.len() {
                    return Err(ErrorKind::BadRequest);
                }
                chunked_seen = true;
            } else {
                other_seen = true;
            }
        }
    }
    Ok(match (seen_any, chunked_seen, other_seen) {
        (false, _, _) => Coding::Absent,
        (true, _, true) => Coding::Unsupported,
        (true, true, false) => Coding::Chunked,
        (true, false, false) => Coding::Absent,
    })
}

fn values<'h, 'b>(
    headers: &'h [Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// RFC 9112 §3.2: `uri-host [ ":" port ]`, no userinfo, path, or list. The host is an
/// IP literal in brackets or a reg-name (an IPv4 address is one); the port is digits.
/// An empty host is refused, as nginx (and so Kong) refuses it: every target ringway
/// serves is an `http` or `https` URI, whose host must not be empty (RFC 9110 §4.2.1).
pub(crate) fn valid_host_value(value: &[u8]) -> bool {
    let value = trim_ows(value);
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            let ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            match &rest[end + 1..] {
                [] => (ok, None),
                [b':', port @ ..] => (ok, Some(port)),
                _ => return false,
            }
        }
        None => {
            let (host, port) = match memchr::memchr(b':', value) {
                Some(at) => (&value[..at], Some(&value[at + 1..])),
                None => (value, None),
            };
            // As nginx (and so Kong) refuses them: an empty label, or a name that is
            // only the root's dot.
            let labels_ok =
                !matches!(host, b"" | b".") && memchr::memmem::find(host, b"..").is_none();
            (labels_ok && valid_reg_name(host), port)
        }
    };
    host_ok && port.is_none_or(|port| port.iter().all(u8::is_ascii_digit))
}

/// RFC 3986 §3.2.2 `reg-name`: unreserved characters, sub-delims and `%HH`.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !name
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            // Sub-delims, less `,` (a Host that reads as a list is refused).
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// `h2c` (or `h2c/...`), in any case: HTTP/2 over cleartext, never offered upstream.
pub fn is_h2c(protocol: &[u8]) -> bool {
    protocol.len() >= 3
        && protocol[..3].eq_ignore_ascii_case(b"h2c")
        && matches!(protocol.get(3), None | Some(b'/'))
}

/// Decides the framing of a client request. `version` is 0 for HTTP/1.0, 1 for 1.1.
pub fn request(version: u8, headers: &[Header<'_>]) -> Result<RequestFraming, ErrorKind> {
    let mut host = None;
    let mut host_count = 0;
    let mut has_te = false;
    let mut has_cl = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut upgrade_header = false;
    let mut h2c = false;
    let mut expect_continue = false;
    for (i, header) in headers.iter().enumerate() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            host = Some(i);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_te = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            has_cl = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_elements(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // h2c is not offered to the upstream: once switched, the client's HTTP/2
            // requests would reach it past routing and every plugin ("h2c smuggling").
            // The other protocols offered are; with none, the request goes on as
            // HTTP/1.1.
            for protocol in list_elements(header.value) {
                if is_h2c(protocol) {
                    h2c = true;
                } else {
                    upgrade_header = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= trim_ows(header.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §3.2: exactly one valid Host on HTTP/1.1; never more than one.
    if host_count > 1 || (version == 1 && host_count == 0) {
        return Err(ErrorKind::BadRequest);
    }
    if let Some(i) = host {
        if !valid_host_value(headers[i].value) {
            return Err(ErrorKind::BadRequest);
        }
    }
    let mut zero_length = false;
    let body = if has_te {
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        if version == 0 {
            return Err(ErrorKind::BadRequest);
        }
        match transfer_coding(values(headers, "transfer-encoding"))? {
            Coding::Unsupported => return Err(ErrorKind::NotImplemented),
            // RFC 9112 §6.1, §6.3 rule 3: both TE and CL is an error here, not a choice.
            Coding::Chunked if has_cl => return Err(ErrorKind::BadRequest),
            Coding::Chunked => BodyKind::Chunked,
            Coding::Absent => return Err(ErrorKind::BadRequest),
        }
    } else {
        match content_length(values(headers, "content-length")) {
            Err(()) => return Err(ErrorKind::BadRequest),
            Ok(None) => BodyKind::None,
            Ok(Some(0)) => {
                zero_length = true;
                BodyKind::None
            }
            Ok(Some(n)) => BodyKind::Length(n),
        }
    };
    let keep_alive = if version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(RequestFraming {
        body,
        zero_length,
        keep_alive,
        http10: version == 0,
        expect_continue: expect_continue && version == 1 && body != BodyKind::None,
        upgrade: upgrade_token && upgrade_header && version == 1,
        h2c,
        host,
    })
}

/// What the head of an upstream response says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    pub body: BodyKind,
    /// The upstream will close (or wants closed) the connection after this response.
    pub close: bool,
    /// The `Content-Length` it declared (for a HEAD or 304 answer, of the body it
    /// describes).
    pub declared_length: Option<u64>,
}

/// Decides the framing of an upstream response to a request (RFC 9112 §6.3), with the
/// same strictness as requests: anything ambiguous is an invalid response (502).
pub fn response(
    version: u8,
    status: u16,
    head_request: bool,
    headers: &[Header<'_>],
) -> Result<ResponseFraming, ErrorKind> {
    let mut has_te = false;
    let mut close = version == 0;
    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_te = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_elements(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    close = false;
                }
            }
        }
    }
    let length =
        content_length(values(headers, "content-length")).map_err(|()| ErrorKind::BadResponse)?;
    let coding = if has_te {
        match transfer_coding(values(headers, "transfer-encoding")) {
            Ok(Coding::Chunked) if length.is_none() && version == 1 => Coding::Chunked,
            _ => return Err(ErrorKind::BadResponse),
        }
    } else {
        Coding::Absent
    };
    // RFC 9112 §6.3 rule 1: HEAD, 1xx, 204 and 304 responses have no body.
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(ResponseFraming {
            body: BodyKind::None,
            close,
            declared_length: length,
        });
    }
    let body = match (coding, length) {
        (Coding::Chunked, _) => BodyKind::Chunked,
        (_, Some(0)) => BodyKind::None,
        (_, Some(n)) => BodyKind::Length(n),
        (_, None) => {
            close = true;
            BodyKind::UntilClose
        }
    };
    Ok(ResponseFraming {
        body,
        close,
        declared_length: length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_request(raw: &[u8]) -> Result<RequestFraming, ErrorKind> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(raw) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(ErrorKind::BadRequest),
        }
        let version = req.version.unwrap_or(1);
        request(version, req.headers)
    }

    #[test]
    fn request_table() {
        use BodyKind::*;
        use ErrorKind::*;
        let ok = |body| Ok(body);
        let cases: &[(&str, Result<BodyKind, ErrorKind>)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", ok(None)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", ok(Length(5))),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\n\r\n", ok(Length(10))),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", ok(Length(5))),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", ok(Length(5))),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\nContent-Length: 59\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", ok(Chunked)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", ok(Chunked)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n", ok(Chunked)),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Err(NotImplemented)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Err(NotImplemented)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n", Err(NotImplemented)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n", Err(NotImplemented)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(BadRequest)),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:xx\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:-1\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:evil.com\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: a:8080\r\n\r\n", ok(None)),
            ("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", ok(None)),
            ("GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", ok(None)),
            ("GET / HTTP/1.1\r\nHost: a%2Db.example\r\n\r\n", ok(None)),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.0\r\n\r\n", ok(None)),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.32\r\nHost: a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1\r\nHost: a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/01.1\r\nHost: a\r\n\r\n", Err(BadRequest)),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadRequest)),
            ("GET / HTTP/1.1\r\nTransfer_Encoding: chunked\r\nHost: a\r\n\r\n", ok(None)),
        ];
        for (raw, expected) in cases {
            let got = parse_request(raw.as_bytes()).map(|f| f.body);
            assert_eq!(got, *expected, "{raw:?}");
        }
    }

    #[test]
    fn keep_alive_and_expect() {
        let f = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
        let f = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
        let f = parse_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(f.keep_alive);
        let f = parse_request(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert!(f.expect_continue);
        let f = parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(f.upgrade);
        for (offer, upgrade) in [("h2c", false), ("H2C/1", false), ("websocket, h2c", true)] {
            let raw = format!(
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: {offer}\r\n\r\n"
            );
            let f = parse_request(raw.as_bytes()).unwrap();
            assert_eq!((f.upgrade, f.h2c), (upgrade, true), "{offer}");
        }
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2cx\r\n\r\n";
        assert!(parse_request(raw).unwrap().upgrade);
    }

    fn parse_response(raw: &[u8], head: bool) -> Result<ResponseFraming, ErrorKind> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(raw) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(ErrorKind::BadResponse),
        }
        response(
            resp.version.unwrap_or(1),
            resp.code.unwrap_or(0),
            head,
            resp.headers,
        )
    }

    #[test]
    fn response_table() {
        use BodyKind::*;
        let cases: &[(&str, bool, Result<BodyKind, ErrorKind>)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Ok(Length(3)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                true,
                Ok(None),
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, Ok(None)),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false,
                Ok(None),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Ok(Chunked),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Ok(UntilClose)),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Err(ErrorKind::BadResponse),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                Err(ErrorKind::BadResponse),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                false,
                Err(ErrorKind::BadResponse),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Err(ErrorKind::BadResponse),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false,
                Err(ErrorKind::BadResponse),
            ),
        ];
        for (raw, head, expected) in cases {
            assert_eq!(
                parse_response(raw.as_bytes(), *head).map(|f| f.body),
                *expected,
                "{raw:?}"
            );
        }
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .unwrap()
            .close
        );
        assert!(
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
                .unwrap()
                .close
        );
    }
}
