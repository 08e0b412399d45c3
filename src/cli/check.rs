//! `gateshift check gsm-module FIXTURE [--backend B]`: the GSM module and TSM shift against
//! the official code's fixture, on any compiled backend (how a GPU build is checked).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(subcommand)]
    pub command: CheckCommand,
}

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Forward (train and eval), backward and BN statistics of one GSM against
    /// `gsm_module.safetensors`.
    GsmModule {
        fixture: PathBuf,
        #[arg(long, default_value = "flex")]
        backend: String,
    },
}

pub fn run(a: CheckArgs) -> Result<()> {
    let CheckCommand::GsmModule { fixture, backend } = a.command;
    let device = gateshift::backend::device(&backend)?;
    let (tensors, _) = gateshift::checkpoint::safetensors::read(&fixture)?;
    let checks = gateshift::model::temporal::parity::gsm_module(&tensors, &device)?;
    let mut failed = 0;
    for c in &checks {
        let verdict = if c.passed() { "ok" } else { "FAIL" };
        println!("{:<26} rel {:.3e}  tol {:.0e}  {verdict}", c.name, c.rel, c.tolerance);
        failed += usize::from(!c.passed());
    }
    if failed > 0 {
        bail!("{failed} of {} GSM checks failed on backend {backend}", checks.len());
    }
    println!("GSM module parity: all {} checks pass on backend {backend}", checks.len());
    Ok(())
}
