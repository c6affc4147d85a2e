//! Build script: the git revision for `respite_build_info` (`BUILD_GIT_REVISION` at compile time).
//!
//! A container build has no .git in its context, so `BUILD_GIT_REVISION` in the environment wins
//! (deploy/Dockerfile passes it as a build argument); then `git rev-parse --short HEAD`; then
//! "unknown". It never fails the build.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_GIT_REVISION");
    let from_env = std::env::var("BUILD_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown");
    let revision = from_env
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILD_GIT_REVISION={revision}");
}

fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // Rebuild when HEAD moves. In a worktree .git is a file; `--git-path` resolves both layouts.
    for path in ["HEAD", "logs/HEAD"] {
        // Only files that exist: a missing one would rerun this script at every build.
        if let Some(p) =
            git(&["rev-parse", "--git-path", path]).filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!rev.is_empty()).then_some(rev)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
