//! Chunked decoding, differentially: the same bytes decoded in one piece and in two
//! must give the same result (what arrives split across reads must not change meaning).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::chunked::{Decoder, Emit};

fn decode(pieces: &[&[u8]]) -> (Result<usize, ()>, Vec<u8>, bool) {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    let mut used_total = 0;
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        match decoder.decode(&pending, &mut out, Emit::Raw) {
            Ok(used) => {
                assert!(used <= pending.len());
                used_total += used;
                pending.drain(..used);
            }
            Err(_) => return (Err(()), out, decoder.is_done()),
        }
        if decoder.is_done() {
            break;
        }
    }
    (Ok(used_total), out, decoder.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let whole = decode(&[data]);
    let parts = decode(&[&data[..split], &data[split..]]);
    // Errors may surface at different points, but a body decoded whole is decoded the
    // same in pieces.
    if whole.0.is_ok() && whole.2 {
        assert_eq!(
            parts.0.is_ok(),
            true,
            "split decoding failed where whole succeeded"
        );
        assert_eq!(whole.1, parts.1, "decoded bodies differ");
    }
});
