//! Number parsing and formatting exactly as Redis 7.0 does it: `string2ll` integers, `strtod`
//! doubles replied with `%.17g`, and INCRBYFLOAT's long-double "human" format.
//!
//! Redis computes INCRBYFLOAT/HINCRBYFLOAT in x87 80-bit `long double` and prints `%.17Lf` with the
//! trailing zeros cut. Rust has no `long double`, so `Ld` emulates the three steps that matter:
//! `strtold`'s correctly rounded parse (64-bit mantissa, ties to even), the rounded addition, and
//! the exact binary-to-decimal print, using a small big integer for the conversions. Not emulated:
//! hex-float inputs and the long-double exponent range (both fall back to `f64`).

/// Redis's `string2ll`: no spaces, no `+`, no leading zeros, at most 20 bytes.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    crate::protocol::int::parse_i64(s)
}

/// Redis's `string2d` via `strtod`: rejects empty input, leading space, NaN, and overflow or
/// underflow to zero. Hex floats (which `strtod` accepts) are not supported here.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let explicit_inf = lower.trim_start_matches(['+', '-']).starts_with("inf");
    if v.is_infinite() && !explicit_inf {
        return None;
    }
    if v == 0.0 && lower.bytes().any(|b| (b'1'..=b'9').contains(&b)) && lower.contains('e') {
        // strtod sets ERANGE when a non-zero literal underflows to zero; Redis rejects it.
        return None;
    }
    Some(v)
}

/// C's `%.17g`, which Redis 7.0's `addReplyDouble` uses (before 7.2's `fpconv_dtoa`).
pub fn fmt_g17(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{d:.16e}");
    let (mant, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent digits");
    if !(-4..17).contains(&exp) {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let prec = (16 - exp) as usize;
        trim_zeros(&format!("{d:.prec$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Why a float increment failed; the reply text depends on the command.
#[derive(Debug, PartialEq, Eq)]
pub enum FloatError {
    /// The stored value or the increment is not a number.
    NotFloat,
    /// The sum is NaN or infinite.
    NanOrInf,
}

const SCALE: i128 = 100_000_000_000_000_000; // 10^17: %.17Lf keeps 17 fractional digits

/// A decimal string as `(negative, digits, exponent)`: the value is `digits * 10^exponent`.
fn parse_dec(s: &str) -> Option<(bool, Big, i64)> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (num, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || exp.abs() > 5000 {
        return None;
    }
    let mut n = Big::default();
    for b in int.bytes().chain(frac.bytes()) {
        n.mul_add(10, u32::from(b - b'0'));
    }
    Some((neg, n, exp - frac.len() as i64))
}

/// A minimal unsigned big integer (32-bit limbs, little-endian), for exact decimal/binary
/// conversion of long doubles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut x: u128) -> Big {
        let mut v = Vec::new();
        while x > 0 {
            v.push(x as u32);
            x >>= 32;
        }
        Big(v)
    }
    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn bits(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(top) => 32 * (self.0.len() as u64 - 1) + 32 - u64::from(top.leading_zeros()),
        }
    }
    fn mul_add(&mut self, m: u32, a: u32) {
        let mut carry = u64::from(a);
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(m) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }
    fn pow10(&mut self, n: u64) {
        for _ in 0..n {
            self.mul_add(10, 0);
        }
    }
    fn shl(&self, n: u64) -> Big {
        let (limbs, bits) = ((n / 32) as usize, (n % 32) as u32);
        let mut v = vec![0u32; limbs];
        let mut carry = 0u32;
        for &l in &self.0 {
            v.push(if bits == 0 { l } else { (l << bits) | carry });
            carry = if bits == 0 { 0 } else { l >> (32 - bits) };
        }
        v.push(carry);
        let mut b = Big(v);
        b.trim();
        b
    }
    fn bit(&self, i: u64) -> bool {
        self.0
            .get((i / 32) as usize)
            .is_some_and(|l| (l >> (i % 32)) & 1 == 1)
    }
    fn cmp(&self, o: &Big) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }
    fn sub(&mut self, o: &Big) {
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let v = i64::from(self.0[i]) - i64::from(o.0.get(i).copied().unwrap_or(0)) - borrow;
            borrow = i64::from(v < 0);
            self.0[i] = (v + (borrow << 32)) as u32;
        }
        self.trim();
    }
    /// `(self / d, self % d)`, by shift-and-subtract.
    fn div_rem(&self, d: &Big) -> (Big, Big) {
        let mut q = Big(vec![0; self.0.len()]);
        let mut r = Big::default();
        for i in (0..self.bits()).rev() {
            r = r.shl(1);
            if self.bit(i) {
                if r.is_zero() {
                    r.0.push(1);
                } else {
                    r.0[0] |= 1;
                }
            }
            if r.cmp(d) != std::cmp::Ordering::Less {
                r.sub(d);
                q.0[(i / 32) as usize] |= 1 << (i % 32);
            }
        }
        q.trim();
        (q, r)
    }

    /// Whether `q + r/d` (with `r < d`) rounds up to nearest, ties to even.
    fn rounds_up(q: &Big, r: &Big, d: &Big) -> bool {
        match r.shl(1).cmp(d) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => q.bit(0),
            std::cmp::Ordering::Less => false,
        }
    }

    /// `self / d` rounded to nearest, ties to even.
    fn div_even(&self, d: &Big) -> Big {
        let (mut q, r) = self.div_rem(d);
        if Big::rounds_up(&q, &r, d) {
            q.mul_add(1, 1);
        }
        q
    }

    fn to_u128(&self) -> u128 {
        self.0
            .iter()
            .rev()
            .fold(0u128, |acc, &l| (acc << 32) | u128::from(l))
    }
    fn to_decimal(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut digits = Vec::new();
        let mut n = self.0.clone();
        while !n.is_empty() {
            let mut rem = 0u64;
            for limb in n.iter_mut().rev() {
                let v = (rem << 32) | u64::from(*limb);
                *limb = (v / 10) as u32;
                rem = v % 10;
            }
            digits.push(b'0' + rem as u8);
            while n.last() == Some(&0) {
                n.pop();
            }
        }
        digits.reverse();
        String::from_utf8(digits).expect("ascii digits")
    }
}

