//! Turning an upstream response head into the client's, synchronously.

use std::mem::MaybeUninit;

use httparse::Header;

use super::request::Exchange;
use crate::error::ErrorKind;
use crate::http::{framing, generated::write_u64, list_elements, BodyKind};
use crate::plugins::rate_limiting;

/// Upstream response heads may carry more headers than we accept from clients.
const MAX_RESPONSE_HEADERS: usize = 256;

/// How the body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    None,
    Length(u64),
    /// Re-framed as chunked (from a chunked or close-delimited upstream body).
    Chunked,
    /// Only the data, delimited by closing the connection (HTTP/1.0 clients).
    Raw,
}

/// What the rest of the exchange looks like once the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePlan {
    pub status: u16,
    pub upstream_body: BodyKind,
    pub client_body: ClientBody,
    /// Close the client connection after this response.
    pub close_client: bool,
    /// The upstream connection cannot be reused.
    pub upstream_close: bool,
    /// A `101 Switching Protocols` for an upgrade request: bytes flow both ways after it.
    pub switching: bool,
}

/// The result of reading one upstream head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A 1xx other than 101: skip it and read the next head.
    Informational,
    Final(ResponsePlan),
}

fn is_connection_specific(name: &str, switching: bool) -> bool {
    let eq = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 => eq("te"),
        7 => eq("trailer") || (!switching && eq("upgrade")),
        10 => eq("connection") || eq("keep-alive"),
        14 => eq("content-length"),
        16 => eq("proxy-connection"),
        17 => eq("transfer-encoding"),
        _ => false,
    }
}

/// Headers ringway adds to a proxied response.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// The request ID line (`Name: value`), when `correlation-id` echoes it.
    pub request_id: Option<&'a str>,
    /// `X-Kong-Upstream-Latency` and `X-Kong-Proxy-Latency`, in ms.
    pub latency_ms: Option<(u32, u32)>,
    /// A `Set-Cookie: ...` line (the consistent-hashing cookie).
    pub set_cookie: Option<&'a str>,
}

