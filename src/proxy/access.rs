//! The access phase: the route's plugin chain (precedence already resolved when config
//! loaded) runs between routing and writing the upstream head. Synchronous, like the
//! rest of the request step.

use std::sync::Arc;

use crate::config::{Chain, Config, Consumer};
use crate::error::ErrorKind;
use crate::http::generated::write_json_string;
use crate::plugins::jwt::{self, FailureBody, Locations, RequestParts};
use crate::plugins::rate_limiting::{self, Decision, LimitBy};

/// A worker's own plugin state: verified-token cache and rate-limit leases.
pub struct PluginState {
    pub jwt_cache: jwt::Cache,
    pub rate_limits: rate_limiting::Local,
    /// The process-wide buckets the leases come from.
    pub rate_store: Arc<rate_limiting::Store>,
    /// The worker's latency histograms and counters.
    pub recorder: crate::observe::Recorder,
    /// Request IDs for `correlation-id`.
    pub ids: crate::plugins::correlation_id::Ids,
}

/// What the access phase knows about the request beyond its head.
pub struct RequestFacts<'r> {
    pub method: &'r str,
    /// The normalized path.
    pub path: &'r str,
    pub query: Option<&'r str>,
    pub headers: &'r [httparse::Header<'r>],
    /// The client's address (the forwarded one when the peer is trusted).
    pub client_ip: &'r str,
    pub service: usize,
}

/// A generated answer with its own status, body and headers (a plugin's rejection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub status: u16,
    /// A JSON body.
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF.
    pub headers: Vec<u8>,
}

/// What the access phase decided about the request.
#[derive(Debug, Default)]
pub struct Access<'c> {
    /// The authenticated (or anonymous) consumer.
    pub consumer: Option<&'c Consumer>,
    pub consumer_index: Option<usize>,
    /// The credential's id (rate limits by credential).
    pub credential_id: Option<&'c str>,
    /// The credential's key (`X-Credential-Identifier`).
    pub credential_key: Option<&'c str>,
    pub anonymous: bool,
    /// An authentication plugin ran: client-sent `X-Consumer-*` headers are dropped.
    pub authenticated_by_plugin: bool,
    /// Where a token to hide from the upstream was found, with the names the places
    /// are known by.
    pub hide: Option<(&'c jwt::Config, Locations)>,
    /// Rate-limit headers for the response.
    pub rate_headers: rate_limiting::Headers,
    /// A request header not forwarded because ringway writes its own (a generated
    /// request ID replacing an empty one).
    pub replaced_header: Option<&'c str>,
}

/// Why the access phase refused a request.
pub struct Refusal {
    pub kind: ErrorKind,
    pub detail: Option<Box<Detail>>,
    /// The consumer, when authentication had already named one (rate limits).
    pub consumer: Option<usize>,
}

/// Runs the chain's access handlers in Kong's priority order: authentication, then the
/// plugins a consumer may override (chosen now that the consumer is known).
/// `state` is `None` only in benches and unit tests: no token cache and no rate limits.
pub fn run<'c>(
    chain: &'c Chain,
    config: &'c Config,
    request: &RequestFacts<'_>,
    now: u64,
    state: Option<&PluginState>,
) -> Result<Access<'c>, Refusal> {
    let mut access = Access::default();
    if let Some(jwt) = &chain.jwt {
        if request.method != "OPTIONS" || jwt.run_on_preflight {
            let parts = RequestParts {
                method: request.method,
                query: request.query,
                headers: request.headers,
            };
            let cache = state.map(|s| &s.jwt_cache);
            if let Err(refusal) = authenticate_jwt(jwt, config, &parts, now, cache, &mut access) {
                if let (Some(state), Some(reason)) = (state, refusal.reason) {
                    state.recorder.jwt_failure(reason);
                }
                return Err(refusal.refusal);
            }
        }
    }
    if let Some(state) = state {
        let consumer = access
            .consumer_index
            .zip(access.consumer)
            .map(|(i, c)| (i, c.groups.as_slice()));
        if let Some(limits) = chain.rate_limiting.select(consumer) {
            if let Err(mut refusal) = rate_limit(limits, config, request, state, &mut access) {
                refusal.consumer = access.consumer_index;
                return Err(refusal);
            }
        }
    }
    Ok(access)
}