/// `x / 2^k` rounded to the nearest integer, ties to even (as the FPU rounds).
fn div_pow2_even(x: u128, k: u32) -> u128 {
    if k == 0 {
        return x;
    }
    let q = x >> k;
    let r = x & ((1u128 << k) - 1);
    let half = 1u128 << (k - 1);
    if r > half || (r == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// An x87 `long double`: `(-1)^neg * q * 2^-k` with a 64-bit mantissa `q`.
#[derive(Debug, Clone, Copy)]
struct Ld {
    neg: bool,
    q: u128,
    k: i32,
}

const TWO64: u128 = 1 << 64;

impl Ld {
    /// The long double nearest to `n * 10^e10`, as `strtold` rounds.
    fn from_dec(neg: bool, n: &Big, e10: i64) -> Ld {
        if n.is_zero() {
            return Ld { neg, q: 0, k: 0 };
        }
        // Pick k so that floor(n * 10^e10 * 2^k) has exactly 64 bits, then round that once:
        // rounding before choosing k could land on the wrong binade.
        let at = |k: i64| -> (Big, Big, Big) {
            let mut num = n.clone();
            let mut den = Big::from_u128(1);
            if e10 >= 0 {
                num.pow10(e10 as u64);
            } else {
                den.pow10((-e10) as u64);
            }
            if k >= 0 {
                num = num.shl(k as u64);
            } else {
                den = den.shl((-k) as u64);
            }
            let (q, r) = num.div_rem(&den);
            (q, r, den)
        };
        // log2(10) ~ 3.3219: a first guess, then step until the mantissa has 64 bits.
        let log2 = n.bits() as i64 + (e10 as f64 * std::f64::consts::LOG2_10) as i64;
        let mut k = 64 - log2;
        let mut parts = at(k);
        while parts.0.bits() > 64 {
            k -= 1;
            parts = at(k);
        }
        while parts.0.bits() < 64 {
            k += 1;
            parts = at(k);
        }
        let (q, r, den) = parts;
        let mut q128 = q.to_u128();
        if Big::rounds_up(&q, &r, &den) {
            q128 += 1;
        }
        if q128 == TWO64 {
            q128 >>= 1;
            k -= 1;
        }
        Ld {
            neg,
            q: q128,
            k: k as i32,
        }
    }

    /// `self + other`, rounded to 64 bits as the FPU does.
    fn add(self, other: Ld) -> Ld {
        if self.q == 0 {
            return other;
        }
        if other.q == 0 {
            return self;
        }
        let (big, small) = if self.k <= other.k {
            (self, other)
        } else {
            (other, self)
        };
        let diff = small.k - big.k;
        // Align on the smaller operand's scale, but keep at most 62 bits below the larger
        // one's mantissa: the rest of the smaller operand only matters as a sticky bit.
        let (shift, small_q, k) = if diff <= 62 {
            (diff, small.q, small.k)
        } else {
            let drop = (diff - 62) as u32;
            let lost = if drop >= 128 {
                small.q
            } else {
                small.q & ((1u128 << drop) - 1)
            };
            let kept = if drop >= 128 { 0 } else { small.q >> drop };
            (62, kept | u128::from(lost != 0), big.k + 62)
        };
        let a = (big.q << shift) as i128 * if big.neg { -1 } else { 1 };
        let b = small_q as i128 * if small.neg { -1 } else { 1 };
        let sum = a + b;
        let neg = sum < 0;
        let mut n = sum.unsigned_abs();
        let mut k = k;
        let bits = 128 - n.leading_zeros() as i32;
        if bits > 64 {
            let shift = (bits - 64) as u32;
            n = div_pow2_even(n, shift);
            k -= shift as i32;
            if n >= TWO64 {
                n >>= 1;
                k -= 1;
            }
        }
        Ld { neg, q: n, k }
    }

    /// `%.17Lf` with the trailing zeros (and a bare point) cut, and `-0` as `0`: `ld2string`'s
    /// human mode.
    fn human(self) -> String {
        let q = Big::from_u128(self.q);
        let (int, frac) = if self.k <= 0 {
            (q.shl((-self.k) as u64), Big::default())
        } else {
            let k = self.k as u64;
            let int = if k >= 128 { 0 } else { self.q >> k };
            let rest = if k >= 128 {
                self.q
            } else {
                self.q & ((1u128 << k) - 1)
            };
            let mut scaled = Big::from_u128(rest);
            scaled.pow10(17);
            let f = scaled.div_even(&Big::from_u128(1).shl(k)).to_u128();
            if f == SCALE as u128 {
                (Big::from_u128(int + 1), Big::default())
            } else {
                (Big::from_u128(int), Big::from_u128(f))
            }
        };
        let frac = frac.to_u128();
        let sign = if self.neg && (!int.is_zero() || frac != 0) {
            "-"
        } else {
            ""
        };
        trim_zeros(&format!("{sign}{}.{frac:017}", int.to_decimal())).to_string()
    }
}

/// Redis's `string2ld` on `s`: `Ok(None)` for an infinity (which the caller turns into
/// "would produce NaN or Infinity"), `NotFloat` for what `strtold` refuses or finds out of range.
fn parse_ld(s: &[u8]) -> Result<Option<Ld>, FloatError> {
    let text = std::str::from_utf8(s).map_err(|_| FloatError::NotFloat)?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return Err(FloatError::NotFloat);
    }
    let lower = text.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if unsigned.len() + 1 >= lower.len() && (unsigned == "inf" || unsigned == "infinity") {
        return Ok(None);
    }
    let (neg, n, e10) = parse_dec(text).ok_or(FloatError::NotFloat)?;
    if !n.is_zero() {
        // Outside the long-double range strtold reports ERANGE, which Redis refuses.
        let magnitude = n.to_decimal().len() as i64 + e10 - 1;
        if !(-4950..=4931).contains(&magnitude) {
            return Err(FloatError::NotFloat);
        }
    }
    Ok(Some(Ld::from_dec(neg, &n, e10)))
}

/// `value + incr` formatted as INCRBYFLOAT replies and stores it.
pub fn incr_float(value: &[u8], incr: &[u8]) -> Result<String, FloatError> {
    let a = parse_ld(value)?;
    let b = parse_ld(incr)?;
    match (a, b) {
        (Some(a), Some(b)) => Ok(a.add(b).human()),
        _ => Err(FloatError::NanOrInf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_matches_c() {
        assert_eq!(fmt_g17(1.0), "1");
        assert_eq!(fmt_g17(1.1), "1.1000000000000001");
        assert_eq!(fmt_g17(-2.5), "-2.5");
        assert_eq!(fmt_g17(1e20), "1e+20");
        assert_eq!(fmt_g17(1.5e-5), "1.5e-05");
        assert_eq!(fmt_g17(0.1), "0.10000000000000001");
        assert_eq!(fmt_g17(0.0001), "0.0001");
        assert_eq!(fmt_g17(123456789.0), "123456789");
        assert_eq!(fmt_g17(f64::INFINITY), "inf");
    }

    #[test]
    fn incr_float_human() {
        assert_eq!(incr_float(b"10.5", b"0.1").unwrap(), "10.6");
        assert_eq!(incr_float(b"0", b"-0").unwrap(), "0");
        assert_eq!(
            incr_float(b"710.5", b"-0.4").unwrap(),
            "710.09999999999999998"
        );
        assert_eq!(incr_float(b"0.1", b"0.2").unwrap(), "0.3");
        assert_eq!(
            incr_float(b"-9223372036854775807.5", b"3").unwrap(),
            "-9223372036854775804.5"
        );
        assert_eq!(incr_float(b"3", b"2.0e2").unwrap(), "203");
        assert_eq!(incr_float(b"1", b"-1.5").unwrap(), "-0.5");
        assert_eq!(incr_float(b"abc", b"1"), Err(FloatError::NotFloat));
        assert_eq!(incr_float(b"1", b" 1"), Err(FloatError::NotFloat));
        assert_eq!(incr_float(b"1", b"inf"), Err(FloatError::NanOrInf));
        assert_eq!(
            incr_float(b"3.0e19223372036854775807", b"1"),
            Err(FloatError::NotFloat)
        );
        assert_eq!(incr_float(b"1e400", b"0").unwrap().len(), 401);
        assert_eq!(
            incr_float(b"9223372036854775807", b"-0.5").unwrap(),
            "9223372036854775806.5"
        );
        assert_eq!(
            incr_float(b"9223372036854775807", b"0.1").unwrap(),
            "9223372036854775807"
        );
    }

    #[test]
    fn doubles_like_strtod() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"1e400"), None);
    }
}
