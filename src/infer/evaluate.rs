//! Evaluation: every view (clip × crop) of every video through the model in eval mode,
//! logits (or softmax probabilities) averaged over the views, accuracy accumulated.

use std::sync::Arc;

use anyhow::Result;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::ProgressBar;

use crate::data::{ClipDataset, Loader};
use crate::infer::metrics::{Accuracy, VerbNoun};
use crate::model::Recognizer;

/// Per-video scores and the accuracy they give.
pub struct Evaluation {
    /// The first head's accuracy: the class (or EPIC-Kitchens' verb).
    pub accuracy: Accuracy,
    /// Two-head models: verb, noun and action accuracy.
    pub verb_noun: Option<VerbNoun>,
    /// (dataset index, label, scores of every head) for every video, in list order.
    pub scores: Vec<(usize, usize, Vec<f32>)>,
    pub skipped: Vec<String>,
    pub seconds: f64,
}

/// How [`evaluate`] runs; the default: one video per batch, in the calling thread, seed 0,
/// logits averaged, a bad video stops the run, no progress bar.
#[derive(Clone, Copy)]
pub struct EvalOptions<'a> {
    /// Videos per batch (each with all its views).
    pub batch_size: usize,
    /// Loader workers (0: in the calling thread).
    pub workers: usize,
    /// Seed of the loader (test sampling is deterministic; shuffled frame orders use it).
    pub seed: u64,
    /// Average softmax probabilities over the views instead of logits.
    pub softmax: bool,
    /// Skip (and report) videos that cannot be read instead of stopping.
    pub skip_bad: bool,
    /// Advanced by one per video.
    pub progress: Option<&'a ProgressBar>,
    /// (rank, ranks): evaluate every `ranks`-th video from `rank` (a data-parallel run's
    /// validation; the counts are summed over the ranks after).
    pub shard: (usize, usize),
}

impl Default for EvalOptions<'_> {
    fn default() -> Self {
        Self { batch_size: 1, workers: 0, seed: 0, softmax: false, skip_bad: false, progress: None, shard: (0, 1) }
    }
}

/// Runs `model` (eval mode) over `dataset`: per video, the scores of each head (`heads`
/// gives their class counts, in new_fc's order: `[classes]` or `[verbs, nouns]`).
pub fn evaluate(
    model: &Recognizer,
    dataset: Arc<ClipDataset>,
    heads: &[usize],
    device: &Device,
    o: &EvalOptions,
) -> Result<Evaluation> {
    let EvalOptions { batch_size, workers, seed, softmax: average_softmax, skip_bad, progress: bar, shard } = *o;
    let start = std::time::Instant::now();
    let order: Vec<usize> = (shard.0..dataset.len()).step_by(shard.1.max(1)).collect();
    let p = &dataset.pipeline;
    let (channels, size) = (p.channels(), p.size as usize);
    // Four batches ahead, within the loader's bound whatever the batch size.
    let prefetch = (4 * batch_size).min(crate::limits::MAX_PREFETCH);
    let mut loader = Loader::new(dataset.clone(), order, batch_size, workers, prefetch, seed, 0, skip_bad)?
        .sharded(shard.0, shard.1);
    let mut accuracy = Accuracy::new(heads[0]);
    let mut verb_noun = (heads.len() > 1).then(|| VerbNoun::new(heads[0], heads[1]));
    let mut scores = Vec::new();
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        let (b, views) = (batch.len(), batch.views);
        let input = Tensor::<4>::from_data(TensorData::new(batch.data, [b * views, channels, size, size]), device);
        let logits = model.forward(input);
        let logits = if average_softmax { softmax_per_head(logits, heads) } else { logits };
        let k = logits.dims()[1];
        let mean = logits.reshape([b, views, k]).mean_dim(1).reshape([b, k]);
        let values: Vec<f32> =
            mean.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (i, row) in values.chunks(k).enumerate() {
            accuracy.add(&row[..heads[0]], batch.labels[i]);
            if let Some(vn) = &mut verb_noun {
                let noun = *batch.nouns.get(i).ok_or_else(|| anyhow::anyhow!("a two-head model needs noun labels"))?;
                vn.add(&row[..heads[0]], &row[heads[0]..], (batch.labels[i], noun));
            }
            scores.push((batch.indices[i], batch.labels[i], row.to_vec()));
        }
        if let Some(bar) = bar {
            bar.inc(b as u64);
        }
    }
    let skipped = std::mem::take(&mut loader.skipped);
    Ok(Evaluation { accuracy, verb_noun, scores, skipped, seconds: start.elapsed().as_secs_f64() })
}

/// Softmax over each head's slice of the scores on its own.
fn softmax_per_head(logits: Tensor<2>, heads: &[usize]) -> Tensor<2> {
    if heads.len() == 1 {
        return softmax(logits, 1);
    }
    let mut offset = 0;
    let parts: Vec<Tensor<2>> = heads
        .iter()
        .map(|&k| {
            let part = softmax(logits.clone().narrow(1, offset, k), 1);
            offset += k;
            part
        })
        .collect();
    Tensor::cat(parts, 1)
}
