//! Deciding what to do with a request head, synchronously: parse, frame, route, and
//! write the upstream request head. No `.await` happens here, so the httparse headers
//! may borrow the read buffer, and the whole step can be tested and benched alone.

use std::mem::MaybeUninit;

use httparse::Header;

use super::access::{self, Access, Detail, PluginState, RequestFacts};
use super::worker::Snapshot;
use crate::config::{Algorithm, HashOn, Upstream, MAX_HEADERS_LIMIT};
use crate::error::ErrorKind;
use crate::http::{
    framing, generated::write_u64, is_idempotent, list_elements, BodyKind, RequestFraming,
};
use crate::plugins::jwt::Locations;
use crate::plugins::{correlation_id, rate_limiting};
use crate::route::{self, RequestView};

/// Facts about the client connection that shape the upstream head.
#[derive(Debug, Default)]
pub struct ClientInfo {
    /// The client's IP, formatted once per connection.
    pub ip: String,
    /// The local port the client connected to, formatted once.
    pub port: String,
    /// The same port, for routes whose hosts name one.
    pub local_port: u16,
    /// The client's socket, looked at while an upstream works on its request (has the
    /// client gone?); `None` where there is none to look at.
    pub fd: Option<std::os::fd::RawFd>,
    /// Whether the client is in `trusted_ips` (its `X-Forwarded-*` are kept).
    pub trusted: bool,
    pub https: bool,
    /// The address the client connected to (`tracker` request IDs).
    pub local_ip: Option<std::net::IpAddr>,
    /// This connection's number on its worker, and its requests so far.
    pub connection: u32,
    pub requests: std::cell::Cell<u32>,
}

/// A request's ID (`correlation-id`), with the header it travels in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// `Name: value`.
    line: String,
    name_len: usize,
    /// The client sent it (it is already among the forwarded headers).
    pub incoming: bool,
    /// Also set it on the response.
    pub echo: bool,
}

impl RequestId {
    pub fn new(name: &str, value: &str, incoming: bool, echo: bool) -> RequestId {
        let mut id = RequestId::with_name(name, value.len(), incoming, echo);
        id.line.push_str(value);
        id
    }

    /// `Name: ` with room for a value of `room` bytes, appended to `line`.
    fn with_name(name: &str, room: usize, incoming: bool, echo: bool) -> RequestId {
        let mut line = String::with_capacity(name.len() + 2 + room);
        line.push_str(name);
        line.push_str(": ");
        RequestId {
            line,
            name_len: name.len(),
            incoming,
            echo,
        }
    }

    pub fn value(&self) -> &str {
        &self.line[self.name_len + 2..]
    }

    /// The header line, without its CRLF.
    pub fn header_line(&self) -> &str {
        &self.line
    }
}

/// The route a rejected request had matched, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub route: usize,
    pub service: usize,
    pub consumer: Option<usize>,
}

/// A routed request whose upstream head is ready.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub route: usize,
    pub service: usize,
    pub framing: RequestFraming,
    pub version: u8,
    pub head: bool,
    pub idempotent: bool,
    /// Rate-limit headers to add to the response. Boxed: the exchange lives in every
    /// connection's state, and most requests have none.
    pub rate_headers: Option<Box<rate_limiting::Headers>>,
    /// The authenticated consumer.
    pub consumer: Option<usize>,
    pub request_id: Option<Box<RequestId>>,
    /// For a service balanced over an upstream's targets.
    pub balance: Option<Box<Balance>>,
    /// What few requests have, boxed: the exchange lives in every connection's state.
    pub rare: Option<Box<Rare>>,
}

/// The parts of an exchange most requests do without.
#[derive(Debug, Clone, Default)]
pub struct Rare {
    /// For an upgrade, the protocols the client offered (its `Upgrade` values, comma
    /// separated): a `101` must switch to one of them.
    pub upgrade: Option<Box<str>>,
    /// For a route that preserves the client's `Host` to an `https` service: the name
    /// sent as SNI and verified, as Kong's `proxy_ssl_name $upstream_host`.
    pub tls_name: Option<TlsName>,
}

impl Exchange {
    pub fn upgrade(&self) -> Option<&str> {
        self.rare.as_ref()?.upgrade.as_deref()
    }

