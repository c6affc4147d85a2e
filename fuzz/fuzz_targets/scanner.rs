//! Fuzzes the reply scanner: no input may panic it, delivering the same bytes in chunks must find
//! exactly the replies found at once, and wherever redis-protocol's decoder reads a complete frame
//! the scanner must find a reply of the same length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp3::types::{FrameKind, OwnedFrame, Resp3Frame};
use respite::protocol::ReplyScanner;
use respite::protocol::scanner::Scanned;

fn scan(input: &[u8], chunk: usize) -> (Vec<Scanned>, Option<respite::protocol::ScanError>) {
    let mut scanner = ReplyScanner::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match scanner.scan(&buf) {
                Ok(Some(found)) => {
                    assert!(found.len > 0 && found.len <= buf.len());
                    let _ = buf.split_to(found.len);
                    out.push(found);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Frames the scanner is not meant to read, anywhere inside: the client-side HELLO and RESP3
/// streamed types, which Redis never sends.
fn out_of_scope(frame: &OwnedFrame) -> bool {
    let inner = |f: &OwnedFrame| match f {
        OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. } => {
            data.iter().any(out_of_scope)
        }
        OwnedFrame::Map { data, .. } => {
            data.iter().any(|(k, v)| out_of_scope(k) || out_of_scope(v))
        }
        OwnedFrame::Set { data, .. } => data.iter().any(out_of_scope),
        _ => false,
    };
    let attributes = frame
        .attributes()
        .is_some_and(|a| a.iter().any(|(k, v)| out_of_scope(k) || out_of_scope(v)));
    matches!(
        frame.kind(),
        FrameKind::Hello | FrameKind::ChunkedString | FrameKind::EndStream
    ) || attributes
        || inner(frame)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let whole = scan(input, input.len().max(1));
    assert_eq!(scan(input, chunk), whole);

    // The decoder is laxer than the scanner in places (it does not check the CRLF after a bulk, for
    // one), so it is the oracle only where the input is exactly what its encoder would write.
    let (found, _) = &whole;
    if let Ok(Some((frame, len))) = redis_protocol::resp3::decode::complete::decode(input) {
        if !out_of_scope(&frame) && encode3(&frame).as_deref() == Some(&input[..len]) {
            assert_eq!(found.first().map(|s| s.len), Some(len), "{frame:?}");
            assert_eq!(found[0].push, frame.kind() == FrameKind::Push);
        }
    }
    if let Ok(Some((frame, len))) = redis_protocol::resp2::decode::decode(input) {
        if encode2(&frame).as_deref() == Some(&input[..len]) {
            assert_eq!(found.first().map(|s| s.len), Some(len), "{frame:?}");
        }
    }
});

fn encode3(frame: &OwnedFrame) -> Option<Vec<u8>> {
    let mut out = vec![0; frame.encode_len(false)];
    let n = redis_protocol::resp3::encode::complete::encode(&mut out, frame, false).ok()?;
    out.truncate(n);
    Some(out)
}

fn encode2(frame: &redis_protocol::resp2::types::OwnedFrame) -> Option<Vec<u8>> {
    use redis_protocol::resp2::types::Resp2Frame;
    let mut out = vec![0; frame.encode_len(false)];
    let n = redis_protocol::resp2::encode::encode(&mut out, frame, false).ok()?;
    out.truncate(n);
    Some(out)
}
