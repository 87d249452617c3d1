//! The access phase: the route's plugin chain (precedence already resolved when config
//! loaded) runs between routing and writing the upstream head. Synchronous, like the
//! rest of the request step.

use crate::config::{Chain, Config, Consumer};
use crate::error::ErrorKind;
use crate::http::generated::write_json_string;
use crate::plugins::jwt::{self, FailureBody, Location, RequestParts};

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
    /// The credential's key (`X-Credential-Identifier`).
    pub credential_key: Option<&'c str>,
    pub anonymous: bool,
    /// An authentication plugin ran: client-sent `X-Consumer-*` headers are dropped.
    pub authenticated_by_plugin: bool,
    /// Where a token to hide from the upstream was found.
    pub hide: Option<Location>,
    /// The query parameter or cookie name of a hidden token.
    pub hide_name: Option<&'c str>,
}

/// Why the access phase refused a request.
pub struct Refusal {
    pub kind: ErrorKind,
    pub detail: Option<Box<Detail>>,
}

/// Runs the chain's access handlers in Kong's priority order.
pub fn run<'c>(
    chain: &'c Chain,
    config: &'c Config,
    method: &str,
    query: Option<&str>,
    headers: &[httparse::Header<'_>],
    now: u64,
    jwt_cache: Option<&jwt::Cache>,
) -> Result<Access<'c>, Refusal> {
    let mut access = Access::default();
    if let Some(jwt) = &chain.jwt {
        if method != "OPTIONS" || jwt.run_on_preflight {
            let request = RequestParts {
                method,
                query,
                headers,
            };
            authenticate_jwt(jwt, config, &request, now, jwt_cache, &mut access)?;
        }
    }
    Ok(access)
}

fn authenticate_jwt<'c>(
    jwt: &'c jwt::Config,
    config: &'c Config,
    request: &RequestParts<'_>,
    now: u64,
    jwt_cache: Option<&jwt::Cache>,
    access: &mut Access<'c>,
) -> Result<(), Refusal> {
    access.authenticated_by_plugin = true;
    match jwt::authenticate(jwt, request, &config.credentials, jwt_cache, now) {
        Ok(found) => {
            access.consumer = config.consumers.get(found.credential.consumer);
            access.credential_key = Some(&found.credential.key);
            if jwt.hide_credentials {
                access.hide = Some(found.location);
                access.hide_name = match found.location {
                    Location::Query(i) => jwt.uri_param_names.get(i).map(String::as_str),
                    Location::Cookie(i) => jwt.cookie_names.get(i).map(String::as_str),
                    Location::Header(_) => None,
                };
            }
            Ok(())
        }
        Err(failure) => {
            if let Some(anonymous) = &jwt.anonymous {
                // Kong's "logical OR": a failed authentication maps to the anonymous consumer.
                return match config.keys.consumers.get(anonymous) {
                    Some(&index) => {
                        access.consumer = config.consumers.get(index);
                        access.anonymous = true;
                        Ok(())
                    }
                    None => Err(Refusal {
                        kind: ErrorKind::Internal,
                        detail: Some(Box::new(message_detail(
                            500,
                            &format!(
                                "anonymous consumer {anonymous} is configured but doesn't exist"
                            ),
                            None,
                        ))),
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
            Err(Refusal {
                kind: ErrorKind::Unauthorized,
                detail: Some(Box::new(Detail {
                    status: 401,
                    body,
                    headers,
                })),
            })
        }
    }
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
