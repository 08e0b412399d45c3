//! `gateshift ensemble A.jsonl B.jsonl …`: averages per-video scores written by
//! `gateshift test --dump-scores` (as the paper's ensemble table does) and reports accuracy;
//! `--weights` weighs them (two-stream late fusion: RGB : flow = 1 : 1.5 as TSN fuses them).

use std::path::{Path, PathBuf};

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
    /// One weight per score file (e.g. `1,1.5` for RGB and flow): the weighted mean
    /// Σ wᵢ·sᵢ / Σ wᵢ instead of the plain mean.
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
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

/// The score lines of a `test --dump-scores` file: at least one, every one with the same
/// number of finite scores and a label among them; errors name file and line.
fn read(path: &Path) -> Result<Vec<Line>> {
    let bytes = gateshift::io::read_regular(path, "score file")?;
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let mut lines: Vec<Line> = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line: Line = serde_json::from_str(l).with_context(|| format!("{}: not a score line", at()))?;
        let classes = lines.first().map_or(line.scores.len(), |f| f.scores.len());
        if line.scores.is_empty() || line.scores.len() != classes {
            bail!("{}: {} scores, expected {classes} (one per class, at least one)", at(), line.scores.len());
        }
        if line.label >= classes {
            bail!("{}: label {} is out of range for {classes} classes", at(), line.label);
        }
        if let Some(bad) = line.scores.iter().find(|v| !v.is_finite()) {
            bail!("{}: score {bad} is not a finite number", at());
        }
        lines.push(line);
    }
    if lines.is_empty() {
        bail!("score file {} holds no score lines", path.display());
    }
    Ok(lines)
}

/// Each file's share of the mean: `--weights` normalised to sum 1, or 1/n each. Weights must be
/// one per file, finite, not negative and not all zero.
fn weights(a: &EnsembleArgs) -> Result<Vec<f32>> {
    let n = a.scores.len();
    let Some(w) = &a.weights else { return Ok(vec![1.0 / n as f32; n]) };
    if w.len() != n {
        bail!("--weights gives {} weights for {n} score files", w.len());
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
        bail!("--weights: {bad} is not a finite weight of at least 0");
    }
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        bail!("--weights are all 0");
    }
    Ok(w.iter().map(|v| (v / total) as f32).collect())
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

pub fn run(a: EnsembleArgs) -> Result<()> {
    if let Some(p) = &a.out {
        let inputs: Vec<&std::path::Path> = a.scores.iter().map(|p| p.as_path()).collect();
        gateshift::io::check_output_apart(p, &inputs)?;
    }
    let weights = weights(&a)?;
    let files: Vec<Vec<Line>> = a.scores.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let first = &files[0];
    let classes = first[0].scores.len();
    let mut sum: Vec<Vec<f32>> = vec![vec![0.0; classes]; first.len()];
    for ((f, lines), w) in a.scores.iter().zip(&files).zip(&weights) {
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
                *acc += v * w;
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
    say!(
        "ensemble of {}{} · {} videos · top-1 {:.2}% · top-5 {:.2}% · mean class {:.2}%",
        files.len(),
        a.weights.as_ref().map_or(String::new(), |w| format!(" (weights {w:?})")),
        acc.count,
        100.0 * acc.top1(),
        100.0 * acc.top5(),
        100.0 * acc.mean_class()
    )?;
    if let Some(p) = &a.out {
        gateshift::io::write_atomic(p, out.as_bytes())?;
    }
    Ok(())
}