    pub fn tls_name(&self) -> Option<&TlsName> {
        self.rare.as_ref()?.tls_name.as_ref()
    }
}

/// The TLS server name of one request's upstream connection, and the pool key that keeps
/// connections made for it apart from those made for other names.
#[derive(Debug, Clone)]
pub struct TlsName {
    pub name: rustls::pki_types::ServerName<'static>,
    pub pool_key: u64,
}

impl TlsName {
    /// The preserved `Host`, as routed (its root dot gone), as a server name: without its
    /// port (as nginx strips it from `proxy_ssl_name`) or IPv6 brackets, lower-cased.
    /// `None` for a value that is no server name: the service's own is used then.
    fn of_host(host: &str, service_key: u64) -> Option<TlsName> {
        let host = route::strip_port(host);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase();
        let name = rustls::pki_types::ServerName::try_from(host).ok()?;
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (service_key, name.to_str()).hash(&mut hasher);
        Some(TlsName {
            name,
            pool_key: hasher.finish() | 1,
        })
    }
}

/// What picking a target needs from the request.
#[derive(Debug, Clone, Default)]
pub struct Balance {
    /// The consistent-hashing key, when the upstream hashes and the request has one.
    pub key: Option<u64>,
    /// Where in the upstream head the target's `Host` value goes (nothing is there yet),
    /// when the route does not preserve the client's.
    pub host_at: Option<usize>,
    /// The upstream's `host_header` is written: only the target's `:port` goes in.
    pub port_only: bool,
    /// `Set-Cookie: ...` for a hash cookie the client did not have yet.
    pub set_cookie: Option<String>,
}

/// A request answered by ringway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub kind: ErrorKind,
    pub head: bool,
    /// The connection may serve another request after the answer, once `unread` body
    /// bytes are skipped.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (see `RequestFraming::http10`).
    pub http10: bool,
    /// The request's `Content-Length` body, not read: the connection continues only if
    /// all of it has arrived with the head (it is then skipped).
    pub unread: u64,
    /// Body bytes of unknown length may still be on their way (the framing was refused,
    /// or the body is chunked or close-delimited): the close after the answer lingers.
    pub body_pending: bool,
    /// A plugin's own status, body and headers, when it has them.
    pub detail: Option<Box<Detail>>,
    /// The route it matched, if any.
    pub routed: Option<Routed>,
    pub request_id: Option<Box<RequestId>>,
}

/// Whether a request head, whole or not, is a `HEAD` request's (RFC 9110 §9.3.2: the
/// answer to one has no content, whatever it is).
pub fn names_head(head: &[u8]) -> bool {
    head.starts_with(b"HEAD ")
}

impl Reject {
    fn fatal(kind: ErrorKind) -> Reject {
        Reject {
            kind,
            head: false,
            keep_alive: false,
            http10: false,
            unread: 0,
            body_pending: true,
            detail: None,
            routed: None,
            request_id: None,
        }
    }
}

/// The request's ID under `config`: the client's, when it sent a non-empty one, or a
/// new one. Without worker state (benches) nothing is generated.
fn request_id(
    config: &correlation_id::Config,
    headers: &[Header<'_>],
    client: &ClientInfo,
    state: Option<&PluginState>,
) -> Option<Box<RequestId>> {
    // Trimmed of HTTP's own whitespace (spaces and tabs) only: the ID echoed and put in
    // bodies is the one the upstream gets.
    let incoming = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(&config.header_lower))
        .map(|h| crate::http::trim_ows(h.value))
        .filter(|v| !v.is_empty())
        .and_then(|v| std::str::from_utf8(v).ok());
    if let Some(value) = incoming {
        return Some(Box::new(RequestId::new(
            &config.header_name,
            value,
            true,
            config.echo_downstream,
        )));
    }
    let state = state?;
    // Written straight into the header line: one allocation for a generated ID.
    let mut id = RequestId::with_name(&config.header_name, 48, false, config.echo_downstream);
    state.ids.write(
        config.generator,
        &correlation_id::TrackerParts {
            server_ip: client.local_ip,
            server_port: &client.port,
            connection: u64::from(client.connection),
            connection_requests: u64::from(client.requests.get()),
        },
        &mut id.line,
    );
    Some(Box::new(id))
}