/// Parses the upstream head and, for a final response, appends the client's head to
/// `out`. `keep_client` says whether the client connection may stay open.
pub fn rewrite(
    head: &[u8],
    exchange: &Exchange,
    keep_client: bool,
    extra: &Extra<'_>,
    out: &mut Vec<u8>,
) -> Result<Parsed, ErrorKind> {
    let mut slots = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        head,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Err(ErrorKind::BadResponse),
    }
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(ErrorKind::BadResponse);
    };
    // RFC 9110 §15: a status is three digits, the first 1 to 5 (httparse takes any three
    // digits, so `011` or `999` would otherwise reach the client).
    if !(100..=599).contains(&status) {
        return Err(ErrorKind::BadResponse);
    }
    let headers: &[Header<'_>] = response.headers;
    let switching = status == 101;
    // RFC 9110 §7.8: a switch names the protocols switched to, which the client offered;
    // a switch to anything else is not tunnelled.
    if switching
        && !exchange
            .upgrade()
            .is_some_and(|offered| switches_to_offered(offered, response.headers))
    {
        return Err(ErrorKind::BadResponse);
    }
    if (100..200).contains(&status) && !switching {
        return Ok(Parsed::Informational);
    }
    let framing = framing::response(version, status, exchange.head, headers)?;
    let client_version = exchange.version;
    let client_body = match framing.body {
        BodyKind::None => ClientBody::None,
        BodyKind::Length(n) => ClientBody::Length(n),
        BodyKind::Chunked | BodyKind::UntilClose if client_version == 1 => ClientBody::Chunked,
        BodyKind::Chunked | BodyKind::UntilClose => ClientBody::Raw,
    };
    let close_client = !keep_client || client_body == ClientBody::Raw || switching;
    let rate_headers = exchange.rate_headers.is_some();

    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_connection = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    let mut upstream_chunked = false;
    let mut dated = false;
    // An echoed request ID replaces the upstream's header of that name, as Kong sets it.
    let echoed = extra
        .request_id
        .and_then(|line| line.split_once(':'))
        .map(|(name, _)| name);
    // The balancer's hash cookie takes the place of the upstream's first cookie of that
    // name (`name=`), where it stood, as Kong sets it; not placed there, it goes last.
    let mut cookie = extra.set_cookie.map(|line| {
        let name = line
            .strip_prefix("Set-Cookie: ")
            .and_then(|value| value.find('=').map(|at| &value.as_bytes()[..=at]));
        (line, name)
    });
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            upstream_chunked = true;
        }
        if is_connection_specific(header.name, switching) {
            continue;
        }
        // A switch's `Upgrade` is named by its `Connection: upgrade` and must still go
        // through: it says what the connection now speaks.
        if has_connection
            && !(switching && header.name.eq_ignore_ascii_case("upgrade"))
            && headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| {
                    list_elements(h.value).any(|t| t.eq_ignore_ascii_case(header.name.as_bytes()))
                })
        {
            continue;
        }
        if echoed.is_some_and(|name| header.name.eq_ignore_ascii_case(name)) {
            continue;
        }
        if let Some((line, Some(name))) = cookie {
            if header.name.eq_ignore_ascii_case("set-cookie") && header.value.starts_with(name) {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                cookie = None;
                continue;
            }
        }
        if rate_headers && rate_limiting::is_rate_limit_header(header.name) {
            // The plugin's own values replace the upstream's.
            continue;
        }
        // A date that goes out (one `Connection` named is not).
        dated |= header.name.len() == 4 && header.name.eq_ignore_ascii_case("date");
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §6.6.1: a proxy with a clock dates a response that came without a date.
    if !dated {
        out.extend_from_slice(b"Date: ");
        crate::http::generated::write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    // As Kong (its default `server_tokens`, without the version): the hop the response
    // came through, with the protocol the upstream answered in.
    out.extend_from_slice(crate::http::via_line(version));
    if let Some(headers) = &exchange.rate_headers {
        headers.write(out, false);
    }
    if let Some(line) = extra.request_id {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some((line, _)) = cookie {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some((upstream, proxy)) = extra.latency_ms {
        out.extend_from_slice(b"X-Kong-Upstream-Latency: ");
        write_u64(out, u64::from(upstream));
        out.extend_from_slice(b"\r\nX-Kong-Proxy-Latency: ");
        write_u64(out, u64::from(proxy));
        out.extend_from_slice(b"\r\n");
    }
    match client_body {
        ClientBody::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientBody::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ClientBody::Raw => {}
        // A HEAD or 304 answer describes the body it would have had.
        ClientBody::None if status != 204 && !(100..200).contains(&status) => {
            // Forwarded in canonical form: `007` → `7`.
            if let Some(length) = framing.declared_length {
                out.extend_from_slice(b"Content-Length: ");
                write_u64(out, length);
                out.extend_from_slice(b"\r\n");
            } else if upstream_chunked && client_version == 1 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        ClientBody::None => {}
    }
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if close_client {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Final(ResponsePlan {
        status,
        upstream_body: framing.body,
        client_body,
        close_client,
        upstream_close: framing.close || switching,
        switching,
    }))
}

/// Whether a `101`'s `Upgrade` names protocols the client offered, each one: the same
/// token, or the offered protocol's name with a version when the offer had none
/// (`websocket` offered, `websocket` or `websocket/13` switched to).
fn switches_to_offered(offered: &str, headers: &[Header<'_>]) -> bool {
    let offered: Vec<&[u8]> = crate::http::list_elements(offered.as_bytes()).collect();
    let mut named = false;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
    {
        for protocol in crate::http::list_elements(header.value) {
            named = true;
            let name = protocol.split(|&b| b == b'/').next().unwrap_or_default();
            let known = offered.iter().any(|o| {
                o.eq_ignore_ascii_case(protocol)
                    || (!o.contains(&b'/') && o.eq_ignore_ascii_case(name))
            });
            if !known {
                return false;
            }
        }
    }
    named
}
