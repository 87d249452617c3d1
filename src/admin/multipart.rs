//! `multipart/form-data` bodies (RFC 7578 over RFC 2046 §5.1), as `curl -F` sends them:
//! Kong takes `POST /config` with `-F config=@kong.yml` this way, and entity writes too.
//!
//! The whole body is already in memory (bounded by the admin body limit), so parsing is
//! a strict, synchronous walk over it with named bounds on parts and part headers. Lines
//! end in CRLF as the RFC says; a bare LF is accepted too, as lenient servers do. Any
//! malformation is an error for the caller to answer 400, never a panic.

/// At most this many parts in one body.
const MAX_PARTS: usize = 256;
/// At most this many bytes of headers in one part.
const MAX_PART_HEADER_BYTES: usize = 8192;
/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY_BYTES: usize = 70;

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition: form-data`.
    pub name: String,
    /// The `filename`, when the part carries a file (`-F config=@kong.yml`).
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type.
pub fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("expected multipart/form-data, got '{media}'"));
    }
    let (_, value) =
        parse_params(&content_type[content_type.find(';').unwrap_or(content_type.len())..])?
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
            .ok_or("the Content-Type has no boundary parameter")?;
    if value.is_empty() || value.len() > MAX_BOUNDARY_BYTES {
        return Err("the boundary must be 1 to 70 characters".into());
    }
    if value.bytes().any(|b| b.is_ascii_control()) || value.ends_with(' ') {
        return Err("the boundary has characters RFC 2046 does not allow".into());
    }
    Ok(value)
}

/// Splits a body into its parts.
pub fn parse<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    let boundary = boundary(content_type)?;
    let delimiter = format!("--{boundary}").into_bytes();
    // The first delimiter may follow a preamble; it must start a line.
    let mut at = find_delimiter(body, 0, &delimiter, true)
        .ok_or("no opening boundary delimiter in the body")?
        .1;
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` closes the body, else transport padding and a line end.
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a boundary delimiter is not followed by a line end")?;
        let padding = rest[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..line_end]);
        if !padding.iter().all(|&b| b == b' ' || b == b'\t') {
            return Err("unexpected bytes after a boundary delimiter".into());
        }
        at += line_end + 1;
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        let (headers_len, data_offset) = end_of_headers(&body[at..])?;
        let headers = std::str::from_utf8(&body[at..at + headers_len])
            .map_err(|_| "a part's headers are not UTF-8")?;
        let data_start = at + data_offset;
        let (data_end, next) = find_delimiter(body, data_start, &delimiter, false)
            .ok_or("the body ends before its closing boundary delimiter")?;
        parts.push(part(headers, &body[data_start..data_end])?);
        at = next;
    }
}

/// The next delimiter at or after `from` that starts a line: (where the data before it
/// ends, its line end removed; where the bytes after the delimiter start). With `first`,
/// what comes before is a preamble to skip.
fn find_delimiter(
    body: &[u8],
    from: usize,
    delimiter: &[u8],
    first: bool,
) -> Option<(usize, usize)> {
    let mut search = from;
    loop {
        let found = search
            + body
                .get(search..)?
                .windows(delimiter.len())
                .position(|w| w == delimiter)?;
        if found == 0 || body[found - 1] == b'\n' {
            let mut data_end = found;
            if !first && data_end > from && body[data_end - 1] == b'\n' {
                data_end -= 1;
                if data_end > from && body[data_end - 1] == b'\r' {
                    data_end -= 1;
                }
            }
            return Some((data_end, found + delimiter.len()));
        }
        search = found + 1;
    }
}

/// The length of a part's header block and where its data starts (after the empty
/// line), within `MAX_PART_HEADER_BYTES`.
fn end_of_headers(bytes: &[u8]) -> Result<(usize, usize), String> {
    // A part without headers starts with the empty line itself.
    for blank in [&b"\r\n"[..], b"\n"] {
        if bytes.starts_with(blank) {
            return Ok((0, blank.len()));
        }
    }
    let window = &bytes[..bytes.len().min(MAX_PART_HEADER_BYTES + 3)];
    for (i, &b) in window.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        for blank in [&b"\r\n"[..], b"\n"] {
            if bytes[i + 1..].starts_with(blank) {
                if i + 1 > MAX_PART_HEADER_BYTES {
                    break;
                }
                return Ok((i + 1, i + 1 + blank.len()));
            }
        }
    }
    if window.len() < bytes.len() {
        Err(format!(
            "a part's headers exceed {MAX_PART_HEADER_BYTES} bytes"
        ))
    } else {
        Err("a part's headers do not end with an empty line".into())
    }
}

fn part<'a>(headers: &str, data: &'a [u8]) -> Result<Part<'a>, String> {
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in headers.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err("folded part headers are not allowed (RFC 7578 §4.8)".into());
        }
        let (field, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed part header '{line}'"))?;
        let field = field.trim();
        if field.eq_ignore_ascii_case("content-disposition") {
            let value = value.trim();
            let semi = value.find(';').unwrap_or(value.len());
            if !value[..semi].trim().eq_ignore_ascii_case("form-data") {
                return Err("a part's Content-Disposition must be form-data".into());
            }
            for (k, v) in parse_params(&value[semi..])? {
                if k.eq_ignore_ascii_case("name") {
                    name = Some(v);
                } else if k.eq_ignore_ascii_case("filename") {
                    filename = Some(v);
                }
            }
        } else if field.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    let name = name.ok_or("a part has no Content-Disposition name")?;
    Ok(Part {
        name,
        filename,
        content_type,
        data,
    })
}

