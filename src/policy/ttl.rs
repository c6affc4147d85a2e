//! TTL rules: a maximum and a default TTL per key pattern, applied while a command is rebuilt.
//!
//! Every TTL-setting option is parsed exactly as Redis 7.0 parses it (option order, case, NUL
//! bytes, conflicts and error texts), then capped or refused per the rule. Keys a command may
//! create without a TTL get `PEXPIRE key default NX` follow-ups, so no key written through respite
//! outlives its rule; what the client sees is unchanged. Nothing here reads a clock: the caller
//! passes "now" so EXAT/PXAT/EXPIREAT/ABSTTL caps are deterministic under test.
use bytes::Bytes;

use super::auth::Tenant;
use super::call::{Call, c_str};
use super::error::PolicyError;
use super::ttl_rule::OnExcess;
use crate::command::{CommandSpec, KeySpecFlags, Keys};
use crate::protocol::int::parse_i64;

fn num(n: i64) -> Bytes {
    Bytes::from(n.to_string())
}

/// The commands whose TTL options are handled by name; every other write gets default-TTL
/// follow-ups from its key flags.
pub(super) fn apply(
    t: &Tenant,
    spec: &CommandSpec,
    call: &mut Call,
    keys: &Keys,
    now: i64,
) -> Result<(), PolicyError> {
    if t.ttl_rules().is_empty() {
        return Ok(());
    }
    match spec.name {
        "set" => set_or_getex(t, call, now, true),
        "getex" => set_or_getex(t, call, now, false),
        "setex" => setex(t, call, now, 1000, "setex"),
        "psetex" => setex(t, call, now, 1, "psetex"),
        "expire" => expire(t, call, now, 1000, false, "expire"),
        "pexpire" => expire(t, call, now, 1, false, "pexpire"),
        "expireat" => expire(t, call, now, 1000, true, "expireat"),
        "pexpireat" => expire(t, call, now, 1, true, "pexpireat"),
        "persist" => persist(t, call),
        "restore" => restore(t, call, now),
        _ => {
            defaults(t, spec, call, keys);
            Ok(())
        }
    }
}

