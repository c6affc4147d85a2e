//! LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest common subsequence of
//! two strings, by Redis's dynamic-programming table and its right-to-left walk, so the string
//! and the IDX ranges come out as Redis's do (including which of several equal-length answers).
use super::num::parse_i64;
use super::{Call, Db, NOT_INT, SYNTAX, Value, eq_ci};

/// Redis's `proto-max-bulk-len`: the LCS table (4 bytes a cell) may not exceed it.
const MAX_TABLE_BYTES: u64 = 512 * 1024 * 1024;

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    if c.name != "lcs" {
        return false;
    }
    let mut strs = Vec::with_capacity(2);
    for i in 1..=2 {
        match db.get(&c.args[i]).map(|e| &e.value) {
            None => strs.push(Vec::new()),
            Some(Value::Str(s)) => strs.push(s.clone()),
            Some(_) => {
                c.out
                    .err("ERR The specified keys must contain string values");
                return true;
            }
        }
    }
    let (mut len_only, mut idx, mut withlen, mut minlen) = (false, false, false, 0usize);
    let mut j = 3;
    while j < c.args.len() {
        let a = &c.args[j];
        if eq_ci(a, "idx") {
            idx = true;
        } else if eq_ci(a, "len") {
            len_only = true;
        } else if eq_ci(a, "withmatchlen") {
            withlen = true;
        } else if eq_ci(a, "minmatchlen") && j + 1 < c.args.len() {
            match parse_i64(&c.args[j + 1]) {
                Some(n) => minlen = n.max(0) as usize,
                None => {
                    c.out.err(NOT_INT);
                    return true;
                }
            }
            j += 1;
        } else {
            c.out.err(SYNTAX);
            return true;
        }
        j += 1;
    }
    if idx && len_only {
        c.out
            .err("ERR If you want both the length and indexes, please just use IDX.");
        return true;
    }
    let (a, b) = (&strs[0], &strs[1]);
    if (a.len() as u64 + 1) * (b.len() as u64 + 1) * 4 > MAX_TABLE_BYTES {
        c.out
            .err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
        return true;
    }
    lcs(c, a, b, len_only, idx, withlen, minlen);
    true
}

fn lcs(c: &mut Call, a: &[u8], b: &[u8], len_only: bool, idx: bool, withlen: bool, minlen: usize) {
    let (alen, blen) = (a.len(), b.len());
    let w = alen + 1;
    let mut dp = vec![0u32; w * (blen + 1)];
    for j in 1..=blen {
        for i in 1..=alen {
            dp[i + j * w] = if a[i - 1] == b[j - 1] {
                dp[i - 1 + (j - 1) * w] + 1
            } else {
                dp[i - 1 + j * w].max(dp[i + (j - 1) * w])
            };
        }
    }
    let total = dp[alen + blen * w] as usize;
    if len_only {
        return c.out.int(total as i64);
    }
    let mut result = vec![0u8; total];
    let mut ranges: Vec<[usize; 5]> = Vec::new();
    let (mut i, mut j, mut k) = (alen, blen, total);
    // `alen` in `a_start` means no range is open, as in Redis.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[k - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            k -= 1;
            i -= 1;
            j -= 1;
        } else {
            if dp[i - 1 + j * w] > dp[i + (j - 1) * w] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            let len = a_end - a_start + 1;
            if minlen == 0 || len >= minlen {
                ranges.push([a_start, a_end, b_start, b_end, len]);
            }
            a_start = alen;
        }
    }
    if !idx {
        return c.out.bulk(&result);
    }
    c.out.map(2);
    c.out.bulk(b"matches");
    c.out.array(ranges.len());
    for [a0, a1, b0, b1, len] in ranges {
        c.out.array(if withlen { 3 } else { 2 });
        c.out.array(2);
        c.out.int(a0 as i64);
        c.out.int(a1 as i64);
        c.out.array(2);
        c.out.int(b0 as i64);
        c.out.int(b1 as i64);
        if withlen {
            c.out.int(len as i64);
        }
    }
    c.out.bulk(b"len");
    c.out.int(total as i64);
}
