//! Finding the end of a message head while enforcing line hygiene and size limits.
//!
//! httparse accepts some inputs a strict gateway must refuse (bare LF line endings), so
//! the scanner reads every byte of the head once as it arrives: it rejects bare CR, bare
//! LF and NUL (RFC 9112 §2.2, RFC 9110 §5.5) and lines that start with whitespace
//! (obs-fold and whitespace-preceded lines, RFC 9112 §2.2, §5.2), and it applies the
//! request-line, header-line, header-block and header-count limits before anything is
//! parsed, including to a line that has not ended yet.

use crate::config::Limits;
use crate::error::ErrorKind;

/// Where the scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStatus {
    /// More bytes are needed.
    Partial,
    /// The head is complete: `start` skips leading empty lines, `end` is one past the
    /// final CRLF.
    Complete { start: usize, end: usize },
}

/// Incremental head scanner; keep one per message and feed it the growing buffer.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    pos: usize,
    line_start: usize,
    /// Start of the request (or status) line, after any leading empty lines.
    start: Option<usize>,
    /// End of the request (or status) line, without its CRLF.
    first_line_end: usize,
    /// Bytes of complete header lines, CRLFs included.
    header_bytes: usize,
    lines: usize,
}

/// Leading empty lines tolerated before a request line (RFC 9112 §2.2 asks servers to
/// ignore at least one, which clients send after a body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

impl HeadScanner {
    pub fn new() -> HeadScanner {
        HeadScanner::default()
    }

    /// Whether any byte of a message has been seen (empty lines excluded).
    pub fn started(&self) -> bool {
        self.start.is_some() || self.pos > self.line_start
    }

    /// The request (or status) line, once it has ended.
    pub fn first_line<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.start.map(|start| &buf[start..self.first_line_end])
    }

    /// Scans the bytes not seen yet. `buf` must start at the message's first byte.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<HeadStatus, ErrorKind> {
        loop {
            let rest = &buf[self.pos..];
            let Some(offset) = memchr::memchr3(b'\n', b'\r', 0, rest) else {
                self.pos = buf.len();
                self.check_open_line(buf.len(), limits)?;
                return Ok(HeadStatus::Partial);
            };
            let at = self.pos + offset;
            if buf[at] != b'\r' {
                // NUL, or LF without CR.
                return Err(ErrorKind::BadRequest);
            }
            let Some(&next) = buf.get(at + 1) else {
                self.pos = at;
                self.check_open_line(at, limits)?;
                return Ok(HeadStatus::Partial);
            };
            if next != b'\n' {
                return Err(ErrorKind::BadRequest);
            }
            let line_len = at - self.line_start;
            let starts_with_space = matches!(buf.get(self.line_start), Some(b' ' | b'\t'));
            self.pos = at + 2;
            match self.start {
                None if line_len == 0 => {
                    if self.pos > MAX_LEADING_EMPTY_LINES * 2 {
                        return Err(ErrorKind::BadRequest);
                    }
                }
                None => {
                    if starts_with_space {
                        return Err(ErrorKind::BadRequest);
                    }
                    if line_len > limits.max_request_line_bytes {
                        return Err(ErrorKind::UriTooLong);
                    }
                    self.start = Some(self.line_start);
                    self.first_line_end = at;
                }
                Some(start) => {
                    if line_len == 0 {
                        return Ok(HeadStatus::Complete {
                            start,
                            end: self.pos,
                        });
                    }
                    if starts_with_space {
                        return Err(ErrorKind::BadRequest);
                    }
                    if line_len > limits.max_header_line_bytes {
                        return Err(ErrorKind::HeadersTooLarge);
                    }
                    self.lines += 1;
                    self.header_bytes += line_len + 2;
                    if self.lines > limits.max_headers
                        || self.header_bytes > limits.max_header_bytes
                    {
                        return Err(ErrorKind::HeadersTooLarge);
                    }
                }
            }
            self.line_start = self.pos;
        }
    }

    /// Applies the limits to a line that has not ended yet, so an endless line is cut off
    /// as soon as it is over its limit rather than when the buffer fills.
    fn check_open_line(&self, upto: usize, limits: &Limits) -> Result<(), ErrorKind> {
        let open = upto - self.line_start;
        match self.start {
            None if open > limits.max_request_line_bytes => Err(ErrorKind::UriTooLong),
            Some(_)
                if open > limits.max_header_line_bytes
                    || self.header_bytes + open > limits.max_header_bytes =>
            {
                Err(ErrorKind::HeadersTooLarge)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_request_line_bytes: 64,
        max_header_line_bytes: 32,
        max_header_bytes: 80,
        max_headers: 4,
    };

    fn scan_all(input: &[u8]) -> Result<HeadStatus, ErrorKind> {
        HeadScanner::new().scan(input, &LIMITS)
    }

    /// The result must not depend on how the bytes were split across reads.
    fn scan_bytewise(input: &[u8]) -> Result<HeadStatus, ErrorKind> {
        let mut scanner = HeadScanner::new();
        let mut last = Ok(HeadStatus::Partial);
        for n in 1..=input.len() {
            last = scanner.scan(&input[..n], &LIMITS);
            if !matches!(last, Ok(HeadStatus::Partial)) {
                return last;
            }
        }
        last
    }

    #[test]
    fn table() {
        use ErrorKind::*;
        let complete = |start, end| Ok(HeadStatus::Complete { start, end });
        let cases: &[(&[u8], Result<HeadStatus, ErrorKind>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", complete(0, 27)),
            (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", complete(2, 29)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(HeadStatus::Partial)),
            (b"GET / HTTP/1.1\nHost: a\n\n", Err(BadRequest)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Err(BadRequest)),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", Err(BadRequest)),
            (
                b"GET / HTTP/1.1\r\nHost: a\x00.evil\r\n\r\n",
                Err(BadRequest),
            ),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Err(BadRequest)),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Err(BadRequest)),
            (b"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", Err(BadRequest)),
            (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadRequest)),
            (
                b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                Err(BadRequest),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                scan_all(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                scan_bytewise(input),
                *expected,
                "bytewise {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(60));
        assert_eq!(scan_all(long_target.as_bytes()), Err(ErrorKind::UriTooLong));
        // Cut off before the line ends.
        assert_eq!(
            scan_all(&long_target.as_bytes()[..70]),
            Err(ErrorKind::UriTooLong)
        );

        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(40));
        assert_eq!(
            scan_all(long_header.as_bytes()),
            Err(ErrorKind::HeadersTooLarge)
        );
        assert_eq!(
            scan_all(&long_header.as_bytes()[..50]),
            Err(ErrorKind::HeadersTooLarge)
        );

        let many = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
        assert_eq!(scan_all(many.as_bytes()), Err(ErrorKind::HeadersTooLarge));
        let four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert!(matches!(
            scan_all(four.as_bytes()),
            Ok(HeadStatus::Complete { .. })
        ));

        let block = format!(
            "GET / HTTP/1.1\r\nA: {}\r\nB: {}\r\nC: {}\r\n\r\n",
            "x".repeat(25),
            "y".repeat(25),
            "z".repeat(25)
        );
        assert_eq!(scan_all(block.as_bytes()), Err(ErrorKind::HeadersTooLarge));
    }
}
