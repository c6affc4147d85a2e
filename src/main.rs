//! The `respite` binary: parse the command line, load the configuration, run the proxy.
use anyhow::Context;
use clap::Parser;
use respite::config;
use respite::server::{Listeners, run_reloadable};
use std::path::PathBuf;

/// A Redis-protocol caching proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply.
    #[arg(short, long, env = "RESPITE_CONFIG")]
    config: Option<PathBuf>,
    /// Client listener address (listen.tcp), e.g. 127.0.0.1:6380.
    #[arg(long)]
    listen: Option<String>,
    /// Unix socket path for clients (listen.unix).
    #[arg(long)]
    unix: Option<String>,
    /// Upstream URL (upstream.url): redis://[user:pass@]host:port[/db], unix:///path,
    /// redis+cluster://host:port[,host:port…] (a cluster by its seeds), or none.
    #[arg(long)]
    upstream: Option<String>,
    /// Admin HTTP address (admin.listen), or none.
    #[arg(long)]
    admin: Option<String>,
    /// Log level or filter (log.level).
    #[arg(long)]
    log_level: Option<String>,
    /// Set any key: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each flag is named in errors as written (never with its value, which may be a password).
    let mut flags: Vec<config::Setting> = Vec::new();
    for (key, flag, v) in [
        ("listen.tcp", "--listen", &cli.listen),
        ("listen.unix", "--unix", &cli.unix),
        ("upstream.url", "--upstream", &cli.upstream),
        ("admin.listen", "--admin", &cli.admin),
        ("log.level", "--log-level", &cli.log_level),
    ] {
        if let Some(v) = v {
            flags.push(config::Setting::new(
                key,
                v,
                &format!("command line flag {flag}"),
            ));
        }
    }
    for kv in &cli.set {
        let Some((k, v)) = kv.split_once('=') else {
            config_error(format!(
                "command line flag --set {kv}: expected section.key=value"
            ));
        };
        flags.push(config::Setting::new(
            k,
            v,
            &format!("command line flag --set {k}"),
        ));
    }
    let env = config::env_settings(std::env::vars()).unwrap_or_else(|e| config_error(e));
    let config =
        config::load(cli.config.as_deref(), &env, &flags).unwrap_or_else(|e| config_error(e));
    // The TLS files named are read now too, so a bad one is a configuration error at start
    // (and in --check-config), not a failure at the first connection.
    if let Some(files) = &config.listen.tls_files {
        respite::tls::server_config(files).unwrap_or_else(|e| config_error(e));
    }
    if let Some(tls) = config.upstream.as_ref().and_then(|u| u.tls.as_ref()) {
        respite::tls::client_config(tls).unwrap_or_else(|e| config_error(e));
    }
    if let Some(path) = &config.admin_reload_token_file {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => {}
            Ok(_) => config_error(format!(
                "admin.reload_token_file {}: the file is empty",
                path.display()
            )),
            Err(e) => config_error(format!("admin.reload_token_file {}: {e}", path.display())),
        }
    }
    let sources = respite::reload::Sources {
        path: cli.config.clone(),
        env,
        flags,
    };
    if cli.check_config {
        let effective = config::effective_toml(cli.config.as_deref(), &sources.env, &sources.flags)
            .unwrap_or_else(|e| config_error(e));
        let text = format!(
            "# respite: the configuration is valid. Effective values (file, environment and \
             flags, defaults filled in); passwords redacted.\n{effective}"
        );
        // A reader that stops early (`| head -1`) is no error: the check itself passed.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("respite: writing the configuration: {e}");
                std::process::exit(1);
            }
            _ => return Ok(()),
        }
    }
    respite::logging::init(&config);
    // Each client is a file descriptor: raise the soft limit to the hard one, as Redis does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < config.listen.max_clients + 64 => tracing::warn!(
            limit = n,
            max_clients = config.listen.max_clients,
            "open-file limit is below listen.max_clients"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    // One thread: a current-thread runtime, everything on the main thread. It measured 2-8% fewer
    // instructions per request than a one-worker multi-thread runtime (no work-stealing
    // bookkeeping, no hand-off from the thread that runs `block_on`).
    let mut rt = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let run = rt
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| {
            rt.block_on(async move {
                let listeners = Listeners::bind(&config)
                    .await
                    .context("binding listeners")?;
                listeners.log_summary(&config);
                if listeners.admin.is_some() {
                    respite::admin::recorder();
                }
                // Under systemd's Type=notify: ready once every listener is bound (clients
                // connecting from here on are queued by the kernel and served). Outside systemd
                // NOTIFY_SOCKET is unset and this does nothing.
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
                    tracing::warn!(error = %e, "could not tell systemd respite is ready (NOTIFY_SOCKET)");
                }
                run_reloadable(listeners, config, Some(sources), shutdown_signal()).await?;
                anyhow::Ok(())
            })
        });
    // Once logging is up, a failure is a log line like any other (JSON with log.format = "json"),
    // not plain text beside it.
    if let Err(e) = run {
        tracing::error!(error = format!("{e:#}"), "respite cannot run; exiting");
        std::process::exit(1);
    }
    Ok(())
}

/// A configuration error ends the process with status 2 before anything starts.
fn config_error(e: impl std::fmt::Display) -> ! {
    eprintln!("respite: configuration error: {e}");
    std::process::exit(2);
}

/// SIGTERM drains within the grace period; SIGINT (Ctrl-C) a second time exits at once. (SIGHUP
/// reloads the configuration: `run_reloadable` handles it.)
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("SIGINT: draining; press Ctrl-C again to exit now");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        }
    }
}