/// The `rate-limiting` plugin's access handler.
fn rate_limit(
    limits: &rate_limiting::Config,
    config: &Config,
    request: &RequestFacts<'_>,
    state: &PluginState,
    access: &mut Access<'_>,
) -> Result<(), Refusal> {
    let ip = request.client_ip.as_bytes();
    // Kong's identifiers, each falling back to the client address when missing.
    let identifier: &[u8] = match &limits.limit_by {
        LimitBy::Consumer => access
            .consumer
            .map(|c| c.id.as_bytes())
            .or(access.credential_id.map(str::as_bytes))
            .unwrap_or(ip),
        LimitBy::Credential => access.credential_id.map(str::as_bytes).unwrap_or(ip),
        LimitBy::Ip => ip,
        LimitBy::Service => config
            .services
            .get(request.service)
            .map(|s| s.id.as_bytes())
            .unwrap_or(ip),
        LimitBy::Header(name) => request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .unwrap_or(ip),
        LimitBy::Path(path) if path == request.path => path.as_bytes(),
        LimitBy::Path(_) => ip,
    };
    let decision = state
        .rate_limits
        .check(&state.rate_store, limits, identifier);
    match decision {
        Decision::Allow(headers) => {
            if !limits.hide_client_headers {
                access.rate_headers = headers;
            }
            Ok(())
        }
        Decision::Deny(headers) => {
            state.recorder.rate_limited();
            let mut lines = Vec::with_capacity(256);
            if limits.hide_client_headers {
                lines.extend_from_slice(b"Retry-After: ");
                crate::http::generated::write_u64(&mut lines, headers.retry_after());
                lines.extend_from_slice(b"\r\n");
            } else {
                headers.write(&mut lines, true);
            }
            let mut detail = message_detail(limits.error_code, &limits.error_message, None);
            detail.headers = lines;
            Err(Refusal {
                kind: ErrorKind::RateLimited,
                detail: Some(Box::new(detail)),
                consumer: None,
            })
        }
        Decision::Unavailable => Err(Refusal {
            kind: ErrorKind::Internal,
            detail: None,
            consumer: None,
        }),
    }
}

fn authenticate_jwt<'c>(
    jwt: &'c jwt::Config,
    config: &'c Config,
    request: &RequestParts<'_>,
    now: u64,
    jwt_cache: Option<&jwt::Cache>,
    access: &mut Access<'c>,
) -> Result<(), JwtRefusal> {
    access.authenticated_by_plugin = true;
    match jwt::authenticate(jwt, request, &config.credentials, jwt_cache, now) {
        Ok(found) => {
            access.consumer = config.consumers.get(found.credential.consumer);
            access.consumer_index = Some(found.credential.consumer);
            access.credential_key = Some(&found.credential.key);
            access.credential_id = Some(&found.credential.id);
            if jwt.hide_credentials {
                access.hide = Some((jwt, found.locations));
            }
            Ok(())
        }
        Err(failure) => {
            if let Some(anonymous) = &jwt.anonymous {
                // Kong's "logical OR": a failed authentication maps to the anonymous consumer.
                return match config.keys.consumers.get(anonymous) {
                    Some(&index) => {
                        access.consumer = config.consumers.get(index);
                        access.consumer_index = Some(index);
                        access.anonymous = true;
                        // A token that failed is a credential all the same: hidden
                        // wherever it came, as a verified one is.
                        if jwt.hide_credentials {
                            access.hide = Some((jwt, jwt::offered(jwt, request)));
                        }
                        Ok(())
                    }
                    None => Err(JwtRefusal {
                        refusal: Refusal {
                            kind: ErrorKind::Internal,
                            detail: Some(Box::new(message_detail(
                                500,
                                &format!(
                                    "anonymous consumer {anonymous} is configured but doesn't exist"
                                ),
                                None,
                            ))),
                            consumer: None,
                        },
                        reason: None,
                    }),
                };
            }
            let www = if failure.invalid_token {
                &jwt.www_authenticate_error
            } else {
                &jwt.www_authenticate
            };
            let mut body = Vec::with_capacity(64);
            match &failure.body {
                FailureBody::Message(message) => {
                    body.extend_from_slice(b"{\"message\":");
                    write_json_string(&mut body, message);
                    body.push(b'}');
                }
                FailureBody::Claims(errors) => {
                    body.push(b'{');
                    for (i, (claim, message)) in errors.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        write_json_string(&mut body, claim);
                        body.push(b':');
                        write_json_string(&mut body, message);
                    }
                    body.push(b'}');
                }
            }
            let mut headers = Vec::with_capacity(32 + www.len());
            headers.extend_from_slice(b"WWW-Authenticate: ");
            headers.extend_from_slice(www.as_bytes());
            headers.extend_from_slice(b"\r\n");
            Err(JwtRefusal {
                refusal: Refusal {
                    kind: ErrorKind::Unauthorized,
                    detail: Some(Box::new(Detail {
                        status: 401,
                        body,
                        headers,
                    })),
                    consumer: None,
                },
                reason: Some(failure.reason()),
            })
        }
    }
}

/// A failed authentication, with its reason for the metrics.
struct JwtRefusal {
    refusal: Refusal,
    reason: Option<&'static str>,
}

/// `{"message": ...}` with optional extra header lines.
pub fn message_detail(status: u16, message: &str, headers: Option<&str>) -> Detail {
    let mut body = Vec::with_capacity(16 + message.len());
    body.extend_from_slice(b"{\"message\":");
    write_json_string(&mut body, message);
    body.push(b'}');
    Detail {
        status,
        body,
        headers: headers.map(|h| h.as_bytes().to_vec()).unwrap_or_default(),
    }
}
