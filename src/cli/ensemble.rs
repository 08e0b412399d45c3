//! `gateshift ensemble A.jsonl B.jsonl …`: averages per-video scores written by
//! `gateshift test --dump-scores` (as the paper's ensemble table does) and reports accuracy.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use gateshift::train::metrics::Accuracy;
use serde::Deserialize;

#[derive(Args, Debug)]
pub struct EnsembleArgs {
    /// Score files (JSON lines with `index`, `label`, `scores`).
    #[arg(required = true, num_args = 2..)]
    pub scores: Vec<PathBuf>,
    /// Apply softmax to each file's scores before averaging.
    #[arg(long)]
    pub softmax: bool,
    /// Write the averaged scores here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Line {
    index: usize,
    label: usize,
    scores: Vec<f32>,
}

fn read(path: &PathBuf) -> Result<Vec<Line>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a score line", path.display(), i + 1))
        })
        .collect()
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

pub fn run(a: EnsembleArgs) -> Result<()> {
    let files: Vec<Vec<Line>> = a.scores.iter().map(read).collect::<Result<_>>()?;
    let first = &files[0];
    let classes = first.first().map(|l| l.scores.len()).unwrap_or(0);
    let mut sum: Vec<Vec<f32>> = vec![vec![0.0; classes]; first.len()];
    for (f, lines) in a.scores.iter().zip(&files) {
        if lines.len() != first.len() {
            bail!("{} has {} videos, {} has {}", f.display(), lines.len(), a.scores[0].display(), first.len());
        }
        for (k, (l, r)) in lines.iter().zip(first).enumerate() {
            if l.index != r.index || l.label != r.label || l.scores.len() != classes {
                bail!(
                    "{}: line {} is video {} (label {}), expected video {} (label {})",
                    f.display(),
                    k + 1,
                    l.index,
                    l.label,
                    r.index,
                    r.label
                );
            }
            let s = if a.softmax { softmax(&l.scores) } else { l.scores.clone() };
            for (acc, v) in sum[k].iter_mut().zip(s) {
                *acc += v / files.len() as f32;
            }
        }
    }
    let mut acc = Accuracy::new(classes);
    let mut out = String::new();
    for (l, s) in first.iter().zip(&sum) {
        acc.add(s, l.label);
        out.push_str(&serde_json::json!({"index": l.index, "label": l.label, "scores": s}).to_string());
        out.push('\n');
    }
    println!(
        "ensemble of {} · {} videos · top-1 {:.2}% · top-5 {:.2}% · mean class {:.2}%",
        files.len(),
        acc.count,
        100.0 * acc.top1(),
        100.0 * acc.top5(),
        100.0 * acc.mean_class()
    );
    if let Some(p) = &a.out {
        gateshift::io::write_atomic(p, out.as_bytes())?;
    }
    Ok(())
}
