//! ZUNION, ZINTER, ZDIFF, their STORE forms and ZINTERCARD, after Redis's
//! `zunionInterDiffGenericCommand`: keys are type-checked before the options are parsed, plain
//! sets count as members with score 1, and the order in which scores are added follows Redis's
//! (inputs sorted by cardinality) so that float sums round the same way.
use std::collections::HashMap;

use bytes::Bytes;

use super::super::num::{parse_f64, parse_i64};
use super::super::set::card_limit;
use super::super::{Call, Db, NOT_INT, SYNTAX, Value, WRONGTYPE, eq_ci};
use super::{Score, store_or_reply};

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Min,
    Max,
}

impl Agg {
    fn apply(self, acc: &mut f64, v: f64) {
        match self {
            Agg::Sum => {
                *acc += v;
                // inf + -inf: Redis stores 0 rather than NaN.
                if acc.is_nan() {
                    *acc = 0.0;
                }
            }
            Agg::Min => *acc = acc.min(v),
            Agg::Max => *acc = acc.max(v),
        }
    }
}

/// One input: its members with scores (None if the key is missing) and its weight.
struct Src {
    members: Option<Vec<(Bytes, f64)>>,
    weight: f64,
}

impl Src {
    fn len(&self) -> usize {
        self.members.as_ref().map_or(0, |m| m.len())
    }
}

pub(super) fn run(db: &mut Db, c: &mut Call) {
    let name = c.name;
    let op = match name.trim_end_matches("store") {
        "zunion" => Op::Union,
        "zdiff" => Op::Diff,
        _ => Op::Inter,
    };
    let store = name.ends_with("store");
    let card = name == "zintercard";
    let nk = if store { 2 } else { 1 };
    let Some(numkeys) = parse_i64(&c.args[nk]) else {
        return c.out.err(NOT_INT);
    };
    if numkeys < 1 {
        let msg = format!("ERR at least 1 input key is needed for '{name}' command");
        return c.out.err(&msg);
    }
    let numkeys = numkeys as usize;
    if numkeys > c.args.len() - nk - 1 {
        return c.out.err(SYNTAX);
    }
    let mut srcs = Vec::with_capacity(numkeys);
    for k in &c.args[nk + 1..nk + 1 + numkeys] {
        let members = match db.get(k).map(|e| &e.value) {
            None => None,
            Some(Value::ZSet(z)) => Some(z.entries().map(|(m, s)| (m.clone(), s)).collect()),
            Some(Value::Set(s)) => Some(s.iter().map(|m| (m.clone(), 1.0)).collect()),
            Some(_) => return c.out.err(WRONGTYPE),
        };
        srcs.push(Src {
            members,
            weight: 1.0,
        });
    }
    let mut j = nk + 1 + numkeys;
    let (mut agg, mut withscores) = (Agg::Sum, false);
    if card {
        let Some(limit) = card_limit(c, j) else {
            return;
        };
        let r = combine(srcs, Op::Inter, Agg::Sum);
        return c.out.int(r.len().min(limit) as i64);
    }
    while j < c.args.len() {
        let remaining = c.args.len() - j;
        let a = &c.args[j];
        if op != Op::Diff && remaining > numkeys && eq_ci(a, "weights") {
            for (i, s) in srcs.iter_mut().enumerate() {
                match parse_f64(&c.args[j + 1 + i]) {
                    Some(w) => s.weight = w,
                    None => return c.out.err("ERR weight value is not a float"),
                }
            }
            j += 1 + numkeys;
        } else if op != Op::Diff && remaining >= 2 && eq_ci(a, "aggregate") {
            let v = &c.args[j + 1];
            agg = if eq_ci(v, "sum") {
                Agg::Sum
            } else if eq_ci(v, "min") {
                Agg::Min
            } else if eq_ci(v, "max") {
                Agg::Max
            } else {
                return c.out.err(SYNTAX);
            };
            j += 2;
        } else if !store && eq_ci(a, "withscores") {
            withscores = true;
            j += 1;
        } else {
            return c.out.err(SYNTAX);
        }
    }
    let mut items: Vec<(f64, Bytes)> = combine(srcs, op, agg)
        .into_iter()
        .map(|(m, s)| (s, m))
        .collect();
    items.sort_by(|a, b| (Score(a.0), &a.1).cmp(&(Score(b.0), &b.1)));
    store_or_reply(db, c, items, store, withscores);
}

/// Redis's weighted score: NaN (0 × inf) becomes 0.
fn weighted(score: f64, weight: f64) -> f64 {
    let v = score * weight;
    if v.is_nan() { 0.0 } else { v }
}

fn combine(mut srcs: Vec<Src>, op: Op, agg: Agg) -> HashMap<Bytes, f64> {
    let mut out: HashMap<Bytes, f64> = HashMap::new();
    match op {
        Op::Inter => {
            srcs.sort_by_key(|s| s.len());
            let Some((first, rest)) = srcs.split_first() else {
                return out;
            };
            let rest: Vec<(HashMap<&Bytes, f64>, f64)> = rest
                .iter()
                .map(|s| {
                    let m = s.members.iter().flatten().map(|(m, v)| (m, *v)).collect();
                    (m, s.weight)
                })
                .collect();
            for (m, s) in first.members.iter().flatten() {
                let mut score = weighted(*s, first.weight);
                let all = rest.iter().all(|(other, w)| match other.get(m) {
                    Some(v) => {
                        agg.apply(&mut score, weighted(*v, *w));
                        true
                    }
                    None => false,
                });
                if all {
                    out.insert(m.clone(), score);
                }
            }
        }
        Op::Union => {
            // Redis sorts union inputs largest first (a stable sort, as glibc's qsort is for
            // these sizes).
            srcs.sort_by_key(|s| std::cmp::Reverse(s.len()));
            for s in &srcs {
                for (m, v) in s.members.iter().flatten() {
                    let v = weighted(*v, s.weight);
                    match out.get_mut(m) {
                        Some(acc) => agg.apply(acc, v),
                        None => {
                            out.insert(m.clone(), v);
                        }
                    }
                }
            }
        }
        Op::Diff => {
            let mut it = srcs.into_iter();
            let Some(first) = it.next() else { return out };
            out.extend(first.members.into_iter().flatten());
            for s in it {
                for (m, _) in s.members.iter().flatten() {
                    out.remove(m);
                }
            }
        }
    }
    out
}
