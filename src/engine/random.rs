//! The shared shape of HRANDFIELD and ZRANDMEMBER: `key [count [WITHVALUES|WITHSCORES]]`, where
//! a positive count picks distinct elements and a negative one picks |count| that may repeat.
//! Picks are random (Redis's are too), so only their shape and membership can be compared.
use bytes::Bytes;
use rand::seq::{IndexedRandom, IteratorRandom};

use super::num::parse_i64;
use super::set::RANGE_ERR;
use super::{Call, NOT_INT, SYNTAX, eq_ci};

pub(super) struct Pick {
    count: Option<i64>,
    with: bool,
}

/// Parse the count and the `with` word, as Redis does: the count first, then the syntax.
pub(super) fn parse(c: &mut Call, with: &str) -> Option<Pick> {
    let mut p = Pick {
        count: None,
        with: false,
    };
    if c.args.len() >= 3 {
        match parse_i64(&c.args[2]) {
            Some(i64::MIN) => {
                c.out.err(RANGE_ERR);
                return None;
            }
            Some(n) => p.count = Some(n),
            None => {
                c.out.err(NOT_INT);
                return None;
            }
        }
        if c.args.len() > 4 || (c.args.len() == 4 && !eq_ci(&c.args[3], with)) {
            c.out.err(SYNTAX);
            return None;
        }
        p.with = c.args.len() == 4;
    }
    Some(p)
}

impl Pick {
    /// The picked (element, value) pairs from all of them (empty means the key is missing).
    pub(super) fn choose<T: Copy>(&self, all: &[(&Bytes, T)]) -> Vec<(Bytes, T)> {
        let mut rng = rand::rng();
        let n = self.count.unwrap_or(1);
        if n >= 0 {
            all.iter()
                .choose_multiple(&mut rng, n as usize)
                .into_iter()
                .map(|(k, v)| ((*k).clone(), *v))
                .collect()
        } else {
            (0..n.unsigned_abs())
                .filter_map(|_| all.choose(&mut rng).map(|(k, v)| ((*k).clone(), *v)))
                .collect()
        }
    }

    /// Reply: one bulk (or null) without a count; with one an array, of pairs in RESP3 when
    /// values were asked for and flat in RESP2.
    pub(super) fn reply<T: Copy>(
        &self,
        c: &mut Call,
        picked: Vec<(Bytes, T)>,
        value: impl Fn(&mut Call, T),
    ) {
        if self.count.is_none() {
            return match picked.first() {
                Some((k, _)) => c.out.bulk(k),
                None => c.out.null(),
            };
        }
        let resp3 = c.out.proto == crate::protocol::Protocol::Resp3;
        let n = if self.with && !resp3 {
            picked.len() * 2
        } else {
            picked.len()
        };
        c.out.array(n);
        for (k, v) in picked {
            if self.with && resp3 {
                c.out.array(2);
            }
            c.out.bulk(&k);
            if self.with {
                value(c, v);
            }
        }
    }
}
