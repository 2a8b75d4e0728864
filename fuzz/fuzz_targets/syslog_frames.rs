//! A TCP stream through `FrameDecoder`: never panics, frames respect the limit, and how the
//! stream is cut into reads never changes what comes out.
#![no_main]

use cordon_ingest::syslog::{self, FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

type Out = Vec<Result<Vec<u8>, FrameError>>;

fn decode(max_frame: usize, chunks: &mut dyn Iterator<Item = &[u8]>) -> Out {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(frame) = decoder.next_frame() {
            out.push(frame);
        }
    }
    while let Some(frame) = decoder.finish() {
        out.push(frame);
        assert!(out.len() < 1_000_000, "finish() must end");
    }
    out
}

/// `at_least` of an oversize line depends on how much had arrived: not compared.
fn normalized(out: Out) -> Out {
    out.into_iter()
        .map(|r| {
            r.map_err(|e| match e {
                FrameError::TooLong { max, .. } => FrameError::TooLong { at_least: 0, max },
                e => e,
            })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, stream @ ..] = data else { return };
    let max_frame = usize::from(u16::from_le_bytes([*a, *b]) % 2048);
    let chunk = usize::from(*c).max(1);
    let whole = decode(max_frame, &mut std::iter::once(stream));
    let chunked = decode(max_frame, &mut stream.chunks(chunk));
    for frame in whole.iter().flatten() {
        assert!(frame.len() <= max_frame);
        assert!(!frame.is_empty());
        let _ = syslog::parse(frame);
    }
    assert_eq!(normalized(whole), normalized(chunked));
});