/// Parses `head` (one complete request head) and, when it routes, appends the upstream
/// request head to `out`.
/// `now` is the Unix time in seconds (token expiry).
/// `state` is the worker's plugin state (token cache, rate-limit leases).
pub fn prepare(
    head: &[u8],
    client: &ClientInfo,
    snapshot: &Snapshot,
    now: u64,
    state: Option<&PluginState>,
    out: &mut Vec<u8>,
) -> Result<Exchange, Reject> {
    let mut slots = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS_LIMIT as usize];
    let limit = snapshot.config.node.limits.max_headers.min(slots.len());
    let mut request = httparse::Request::new(&mut []);
    // A head that does not parse may still say it is a HEAD: its answer has no body.
    let unparsed = |kind| Reject {
        head: names_head(head),
        ..Reject::fatal(kind)
    };
    match request.parse_with_uninit_headers(head, &mut slots[..limit]) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(unparsed(ErrorKind::HeadersTooLarge)),
        _ => return Err(unparsed(ErrorKind::BadRequest)),
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(unparsed(ErrorKind::BadRequest));
    };
    if !crate::http::is_served_method(method) {
        return Err(unparsed(ErrorKind::BadRequest));
    }
    let headers: &[Header<'_>] = request.headers;
    let config = &snapshot.config;
    let is_head = method == "HEAD";
    // The scheme the client used, as Kong's forwarded scheme: a trusted proxy's
    // `X-Forwarded-Proto` when it sends one (of several lines, the first: nginx's
    // `$http_x_forwarded_proto`; `https` exactly, as Kong compares it), whatever the hop
    // to us was; else TLS here or not.
    let https = match client
        .trusted
        .then(|| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("x-forwarded-proto"))
        })
        .flatten()
    {
        Some(forwarded) => crate::http::trim_ows(forwarded.value) == b"https",
        None => client.https,
    };
    // The head parsed: a global correlation-id gives the request its ID even when it is
    // refused before routing (the ID is in the error body and echoed).
    let global_id = || {
        config
            .chain(None, https)
            .correlation_id
            .as_ref()
            .and_then(|c| request_id(c, headers, client, state))
    };
    // Refused before its framing is known: a body may follow only if the head says so.
    let refused = |kind| Reject {
        head: is_head,
        request_id: global_id(),
        body_pending: headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
        }),
        ..Reject::fatal(kind)
    };
    let framing = framing::request(version, headers).map_err(refused)?;
    // A rejected request's body is never read: a chunked or close-delimited one cannot be
    // skipped, so those answers close the connection; a Content-Length one that came
    // whole with the head is skipped (as nginx discards it), else the connection closes.
    let soft = |kind| Reject {
        kind,
        head: is_head,
        keep_alive: framing.keep_alive
            && matches!(framing.body, BodyKind::None | BodyKind::Length(_)),
        http10: framing.http10,
        unread: match framing.body {
            BodyKind::Length(n) => n,
            _ => 0,
        },
        body_pending: matches!(framing.body, BodyKind::Chunked | BodyKind::UntilClose),
        detail: None,
        routed: None,
        request_id: None,
    };
    // A request refused whole once its framing is known: the connection closes, and
    // whether body bytes may still come is known.
    let closing = |kind| Reject {
        keep_alive: false,
        request_id: global_id(),
        ..soft(kind)
    };
    // A tunnel (`CONNECT`) or a loop-back of the request with whatever the hops added
    // (`TRACE`, a way to read cookies a script cannot) is not for a gateway to pass on.
    if matches!(method, "CONNECT" | "TRACE") {
        return Err(closing(ErrorKind::MethodNotAllowed));
    }

    let (authority, path_and_query) =
        crate::http::split_target(target).ok_or_else(|| closing(ErrorKind::BadRequest))?;
    let host = authority.or_else(|| {
        framing
            .host
            .and_then(|i| std::str::from_utf8(headers[i].value).ok())
            .map(str::trim)
    });
    let (raw_path, query) = match path_and_query.find('?') {
        Some(0) => ("/", Some(&path_and_query[1..])),
        Some(i) => (&path_and_query[..i], Some(&path_and_query[i + 1..])),
        None => (path_and_query, None),
    };
    let path = route::normalize(raw_path).map_err(|_| closing(ErrorKind::BadRequest))?;
    let route_host = host.map(route::without_root_dot);

    let view = RequestView {
        method,
        path: &path,
        host: route_host.as_deref(),
        headers,
        https,
        port: client.local_port,
    };
    let Some(matched) = snapshot.router.select(&config.routes, &view) else {
        // A global correlation-id gives even an unrouted request its ID.
        let mut reject = soft(ErrorKind::NoRoute);
        reject.request_id = global_id();
        return Err(reject);
    };
    let chain = config.chain(Some(matched.route), https);
    let rid = chain
        .correlation_id
        .as_ref()
        .and_then(|c| request_id(c, headers, client, state));
    let mut routed = Routed {
        route: matched.route,
        service: matched.service,
        consumer: None,
    };
    let refuse = |kind, detail, routed: Routed, rid: Option<Box<RequestId>>| {
        let mut reject = soft(kind);
        reject.detail = detail;
        reject.routed = Some(routed);
        reject.request_id = rid;
        reject
    };
    let route = &config.routes[matched.route];
    if !(if https { route.https } else { route.http }) {
        // An https-only route reached over plain HTTP: Kong's 426 (naming the protocol
        // to upgrade to, RFC 9110 §15.5.22), or the redirect the route asks for.
        let detail = if https {
            None
        } else if route.https_redirect_status_code != 426 && host.is_some() {
            // As Kong: a trusted proxy's `X-Forwarded-Host` names the host the client
            // used; otherwise the request's own as nginx's `$host` has it (lower case,
            // without its port or root dot).
            let forwarded = client
                .trusted
                .then(|| {
                    headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("x-forwarded-host"))
                })
                .flatten()
                .map(|h| crate::http::trim_ows(h.value))
                .filter(|v| !v.is_empty() && framing::valid_host_value(v))
                .and_then(|v| std::str::from_utf8(v).ok());
            let mut location = String::from("Location: https://");
            match forwarded {
                Some(forwarded) => location.push_str(forwarded),
                None => location.push_str(
                    &route_host
                        .as_deref()
                        .map(route::strip_port)
                        .unwrap_or("")
                        .to_ascii_lowercase(),
                ),
            }
            location.push_str(path_and_query);
            location.push_str("\r\n");
            Some(Box::new(Detail {
                status: route.https_redirect_status_code,
                body: crate::http::generated::message_body("Moved"),
                headers: location.into_bytes(),
            }))
        } else {
            Some(Box::new(Detail {
                status: 426,
                body: crate::http::generated::message_body(ErrorKind::ProtocolNotAllowed.message()),
                headers: b"Upgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n".to_vec(),
            }))
        };
        return Err(refuse(ErrorKind::ProtocolNotAllowed, detail, routed, rid));
    }
    // A service whose host did not resolve still runs its plugins first (as Kong
    // resolves in the balancer, after them): the 401 or 429 comes before the 503.
    let service = &config.services[matched.service];

    let facts = RequestFacts {
        method,
        path: &path,
        query,
        headers,
        client_ip: forwarded_ip(client, headers),
        service: matched.service,
    };
    let mut access = match access::run(chain, config, &facts, now, state) {
        Ok(access) => access,
        Err(refusal) => {
            routed.consumer = refusal.consumer;
            return Err(refuse(refusal.kind, refusal.detail, routed, rid));
        }
    };

    // Request line: the method, the joined path and the original query.
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    route::upstream_path(
        out,
        &service.path,
        &path,
        matched.matched_len,
        route.strip_path,
    );
    if let Some(query) = query {
        write_query(out, query, &access);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let upstream = service.balancer.map(|i| &config.upstreams[i]);
    let mut balance = upstream.map(|upstream| {
        Box::new(Balance {
            key: None,
            host_at: None,
            port_only: false,
            set_cookie: None,
        })
        .tap_key(upstream, &facts, &path, config, &access)
    });
    match (route.preserve_host, host, upstream) {
        (true, Some(h), _) => out.extend_from_slice(h.as_bytes()),
        (_, _, Some(upstream)) => {
            // The target's `Host` goes in once it is picked: its own, or the upstream's
            // `host_header` with the target's port (as Kong: none for the scheme's
            // default port).
            if let Some(h) = &upstream.host_header {
                out.extend_from_slice(h.as_bytes());
            }
            if let Some(b) = balance.as_deref_mut() {
                b.host_at = Some(out.len());
                b.port_only = upstream.host_header.is_some();
            }
        }
        _ => out.extend_from_slice(service.host_header.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");

    // A generated request ID replaces an empty one the client sent.
    if rid.as_deref().is_some_and(|id| !id.incoming) {
        access.replaced_header = chain
            .correlation_id
            .as_deref()
            .map(|c| c.header_name.as_str());
    }
    write_forwarded_headers(
        out,
        headers,
        &framing,
        client,
        route_host.as_deref(),
        raw_path,
        route
            .strip_path
            .then(|| path.get(..matched.matched_len))
            .flatten()
            .filter(|p| !p.is_empty()),
        &access,
    );
    if let Some(id) = rid.as_deref().filter(|id| !id.incoming) {
        out.extend_from_slice(id.header_line().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §7.6.3: a gateway names itself, with the protocol it received, in each
    // request it forwards (as Kong does since 3.8), after the earlier hops' lines.
    out.extend_from_slice(crate::http::via_line(version));

    match framing.body {
        BodyKind::Length(n) => {
            // RFC 9112 §6.3: forwarded in canonical form (`010` → `10`).
            out.extend_from_slice(b"Content-Length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::None if framing.zero_length => out.extend_from_slice(b"Content-Length: 0\r\n"),
        BodyKind::None | BodyKind::UntilClose => {}
    }
    if framing.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");

    Ok(Exchange {
        route: matched.route,
        service: matched.service,
        framing,
        version,
        head: is_head,
        idempotent: is_idempotent(method),
        rate_headers: (!access.rate_headers.is_empty()).then(|| Box::new(access.rate_headers)),
        consumer: access.consumer_index,
        request_id: rid,
        balance,
        rare: {
            let rare = Rare {
                upgrade: framing.upgrade.then(|| offered_protocols(headers)),
                tls_name: match (route.preserve_host, route_host.as_deref(), &service.tls) {
                    (true, Some(host), Some(tls)) => TlsName::of_host(host, tls.pool_key),
                    _ => None,
                },
            };
            (rare.upgrade.is_some() || rare.tls_name.is_some()).then(|| Box::new(rare))
        },
    })
}

/// The protocols the client's `Upgrade` offers (h2c left out), joined with commas.
fn offered_protocols(headers: &[Header<'_>]) -> Box<str> {
    let mut offered = String::new();
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
    {
        for protocol in list_elements(header.value).filter(|p| !framing::is_h2c(p)) {
            if !offered.is_empty() {
                offered.push(',');
            }
            offered.push_str(&String::from_utf8_lossy(protocol));
        }
    }
    offered.into_boxed_str()
}

impl Balance {
    /// Sets the consistent-hashing key: `hash_on`, else `hash_fallback`; a cookie the
    /// client lacks is made up and set on the response, as Kong does.
    fn tap_key(
        mut self: Box<Self>,
        upstream: &Upstream,
        facts: &RequestFacts<'_>,
        path: &str,
        config: &crate::config::Config,
        access: &Access<'_>,
    ) -> Box<Self> {
        if upstream.algorithm != Algorithm::ConsistentHashing {
            return self;
        }
        let input = |on: &HashOn| -> Option<std::borrow::Cow<'_, str>> {
            let value = match on {
                HashOn::None => return None,
                HashOn::Consumer => config.consumers.get(access.consumer_index?)?.id.as_str(),
                HashOn::Ip => facts.client_ip,
                HashOn::Path => path,
                // As Kong 3.6+ (nginx's `$http_NAME`): a header sent more than once
                // hashes all its values, joined by ", ".
                HashOn::Header(name) => {
                    let mut values = facts
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .filter_map(|h| std::str::from_utf8(crate::http::trim_ows(h.value)).ok());
                    let first = values.next()?;
                    let mut joined = String::new();
                    for value in values {
                        if joined.is_empty() {
                            joined.push_str(first);
                        }
                        joined.push_str(", ");
                        joined.push_str(value);
                    }
                    if !joined.is_empty() {
                        return Some(joined.into());
                    }
                    first
                }
                HashOn::QueryArg(name) => {
                    facts
                        .query?
                        .split('&')
                        .find_map(|pair| match pair.split_once('=') {
                            Some((k, v)) if k == name => Some(v),
                            _ => None,
                        })?
                }
                HashOn::Cookie { name, .. } => crate::http::cookie(facts.headers, name)?,
            };
            (!value.is_empty()).then_some(value.into())
        };
        let value = input(&upstream.hash_on).or_else(|| input(&upstream.hash_fallback));
        // A cookie (hashed on, or the fallback) the client lacks is made up and set.
        let cookie = match (&upstream.hash_on, &upstream.hash_fallback) {
            (HashOn::Cookie { name, path }, _) | (_, HashOn::Cookie { name, path }) => {
                Some((name, path))
            }
            _ => None,
        };
        self.key = match (value, cookie) {
            (Some(value), _) => Some(crate::balance::hash64(value.as_bytes())),
            (None, Some((name, path))) => {
                let value = crate::config::random_id();
                self.set_cookie = Some(format!(
                    "Set-Cookie: {name}={value}; Path={path}; SameSite=Lax; HttpOnly"
                ));
                Some(crate::balance::hash64(value.as_bytes()))
            }
            (None, None) => None,
        };
        self
    }
}

/// The client's address as plugins see it: the peer's, or for a peer in `trusted_ips`
/// the one it forwarded (`X-Real-IP`, else the last `X-Forwarded-For` entry; of several
/// lines of either, the last, which the trusted proxy wrote: an earlier one may be the
/// client's own). A forwarded value that is not an IP address is ignored, as nginx's
/// realip module ignores it: it would otherwise be a rate-limit key of the sender's
/// choosing.
fn forwarded_ip<'a>(client: &'a ClientInfo, headers: &'a [Header<'a>]) -> &'a str {
    if !client.trusted {
        return &client.ip;
    }
    let value = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    // An address, or an address and port as nginx's realip accepts (`1.2.3.4:80`,
    // `[::1]:80`): the address part, only in its canonical text (`2001:db8::1`, not
    // `2001:DB8:0::1`; no IPv6 zone): one address must not hold several rate-limit
    // quotas by its spellings. IPv4's parser takes only the canonical text; an IPv6
    // address is compared with its canonical text on the stack.
    let address = |v: &'a str| {
        use std::io::Write;
        let v = v.trim();
        let (host, ip) = match v.parse::<std::net::IpAddr>() {
            Ok(ip) => (v, ip),
            Err(_) => {
                let ip = v.parse::<std::net::SocketAddr>().ok()?.ip();
                let host = v[..v.rfind(':')?]
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                (host, ip)
            }
        };
        if ip.is_ipv4() {
            return Some(host);
        }
        // The longest an address's text can be (an IPv4-mapped IPv6 one) is 45 bytes.
        let mut text = [0u8; 48];
        let mut unwritten: &mut [u8] = &mut text;
        write!(unwritten, "{ip}").ok()?;
        let len = 48 - unwritten.len();
        (text[..len] == *host.as_bytes()).then_some(host)
    };
    value("x-real-ip")
        .and_then(address)
        .or_else(|| value("x-forwarded-for").and_then(|v| address(v.rsplit(',').next()?)))
        .unwrap_or(&client.ip)
}

/// The query string, without the parameters that carried a hidden token.
fn write_query(out: &mut Vec<u8>, query: &str, access: &Access<'_>) {
    let (jwt, hidden) = match access.hide {
        Some((jwt, locations)) if locations.query != 0 => (jwt, locations.query),
        _ => {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
            return;
        }
    };
    let mut first = true;
    for pair in query.split('&') {
        // The token's parameters, however their names are spelled (`j%77t`), and the
        // empty pairs around them, which would leave a dangling `?` or `&`.
        let name = pair.split('=').next().unwrap_or_default();
        let name = crate::plugins::jwt::percent_decode(name);
        if pair.is_empty() || Locations::named(hidden, &jwt.uri_param_names).any(|n| n == name) {
            continue;
        }
        out.push(if first { b'?' } else { b'&' });
        out.extend_from_slice(pair.as_bytes());
        first = false;
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus those
/// ringway rewrites itself.
fn is_connection_specific(name: &str, upgrade: bool) -> bool {
    let eq = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 => eq("te"),
        4 => eq("host"),
        6 => eq("expect"),
        7 => eq("trailer") || (!upgrade && eq("upgrade")),
        10 => eq("connection") || eq("keep-alive"),
        14 => eq("content-length"),
        16 => eq("proxy-connection"),
        17 => eq("transfer-encoding"),
        _ => false,
    }
}

/// Whether a `Connection` header names this header (RFC 9110 §7.6.1: remove them).
fn named_by_connection(name: &str, headers: &[Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| list_elements(h.value).any(|token| token.eq_ignore_ascii_case(name.as_bytes())))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Forwarded {
    For = 0,
    Proto = 1,
    Host = 2,
    Port = 3,
    Path = 4,
    RealIp = 5,
    Prefix = 6,
}

fn forwarded_kind(name: &str) -> Option<Forwarded> {
    let eq = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        9 if eq("x-real-ip") => Some(Forwarded::RealIp),
        15 if eq("x-forwarded-for") => Some(Forwarded::For),
        16 if eq("x-forwarded-host") => Some(Forwarded::Host),
        16 if eq("x-forwarded-port") => Some(Forwarded::Port),
        16 if eq("x-forwarded-path") => Some(Forwarded::Path),
        17 if eq("x-forwarded-proto") => Some(Forwarded::Proto),
        18 if eq("x-forwarded-prefix") => Some(Forwarded::Prefix),
        _ => None,
    }
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Copies the end-to-end headers and writes the `X-Forwarded-*` set; `host` is the host
/// as routed (no root dot), `raw_path` the request's path as the client wrote it (Kong's
/// `X-Forwarded-Path`: what the client asked for, before normalizing), `prefix` what
/// `strip_path` took off the normalized path.
#[allow(clippy::too_many_arguments)]
fn write_forwarded_headers(
    out: &mut Vec<u8>,
    headers: &[Header<'_>],
    framing: &RequestFraming,
    client: &ClientInfo,
    host: Option<&str>,
    raw_path: &str,
    prefix: Option<&str>,
    access: &Access<'_>,
) {
    let has_connection = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    // Which X-Forwarded-* values a trusted client supplied (and so are kept).
    let mut kept = [false; 7];
    // A token hidden from a header hides every header of that name, and from a cookie
    // every cookie of that name.
    let (hidden_headers, hidden_cookies) = match access.hide {
        Some((jwt, locations)) => (
            (locations.header != 0).then_some((locations.header, &jwt.header_names[..])),
            (locations.cookie != 0).then_some((locations.cookie, &jwt.cookie_names[..])),
        ),
        None => (None, None),
    };
    for header in headers {
        if is_connection_specific(header.name, framing.upgrade)
            // An upgrade's `Connection: upgrade` names `Upgrade`, which goes through.
            || (has_connection
                && !(framing.upgrade && header.name.eq_ignore_ascii_case("upgrade"))
                && named_by_connection(header.name, headers))
            || (access.authenticated_by_plugin && is_consumer_header(header.name))
            || hidden_headers.is_some_and(|(set, names)| {
                Locations::named(set, names).any(|name| header.name.eq_ignore_ascii_case(name))
            })
            || access
                .replaced_header
                .is_some_and(|name| header.name.eq_ignore_ascii_case(name))
            // As nginx (and so Kong) by default (`underscores_in_headers off`): CGI-style
            // backends read `X_Forwarded_For` as the `X-Forwarded-For` ringway sets,
            // so a client could pass one off as the other.
            || header.name.contains('_')
        {
            continue;
        }
        if let Some((set, names)) = hidden_cookies {
            if header.name.eq_ignore_ascii_case("cookie") {
                write_cookie_without(out, header, set, names);
                continue;
            }
        }
        if framing.h2c && header.name.eq_ignore_ascii_case("upgrade") {
            // The offer goes on without h2c (an offer of only h2c is not here at all).
            let others: Vec<&[u8]> = list_elements(header.value)
                .filter(|p| !framing::is_h2c(p))
                .collect();
            if !others.is_empty() {
                write_header(out, b"Upgrade", &others.join(&b", "[..]));
            }
            continue;
        }
        match forwarded_kind(header.name) {
            None => write_header(out, header.name.as_bytes(), header.value),
            // Written below as one list.
            Some(Forwarded::For) => {}
            // A trusted client's value is kept, its first line only: the one ringway
            // acts on (the scheme it routes by), as nginx's `$http_x_forwarded_proto`
            // reads it and Kong sends it, so the upstream cannot read another.
            Some(kind) => {
                if client.trusted && !kept[kind as usize] {
                    kept[kind as usize] = true;
                    write_header(out, header.name.as_bytes(), header.value);
                }
            }
        }
    }
    // X-Forwarded-For is appended to, never replaced: earlier hops are kept, unless the
    // client named it in `Connection`, which makes it hop-by-hop as any header named there.
    let earlier_hops = !(has_connection && named_by_connection("x-forwarded-for", headers));
    out.extend_from_slice(b"X-Forwarded-For: ");
    for header in headers
        .iter()
        .filter(|h| earlier_hops && forwarded_kind(h.name) == Some(Forwarded::For))
    {
        let value = crate::http::trim_ows(header.value);
        if !value.is_empty() {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client.ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !kept[Forwarded::Proto as usize] {
        write_header(
            out,
            b"X-Forwarded-Proto",
            if client.https { b"https" } else { b"http" },
        );
    }
    if !kept[Forwarded::Host as usize] {
        if let Some(host) = host {
            // nginx's `$host`, which Kong sends: without the port (nor, as routed, a
            // trailing dot), lowercased.
            let host = route::strip_port(host);
            let value = out.len() + b"X-Forwarded-Host: ".len();
            write_header(out, b"X-Forwarded-Host", host.as_bytes());
            out[value..value + host.len()].make_ascii_lowercase();
        } else if let Some(ip) = client.local_ip {
            // An HTTP/1.0 request may name no host. `$host` then falls back to the
            // server's name (Kong's is `kong`); the address the client reached is the
            // name it could have used, so the header is there for every request.
            // A dual-stack listener sees an IPv4 client's address as IPv4-mapped IPv6.
            let ip = match ip.to_canonical() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            };
            write_header(out, b"X-Forwarded-Host", ip.as_bytes());
        }
    }
    if !kept[Forwarded::Port as usize] {
        write_header(out, b"X-Forwarded-Port", client.port.as_bytes());
    }
    if !kept[Forwarded::Path as usize] {
        write_header(out, b"X-Forwarded-Path", raw_path.as_bytes());
    }
    if !kept[Forwarded::RealIp as usize] {
        write_header(out, b"X-Real-IP", client.ip.as_bytes());
    }
    // As Kong: the prefix the route stripped, so the upstream can build its own URLs;
    // none when nothing (or only `/`) was stripped.
    if let Some(prefix) = prefix.filter(|p| !kept[Forwarded::Prefix as usize] && *p != "/") {
        write_header(out, b"X-Forwarded-Prefix", prefix.as_bytes());
    }
    if let Some(consumer) = access.consumer {
        write_header(out, b"X-Consumer-ID", consumer.id.as_bytes());
        if let Some(custom_id) = &consumer.custom_id {
            write_header(out, b"X-Consumer-Custom-ID", custom_id.as_bytes());
        }
        if let Some(username) = &consumer.username {
            write_header(out, b"X-Consumer-Username", username.as_bytes());
        }
    }
    if let Some(key) = access.credential_key {
        write_header(out, b"X-Credential-Identifier", key.as_bytes());
    }
    if access.anonymous {
        write_header(out, b"X-Anonymous-Consumer", b"true");
    }
}

/// Headers an authentication plugin sets; a client's own copies never pass.
fn is_consumer_header(name: &str) -> bool {
    let eq = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        13 => eq("x-consumer-id"),
        19 => eq("x-consumer-username"),
        20 => eq("x-consumer-custom-id") || eq("x-anonymous-consumer"),
        23 => eq("x-credential-identifier"),
        _ => false,
    }
}

/// A `Cookie` header without the cookies that carried a hidden token (dropped when they
/// were the only ones).
fn write_cookie_without(out: &mut Vec<u8>, header: &Header<'_>, set: u64, names: &[String]) {
    let Ok(value) = std::str::from_utf8(header.value) else {
        return;
    };
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or_default();
            !c.is_empty()
                && !Locations::named(set, names).any(|hidden| name.eq_ignore_ascii_case(hidden))
        })
        .collect();
    if !kept.is_empty() {
        write_header(out, header.name.as_bytes(), kept.join("; ").as_bytes());
    }
}
