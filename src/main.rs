//! The callwatch binary: `serve`, `demo`, `replay`, `sql`, `load` and `sink`, wired from the
//! workspace crates.

mod config;
mod config_file;
mod demo;
mod listener;
mod load;
mod platform;
mod replay;
mod serve;
mod sink;
mod split;
mod sql;
mod storage;
mod tls;
mod webhook;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CALLWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One TLS crypto provider for every rustls user in the process (listeners, clients).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Load(args) => runtime.block_on(load::run(args)),
        Command::Sink(args) => runtime.block_on(sink::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Replay(args) => runtime.block_on(replay::run(args)),
        Command::Sql(args) => runtime.block_on(sql::run(args)),
        Command::Storage(command) => runtime.block_on(storage::run(command)),
    }
}
