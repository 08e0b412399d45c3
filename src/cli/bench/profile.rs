//! `bench model --profile`: where an inference forward's time goes, op by op
//! (`ops::profile`): per op kind, and per op and shape (the convolutions by kernel, stride,
//! channels and plane, which line up with another engine's per-layer profile), with GFLOP/s;
//! what runs outside `ops::` (burn's concat, reshapes, adds) is the forward's rest.
//! `--profile-json F` writes the same per-iteration figures for `scripts/cpu_engines.py`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use gateshift::ops::profile::Entry;
use serde_json::json;

/// The entries of `iters` profiled forwards and their total seconds.
pub struct Profile {
    pub entries: BTreeMap<String, Entry>,
    pub seconds: f64,
    pub iters: usize,
}

impl Profile {
    pub fn new(iters: usize) -> Self {
        Self { entries: BTreeMap::new(), seconds: 0.0, iters }
    }

    /// Adds one forward's entries and its wall time.
    pub fn add(&mut self, entries: BTreeMap<String, Entry>, seconds: f64) {
        for (k, e) in entries {
            let sum = self.entries.entry(k).or_default();
            sum.calls += e.calls;
            sum.seconds += e.seconds;
            sum.flops += e.flops;
        }
        self.seconds += seconds;
    }

    /// Per forward: (kind → ms, FLOPs) where the kind is the key's first word(s) before the
    /// shapes (`conv 1x1/1`, `gsm unit`, `maxpool 3x3/2`).
    fn kinds(&self) -> BTreeMap<String, (f64, f64)> {
        let mut kinds: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (k, e) in &self.entries {
            let k = kind(k);
            let sum = kinds.entry(k).or_default();
            sum.0 += 1e3 * e.seconds / self.iters as f64;
            sum.1 += e.flops / self.iters as f64;
        }
        kinds
    }

    /// The table `bench model --profile` prints: kinds, then the `top` costliest shapes.
    pub fn print(&self, top: usize) -> Result<()> {
        let n = self.iters as f64;
        let total = 1e3 * self.seconds / n;
        let ops: f64 = self.entries.values().map(|e| 1e3 * e.seconds / n).sum();
        say!(
            "profile (ms per forward, {} forwards): total {total:.1}, in ops {ops:.1}, rest {:.1}",
            self.iters,
            total - ops
        )?;
        let mut kinds: Vec<_> = self.kinds().into_iter().collect();
        kinds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        for (k, (ms, flops)) in kinds {
            say!("  {k:<24} {ms:>8.2} ms {:>5.1}% {}", 100.0 * ms / total, rate(flops, ms))?;
        }
        let mut shapes: Vec<_> = self.entries.iter().collect();
        shapes.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        say!("  costliest shapes (ms per forward, calls per forward):")?;
        for (k, e) in shapes.into_iter().take(top) {
            let ms = 1e3 * e.seconds / n;
            say!("    {k:<40} {ms:>8.2} ms ×{:<3} {}", e.calls / self.iters, rate(e.flops / n, ms))?;
        }
        Ok(())
    }

    /// Writes the per-forward figures as JSON: `{"total_ms", "ops": {key: {calls, ms, gflop}}}`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let n = self.iters as f64;
        let ops: serde_json::Map<String, serde_json::Value> = self
            .entries
            .iter()
            .map(|(k, e)| {
                let v = json!({"calls": e.calls / self.iters, "ms": 1e3 * e.seconds / n, "gflop": e.flops / n / 1e9});
                (k.clone(), v)
            })
            .collect();
        let doc = json!({"total_ms": 1e3 * self.seconds / n, "forwards": self.iters, "ops": ops});
        gateshift::io::write_atomic(path, format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes())?;
        Ok(())
    }
}

/// The kind of a key: the words before its channels (the first word with `>`).
fn kind(key: &str) -> String {
    let words: Vec<&str> = key.split(' ').collect();
    let end = words.iter().position(|w| w.contains('>')).unwrap_or(words.len());
    words[..end].join(" ")
}

/// `GFLOP/s` of `flops` in `ms`, or nothing for ops whose FLOPs are not counted.
fn rate(flops: f64, ms: f64) -> String {
    if flops > 0.0 && ms > 0.0 { format!("{:>6.1} GFLOP/s", flops / ms / 1e6) } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_words_before_the_channels() {
        assert_eq!(kind("conv 3x3/2 192>64 28x28"), "conv 3x3/2");
        assert_eq!(kind("gsm unit 96>96 28x28"), "gsm unit");
        assert_eq!(kind("conv3d 3x3x3/1 64>64 8x28x28"), "conv3d 3x3x3/1");
    }
}
