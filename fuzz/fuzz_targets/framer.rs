//! Fuzzes the request framer: no input may panic it, delivering the same bytes in chunks must frame
//! exactly what delivering them at once frames, and every RESP request's raw bytes must be the
//! canonical encoding of its arguments (so forwarding `raw` and re-encoding `args` are the same).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use respite::protocol::encode;
use respite::protocol::{FrameError, Framer, Limits, Request};

type Outcome = Result<Request, FrameError>;

fn frame(limits: Limits, input: &[u8], chunk: usize) -> Vec<Outcome> {
    let mut framer = Framer::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&mut buf) {
                Ok(Some(req)) => out.push(Ok(req)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.fatal;
                    out.push(Err(e));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }
    out
}

fn check_requests(out: &[Outcome]) {
    for req in out.iter().flatten() {
        assert!(!req.args.is_empty());
        if let Some(raw) = &req.raw {
            let mut canonical = BytesMut::new();
            encode::command(&mut canonical, &req.args);
            assert_eq!(&canonical[..], &raw[..]);
        }
    }
}

/// How long an unfinished line may grow before it is refused depends on how much of it has arrived,
/// in Redis as here; outcomes must agree up to such an error.
fn is_line_too_long(o: &Outcome) -> bool {
    matches!(o, Err(e) if e.message.starts_with("Protocol error: too big"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let small = Limits {
        max_args: 4,
        max_bulk_len: 8,
        max_inline_len: 1 << 20,
        ..Limits::default()
    };
    let limits = if control & 0x40 != 0 {
        small
    } else {
        Limits {
            max_inline_len: 1 << 20,
            ..Limits::default()
        }
    };

    let whole = frame(limits, input, input.len().max(1));
    check_requests(&whole);
    assert_eq!(frame(limits, input, chunk), whole);

    if control & 0x80 != 0 {
        let tight = Limits {
            max_inline_len: 16,
            ..limits
        };
        let whole = frame(tight, input, input.len().max(1));
        let chunked = frame(tight, input, chunk);
        check_requests(&chunked);
        let agree = chunked
            .iter()
            .position(is_line_too_long)
            .unwrap_or(chunked.len());
        assert_eq!(chunked[..agree], whole[..agree.min(whole.len())]);
    }
});
