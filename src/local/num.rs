//! Number parsing and formatting exactly as Redis 7.0 does it: `string2ll` integers, `strtod`
//! doubles replied with `%.17g`, and INCRBYFLOAT's long-double "human" format.
//!
//! Redis computes INCRBYFLOAT/HINCRBYFLOAT in 80-bit `long double` and prints `%.17Lf` with the
//! trailing zeros cut. Rust has no `long double`, so the sum is done in exact decimal (17 fractional
//! digits, `i128`), which prints the same as Redis whenever the long-double rounding error stays
//! below 0.5e-17, i.e. for magnitudes below about 30 and inputs with at most 17 fractional digits.
//! Outside that range the `f64` fallback may differ from Redis in the last digits.

/// Redis's `string2ll`: no spaces, no `+`, no leading zeros, at most 20 bytes.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    crate::protocol::framer::parse_i64(s)
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

/// A decimal string as an exact multiple of 10^-17, when it is one and fits.
fn parse_scaled(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (num, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    // value = digits * 10^(exp - frac.len()); scaled = digits * 10^(17 + exp - frac.len())
    let shift = 17 + exp - frac.len() as i32;
    let mut m: i128 = 0;
    for b in digits.bytes() {
        m = m.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    if shift >= 0 {
        m = m.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let div = 10i128.checked_pow((-shift) as u32)?;
        if m % div != 0 {
            return None;
        }
        m /= div;
    }
    Some(if neg { -m } else { m })
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

/// `x / d` rounded to nearest, ties to even (as printf rounds an exact binary value).
fn div_even(x: u128, d: u128) -> u128 {
    let (q, r) = (x / d, x % d);
    if 2 * r > d || (2 * r == d && q & 1 == 1) {
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
    /// The long double nearest to `m * 10^-17`, as `strtold` rounds.
    fn from_scaled(m: i128) -> Ld {
        let n = m.unsigned_abs();
        let neg = m < 0;
        if n == 0 {
            return Ld { neg, q: 0, k: 0 };
        }
        // q(k) = round(n * 2^k / 10^17); pick k so that q has exactly 64 bits.
        let q_at = |k: i32| -> u128 {
            if k >= 0 {
                div_even(n << k, SCALE as u128)
            } else {
                div_even(n, (SCALE as u128) << (-k))
            }
        };
        let bits = 128 - n.leading_zeros() as i32;
        let mut k = 64 - (bits - 57);
        let mut q = q_at(k);
        while q >= TWO64 {
            k -= 1;
            q = q_at(k);
        }
        while q < TWO64 / 2 {
            k += 1;
            q = q_at(k);
        }
        Ld { neg, q, k }
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
        let (int, frac) = if self.k <= 0 {
            (self.q << (-self.k), 0)
        } else if self.k >= 128 {
            (0, div_even(self.q * SCALE as u128, 1u128 << 127) / 2)
        } else {
            let k = self.k as u32;
            let int = self.q >> k;
            let rest = self.q & ((1u128 << k) - 1);
            let f = div_even(rest * SCALE as u128, 1u128 << k);
            if f == SCALE as u128 {
                (int + 1, 0)
            } else {
                (int, f)
            }
        };
        let sign = if self.neg && (int != 0 || frac != 0) {
            "-"
        } else {
            ""
        };
        trim_zeros(&format!("{sign}{int}.{frac:017}")).to_string()
    }
}

/// Redis's `string2ld` acceptance: no leading space, no NaN.
fn valid_ld(s: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(text)
}

/// `value + incr` formatted as INCRBYFLOAT replies and stores it.
pub fn incr_float(value: &[u8], incr: &[u8]) -> Result<String, FloatError> {
    let a = valid_ld(value).ok_or(FloatError::NotFloat)?;
    let b = valid_ld(incr).ok_or(FloatError::NotFloat)?;
    if let (Some(x), Some(y)) = (parse_scaled(a), parse_scaled(b)) {
        return Ok(Ld::from_scaled(x).add(Ld::from_scaled(y)).human());
    }
    let sum = a.parse::<f64>().unwrap_or(0.0) + b.parse::<f64>().unwrap_or(0.0);
    if !sum.is_finite() {
        return Err(FloatError::NanOrInf);
    }
    let s = trim_zeros(&format!("{sum:.17}")).to_string();
    Ok(if s == "-0" { "0".into() } else { s })
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
        assert_eq!(incr_float(b"3", b"2.0e2").unwrap(), "203");
        assert_eq!(incr_float(b"1", b"-1.5").unwrap(), "-0.5");
        assert_eq!(incr_float(b"abc", b"1"), Err(FloatError::NotFloat));
        assert_eq!(incr_float(b"1", b" 1"), Err(FloatError::NotFloat));
        assert_eq!(incr_float(b"1", b"inf"), Err(FloatError::NanOrInf));
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