/// A TTL over the rule's maximum: `Ok(Some(max))` to cap, an error to refuse, `Ok(None)` if fine.
fn over(rule: &super::TtlRule, ttl_ms: i64) -> Result<Option<i64>, PolicyError> {
    match rule.max_ms {
        Some(max) if ttl_ms > max => match rule.on_excess {
            OnExcess::Cap => Ok(Some(max)),
            OnExcess::Refuse => Err(PolicyError::TtlOverMax {
                ttl_ms,
                max_ms: max,
            }),
        },
        _ => Ok(None),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    Exat,
    Pxat,
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL] and
/// GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST], as `parseExtendedStringArgumentsOrReply`.
fn set_or_getex(t: &Tenant, call: &mut Call, now: i64, is_set: bool) -> Result<(), PolicyError> {
    let name = if is_set { "set" } else { "getex" };
    let args = call.input;
    let (mut nx, mut xx, mut keepttl, mut persist) = (false, false, false, false);
    let mut unit: Option<Unit> = None;
    let mut value: Option<usize> = None;
    // Every index that belongs to a TTL option: EX may repeat (the last wins), so a rewrite must
    // drop all of them, not just the last.
    let mut ttl_args: Vec<usize> = Vec::new();
    let mut j = if is_set { 3 } else { 2 };
    while j < args.len() {
        let opt = c_str(&args[j]);
        let is = |w: &[u8]| opt.eq_ignore_ascii_case(w);
        let next = j + 1 < args.len();
        let timed = |u: Unit| unit.is_some_and(|x| x != u);
        if is_set && is(b"nx") && !xx {
            nx = true;
        } else if is_set && is(b"xx") && !nx {
            xx = true;
        } else if is_set && is(b"get") {
        } else if is_set && is(b"keepttl") && !persist && unit.is_none() {
            keepttl = true;
        } else if !is_set && is(b"persist") && unit.is_none() && !keepttl {
            persist = true;
            ttl_args.push(j);
        } else if let Some(u) = [
            (&b"ex"[..], Unit::Ex),
            (b"px", Unit::Px),
            (b"exat", Unit::Exat),
            (b"pxat", Unit::Pxat),
        ]
        .iter()
        .find(|(w, _)| is(w))
        .map(|&(_, u)| u)
        .filter(|&u| !keepttl && !persist && !timed(u) && next)
        {
            unit = Some(u);
            value = Some(j + 1);
            ttl_args.extend([j, j + 1]);
            j += 1;
        } else {
            return Err(PolicyError::syntax());
        }
        j += 1;
    }
    let Some(rule) = t.ttl_rule(&args[1]) else {
        return Ok(());
    };
    let mut ttl = |ms: i64| {
        let mut kept: Vec<Bytes> = call
            .args
            .iter()
            .enumerate()
            .filter(|(i, _)| !ttl_args.contains(i))
            .map(|(_, a)| a.clone())
            .collect();
        kept.push(Bytes::from_static(b"PX"));
        kept.push(num(ms));
        call.args = kept;
        call.changed = true;
    };
    match (unit, value) {
        (Some(unit), Some(v)) => {
            let when = expire_at(&args[v], unit, now, name)?;
            if let Some(max) = over(rule, when.saturating_sub(now))? {
                ttl(max);
            }
        }
        _ if persist => match rule.max_ms {
            Some(max) if rule.on_excess == OnExcess::Cap => ttl(max),
            Some(max) => {
                return Err(PolicyError::PersistRefused {
                    command: "GETEX PERSIST",
                    max_ms: max,
                });
            }
            None => {}
        },
        _ if is_set && keepttl => {
            // KEEPTTL keeps an existing TTL; only a new key (or one without a TTL) needs one.
            if let Some(d) = rule.default_ms {
                let key = call.args[1].clone();
                call.follow_up(&[b"PEXPIRE", &key, d.to_string().as_bytes(), b"NX"]);
            }
        }
        _ if is_set => {
            if let Some(d) = rule.default_ms {
                ttl(d);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The absolute expiry in ms of an EX/PX/EXAT/PXAT argument, as `getExpireMillisecondsOrReply`.
fn expire_at(arg: &[u8], unit: Unit, now: i64, name: &str) -> Result<i64, PolicyError> {
    let v = parse_i64(arg).ok_or_else(PolicyError::not_integer)?;
    let seconds = matches!(unit, Unit::Ex | Unit::Exat);
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(PolicyError::expire_time(name));
    }
    let ms = if seconds { v * 1000 } else { v };
    let when = match unit {
        Unit::Ex | Unit::Px => ms
            .checked_add(now)
            .ok_or_else(|| PolicyError::expire_time(name))?,
        Unit::Exat | Unit::Pxat => ms,
    };
    Ok(when)
}

/// SETEX key seconds value / PSETEX key ms value; a capped one becomes PSETEX with the maximum.
fn setex(t: &Tenant, call: &mut Call, now: i64, unit: i64, name: &str) -> Result<(), PolicyError> {
    let u = if unit == 1000 { Unit::Ex } else { Unit::Px };
    let when = expire_at(&call.input[2], u, now, name)?;
    let Some(rule) = t.ttl_rule(&call.input[1]) else {
        return Ok(());
    };
    if let Some(max) = over(rule, when - now)? {
        call.set(0, Bytes::from_static(b"PSETEX"));
        call.set(2, num(max));
    }
    Ok(())
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key t [NX|XX|GT|LT], as `expireGenericCommand`. A capped
/// one becomes `PEXPIRE key max` with the same conditions, whose reply means the same.
fn expire(
    t: &Tenant,
    call: &mut Call,
    now: i64,
    unit: i64,
    absolute: bool,
    name: &str,
) -> Result<(), PolicyError> {
    let args = call.input;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for arg in &args[3..] {
        let opt = c_str(arg);
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                return Err(PolicyError::Syntax(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(PolicyError::Syntax(
            "NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(PolicyError::Syntax(
            "GT and LT options at the same time are not compatible".into(),
        ));
    }
    let when = parse_i64(&args[2]).ok_or_else(PolicyError::not_integer)?;
    let when = when
        .checked_mul(unit)
        .ok_or_else(|| PolicyError::expire_time(name))?;
    let base = if absolute { 0 } else { now };
    let when = when
        .checked_add(base)
        .ok_or_else(|| PolicyError::expire_time(name))?;
    let Some(rule) = t.ttl_rule(&args[1]) else {
        return Ok(());
    };
    if let Some(max) = over(rule, when.saturating_sub(now))? {
        let mut out = vec![
            Bytes::from_static(b"PEXPIRE"),
            call.args[1].clone(),
            num(max),
        ];
        for (flag, word) in [(nx, "NX"), (xx, "XX"), (gt, "GT"), (lt, "LT")] {
            if flag {
                out.push(Bytes::from_static(word.as_bytes()));
            }
        }
        call.args = out;
        call.changed = true;
    }
    Ok(())
}

/// PERSIST under a capped rule becomes `PEXPIRE key max` ("as long as allowed"): its reply is 1
/// for a key that exists, as PERSIST's is for a key with a TTL, which under the rule is every key
/// written through respite. Under `on_excess = "refuse"` it is refused.
fn persist(t: &Tenant, call: &mut Call) -> Result<(), PolicyError> {
    let Some(rule) = t.ttl_rule(&call.input[1]) else {
        return Ok(());
    };
    match rule.max_ms {
        Some(max) if rule.on_excess == OnExcess::Cap => {
            call.args = vec![
                Bytes::from_static(b"PEXPIRE"),
                call.args[1].clone(),
                num(max),
            ];
            call.changed = true;
            Ok(())
        }
        Some(max) => Err(PolicyError::PersistRefused {
            command: "PERSIST",
            max_ms: max,
        }),
        None => Ok(()),
    }
}

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f], as `restoreCommand`. A TTL
/// of 0 (none) becomes the default; a TTL over the maximum is capped, in the form (relative or
/// ABSTTL) the client used.
fn restore(t: &Tenant, call: &mut Call, now: i64) -> Result<(), PolicyError> {
    let args = call.input;
    let (mut absttl, mut idle, mut freq) = (false, false, false);
    let mut j = 4;
    while j < args.len() {
        let opt = c_str(&args[j]);
        let more = args.len() - j - 1;
        if opt.eq_ignore_ascii_case(b"replace") {
        } else if opt.eq_ignore_ascii_case(b"absttl") {
            absttl = true;
        } else if opt.eq_ignore_ascii_case(b"idletime") && more >= 1 && !freq {
            idle = true;
            j += 1;
        } else if opt.eq_ignore_ascii_case(b"freq") && more >= 1 && !idle {
            freq = true;
            j += 1;
        } else {
            return Err(PolicyError::syntax());
        }
        j += 1;
    }
    let ttl = parse_i64(&args[2]).ok_or_else(PolicyError::not_integer)?;
    if ttl < 0 {
        return Err(PolicyError::Syntax(
            "Invalid TTL value, must be >= 0".into(),
        ));
    }
    let Some(rule) = t.ttl_rule(&args[1]) else {
        return Ok(());
    };
    let as_arg = |ms: i64| num(if absttl { now.saturating_add(ms) } else { ms });
    if ttl == 0 {
        if let Some(d) = rule.default_ms {
            call.set(2, as_arg(d));
        }
    } else {
        let rel = if absttl { ttl.saturating_sub(now) } else { ttl };
        if let Some(max) = over(rule, rel)? {
            call.set(2, as_arg(max));
        }
    }
    Ok(())
}

/// Default-TTL follow-ups for the keys a write may create: every key the command writes (RW or OW)
/// whose flags say it overwrites, inserts or updates (OW, INSERT, UPDATE) — destinations of the
/// *STORE commands, RENAME, COPY, LMOVE, SMOVE, SORT/GEORADIUS STORE and BITOP included. Deleting
/// keys (RM, or RW with only DELETE) never create one. Keys that inherit a TTL from another key
/// (RENAME, RENAMENX, COPY destinations) also get `PEXPIRE key max LT`, since the source's
/// TTL may be longer than the destination's rule allows.
fn defaults(t: &Tenant, spec: &CommandSpec, call: &mut Call, keys: &Keys) {
    let inherits = matches!(spec.name, "rename" | "renamenx" | "copy");
    let mut done: Vec<&[u8]> = Vec::new();
    for k in keys.iter() {
        let f = k.flags;
        let creates = f.is_write()
            && (f.contains(KeySpecFlags::OW)
                || f.intersects(KeySpecFlags::INSERT | KeySpecFlags::UPDATE));
        let key: &[u8] = &call.input[k.pos];
        if !creates || done.contains(&key) {
            continue;
        }
        done.push(key);
        let Some(rule) = t.ttl_rule(key) else {
            continue;
        };
        let target = call.args[k.pos].clone();
        if let Some(d) = rule.default_ms {
            call.follow_up(&[b"PEXPIRE", &target, d.to_string().as_bytes(), b"NX"]);
        }
        if inherits && let Some(max) = rule.max_ms {
            call.follow_up(&[b"PEXPIRE", &target, max.to_string().as_bytes(), b"LT"]);
        }
    }
}
