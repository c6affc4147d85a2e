//! HyperLogLog: PFADD, PFCOUNT, PFMERGE with Redis's own hashing (MurmurHash64A, seed
//! 0xadc83b19), 16384 registers and Redis 7's estimator (Ertl's improved raw estimate), so
//! counts equal Redis's for the same elements.
//!
//! The stored string is not Redis's encoding: `HYLL` followed by one byte per register (Redis
//! packs 6-bit dense or sparse registers behind a 16-byte header). TYPE says `string` as in
//! Redis; GET returns these bytes, and a Redis HLL copied in is not recognised (and the reverse).
use super::{Call, Db, Value, WRONGTYPE};

const P: u32 = 14;
const REGISTERS: usize = 1 << P;
/// Bits of the hash left after the register index (Redis's `HLL_Q`).
const Q: u32 = 64 - P;
const MAGIC: &[u8] = b"HYLL";
const INVALID: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";

pub(super) fn dispatch(db: &mut Db, c: &mut Call) -> bool {
    match c.name {
        "pfadd" => pfadd(db, c),
        "pfcount" => {
            let mut regs = vec![0u8; REGISTERS];
            for i in 1..c.args.len() {
                match load(db, c, i) {
                    Err(()) => return true,
                    Ok(Some(r)) => merge(&mut regs, &r),
                    Ok(None) => {}
                }
            }
            c.out.int(count(&regs) as i64);
        }
        "pfmerge" => {
            let mut regs = vec![0u8; REGISTERS];
            for i in 1..c.args.len() {
                match load(db, c, i) {
                    Err(()) => return true,
                    Ok(Some(r)) => merge(&mut regs, &r),
                    Ok(None) => {}
                }
            }
            store(db, c, &regs);
            c.out.ok();
        }
        _ => return false,
    }
    true
}

/// The registers at args[i]: Ok(None) if missing, Err after replying an error.
fn load(db: &mut Db, c: &mut Call, i: usize) -> Result<Option<Vec<u8>>, ()> {
    match db.get(&c.args[i]).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Str(s)) if s.len() == MAGIC.len() + REGISTERS && s.starts_with(MAGIC) => {
            Ok(Some(s[MAGIC.len()..].to_vec()))
        }
        Some(Value::Str(_)) => {
            c.out.err(INVALID);
            Err(())
        }
        Some(_) => {
            c.out.err(WRONGTYPE);
            Err(())
        }
    }
}

/// Write `regs` to args[1], keeping its expiry.
fn store(db: &mut Db, c: &Call, regs: &[u8]) {
    let key = c.args[1].clone();
    let expire = db.get(&key).and_then(|e| e.expire_at);
    let mut s = Vec::with_capacity(MAGIC.len() + REGISTERS);
    s.extend_from_slice(MAGIC);
    s.extend_from_slice(regs);
    db.insert(key, Value::Str(s), expire);
}

fn merge(into: &mut [u8], from: &[u8]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

fn pfadd(db: &mut Db, c: &mut Call) {
    let (mut regs, mut changed) = match load(db, c, 1) {
        Err(()) => return,
        Ok(Some(r)) => (r, false),
        Ok(None) => (vec![0u8; REGISTERS], true),
    };
    for e in &c.args[2..] {
        let (i, n) = pattern(e);
        if regs[i] < n {
            regs[i] = n;
            changed = true;
        }
    }
    if changed {
        store(db, c, &regs);
    }
    c.out.bool_int(changed);
}

/// Redis's `hllPatLen`: the register an element lands in and the run length it sets there.
fn pattern(e: &[u8]) -> (usize, u8) {
    let hash = murmur64a(e, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

/// MurmurHash64A as Redis's `hyperloglog.c` has it (little-endian reads).
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut k = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// Redis 7's `hllCount`: the register histogram through Ertl's τ and σ corrections.
fn count(regs: &[u8]) -> u64 {
    let m = REGISTERS as f64;
    let mut histo = [0u32; 64];
    for &r in regs {
        histo[r as usize] += 1;
    }
    let q = Q as usize;
    let mut z = m * tau((m - f64::from(histo[q + 1])) / m);
    for j in (1..=q).rev() {
        z += f64::from(histo[j]);
        z *= 0.5;
    }
    z += m * sigma(f64::from(histo[0]) / m);
    const ALPHA_INF: f64 = 0.721_347_520_444_481_7;
    (ALPHA_INF * m * m / z).round() as u64
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}
