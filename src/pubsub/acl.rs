//! The upstream's channel permissions for a client logged in as one of its own users (respite
//! without tenants, see `session::commands::stateful`). Such a client's subscriptions join respite's
//! shared ones, made as respite's own user, so the upstream never sees them as the client's:
//! before one is made, the upstream is asked with `ACL DRYRUN <user> <the command>` whether the
//! user may run it (its command and channel rules, exactly as the server applies them), on
//! respite's subscriber connection. A refusal reaches the client as the NOPERM error the
//! upstream would have given it (its text differs between Redis 7.0 and Redis 7.2 / Valkey,
//! which this file tells apart by DRYRUN's own wording). An upstream that cannot answer DRYRUN
//! (older than 7.0, or respite's own user not allowed it) refuses the subscription: the check
//! fails closed.
//!
//! This file only reads DRYRUN's reply; it never subscribes.
use crate::protocol::value::{self, Value};

/// Why a client logged in as an upstream user may not run the (un)subscribe it asked for.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The upstream's own NOPERM, as the client would have had it (the full error line).
    #[error("{0}")]
    NoPerm(String),
    /// The upstream could not say (DRYRUN refused or unknown, the link down).
    #[error(
        "ERR respite could not check user '{user}''s channel permissions with the upstream ({why}), so it does not subscribe for it"
    )]
    Unchecked { user: String, why: String },
}

/// The `ACL DRYRUN` command asking whether `user` may run `args`.
pub(crate) fn dryrun(user: &str, args: &[bytes::Bytes]) -> bytes::Bytes {
    let mut parts: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", user.as_bytes()];
    parts.extend(args.iter().map(|a| &a[..]));
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode::command(&mut out, &parts);
    out.freeze()
}

/// Read DRYRUN's reply: `+OK`, or a text saying why not.
pub(crate) fn verdict(user: &str, reply: &[u8]) -> Result<(), Refusal> {
    let unchecked = |why: String| Refusal::Unchecked {
        user: user.to_string(),
        why,
    };
    match value::parse(reply) {
        Ok(Value::Line(b'+', ok)) if ok.eq_ignore_ascii_case(b"OK") => Ok(()),
        Ok(Value::Blob(b'$', text)) => Err(Refusal::NoPerm(noperm(&String::from_utf8_lossy(
            text.bytes(),
        )))),
        Ok(Value::Line(b'+', text)) => Err(Refusal::NoPerm(noperm(&String::from_utf8_lossy(text)))),
        Ok(Value::Line(b'-', e)) => Err(unchecked(String::from_utf8_lossy(e).into_owned())),
        _ => Err(unchecked("an unexpected reply to ACL DRYRUN".into())),
    }
}

/// The NOPERM error for DRYRUN's explanation. Redis 7.0 explains "This user has no
/// permissions to …" and refuses channels with one fixed text; Redis 7.2 and Valkey explain
/// "User <name> has no permissions to …" and refuse channels with another.
fn noperm(why: &str) -> String {
    let redis70 = why.starts_with("This user ");
    if why.ends_with(" channel") && why.contains(" has no permissions to access the '") {
        return if redis70 {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
        } else {
            "NOPERM No permissions to access a channel"
        }
        .to_string();
    }
    match why.strip_prefix("This user ") {
        Some(rest) => format!("NOPERM this user {rest}"),
        None => format!("NOPERM {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_permits() {
        assert_eq!(verdict("alice", b"+OK\r\n"), Ok(()));
    }

    #[test]
    fn channel_refusals_as_each_server_words_them() {
        let r70 = b"$59\r\nThis user has no permissions to access the 'secret' channel\r\n";
        assert_eq!(
            verdict("alice", r70),
            Err(Refusal::NoPerm(
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            ))
        );
        let r72 = b"$60\r\nUser alice has no permissions to access the 'secret' channel\r\n";
        assert_eq!(
            verdict("alice", r72),
            Err(Refusal::NoPerm(
                "NOPERM No permissions to access a channel".into()
            ))
        );
    }

    #[test]
    fn command_refusals_keep_the_servers_words() {
        let r70 = b"$60\r\nThis user has no permissions to run the 'psubscribe' command\r\n";
        assert_eq!(
            verdict("bob", r70),
            Err(Refusal::NoPerm(
                "NOPERM this user has no permissions to run the 'psubscribe' command".into()
            ))
        );
        let r72 = b"$59\r\nUser bob has no permissions to run the 'psubscribe' command\r\n";
        assert_eq!(
            verdict("bob", r72),
            Err(Refusal::NoPerm(
                "NOPERM User bob has no permissions to run the 'psubscribe' command".into()
            ))
        );
    }

    #[test]
    fn no_dryrun_fails_closed() {
        let e = verdict("bob", b"-ERR unknown subcommand 'DRYRUN'\r\n").unwrap_err();
        assert!(matches!(e, Refusal::Unchecked { .. }));
        assert!(
            e.to_string()
                .starts_with("ERR respite could not check user 'bob'")
        );
        assert!(matches!(
            verdict("bob", b":1\r\n"),
            Err(Refusal::Unchecked { .. })
        ));
    }

    #[test]
    fn the_command_asked_about() {
        let args = [
            bytes::Bytes::from_static(b"SUBSCRIBE"),
            bytes::Bytes::from_static(b"a"),
        ];
        assert_eq!(
            &dryrun("alice", &args)[..],
            b"*5\r\n$3\r\nACL\r\n$6\r\nDRYRUN\r\n$5\r\nalice\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"
        );
    }
}