/// `; key=value; key="quoted \" value"` parameters (RFC 9110 §5.6.6).
fn parse_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let bytes = text.as_bytes();
    let mut params = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && matches!(bytes[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == bytes.len() {
            return Ok(params);
        }
        if bytes[i] != b';' {
            return Err(format!("malformed parameters '{}'", text.trim()));
        }
        i += 1;
        skip_ws(&mut i);
        if i == bytes.len() {
            return Ok(params);
        }
        let key_start = i;
        while i < bytes.len() && !matches!(bytes[i], b'=' | b';' | b' ' | b'\t') {
            i += 1;
        }
        let key = text[key_start..i].to_owned();
        skip_ws(&mut i);
        if key.is_empty() || i == bytes.len() || bytes[i] != b'=' {
            return Err(format!("malformed parameters '{}'", text.trim()));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut value = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated quoted parameter".into()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8(value).map_err(|_| "a parameter is not UTF-8")?
        } else {
            let start = i;
            while i < bytes.len() && !matches!(bytes[i], b';' | b' ' | b'\t') {
                i += 1;
            }
            text[start..i].to_owned()
        };
        params.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=------------------------abc123";

    #[test]
    fn curl_shaped_body_with_a_file_part() {
        let body = b"--------------------------abc123\r\n\
Content-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\n\
Content-Type: application/octet-stream\r\n\
\r\n\
_format_version: \"3.0\"\r\nservices: []\r\n\
\r\n--------------------------abc123\r\n\
Content-Disposition: form-data; name=\"note\"\r\n\
\r\n\
hi\r\n\
--------------------------abc123--\r\n";
        let parts = parse(CT, body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "config");
        assert_eq!(parts[0].filename.as_deref(), Some("kong.yml"));
        assert_eq!(
            parts[0].content_type.as_deref(),
            Some("application/octet-stream")
        );
        // The data keeps its own line ends; only the one before the delimiter goes.
        assert_eq!(
            parts[0].data,
            b"_format_version: \"3.0\"\r\nservices: []\r\n"
        );
        assert_eq!(parts[1].name, "note");
        assert_eq!(parts[1].filename, None);
        assert_eq!(parts[1].data, b"hi");
    }

    #[test]
    fn preamble_quoted_boundary_bare_lf_and_empty_data() {
        let ct = "Multipart/Form-Data; charset=utf-8; boundary=\"b b\"";
        let body = b"ignored preamble\n--b b\nContent-Disposition: form-data; name=\"a\\\"q\"\n\n\n--b b  \r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b b--";
        let parts = parse(ct, body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "a\"q");
        assert_eq!(parts[0].data, b"");
        assert_eq!(parts[1].name, "x");
        assert_eq!(parts[1].data, b"1");
    }

    #[test]
    fn a_delimiter_inside_a_line_is_data() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nsee --xyz here\r\n--xyz--\r\n";
        let parts = parse("multipart/form-data; boundary=xyz", body).unwrap();
        assert_eq!(parts[0].data, b"see --xyz here");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let ct = "multipart/form-data; boundary=xyz";
        for (what, ct, body) in [
            ("no boundary", "multipart/form-data", &b"--xyz\r\n"[..]),
            (
                "empty boundary",
                "multipart/form-data; boundary=",
                b"--\r\n",
            ),
            ("bad params", "multipart/form-data; boundary", b""),
            ("no delimiter", ct, b"just text"),
            (
                "no closing delimiter",
                ct,
                b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue",
            ),
            (
                "headers never end",
                ct,
                b"--xyz\r\nContent-Disposition: form-data; name=a\r\n",
            ),
            (
                "no name",
                ct,
                b"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xyz--",
            ),
            (
                "not form-data",
                ct,
                b"--xyz\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--xyz--",
            ),
            (
                "header without colon",
                ct,
                b"--xyz\r\nnonsense\r\n\r\nv\r\n--xyz--",
            ),
            (
                "junk after delimiter",
                ct,
                b"--xyzjunk\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xyz--",
            ),
            (
                "unterminated quote",
                ct,
                b"--xyz\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--xyz--",
            ),
            ("delimiter at the very end", ct, b"--xyz"),
        ] {
            assert!(parse(ct, body).is_err(), "{what}: {:?}", parse(ct, body));
        }
        let mut huge = b"--xyz\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_PART_HEADER_BYTES + 10));
        huge.extend_from_slice(b"\r\n\r\nv\r\n--xyz--");
        assert!(parse(ct, &huge).is_err(), "oversized part headers");
        let mut many = Vec::new();
        for _ in 0..=MAX_PARTS {
            many.extend_from_slice(b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n");
        }
        many.extend_from_slice(b"--xyz--");
        assert!(parse(ct, &many).is_err(), "too many parts");
    }
}
