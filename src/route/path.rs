//! Request-path normalization and Kong's service-path join (`path_handling: v0`).

use std::borrow::Cow;

/// The request path could not be normalized (bad percent-encoding or escaping above root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes a path may not carry raw (RFC 3986 §3.3: neither unreserved, sub-delims, `:`,
/// `@` nor `/`), which Kong escapes before forwarding: anything not ASCII, and `"`, `<`,
/// `>`, `^`, `` ` ``, `{`, `|`, `}` (the parser has refused controls, spaces and `\`
/// already, or they are refused below).
const fn must_escape(b: u8) -> bool {
    b >= 0x80 || matches!(b, b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}')
}

/// Normalizes a request path as Kong does before routing: percent-encoded unreserved
/// characters are decoded, other escapes upper-cased, bytes a path may not carry raw
/// percent-encoded, dot segments removed (RFC 3986 §6.2.2, §5.2.4) and repeated
/// slashes merged (Kong's router asks its normalizer to merge them, as nginx's
/// `merge_slashes` does). Routing and forwarding both use the result, so the upstream
/// never sees `/public/../private` or `//private` that the router read as another
/// route's path, and `/café` routes and goes upstream as `/caf%C3%A9` does. Paths that
/// need no change are returned borrowed.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if !needs_normalizing(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // A backslash is no path character (RFC 3986 §3.3), and servers that read it as a
    // slash (IIS, some frameworks) would see `/\admin` as the `/admin` the router did
    // not: refused, as no browser sends one.
    if memchr::memchr(b'\\', bytes).is_some() {
        return Err(PathError);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) else {
                return Err(PathError);
            };
            let value = hi << 4 | lo;
            if is_unreserved(value) {
                decoded.push(value);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else if must_escape(bytes[i]) {
            decoded.extend_from_slice(&escaped(bytes[i]));
            i += 1;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let out = remove_dot_segments(&decoded)?;
    // Only ASCII bytes were produced.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError)
}

/// What Kong's router keeps escaped when it decodes a path to match a regex against it:
/// RFC 3986's delimiters (gen-delims and sub-delims) and `%` itself.
const fn kong_reserved(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b'/'
            | b':'
            | b';'
            | b'='
            | b'?'
            | b'@'
            | b'['
            | b']'
    )
}

/// The byte the escape at `bytes[i]` stands for, when there is one there that Kong's
/// router decodes for matching (one not of a reserved character).
fn decodable_escape(bytes: &[u8], i: usize) -> Option<u8> {
    match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
        (b'%', Some(&h), Some(&l)) => hex(h)
            .zip(hex(l))
            .map(|(h, l)| h << 4 | l)
            .filter(|v| !kong_reserved(*v)),
        _ => None,
    }
}

/// `text` with every escape decoded but those of reserved characters, as Kong's router
/// reads a path for matching. `None` when nothing is to decode (read `text` itself) or
/// the decoded bytes are not UTF-8.
pub fn decoded_for_matching(text: &str) -> Option<String> {
    memchr::memchr(b'%', text.as_bytes())?;
    let (decoded, changed) = decode_escapes(text, false);
    if !changed {
        return None;
    }
    String::from_utf8(decoded).ok()
}

/// `text`'s bytes with the escapes Kong's router decodes decoded (with `escape_meta`, a
/// regex metacharacter that came out of an escape is escaped, to stay literal), and
/// whether there was any.
fn decode_escapes(text: &str, escape_meta: bool) -> (Vec<u8>, bool) {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        match decodable_escape(bytes, i) {
            Some(v) => {
                if escape_meta && matches!(v, b'.' | b'^' | b'-' | b'{' | b'}' | b'\\' | b'|') {
                    out.push(b'\\');
                }
                out.push(v);
                i += 3;
                changed = true;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    (out, changed)
}

/// Where in `text` the first `decoded_len` bytes of its `decoded_for_matching` end.
pub fn encoded_offset(text: &str, decoded_len: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    for _ in 0..decoded_len {
        i += if decodable_escape(bytes, i).is_some() {
            3
        } else {
            1
        };
    }
    i
}

/// A regex path as Kong's router normalizes it: escapes of anything but reserved
/// characters decoded (`%C3%A9` is `é`, `%20` a space), a regex metacharacter that
/// came out of an escape escaped (`%7C` is `\|`, a literal bar). Regexes match the path
/// decoded the same way (`decoded_for_matching`), so one written with raw characters
/// (`/café`, `\s`) and one written with their escapes match alike. An error when the
/// escapes decode to bytes that are not UTF-8.
pub fn regex_for_matching(pattern: &str) -> Result<Cow<'_, str>, PathError> {
    if memchr::memchr(b'%', pattern.as_bytes()).is_none() {
        return Ok(Cow::Borrowed(pattern));
    }
    String::from_utf8(decode_escapes(pattern, true).0)
        .map(Cow::Owned)
        .map_err(|_| PathError)
}

/// A route's prefix path as Kong writes it (`/a b`, `/café`) in the form request paths
/// take here: bytes a request path cannot carry raw (a space, non-ASCII, `"`...)
/// percent-encoded; nothing else changes.
pub fn encoded_route_path(path: &str) -> Cow<'_, str> {
    if !path.bytes().any(|b| b == b' ' || must_escape(b)) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 16);
    for &b in path.as_bytes() {
        if b == b' ' || must_escape(b) {
            out.extend(escaped(b).map(char::from));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// A byte percent-encoded, upper-case hex (`%C3`).
pub(crate) fn escaped(b: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]
}

/// The bytes that alone make a path need `normalize`: an escape, a backslash, a byte
/// to escape. One table lookup per byte on the request path.
static CHANGES_PATH: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b == b'%' as usize || b == b'\\' as usize || must_escape(b as u8);
        b += 1;
    }
    table
};

