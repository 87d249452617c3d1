//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly and re-encoded.
//!
//! A byte-at-a-time state machine, so a chunk line split across reads decodes the same
//! as one that arrived whole. Whatever it forwards is re-framed canonically: chunk sizes
//! without extensions, and no trailers (a proxy may drop them, and forwarding them
//! unparsed has been a smuggling vector). Data bytes are copied in runs, not per byte.

use super::is_token_byte;

/// A chunked body that breaks the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

/// What to write for the data decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Re-encode as chunked (to an HTTP/1.1 peer).
    Chunked,
    /// Only the data (to an HTTP/1.0 client, read until close).
    Raw,
}

/// Chunk extensions longer than this are refused; nothing legitimate comes close.
const MAX_EXTENSION_BYTES: usize = 4096;
/// The whole trailer section is bounded like a small header block.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Digits of a chunk size, leading zeros included (`1*HEXDIG` has no bound; this one
/// keeps a size line short). Overflow is checked on the value (RFC 9112 §7.1: guard the
/// conversion): more than 16 significant digits is refused.
const MAX_SIZE_DIGITS: u8 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8, value: u64 },
    SizeSpace { value: u64 },
    ExtBeforeName,
    ExtName,
    ExtAfterName,
    ExtBeforeValue,
    ExtValue,
    ExtAfterValue,
    ExtQuoted,
    ExtQuotedEscape,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// The size of the chunk whose extension is being read.
    pending: u64,
    ext_bytes: usize,
    trailer_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` as one chunk (nothing for empty data).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            pending: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending what to forward to `out`.
    /// Returns how many bytes were consumed; it stops right after the body ends, leaving
    /// any following bytes (a pipelined request) unconsumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        emit: Emit,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(remaining) = self.state {
                let take = remaining.min((input.len() - i) as u64) as usize;
                let data = &input[i..i + take];
                match emit {
                    Emit::Chunked => encode_chunk(out, data),
                    Emit::Raw => out.extend_from_slice(data),
                }
                i += take;
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                if emit == Emit::Chunked {
                    out.extend_from_slice(LAST_CHUNK);
                }
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn ext_byte(&mut self) -> Result<(), ChunkError> {
        self.ext_bytes += 1;
        if self.ext_bytes > MAX_EXTENSION_BYTES {
            return Err(ChunkError);
        }
        Ok(())
    }

    fn end_of_size_line(&self) -> State {
        State::SizeLf
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        let next = match self.state {
            Size { digits, value } => {
                if let Some(v) = hex_value(b) {
                    if digits == MAX_SIZE_DIGITS || value >> 60 != 0 {
                        return Err(ChunkError);
                    }
                    Size {
                        digits: digits + 1,
                        value: value << 4 | v,
                    }
                } else if digits == 0 {
                    return Err(ChunkError);
                } else {
                    self.pending = value;
                    self.ext_bytes = 0;
                    match b {
                        b'\r' => self.end_of_size_line(),
                        b';' => ExtBeforeName,
                        b' ' | b'\t' => SizeSpace { value },
                        _ => return Err(ChunkError),
                    }
                }
            }
            // RFC 9112 §7.1.1: whitespace after the size is only allowed before `;`.
            SizeSpace { value } => match b {
                b' ' | b'\t' => SizeSpace { value },
                b';' => ExtBeforeName,
                _ => return Err(ChunkError),
            },
            ExtBeforeName => {
                self.ext_byte()?;
                match b {
                    _ if is_ws(b) => ExtBeforeName,
                    _ if is_token_byte(b) => ExtName,
                    _ => return Err(ChunkError),
                }
            }
            ExtName => {
                self.ext_byte()?;
                match b {
                    _ if is_token_byte(b) => ExtName,
                    _ if is_ws(b) => ExtAfterName,
                    b'=' => ExtBeforeValue,
                    b';' => ExtBeforeName,
                    b'\r' => SizeLf,
                    _ => return Err(ChunkError),
                }
            }
            ExtAfterName => {
                self.ext_byte()?;
                match b {
                    _ if is_ws(b) => ExtAfterName,
                    b'=' => ExtBeforeValue,
                    b';' => ExtBeforeName,
                    b'\r' => SizeLf,
                    _ => return Err(ChunkError),
                }
            }
            ExtBeforeValue => {
                self.ext_byte()?;
                match b {
                    _ if is_ws(b) => ExtBeforeValue,
                    b'"' => ExtQuoted,
                    _ if is_token_byte(b) => ExtValue,
                    _ => return Err(ChunkError),
                }
            }
            ExtValue => {
                self.ext_byte()?;
                match b {
                    _ if is_token_byte(b) => ExtValue,
                    _ if is_ws(b) => ExtAfterValue,
                    b';' => ExtBeforeName,
                    b'\r' => SizeLf,
                    _ => return Err(ChunkError),
                }
            }
            ExtAfterValue => {
                self.ext_byte()?;
                match b {
                    _ if is_ws(b) => ExtAfterValue,
                    b';' => ExtBeforeName,
                    b'\r' => SizeLf,
                    _ => return Err(ChunkError),
                }
            }
            ExtQuoted => {
                self.ext_byte()?;
                match b {
                    b'"' => ExtAfterValue,
                    b'\\' => ExtQuotedEscape,
                    b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => ExtQuoted,
                    _ => return Err(ChunkError),
                }
            }
            ExtQuotedEscape => {
                self.ext_byte()?;
                match b {
                    b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted,
                    _ => return Err(ChunkError),
                }
            }
            SizeLf => match b {
                b'\n' if self.pending == 0 => TrailerStart,
                b'\n' => Data(self.pending),
                _ => return Err(ChunkError),
            },
            Data(_) => unreachable!("data is copied in runs by decode"),
            // Data longer than its size, or a missing CRLF after it.
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(ChunkError),
            },
            DataLf => match b {
                b'\n' => Size {
                    digits: 0,
                    value: 0,
                },
                _ => return Err(ChunkError),
            },
            TrailerStart => match b {
                b'\r' => FinalLf,
                _ if is_token_byte(b) => {
                    self.trailer_byte()?;
                    TrailerName
                }
                _ => return Err(ChunkError),
            },
            TrailerName => {
                self.trailer_byte()?;
                match b {
                    _ if is_token_byte(b) => TrailerName,
                    b':' => TrailerValue,
                    _ => return Err(ChunkError),
                }
            }
            TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => TrailerValue,
                    _ => return Err(ChunkError),
                }
            }
            TrailerLf => match b {
                b'\n' => TrailerStart,
                _ => return Err(ChunkError),
            },
            FinalLf => match b {
                b'\n' => Done,
                _ => return Err(ChunkError),
            },
            Done => return Err(ChunkError),
        };
        Ok(next)
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input`, whole and one byte at a time; both must agree.
    fn decode(input: &[u8], emit: Emit) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut whole = Decoder::new();
        let mut out = Vec::new();
        let used = whole.decode(input, &mut out, emit)?;
        let mut split = Decoder::new();
        let mut out2 = Vec::new();
        let mut used2 = 0;
        for byte in input.chunks(1) {
            if split.is_done() {
                break;
            }
            used2 += split.decode(byte, &mut out2, emit)?;
        }
        let data = |v: &[u8]| {
            let mut d = Decoder::new();
            let mut raw = Vec::new();
            d.decode(v, &mut raw, Emit::Raw).map(|_| raw)
        };
        if emit == Emit::Chunked && whole.is_done() {
            assert_eq!(data(&out).unwrap(), data(&out2).unwrap());
        } else if emit == Emit::Raw {
            assert_eq!(out, out2);
        }
        assert_eq!(used, used2);
        Ok((out, used, whole.is_done()))
    }

    #[test]
    fn valid_bodies() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"5;foo=bar\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5 ;foo=\"b a\\\"r\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a;b=c\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello"),
            (
                b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\nY: z\r\n\r\n",
                b"hello",
            ),
            (b"0\r\n\r\n", b""),
            (b"000005\r\nhello\r\n0\r\n\r\n", b"hello"),
        ];
        for (input, body) in cases {
            let (out, used, done) = decode(input, Emit::Raw)
                .unwrap_or_else(|_| panic!("{:?}", String::from_utf8_lossy(input)));
            assert_eq!(out, *body);
            assert_eq!(used, input.len());
            assert!(done);
            let (chunked, _, _) = decode(input, Emit::Chunked).unwrap();
            assert!(chunked.ends_with(LAST_CHUNK));
        }
    }

    #[test]
    fn reencoding_is_canonical() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.decode(
            b"5;ext=1\r\nhello\r\n0\r\nT: x\r\n\r\n",
            &mut out,
            Emit::Chunked,
        )
        .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (_, used, done) = decode(input, Emit::Raw).unwrap();
        assert!(done);
        assert_eq!(used, 13);
    }

    #[test]
    fn leading_zeros_in_a_size_are_digits_like_any() {
        // RFC 9112 §7.1: `chunk-size = 1*HEXDIG`; 17 digits that are a small number.
        let input = b"00000000000000001\r\nx\r\n0000\r\n\r\n";
        let (body, used, done) = decode(input, Emit::Raw).unwrap();
        assert!(done);
        assert_eq!((body.as_slice(), used), (&b"x"[..], input.len()));
        let largest = b"0FFFFFFFFFFFFFFFF\r\n";
        assert!(Decoder::new()
            .decode(largest, &mut Vec::new(), Emit::Raw)
            .is_ok());
    }

    #[test]
    fn invalid_bodies() {
        let cases: &[&[u8]] = &[
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
            b" 5\r\nhello\r\n",
            b"5;\r\nhello\r\n",
            b"5; \r\nhello\r\n",
            b"2\r\r;a\r\n02\r\n41\r\n0\r\n\r\n",
            b"a\r\n0123456789\n0\r\n\r\n",
            b"5\nhello\r\n",
            b"FFFFFFFFFFFFFFFFF\r\n",
            b"10000000000000000\r\n",
            b"00000000000000000000000000000000000000000000000000000000000000001\r\nx\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"3\r\nabcXY",
            b"Z\r\nZZ\r\nZZZ\r\n\r\n",
            b"0_2e\r\n\r\n",
            b"5 \r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n X: y\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX y\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\r",
            b"17\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n",
        ];
        for input in cases {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let result = d.decode(input, &mut out, Emit::Raw);
            let failed = result.is_err() || !d.is_done();
            assert!(failed, "accepted {:?}", String::from_utf8_lossy(input));
        }
        // Data longer than size fails outright, not just by running short.
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(b"3\r\nabcd\r\n", &mut Vec::new(), Emit::Raw),
            Err(ChunkError)
        );
    }
}
