//! A request the built-in command table does not know: asked of the upstream's own table
//! ([`crate::command::UpstreamCommands`]) before it is refused. Only on a miss, so the hot path
//! stays the built-in lookup. It resolves; it never forwards or answers.
use super::Reader;
use crate::command::{CommandError, CommandSpec};
use bytes::Bytes;

impl Reader<'_> {
    /// The built-in table refused `args` with `err`: the upstream's entry if it has one (the
    /// first such request may wait for the table to be read, at most the connect deadline).
    pub(super) async fn resolve_miss(
        &self,
        args: &[Bytes],
        err: CommandError,
    ) -> Result<&'static CommandSpec, CommandError> {
        let Some(upstream) = &self.shared.upstream else {
            return Err(err);
        };
        match upstream.commands().await {
            Some(table) => table.resolve_miss(args, err),
            None => Err(err),
        }
    }
}
