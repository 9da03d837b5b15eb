//! `callwatch storage`: managing the segments several collectors keep in one bucket.

use anyhow::Context;
use callwatch_storage::StoreConfig;

use crate::config::{AdoptArgs, StorageCommand};
use crate::config_file::ConfigFile;

pub async fn run(command: StorageCommand) -> anyhow::Result<()> {
    match command {
        StorageCommand::Adopt(args) => adopt(args).await,
    }
}

async fn adopt(args: AdoptArgs) -> anyhow::Result<()> {
    let config = ConfigFile::load(args.config.as_deref())?;
    let segments = config
        .storage
        .location(args.storage.as_deref())
        .context("--storage")?;
    let config = StoreConfig {
        segments,
        ..StoreConfig::new(&args.data_dir)
    };
    let taken = callwatch_storage::adopt_node(&config, &args.node)
        .await
        .with_context(|| format!("adopting the segments of node {:?}", args.node))?;
    println!(
        "node {:?}'s {taken} segments belong to the node of {} now",
        args.node,
        args.data_dir.display()
    );
    Ok(())
}