/// Whether a path has anything `normalize` changes or refuses: an escape, a byte to
/// escape, a backslash, a repeated slash or a dot segment. One pass over the bytes, as
/// nearly every path has none of them.
fn needs_normalizing(bytes: &[u8]) -> bool {
    let segment_end = |i: usize| matches!(bytes.get(i), None | Some(b'/'));
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b if CHANGES_PATH[usize::from(b)] => return true,
            b'/' => match bytes.get(i + 1) {
                Some(b'/') => return true,
                Some(b'.') if segment_end(i + 2) => return true,
                Some(b'.') if bytes.get(i + 2) == Some(&b'.') && segment_end(i + 3) => return true,
                _ => {}
            },
            _ => {}
        }
    }
    false
}

fn remove_dot_segments(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let ends_with_slash_like =
        input.ends_with(b"/") || input.ends_with(b"/.") || input.ends_with(b"/..");
    for seg in input.split(|b| *b == b'/').skip(1) {
        match seg {
            // An empty segment is a repeated slash (a trailing one comes back below).
            b"." | b"" => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError);
                }
            }
            _ => segments.push(seg),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if ends_with_slash_like && !out.ends_with(b"/") {
        out.push(b'/');
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// What is left of a normalized path once a prefix is cut off may begin with a dot
/// segment: the prefix `/api` leaves `../admin` of the segment `api..`. As Kong does, that
/// leading `.` or `..` goes, so the join cannot climb out of the service's path. Later
/// segments are whole ones, which normalizing already rid of dots.
fn without_dot_segment(postfix: &[u8]) -> &[u8] {
    match postfix {
        b"." | b".." => &[],
        [b'.', b'/', rest @ ..] | [b'.', b'.', b'/', rest @ ..] => rest,
        _ => postfix,
    }
}

/// Joins the service path with the request path the way Kong's `v0` path handling does:
/// with `strip_path` the matched prefix is removed first; a slash is never doubled, and a
/// trailing slash of the request is kept. Appends to `out`.
pub fn upstream_path(
    out: &mut Vec<u8>,
    service_path: &str,
    request_path: &str,
    matched_len: usize,
    strip_path: bool,
) {
    let base = service_path.as_bytes();
    let req = request_path.as_bytes();
    let postfix = if strip_path {
        without_dot_segment(&req[matched_len.min(req.len())..])
    } else {
        req
    };
    let base_ends_slash = base.last() == Some(&b'/');
    let req_ends_slash = req.last() == Some(&b'/');
    if base_ends_slash {
        if strip_path {
            if postfix.is_empty() {
                if base == b"/" {
                    out.push(b'/');
                } else if req_ends_slash {
                    out.extend_from_slice(base);
                } else {
                    out.extend_from_slice(&base[..base.len() - 1]);
                }
            } else if postfix[0] == b'/' {
                out.extend_from_slice(&base[..base.len() - 1]);
                out.extend_from_slice(postfix);
            } else {
                out.extend_from_slice(base);
                out.extend_from_slice(postfix);
            }
        } else {
            out.extend_from_slice(base);
            out.extend_from_slice(req.get(1..).unwrap_or_default());
        }
        return;
    }
    if strip_path {
        if postfix.is_empty() {
            out.extend_from_slice(base);
            if req.len() > 1 && req_ends_slash {
                out.push(b'/');
            }
        } else if postfix[0] == b'/' {
            out.extend_from_slice(base);
            out.extend_from_slice(postfix);
        } else {
            out.extend_from_slice(base);
            out.push(b'/');
            out.extend_from_slice(postfix);
        }
        return;
    }
    if req == b"/" {
        out.extend_from_slice(base);
    } else {
        out.extend_from_slice(base);
        out.extend_from_slice(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(base: &str, req: &str, matched: usize, strip: bool) -> String {
        let mut out = Vec::new();
        upstream_path(&mut out, base, req, matched, strip);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn join_follows_kong_v0() {
        // (service path, request path, matched prefix, strip_path, expected)
        let cases = [
            ("/", "/api/x", 4, true, "/x"),
            ("/", "/api", 4, true, "/"),
            ("/", "/api/", 4, true, "/"),
            ("/v1", "/api/x", 4, true, "/v1/x"),
            ("/v1", "/api", 4, true, "/v1"),
            ("/v1", "/api/", 4, true, "/v1/"),
            ("/v1/", "/api/x", 4, true, "/v1/x"),
            ("/v1/", "/api", 4, true, "/v1"),
            ("/v1/", "/api/", 4, true, "/v1/"),
            ("/v1", "/apix", 4, true, "/v1/x"),
            ("/v1/", "/apix", 4, true, "/v1/x"),
            ("/v1", "/api/x", 4, false, "/v1/api/x"),
            ("/v1/", "/api/x", 4, false, "/v1/api/x"),
            ("/v1", "/", 1, false, "/v1"),
            ("/", "/api/x", 4, false, "/api/x"),
            ("/", "/", 1, true, "/"),
            // A leading dot segment of what the prefix leaves is dropped, as Kong does.
            ("/public/v1", "/api../admin", 4, true, "/public/v1/admin"),
            ("/public/v1", "/api./admin", 4, true, "/public/v1/admin"),
            ("/public/v1/", "/api../admin", 4, true, "/public/v1/admin"),
            ("/public/v1", "/api..", 4, true, "/public/v1"),
            ("/", "/r..", 2, true, "/"),
            ("/", "/r.", 2, true, "/"),
            ("/v1", "/api.../x", 4, true, "/v1/.../x"),
            ("/v1", "/api../admin", 4, false, "/v1/api../admin"),
            // A route without paths matched the leading `/`.
            ("/v1", "/", 1, true, "/v1"),
            ("/v1", "/x/", 1, true, "/v1/x/"),
            ("/v1/", "/", 1, true, "/v1/"),
        ];
        for (base, req, matched, strip, expected) in cases {
            assert_eq!(
                join(base, req, matched, strip),
                expected,
                "{base} + {req} strip={strip}"
            );
        }
    }

    #[test]
    fn normalize_decodes_unreserved_and_removes_dots() {
        let cases = [
            ("/a/b", Ok("/a/b")),
            ("/a/%62", Ok("/a/b")),
            ("/a/%2f", Ok("/a/%2F")),
            ("/public/../private", Ok("/private")),
            ("/a/./b/", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/..", Err(PathError)),
            ("/a/%zz", Err(PathError)),
            ("/a/%4", Err(PathError)),
            ("/a.b/c..d", Ok("/a.b/c..d")),
            // Repeated slashes merge, wherever they are; the segment after them is
            // a segment like any other.
            ("//admin/users", Ok("/admin/users")),
            ("///admin", Ok("/admin")),
            ("/.//admin", Ok("/admin")),
            ("/a//b//", Ok("/a/b/")),
            ("/a/%2F/b", Ok("/a/%2F/b")),
            ("//", Ok("/")),
            ("//..", Err(PathError)),
            ("/\\admin", Err(PathError)),
            ("/a\\b", Err(PathError)),
            ("/a%5Cb", Ok("/a%5Cb")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("/a/..b/.c", Ok("/a/..b/.c")),
            ("/a/.", Ok("/a/")),
            ("/a/..", Ok("/")),
            // Bytes a path may not carry raw go on escaped, as Kong sends them.
            ("/caf\u{e9}", Ok("/caf%C3%A9")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            (
                "/a\"b<c>d{e}f|g^h`i",
                Ok("/a%22b%3Cc%3Ed%7Be%7Df%7Cg%5Eh%60i"),
            ),
            ("/\u{65e5}/../x", Ok("/x")),
            ("/ok:@!$&'()*+,;=", Ok("/ok:@!$&'()*+,;=")),
        ];
        for (input, expected) in cases {
            let got = normalize(input);
            match expected {
                Ok(e) => assert_eq!(got.as_deref(), Ok(e), "{input}"),
                Err(e) => assert_eq!(got, Err(e), "{input}"),
            }
        }
    }
}
