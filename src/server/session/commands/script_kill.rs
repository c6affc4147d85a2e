//! SCRIPT KILL and FUNCTION KILL for a prefixed tenant: they end the running script only when it
//! is the tenant's own; otherwise the tenant gets Redis's `-NOTBUSY No scripts in execution
//! right now.` and nothing is sent that could end another tenant's script (or the script of a
//! client connected straight to the upstream).
//!
//! How the running script is told: the server says what it runs only for a function (FUNCTION
//! STATS, which it answers while busy: the function's name, in the tenant's namespace or not,
//! `policy::functions`). For an EVAL script it answers that probe with `-BUSY` and nothing more,
//! so the owner comes from respite's register of the script jobs it sent
//! ([`crate::upstream::scripts`]): only a job at the head of its connection can be running, and
//! once the server answers the probe it is past its time limit and answers every other waiting
//! command with `-BUSY`, which takes such a job off the head. So after the probe, and a pause
//! for those answers to arrive, the tenant's script runs if one of its jobs is still at the head
//! and no one else's is; if the running script is an outside client's, the tenant's waiting job
//! has been answered `-BUSY` by then and the KILL is not sent.
//!
//! Left open (docs/tenants.md): the few microseconds between the decision and the KILL reaching
//! the server, in which the tenant's script could end and another's start and pass the time
//! limit unread; a script the tenant runs inside MULTI … EXEC or while WATCHing (its pinned
//! connection is not in the register) is never its own here, so SCRIPT KILL answers NOTBUSY
//! for it; on a cluster upstream the kill is refused.
use crate::policy::functions;
use crate::protocol::{Protocol, encode};
use crate::upstream::scripts::ScriptMark;
use crate::upstream::{Reply, Upstream};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

pub(in crate::server::session) const NOTBUSY: &[u8] =
    b"-NOTBUSY No scripts in execution right now.\r\n";

/// How long the jobs that wait behind the running script have to be answered `-BUSY` once the
/// server answered the probe (its answers to them go out in the same pass as the probe's).
const SETTLE: Duration = Duration::from_millis(20);
/// How long a tie (two owners' jobs at the head) may take to settle before the answer is NOTBUSY.
const SETTLE_MAX: Duration = Duration::from_millis(1000);

fn simple(text: &[u8]) -> Reply {
    Ok(Bytes::copy_from_slice(text))
}

fn command(words: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    encode::command(&mut out, words);
    out.freeze()
}

async fn out_of_band(upstream: &Upstream, words: &[&[u8]]) -> Reply {
    match upstream
        .out_of_band(Protocol::Resp2, command(words), None)
        .await
    {
        Ok(reply) => reply,
        Err(_) => simple(b"-ERR upstream connection closed before replying\r\n"),
    }
}

/// `owner`'s SCRIPT KILL (`function` false) or FUNCTION KILL, as its client gets it.
pub(in crate::server::session) async fn decide(
    upstream: Arc<Upstream>,
    owner: Arc<str>,
    prefix: Bytes,
    function: bool,
) -> Reply {
    if upstream.cluster().is_some() {
        return simple(
            b"-ERR SCRIPT KILL and FUNCTION KILL are not available to a tenant on a cluster upstream: respite cannot tell whose script a node runs\r\n",
        );
    }
    let scripts = upstream.scripts().clone();
    let mine = |m: &ScriptMark| m.owner.as_deref() == Some(&*owner);
    if !function && !scripts.heads().iter().any(&mine) {
        // None of its scripts can be running (a function of its own is found by name below).
        return simple(NOTBUSY);
    }
    let probe = out_of_band(&upstream, &[b"FUNCTION", b"STATS"]).await?;
    match functions::runs_own_function(&prefix, &probe) {
        // A function of the tenant's runs (whoever called it: it is the tenant's code).
        Some(true) if function => out_of_band(&upstream, &[b"FUNCTION", b"KILL"]).await,
        Some(true) => simple(
            b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n",
        ),
        // Nothing runs, or another's function.
        Some(false) => simple(NOTBUSY),
        // An EVAL script runs (`-BUSY`), or FUNCTION STATS is unknown there: whose, by the
        // register.
        None => {
            if !own_eval_runs(&scripts, &mine).await {
                simple(NOTBUSY)
            } else if function {
                // The tenant's EVAL: the server's own refusal, which its answer to the probe
                // is (`-BUSY … You can only call SCRIPT KILL …`).
                match probe.starts_with(b"-BUSY") {
                    true => Ok(probe),
                    false => simple(NOTBUSY),
                }
            } else {
                out_of_band(&upstream, &[b"SCRIPT", b"KILL"]).await
            }
        }
    }
}

/// True once one of the tenant's EVAL jobs is at the head of its connection and no one else's
/// job is, after the jobs that wait have had [`SETTLE`] to be answered `-BUSY`; false if none of
/// its jobs is left at the head, or the tie lasts [`SETTLE_MAX`].
async fn own_eval_runs(
    scripts: &crate::upstream::scripts::Scripts,
    mine: &impl Fn(&ScriptMark) -> bool,
) -> bool {
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(SETTLE).await;
        let heads = scripts.heads();
        if !heads.iter().any(|m| mine(m) && m.eval) {
            return false;
        }
        if heads.iter().all(mine) {
            return true;
        }
        if started.elapsed() >= SETTLE_MAX {
            return false;
        }
    }
}
