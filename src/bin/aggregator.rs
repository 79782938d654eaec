//! The `aggregator` server: parse config, set up logging, start, run until
//! SIGINT/SIGTERM, then shut down in order.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use event_aggregator::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exits 0 after a clean shutdown; 1 with one line on stderr when it cannot start.
fn main() -> ExitCode {
    match run_until_signal(Config::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Each layer's message already includes its cause: print the top one only.
            eprintln!("aggregator: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_until_signal(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = event_aggregator::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    app.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
