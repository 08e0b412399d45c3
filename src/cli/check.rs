//! `gateshift check gsm-module FIXTURE [--backend B]`: the GSM module and TSM shift against
//! the official code's fixture, on any compiled backend (how a GPU build is checked);
//! `gateshift check backend --backend B`: a whole training step against flex
//! (`check_backend.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::DType;
use clap::{Args, Subcommand};
use gateshift::ops::gate_shift;
use gateshift::parity;

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
        /// Which GSM to check: the fused kernels, the composed reference, or both (the fused
        /// one only where the backend has its kernels).
        #[arg(long, value_enum, default_value = "both")]
        path: GsmPath,
    },
    /// One training step of a whole recognizer on a backend against the same step on flex
    /// (logits, loss, every parameter's gradient), then its inference against flex's.
    Backend(super::check_backend::BackendCheck),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GsmPath {
    Fused,
    Composed,
    Both,
}

pub fn run(a: CheckArgs) -> Result<()> {
    let (fixture, backend, path) = match a.command {
        CheckCommand::GsmModule { fixture, backend, path } => (fixture, backend, path),
        CheckCommand::Backend(b) => return super::check_backend::run(b),
    };
    let device = gateshift::backend::device(&backend)?;
    if let Some(name) = gateshift::backend::describe(&device) {
        say!("device: {name}")?;
    }
    let (tensors, metadata) = gateshift::checkpoint::safetensors::read(&fixture)?;
    let segments = parity::fixture_segments(&metadata).with_context(|| fixture.display().to_string())?;
    let has_fused = gate_shift::available(&device, DType::F32);
    if path == GsmPath::Fused && !has_fused {
        bail!(
            "backend {backend} has no fused GSM kernels for float32 (they exist for flex, tch, tch-cuda, cuda and wgpu); use --path composed"
        );
    }
    let mut paths = vec![];
    if path != GsmPath::Composed && has_fused {
        paths.push((true, "fused"));
    }
    if path != GsmPath::Fused {
        paths.push((false, "composed"));
    }
    let (mut failed, mut total) = (0, 0);
    for (fused, label) in paths {
        for c in parity::gsm_module(&tensors, segments, &device, fused)? {
            let verdict = if c.passed() { "ok" } else { "FAIL" };
            say!("{label:<9} {:<30} rel {:.3e}  tol {:.0e}  {verdict}", c.name, c.rel, c.tolerance)?;
            failed += usize::from(!c.passed());
            total += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} GSM checks failed on backend {backend}");
    }
    say!("GSM module parity: all {total} checks pass on backend {backend}")?;
    Ok(())
}
