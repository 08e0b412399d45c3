//! `gateshift predict`: top-k classes of one video file or rawframe folder.

use gateshift::train::precision::{self, Precision};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use gateshift::checkpoint::Fit;
use gateshift::checkpoint::StateDict;
use gateshift::data::list::{Entry, List, ListFormat};
use gateshift::data::live_flow::{LiveFlow, Motion};
use gateshift::data::{ClipDataset, Pipeline, Sampling};
use gateshift::flow::Solver;
use gateshift::infer::{EvalOptions, Options, Predictor};
use gateshift::model::i3d;
use rand::SeedableRng;
use serde_json::json;

use super::{FrameArgs, SizeArgs, open_checkpoint};
use gateshift::model::{Modality, ModelConfig};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A video file or a folder of frames.
    pub input: PathBuf,
    /// A gateshift or official checkpoint.
    #[arg(long, required_unless_present_any = ["model", "streams"])]
    pub checkpoint: Option<PathBuf>,
    /// Two-stream (late fusion): `NAME=CHECKPOINT,…`, a network per stream, e.g.
    /// `rgb=rgb.safetensors,flow=flow.safetensors`; NAME is the network's modality (rgb,
    /// rgbdiff, flow), checked against the checkpoint. A flow stream on a video computes the
    /// flow of the fields it samples (`--flow-method`). The streams' probabilities are averaged with
    /// `--stream-weights`.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["checkpoint", "model", "render"])]
    pub streams: Vec<String>,
    /// One weight per stream (default: TSN's 1 for RGB and RGB difference, 1.5 for flow).
    #[arg(long, value_delimiter = ',', requires = "streams")]
    pub stream_weights: Option<Vec<f64>>,
    #[command(flatten)]
    pub live_flow: LiveFlowArgs,
    /// A pretrained model from `gateshift assets` instead of a checkpoint (its own model and
    /// input sizes: the checkpoint's model and size flags do not apply).
    #[arg(long, value_enum, conflicts_with_all = ["checkpoint", "ModelConfig", "SizeArgs"])]
    pub model: Option<Pretrained>,
    /// `--model i3d-kinetics400`: frames per window (consecutive, at the video's rate; default 64).
    #[arg(long, value_parser = super::count_up_to(gateshift::limits::MAX_SEGMENTS))]
    pub window: Option<usize>,
    #[command(flatten)]
    pub model_args: ModelConfig,
    /// Class names, one per line (default: the names stored in the checkpoint).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long, default_value_t = 5, value_parser = super::at_least_one::<usize>)]
    pub topk: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub frames: FrameArgs,
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one::<usize>)]
    pub clips: usize,
    #[arg(long, default_value_t = 1, value_parser = super::crop_count)]
    pub crops: usize,
    #[command(flatten)]
    pub sizes: SizeArgs,
    /// Also write the input video with the top classes drawn on every frame and a strip of
    /// each segment's top class along the bottom (ffmpeg; .mp4, .mkv, .avi or .mov).
    #[arg(long)]
    pub render: Option<PathBuf>,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference arithmetic: fp32, or bf16 (weights and activations in bf16, scores f32; fast
    /// on GPUs, slower than fp32 on the CPU backends).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

/// The motion a flow stream's fields are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowMethod {
    Tvl1,
    Farneback,
    /// The motion vectors the video stores (H.264, MPEG-4 part 2, …; the `libav` feature).
    MotionVectors,
}

/// How a flow network given a video gets its fields: as the training fields were made.
#[derive(clap::Args, Debug, Clone)]
pub struct LiveFlowArgs {
    /// A flow network on a video: the frames' short side for the flow, as `extract-flow
    /// --short-side` made the training flow (default: the video's size).
    #[arg(long, value_parser = super::side)]
    pub flow_short_side: Option<u32>,
    /// A flow network on a video: the method its training flow was made with (`extract-flow
    /// --method`, default parameters).
    #[arg(long, value_enum, default_value_t = FlowMethod::Tvl1)]
    pub flow_method: FlowMethod,
    /// With --flow-method motion-vectors: accumulated back to the I-frame, as `extract-flow
    /// --accumulate` (CoViAR).
    #[arg(long)]
    pub flow_accumulate: bool,
}

