//! Name lookup on the request path: one hash of the lower-cased name, built into a stack buffer,
//! and an open-addressing table computed at compile time from the generated table, so a lookup is
//! a single pass over the name plus (almost always) one comparison.
use super::{CommandSpec, table};

/// Longer than any command or subcommand name, so a longer argument cannot match and need not be
/// lower-cased.
pub(super) const MAX_NAME: usize = 32;

/// Power of two, about six times the number of entries, so probe runs stay short; 4 KiB.
const SLOTS: usize = 2048;
const EMPTY: u16 = u16::MAX;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

const fn fnv(mut h: u32, b: u8) -> u32 {
    h ^= b as u32;
    h.wrapping_mul(FNV_PRIME)
}

const fn hash(name: &[u8]) -> u32 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() {
        h = fnv(h, name[i]);
        i += 1;
    }
    h
}

/// FNV's low bits are weak for short keys; a Fibonacci multiply spreads them into the top bits,
/// which pick the slot.
const fn slot(h: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9) >> (32 - SLOTS.trailing_zeros())) as usize
}

/// Indices into `table::ALL` by full name (`get`, `client|setname`), keyed by [`hash`].
static INDEX: [u16; SLOTS] = build_index();

const fn build_index() -> [u16; SLOTS] {
    assert!(table::ALL.len() < EMPTY as usize && table::ALL.len() * 2 < SLOTS);
    let mut slots = [EMPTY; SLOTS];
    let mut i = 0;
    while i < table::ALL.len() {
        let mut s = slot(hash(table::ALL[i].name.as_bytes()));
        while slots[s] != EMPTY {
            s = (s + 1) % SLOTS;
        }
        slots[s] = i as u16;
        i += 1;
    }
    slots
}

fn probe(h: u32, matches: impl Fn(&[u8]) -> bool) -> Option<&'static CommandSpec> {
    let mut s = slot(h);
    loop {
        let i = INDEX[s];
        if i == EMPTY {
            return None;
        }
        let spec = table::ALL[i as usize];
        if matches(spec.name.as_bytes()) {
            return Some(spec);
        }
        s = (s + 1) % SLOTS;
    }
}

/// Lower-cases `name` into `buf`, returning the hash continued from `h`, or `None` if the name is
/// too long to be in the table or contains `|` (which only subcommand entries do, and those must
/// not be reachable as `argv[0]`).
fn fold(name: &[u8], buf: &mut [u8; MAX_NAME], mut h: u32) -> Option<u32> {
    if name.len() > MAX_NAME {
        return None;
    }
    for (dst, &b) in buf.iter_mut().zip(name) {
        if b == b'|' {
            return None;
        }
        let b = b.to_ascii_lowercase();
        *dst = b;
        h = fnv(h, b);
    }
    Some(h)
}

/// A top-level command by name, ASCII case-insensitively.
pub(super) fn command(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; MAX_NAME];
    let h = fold(name, &mut buf, FNV_OFFSET)?;
    let lower = &buf[..name.len()];
    probe(h, |candidate| candidate == lower)
}

/// A subcommand of `parent` by its own name (`setname` for `client|setname`).
pub(super) fn subcommand(parent: &CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    if !parent.is_container() {
        return None;
    }
    let prefix = parent.name.as_bytes();
    let mut buf = [0u8; MAX_NAME];
    let h = fold(sub, &mut buf, fnv(hash(prefix), b'|'))?;
    let lower = &buf[..sub.len()];
    probe(h, |candidate| {
        candidate.len() == prefix.len() + 1 + lower.len()
            && candidate.starts_with(prefix)
            && candidate[prefix.len()] == b'|'
            && &candidate[prefix.len() + 1..] == lower
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_within_a_few_probes() {
        let mut longest = 0;
        for (i, spec) in table::ALL.iter().enumerate() {
            let mut s = slot(hash(spec.name.as_bytes()));
            let mut probes = 1;
            while INDEX[s] as usize != i {
                assert_ne!(INDEX[s], EMPTY, "{} missing", spec.name);
                s = (s + 1) % SLOTS;
                probes += 1;
            }
            longest = longest.max(probes);
            let found = match spec.name.split_once('|') {
                None => command(spec.name.to_ascii_uppercase().as_bytes()),
                Some((parent, sub)) => {
                    subcommand(command(parent.as_bytes()).unwrap(), sub.as_bytes())
                }
            };
            assert!(std::ptr::eq(found.unwrap(), *spec), "{}", spec.name);
        }
        assert!(longest <= 4, "probe run of {longest}");
    }

    #[test]
    fn subcommands_are_not_commands() {
        assert!(command(b"client|setname").is_none());
        assert!(command(b"client").is_some());
        assert!(subcommand(command(b"client").unwrap(), b"a|b").is_none());
        // CONFIG's subcommands are not CLIENT's.
        assert!(subcommand(command(b"client").unwrap(), b"get").is_none());
        assert!(subcommand(command(b"get").unwrap(), b"x").is_none());
        assert!(command(&[b'g'; MAX_NAME + 1]).is_none());
        assert!(command(b"").is_none());
    }
}
