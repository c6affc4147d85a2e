//! Sorted-set ranges: the three kinds (rank, score, lex), their parsing as Redis words its
//! errors, and picking the members in range. Shared by ZRANGE and friends, ZRANGESTORE,
//! ZREMRANGEBY* and ZLEXCOUNT; never touches the keyspace.
use bytes::Bytes;

use super::super::NOT_INT;
use super::super::num;
use super::ZSet;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Rank,
    Score,
    Lex,
}

pub(super) struct ScoreRange {
    min: f64,
    max: f64,
    minex: bool,
    maxex: bool,
}

impl ScoreRange {
    /// Redis's `zslParseRange`: `(` makes a bound exclusive; NaN is refused.
    pub(super) fn parse(min: &[u8], max: &[u8]) -> Option<Self> {
        fn bound(b: &[u8]) -> Option<(f64, bool)> {
            let (ex, body) = match b.first() {
                Some(b'(') => (true, &b[1..]),
                _ => (false, b),
            };
            let v = num::parse_f64(body)?;
            Some((v, ex))
        }
        let (min, minex) = bound(min)?;
        let (max, maxex) = bound(max)?;
        Some(ScoreRange {
            min,
            max,
            minex,
            maxex,
        })
    }
    pub(super) fn gte_min(&self, s: f64) -> bool {
        if self.minex {
            s > self.min
        } else {
            s >= self.min
        }
    }
    pub(super) fn lte_max(&self, s: f64) -> bool {
        if self.maxex {
            s < self.max
        } else {
            s <= self.max
        }
    }
    pub(super) fn contains(&self, s: f64) -> bool {
        self.gte_min(s) && self.lte_max(s)
    }
}

/// A lex bound: `-`, `+`, `[x` (inclusive) or `(x` (exclusive).
#[derive(Clone)]
pub(super) enum Lex {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

impl Lex {
    pub(super) fn parse(b: &Bytes) -> Option<Lex> {
        match b.first()? {
            b'-' if b.len() == 1 => Some(Lex::Min),
            b'+' if b.len() == 1 => Some(Lex::Max),
            b'[' => Some(Lex::Incl(b.slice(1..))),
            b'(' => Some(Lex::Excl(b.slice(1..))),
            _ => None,
        }
    }
    pub(super) fn gte_min(&self, m: &[u8]) -> bool {
        match self {
            Lex::Min => true,
            Lex::Max => false,
            Lex::Incl(x) => m >= &x[..],
            Lex::Excl(x) => m > &x[..],
        }
    }
    pub(super) fn lte_max(&self, m: &[u8]) -> bool {
        match self {
            Lex::Min => false,
            Lex::Max => true,
            Lex::Incl(x) => m <= &x[..],
            Lex::Excl(x) => m < &x[..],
        }
    }
}

/// A test of a member against one end of a lex range.
type Bound<'a> = dyn Fn(&[u8]) -> bool + 'a;

/// A parsed range of one of the three kinds, before the key is looked up (Redis parses first).
pub(super) enum Range {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(Lex, Lex),
}

impl Range {
    /// Parse `lo` and `hi` as `kind`; Err is the error to reply.
    pub(super) fn parse(kind: Kind, lo: &Bytes, hi: &Bytes) -> Result<Range, &'static str> {
        match kind {
            Kind::Rank => match (num::parse_i64(lo), num::parse_i64(hi)) {
                (Some(a), Some(b)) => Ok(Range::Rank(a, b)),
                _ => Err(NOT_INT),
            },
            Kind::Score => ScoreRange::parse(lo, hi)
                .map(Range::Score)
                .ok_or("ERR min or max is not a float"),
            Kind::Lex => match (Lex::parse(lo), Lex::parse(hi)) {
                (Some(a), Some(b)) => Ok(Range::Lex(a, b)),
                _ => Err("ERR min or max not valid string range item"),
            },
        }
    }

    /// The members in range, in order (reversed if `rev`).
    pub(super) fn pick(&self, z: &ZSet, rev: bool) -> Vec<(f64, Bytes)> {
        let mut all = z.ordered();
        match self {
            Range::Rank(start, end) => {
                if rev {
                    all.reverse();
                }
                let (a, b) = super::super::list::clamp(*start, *end, all.len());
                all.truncate(b);
                all.drain(..a);
                all
            }
            Range::Score(range) => {
                if rev {
                    all.reverse();
                }
                all.retain(|(s, _)| range.contains(*s));
                all
            }
            Range::Lex(min, max) => {
                // Redis's `zzlIsInLexRange`: an empty range, or one entirely past the last
                // member or before the first (in score order), gives nothing.
                let empty = match (min, max) {
                    (Lex::Max, _) | (_, Lex::Min) => true,
                    (Lex::Incl(a), Lex::Incl(b)) => a > b,
                    (Lex::Incl(a) | Lex::Excl(a), Lex::Incl(b) | Lex::Excl(b)) => a >= b,
                    _ => false,
                };
                let outside = match (all.first(), all.last()) {
                    (Some((_, first)), Some((_, last))) => {
                        !min.gte_min(last) || !max.lte_max(first)
                    }
                    _ => true,
                };
                if empty || outside {
                    return Vec::new();
                }
                // As Redis's listpack walk: start at the first member past the near bound, stop
                // at the first one beyond the far bound.
                let (near, far): (&Bound, &Bound) = if rev {
                    all.reverse();
                    (&|m| max.lte_max(m), &|m| min.gte_min(m))
                } else {
                    (&|m| min.gte_min(m), &|m| max.lte_max(m))
                };
                match all.iter().position(|(_, m)| near(m)) {
                    Some(i) => all[i..]
                        .iter()
                        .take_while(|(_, m)| far(m))
                        .cloned()
                        .collect(),
                    None => Vec::new(),
                }
            }
        }
    }
}
