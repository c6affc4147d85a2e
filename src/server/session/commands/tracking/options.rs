//! `CLIENT TRACKING ON|OFF`'s options as a client gives them, Redis's own parse of them and
//! errors, and the command the upstream gets for them (a tenant's prefixes applied). It never
//! sends anything: the session ([`super`]) does.
use crate::protocol::encode;
use bytes::{Bytes, BytesMut};

/// `CLIENT TRACKING ON`'s options, as the client gave them.
#[derive(Clone, Default, Debug, PartialEq)]
pub(super) struct Options {
    pub redirect: Option<u64>,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Bytes>,
}

/// Why `CLIENT TRACKING ON` is refused by respite itself.
#[derive(Debug, thiserror::Error)]
pub(super) enum OnError {
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR A client can only redirect to a single other client")]
    TwoRedirects,
    #[error("ERR The client ID you want redirect to does not exist")]
    NoSuchClient,
    #[error(
        "ERR CLIENT TRACKING is not supported by respite without an upstream: the upstream tracks the keys"
    )]
    Standalone,
}

/// Parse `CLIENT TRACKING ON|OFF [options]` (Redis's order: options first, then ON/OFF).
pub(super) fn parse(args: &[Bytes]) -> Result<(bool, Options), OnError> {
    let mut o = Options::default();
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        let a = &args[j];
        let is = |w: &[u8]| a.eq_ignore_ascii_case(w);
        if is(b"redirect") && more {
            j += 1;
            if o.redirect.is_some() {
                return Err(OnError::TwoRedirects);
            }
            let id = std::str::from_utf8(&args[j])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(OnError::NotInteger)?;
            // 0 is "no redirect" to Redis; a negative id names no client.
            o.redirect = Some(u64::try_from(id).map_err(|_| OnError::NoSuchClient)?);
        } else if is(b"bcast") {
            o.bcast = true;
        } else if is(b"optin") {
            o.optin = true;
        } else if is(b"optout") {
            o.optout = true;
        } else if is(b"noloop") {
            o.noloop = true;
        } else if is(b"prefix") && more {
            j += 1;
            o.prefixes.push(args[j].clone());
        } else {
            return Err(OnError::Syntax);
        }
        j += 1;
    }
    match &args[2] {
        a if a.eq_ignore_ascii_case(b"on") => Ok((true, o)),
        a if a.eq_ignore_ascii_case(b"off") => Ok((false, o)),
        _ => Err(OnError::Syntax),
    }
}

/// The command the upstream gets: the tenant's prefix on every `PREFIX` (and as the prefix of a
/// prefixed tenant's `BCAST`), `REDIRECT` to respite's receiving connection.
pub(super) fn upstream_command(o: &Options, prefix: &[u8], redirect: Option<i64>) -> Bytes {
    let mut args: Vec<Vec<u8>> = vec![b"CLIENT".to_vec(), b"TRACKING".to_vec(), b"ON".to_vec()];
    if let Some(id) = redirect {
        args.push(b"REDIRECT".to_vec());
        args.push(id.to_string().into_bytes());
    }
    for (on, word) in [
        (o.bcast, &b"BCAST"[..]),
        (o.optin, b"OPTIN"),
        (o.optout, b"OPTOUT"),
        (o.noloop, b"NOLOOP"),
    ] {
        if on {
            args.push(word.to_vec());
        }
    }
    for p in &o.prefixes {
        args.push(b"PREFIX".to_vec());
        args.push([prefix, &p[..]].concat());
    }
    if o.bcast && o.prefixes.is_empty() && !prefix.is_empty() {
        args.push(b"PREFIX".to_vec());
        args.push(prefix.to_vec());
    }
    let mut out = BytesMut::new();
    encode::command(&mut out, &args);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn options_parse_as_redis_does() {
        let (on, o) = parse(&args("CLIENT TRACKING on BCAST prefix a PREFIX b noloop")).unwrap();
        assert!(on && o.bcast && o.noloop);
        assert_eq!(o.prefixes, vec![Bytes::from("a"), Bytes::from("b")]);
        assert!(matches!(
            parse(&args("CLIENT TRACKING on REDIRECT 1 REDIRECT 2")),
            Err(OnError::TwoRedirects)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING on REDIRECT x")),
            Err(OnError::NotInteger)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING maybe")),
            Err(OnError::Syntax)
        ));
        assert!(matches!(
            parse(&args("CLIENT TRACKING on PREFIX")),
            Err(OnError::Syntax)
        ));
    }

    #[test]
    fn a_tenant_tracks_inside_its_namespace() {
        let o = Options {
            bcast: true,
            prefixes: vec![Bytes::from("user:")],
            ..Default::default()
        };
        let cmd = upstream_command(&o, b"t1:", Some(7));
        let want = "*8\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$8\r\nREDIRECT\r\n$1\r\n7\r\n$5\r\nBCAST\r\n$6\r\nPREFIX\r\n$8\r\nt1:user:\r\n";
        assert_eq!(&cmd[..], want.as_bytes());
        let bcast = Options {
            bcast: true,
            ..Default::default()
        };
        let cmd = upstream_command(&bcast, b"t1:", None);
        assert!(cmd.ends_with(b"$6\r\nPREFIX\r\n$3\r\nt1:\r\n"));
    }
}