impl LiveFlowArgs {
    /// The on-demand flow these flags describe.
    pub fn live_flow(&self) -> Result<LiveFlow> {
        if self.flow_accumulate && self.flow_method != FlowMethod::MotionVectors {
            bail!("--flow-accumulate accumulates stored motion vectors: it needs --flow-method motion-vectors");
        }
        let motion = match self.flow_method {
            FlowMethod::Tvl1 => Motion::Flow(Solver::default()),
            FlowMethod::Farneback => Motion::Flow(Solver::Farneback(Default::default())),
            FlowMethod::MotionVectors => Motion::Vectors { accumulate: self.flow_accumulate },
        };
        Ok(LiveFlow { motion, short_side: self.flow_short_side, ..LiveFlow::default() })
    }
}

/// Pretrained models runnable without a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pretrained {
    /// DeepMind's Kinetics-400 I3D (RGB), from `gateshift assets fetch i3d-kinetics400`.
    #[value(name = "i3d-kinetics400")]
    I3dKinetics400,
}

pub fn run(a: PredictArgs) -> Result<()> {
    if a.window.is_some() && a.model.is_none() {
        bail!("--window applies to --model i3d-kinetics400 only (a checkpoint's clip is its --segments)");
    }
    let device = gateshift::backend::device(&a.backend)?;
    let entry = entry(&a)?;
    if let Some(out) = &a.render {
        check_render_output(out, &a)?;
    }
    let mut segments = None;
    let (ranked, names, nouns) = match (a.model, &a.checkpoint) {
        (Some(Pretrained::I3dKinetics400), _) => {
            (i3d_scores(&a, entry, &device)?, Some(i3d::kinetics400_names()), None)
        }
        (None, Some(checkpoint)) if a.render.is_some() => {
            let (scores, per_segment) = recognizer_scores(&a, checkpoint, entry, &device)?;
            segments = Some(per_segment);
            scores
        }
        (None, Some(checkpoint)) => recognizer_scores(&a, checkpoint, entry, &device)?.0,
        (None, None) if !a.streams.is_empty() => stream_scores(&a, entry, &device)?,
        (None, None) => bail!("give --checkpoint, --streams or --model"),
    };
    let rank = |scores: Vec<f32>| {
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
        ranked.truncate(a.topk);
        ranked
    };
    let (ranked, nouns) = (rank(ranked), nouns.map(rank));
    let name = |i: usize| names.as_ref().map(|n| n[i].clone()).unwrap_or_else(|| format!("class {i}"));
    if let Some(out) = &a.render {
        let top: Vec<(String, f32)> = ranked.iter().map(|&(i, p)| (name(i), p)).collect();
        render(&a, out, &top, segments.unwrap_or_else(|| vec![ranked[0].0]))?;
    }
    if a.json {
        let top: Vec<_> =
            ranked.iter().map(|&(i, p)| json!({"class": i, "label": name(i), "probability": p})).collect();
        let mut out = json!({"input": a.input, "top": top});
        if let Some(nouns) = &nouns {
            out["nouns"] = nouns.iter().map(|&(i, p)| json!({"noun": i, "probability": p})).collect();
        }
        say!("{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        say!("{}", a.input.display())?;
        for (rank, &(i, p)) in ranked.iter().enumerate() {
            say!("{:>2}. {:>6.2}%  {}", rank + 1, 100.0 * p, name(i))?;
        }
        for (rank, &(i, p)) in nouns.iter().flatten().enumerate() {
            say!("{:>2}. {:>6.2}%  noun {i}", rank + 1, 100.0 * p)?;
        }
    }
    Ok(())
}

/// The input as a one-entry list: a frame folder (counted) or a video file (line 0: not read
/// from a list, so messages name the input alone).
fn entry(a: &PredictArgs) -> Result<Entry> {
    entry_for(&a.input, &a.frames)
}

/// `input` (a video file or a frame folder named as `frames` says) as a list entry.
pub fn entry_for(input: &Path, frames: &FrameArgs) -> Result<Entry> {
    if input.is_dir() {
        let naming = frames.naming()?;
        Ok(Entry {
            path: input.to_path_buf(),
            start: 0,
            num_frames: Some(naming.count(input)?),
            label: 0,
            noun: None,
            line: 0,
            is_video: false,
        })
    } else if input.is_file() {
        Ok(Entry {
            path: input.to_path_buf(),
            start: 0,
            num_frames: None,
            label: 0,
            noun: None,
            line: 0,
            is_video: true,
        })
    } else {
        let what = match std::fs::metadata(input) {
            Ok(m) => gateshift::io::describe(m.file_type()),
            Err(_) => "not there",
        };
        bail!(
            "{} is neither a video file nor a frame folder ({what}; live sources: `gateshift stream`)",
            input.display()
        );
    }
}

/// DeepMind's Kinetics-400 I3D from the asset cache (`gateshift assets fetch i3d-kinetics400`),
/// in `precision` (bf16: every float tensor cast).
pub fn load_i3d(device: &Device, precision: Precision) -> Result<i3d::I3d> {
    let asset = &gateshift::assets::I3D_KINETICS400;
    let root = gateshift::assets::cache_dir();
    if !asset.is_cached(&root) {
        bail!("the I3D weights are not in the cache {}: run `gateshift assets fetch {}`", root.display(), asset.name);
    }
    let weights = asset.file(&root, "i3d-kinetics-400.safetensors");
    let sd = StateDict::read(&weights)?;
    let model = gateshift::checkpoint::i3d::load(i3d::I3d::new(400, device), &sd)
        .with_context(|| format!("loading {}", weights.display()))?;
    Ok(precision::cast(model, precision))
}

/// I3D: `--clips` windows of `--window` consecutive frames, short side 256, centre crop
/// 224, RGB in [−1, 1]; logits averaged over windows, then softmax.
fn i3d_scores(a: &PredictArgs, entry: Entry, device: &Device) -> Result<Vec<f32>> {
    let window = a.window.unwrap_or(64);
    let model = load_i3d(device, a.precision)?;
    let mut pipeline = Pipeline::test(i3d::INPUT, 224, 256, window, a.crops, a.clips);
    pipeline.sampling = Sampling::Window;
    let list = List { file: a.input.clone(), format: ListFormat::Auto, entries: vec![entry] };
    let ds = ClipDataset { list, naming: a.frames.naming()?, pipeline };
    let clip = ds.get(0, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    let (t, size) = (window, 224);
    let per_view = t * 3 * size * size;
    let mut sum: Option<Tensor<2>> = None;
    for v in 0..clip.views {
        let data = clip.data[v * per_view..(v + 1) * per_view].to_vec();
        let x = Tensor::<5>::from_data(TensorData::new(data, [1, t, 3, size, size]), device).permute([0, 2, 1, 3, 4]);
        let logits = model.forward(x);
        sum = Some(match sum {
            Some(s) => s + logits,
            None => logits,
        });
    }
    let mean = sum.expect("at least one view").div_scalar(clip.views as f32);
    softmax(mean, 1).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Class probabilities, class names if known, and a second head's noun probabilities.
pub type Scores = (Vec<f32>, Option<Vec<String>>, Option<Vec<f32>>);

/// `--render`'s output: a video container ffmpeg writes, which is not one of the inputs.
fn check_render_output(out: &Path, a: &PredictArgs) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !["mp4", "mkv", "avi", "mov"].contains(&ext) {
        bail!("--render {}: name a .mp4, .mkv, .avi or .mov file", out.display());
    }
    let inputs: Vec<&Path> = [Some(a.input.as_path()), a.checkpoint.as_deref()].into_iter().flatten().collect();
    gateshift::io::check_output_apart(out, &inputs)?;
    if !gateshift::data::video::available() {
        bail!("--render needs ffmpeg (scripts/setup.sh installs it)");
    }
    Ok(())
}

/// Writes the result video: `top` on every frame, and along the bottom the top class of each
/// of the clip's segments (`segments`, in time order) over the frames it stands for.
fn render(a: &PredictArgs, out: &Path, top: &[(String, f32)], segments: Vec<usize>) -> Result<()> {
    use gateshift::report::render::{Frames, Labels};
    let naming = a.frames.naming()?;
    let (frames, count, fps) = if a.input.is_dir() {
        let count = naming.count(&a.input)?;
        (Frames::Folder { dir: &a.input, naming: &naming, count }, count, 25.0)
    } else {
        let info = gateshift::data::video::probe_cached(&a.input)?;
        (Frames::Video(&a.input), info.frames, info.fps)
    };
    let t = segments.len();
    let timeline: Vec<Option<usize>> =
        (0..count.max(1)).map(|f| Some(segments[(f * t / count.max(1)).min(t - 1)])).collect();
    let at = |_: usize| top.to_vec();
    let (n, (w, h)) = gateshift::report::render::render(frames, &Labels { at: &at, timeline: &timeline }, fps, out)?;
    eprintln!("rendered {n} frames ({w}×{h}) to {}", out.display());
    Ok(())
}

/// A recognizer checkpoint: the test pipeline it was trained for, softmax scores; and each
/// segment's top class in the first view (for `--render`).
fn recognizer_scores(
    a: &PredictArgs,
    checkpoint: &Path,
    entry: Entry,
    device: &Device,
) -> Result<(Scores, Vec<usize>)> {
    scores_of(a, &open_network(a, checkpoint, device, None)?, entry, device)
}

/// The network of `checkpoint`, which must take `modality` input, if given (a stream's name).
fn open_network(a: &PredictArgs, checkpoint: &Path, device: &Device, modality: Option<Modality>) -> Result<Predictor> {
    let p = open_checkpoint(&a.model_args, checkpoint, Options { fit: Fit::Strict, precision: a.precision }, device)?;
    if let Some(m) = modality.filter(|m| *m != p.config.modality) {
        bail!(
            "--streams {}={}: that checkpoint is a {} network",
            m.name(),
            checkpoint.display(),
            p.config.modality.name()
        );
    }
    Ok(p)
}

/// [`recognizer_scores`] of an opened network.
fn scores_of(a: &PredictArgs, p: &Predictor, mut entry: Entry, device: &Device) -> Result<(Scores, Vec<usize>)> {
    let names = p.class_names(a.labels.as_deref())?;
    let (size, scale) = p.input_sizes(a.sizes.input_size, a.sizes.scale_size)?;
    let mut pipeline = Pipeline::for_model(&p.config, size, scale, a.crops, a.clips);
    pipeline.live_flow = a.live_flow.live_flow()?;
    // A two-head model scores verbs (the classes) and nouns; the unknown noun is not scored.
    entry.noun = (p.config.noun_classes > 0).then_some(0);
    let naming = a.frames.naming_for(p.config.modality)?;
    if !entry.is_video {
        // A flow folder counts its x files.
        let count = naming.count(&entry.path)?;
        if count == 0 && p.config.modality == Modality::Flow {
            bail!(
                "{} holds no flow fields ({}…): a flow network reads `data extract-flow`'s folders, or a video",
                entry.path.display(),
                naming.template.format(naming.first_index)
            );
        }
        entry.num_frames = Some(count);
    }
    let list = List { file: a.input.clone(), format: ListFormat::Auto, entries: vec![entry] };
    let ds = Arc::new(ClipDataset { list, naming, pipeline });
    let segments = if a.render.is_some() { segment_classes(p, &ds, size as usize, device)? } else { Vec::new() };
    let ev = p.evaluate(ds, &EvalOptions { batch_size: 1, workers: 1, softmax: true, ..Default::default() })?;
    let (_, _, mut probs) = ev.scores.into_iter().next().expect("one entry");
    let nouns = (p.config.noun_classes > 0).then(|| probs.split_off(p.config.classes));
    Ok(((probs, names, nouns), segments))
}

/// The top class of each segment's frame scores in the clip's first view.
fn segment_classes(p: &Predictor, ds: &ClipDataset, size: usize, device: &Device) -> Result<Vec<usize>> {
    let clip = ds.get(0, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    let c = p.config.input_channels();
    let x = Tensor::<4>::from_data(TensorData::new(clip.data[..c * size * size].to_vec(), [1, c, size, size]), device);
    let scores = p.model.forward_frames(x).narrow(2, 0, p.config.classes);
    let top =
        scores.argmax(2).into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(top.into_iter().map(|i| i as usize).collect())
}

/// `--streams`: each stream's network on the input, their probabilities averaged with the
/// stream weights (late fusion). Each stream's name must be its network's modality, and the
/// streams must share their classes. Every stream's time is printed: a flow stream's includes
/// computing its flow.
fn stream_scores(a: &PredictArgs, entry: Entry, device: &Device) -> Result<Scores> {
    let streams = parse_streams(&a.streams)?;
    let weights = match &a.stream_weights {
        Some(w) if w.len() != streams.len() => {
            bail!("--stream-weights gives {} weights for {} streams", w.len(), streams.len())
        }
        Some(w) if w.iter().any(|v| !v.is_finite() || *v < 0.0) || w.iter().sum::<f64>() <= 0.0 => {
            bail!("--stream-weights must be finite, non-negative and not all zero: {w:?}")
        }
        Some(w) if !w.iter().sum::<f64>().is_finite() => bail!("--stream-weights {w:?}: their sum overflows"),
        Some(w) => w.clone(),
        None => streams.iter().map(|(m, _)| if *m == Modality::Flow { 1.5 } else { 1.0 }).collect(),
    };
    // Normalised here, in f64: weights as large as f32's range must not overflow the sum.
    let total: f64 = weights.iter().sum();
    let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
    // Every stream's network first: a checkpoint that is not its stream's is refused before
    // any stream runs (or computes flow).
    let networks =
        streams.iter().map(|(m, c)| open_network(a, c, device, Some(*m))).collect::<Result<Vec<Predictor>>>()?;
    let mut fused: Option<Scores> = None;
    for (((modality, checkpoint), w), p) in streams.iter().zip(&weights).zip(&networks) {
        let t0 = std::time::Instant::now();
        let ((probs, names, nouns), _) = scores_of(a, p, entry.clone(), device)?;
        eprintln!("stream {} ({}): {:.2} s", modality.name(), checkpoint.display(), t0.elapsed().as_secs_f64());
        let scale = |v: Vec<f32>| v.into_iter().map(|p| p * *w as f32).collect::<Vec<f32>>();
        fused = Some(match fused {
            None => (scale(probs), names, nouns.map(scale)),
            Some((sum, first_names, sum_nouns)) => {
                if sum.len() != probs.len() {
                    bail!("stream {} has {} classes, the first stream {}", modality.name(), probs.len(), sum.len());
                }
                let add = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(scale(b)).map(|(x, y)| x + y).collect();
                let nouns = match (sum_nouns, nouns) {
                    (Some(x), Some(y)) if x.len() == y.len() => Some(add(x, y)),
                    (None, None) => None,
                    _ => bail!("stream {} has other heads than the first stream", modality.name()),
                };
                (add(sum, probs), first_names.or(names), nouns)
            }
        });
    }
    Ok(fused.expect("at least one stream"))
}

/// `NAME=CHECKPOINT` pairs; a name is a modality, each at most once.
fn parse_streams(streams: &[String]) -> Result<Vec<(Modality, PathBuf)>> {
    use clap::ValueEnum;
    let mut out: Vec<(Modality, PathBuf)> = Vec::new();
    for s in streams {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--streams {s:?}: give NAME=CHECKPOINT, e.g. flow=flow.safetensors"))?;
        let modality = Modality::from_str(name, true)
            .map_err(|_| anyhow::anyhow!("--streams {s:?}: {name:?} is not a stream (rgb, rgbdiff, flow)"))?;
        if out.iter().any(|(m, _)| *m == modality) {
            bail!("--streams names the {name} stream twice");
        }
        out.push((modality, PathBuf::from(path)));
    }
    if out.len() < 2 {
        bail!("--streams fuses two or more streams; for one, use --checkpoint");
    }
    Ok(out)
}
