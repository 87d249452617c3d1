//! The one error kind a request can end with.
//!
//! Every per-request failure is one `Copy` value that knows its HTTP status, which side
//! caused it, its metric label and whether the upstream attempt may be retried. The
//! connection loop answers it once, through `http::generated`.

/// Who caused a failure: decides logging level and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or ambiguous request framing or syntax (RFC 9112): 400 and close.
    BadRequest,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1): 501 and close.
    NotImplemented,
    /// `CONNECT` or `TRACE`, which a reverse proxy does not pass on (nginx, and so Kong,
    /// answers both with 405): 405 and close.
    MethodNotAllowed,
    /// Request line longer than `max_request_line_bytes`: 414.
    UriTooLong,
    /// A header line, the header block or the header count over its limit: 431.
    HeadersTooLarge,
    /// The head or the body did not arrive within its deadline: 408.
    RequestTimeout,
    /// No route matched: 404.
    NoRoute,
    /// Authentication failed: 401 (the plugin supplies the body).
    Unauthorized,
    /// ringway could not process the request (a misconfiguration): 500.
    Internal,
    /// A rate limit refused the request: 429 (the plugin supplies status and body).
    RateLimited,
    /// The route does not accept this protocol (an https-only route over plain HTTP): 426.
    ProtocolNotAllowed,
    /// The service host did not resolve: 503.
    NameResolution,
    /// The service's upstream has no healthy target: 503.
    NoHealthyTarget,
    /// Connecting to the upstream failed (refused, unreachable): 502, retryable.
    ConnectFailed,
    /// The upstream's TLS certificate did not verify: 502, not retried (another
    /// attempt meets the same certificate).
    UpstreamCertificate,
    /// Connecting to the upstream did not finish within `connect_timeout`: 504, retryable.
    ConnectTimeout,
    /// The upstream closed or reset before any response byte: 502, retryable when idempotent.
    UpstreamClosed,
    /// The upstream sent an invalid response head or body framing: 502.
    BadResponse,
    /// The upstream did not answer within `read_timeout` / `write_timeout`: 504.
    UpstreamTimeout,
    /// The client went away; nothing is answered.
    ClientGone,
}

impl ErrorKind {
    /// The status a client sees.
    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotImplemented => 501,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::UriTooLong => 414,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::NoRoute => 404,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Internal => 500,
            ErrorKind::RateLimited => 429,
            ErrorKind::ProtocolNotAllowed => 426,
            ErrorKind::NameResolution | ErrorKind::NoHealthyTarget => 503,
            ErrorKind::ConnectFailed
            | ErrorKind::UpstreamCertificate
            | ErrorKind::UpstreamClosed
            | ErrorKind::BadResponse => 502,
            ErrorKind::ConnectTimeout | ErrorKind::UpstreamTimeout => 504,
            ErrorKind::ClientGone => 499,
        }
    }

    /// What went wrong, for an operator's log line.
    pub const fn describe(self) -> &'static str {
        match self {
            ErrorKind::ConnectFailed => "connect failed",
            ErrorKind::UpstreamCertificate => "its TLS certificate did not verify",
            ErrorKind::ConnectTimeout => "connect timed out (connect_timeout)",
            ErrorKind::UpstreamClosed => "closed the connection before answering",
            ErrorKind::BadResponse => "sent an invalid response",
            ErrorKind::UpstreamTimeout => {
                "did not take the request or answer in time (write_timeout / read_timeout)"
            }
            ErrorKind::NoHealthyTarget => "no healthy target",
            other => other.label(),
        }
    }

    /// The message in the generated JSON body; Kong's wording where Kong has one.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::NotImplemented => "Not implemented",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::UriTooLong => "URI too long",
            ErrorKind::HeadersTooLarge => "Request header fields too large",
            ErrorKind::RequestTimeout => "Request timeout",
            ErrorKind::NoRoute => "no Route matched with those values",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Internal => "An unexpected error occurred",
            ErrorKind::RateLimited => "API rate limit exceeded",
            ErrorKind::ProtocolNotAllowed => "Please use HTTPS protocol",
            // SPEC §3 has one 503 text. Kong says "name resolution failed" for the first;
            // here the warning logged when the config loads names the host.
            ErrorKind::NameResolution | ErrorKind::NoHealthyTarget => {
                "The upstream server is currently unavailable"
            }
            ErrorKind::ConnectFailed
            | ErrorKind::UpstreamCertificate
            | ErrorKind::UpstreamClosed
            | ErrorKind::BadResponse => "An invalid response was received from the upstream server",
            ErrorKind::ConnectTimeout | ErrorKind::UpstreamTimeout => {
                "The upstream server is timing out"
            }
            ErrorKind::ClientGone => "Client closed request",
        }
    }

    pub const fn side(self) -> Side {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::NotImplemented
            | ErrorKind::MethodNotAllowed
            | ErrorKind::UriTooLong
            | ErrorKind::HeadersTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::NoRoute
            | ErrorKind::ProtocolNotAllowed
            | ErrorKind::ClientGone => Side::Client,
            ErrorKind::NameResolution | ErrorKind::Internal => Side::Internal,
            ErrorKind::Unauthorized | ErrorKind::RateLimited => Side::Client,
            ErrorKind::ConnectFailed
            | ErrorKind::UpstreamCertificate
            | ErrorKind::NoHealthyTarget
            | ErrorKind::ConnectTimeout
            | ErrorKind::UpstreamClosed
            | ErrorKind::BadResponse
            | ErrorKind::UpstreamTimeout => Side::Upstream,
        }
    }

    /// A short stable label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ProtocolNotAllowed => "protocol_not_allowed",
            ErrorKind::NameResolution => "name_resolution",
            ErrorKind::NoHealthyTarget => "no_healthy_target",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::UpstreamCertificate => "upstream_certificate",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamClosed => "upstream_closed",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::ClientGone => "client_gone",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
