//! The request a tenant's rules rebuild ([`Call`]: the arguments as the client sent them and as
//! they will be sent, follow-ups, the reply rewrite) and Redis's C-string option comparison: what
//! [`super::check`], [`super::ttl`] and [`super::values`] all work on. A leaf: it imports none of
//! them.
use bytes::{Bytes, BytesMut};

use super::reply_rewrite::ReplyRewrite;
use crate::protocol::encode;

/// The request being rebuilt: `input` as the client sent it, `args` as it will be sent.
pub(super) struct Call<'a> {
    pub input: &'a [Bytes],
    pub args: Vec<Bytes>,
    pub changed: bool,
    pub follow_ups: Vec<Bytes>,
    pub reply: ReplyRewrite,
}

impl<'a> Call<'a> {
    pub(super) fn new(input: &'a [Bytes]) -> Self {
        Call {
            input,
            args: input.to_vec(),
            changed: false,
            follow_ups: Vec::new(),
            reply: ReplyRewrite::None,
        }
    }

    pub fn set(&mut self, i: usize, arg: Bytes) {
        self.args[i] = arg;
        self.changed = true;
    }

    pub fn follow_up(&mut self, words: &[&[u8]]) {
        let mut out = BytesMut::new();
        encode::command(&mut out, words);
        self.follow_ups.push(out.freeze());
    }
}

/// Redis compares options with `strcasecmp`, which stops at the first NUL.
pub(super) fn c_str(arg: &[u8]) -> &[u8] {
    memchr::memchr(0, arg).map_or(arg, |end| &arg[..end])
}
