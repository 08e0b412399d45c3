//! `gateshift stream INPUT`: streaming inference — class scores over sliding windows of a
//! video file, a frame folder, or a live source ffmpeg reads (URL, capture device), printed as
//! each window is scored (`gateshift::stream`).

use gateshift::train::precision::Precision;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use gateshift::data::FrameNaming;
use gateshift::data::rawframes::read_rgb;
use gateshift::data::transform::{crop_normalise_append, resize_short, test_crops};
use gateshift::data::video::{Source, VideoInfo};
use gateshift::model::{InputSpec, i3d};
use gateshift::stream::{Schedule, Scored, Summary, WindowModel};
use image::RgbImage;
use serde_json::json;

use super::predict::{Pretrained, load_i3d};
use super::{FrameArgs, SizeArgs, open_checkpoint};
use gateshift::model::ModelConfig;

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// A video file, a frame folder, or a source ffmpeg reads as it comes: a URL (rtsp://…,
    /// http://…, file:…) or a capture device (with --input-format, e.g. v4l2 /dev/video0).
    pub input: String,
    /// ffmpeg input format for devices (`-f`, e.g. v4l2, avfoundation, dshow).
    #[arg(long)]
    pub input_format: Option<String>,
    /// Seconds to wait for the source's next frame (or its first answer) before giving up.
    #[arg(long, default_value_t = 10.0, value_parser = super::float_where(|f| f > 0.0 && f <= 86_400.0, "in (0, 86400] seconds"))]
    pub timeout: f64,
    /// A gateshift or official checkpoint.
    #[arg(long, required_unless_present = "model")]
    pub checkpoint: Option<PathBuf>,
    /// A pretrained model from `gateshift assets` instead of a checkpoint (its own model and
    /// input sizes: the checkpoint's model and size flags do not apply).
    #[arg(long, value_enum, conflicts_with_all = ["checkpoint", "ModelConfig", "SizeArgs"])]
    pub model: Option<Pretrained>,
    #[command(flatten)]
    pub model_args: ModelConfig,
    /// Frames per window: the most recent frames a score is about (I3D: its input length).
    #[arg(long, default_value_t = 64, value_parser = super::count_up_to(gateshift::limits::MAX_SEGMENTS))]
    pub window: usize,
    /// A window is scored every this many frames.
    #[arg(long, default_value_t = 16, value_parser = super::count_up_to(gateshift::limits::MAX_LIST_FRAMES))]
    pub stride: usize,
    /// Score only the freshest due window when the input is ahead of the model (live sources).
    #[arg(long)]
    pub latest: bool,
    /// Online inference, as TSM's online mode: a causal model (`train --causal`) scores every
    /// frame as it arrives with one frame's forward, its temporal modules keeping what they
    /// need of the earlier frames (no windows: --window and --stride do not apply).
    #[arg(long, conflicts_with_all = ["latest", "model"])]
    pub online: bool,
    /// Also write the input with, on every frame, the top classes of the latest window scored
    /// by then and a strip of each window's top class along the bottom (a video file or frame
    /// folder; ffmpeg; .mp4, .mkv, .avi or .mov).
    #[arg(long, conflicts_with = "latest")]
    pub render: Option<PathBuf>,
    /// Class names, one per line (default: the names stored in the checkpoint).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long, default_value_t = 3, value_parser = super::at_least_one::<usize>)]
    pub topk: usize,
    /// One JSON object per window instead of text lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub frames: FrameArgs,
    /// Frame rate of a frame folder, for times in the output (videos report their own).
    #[arg(long, value_parser = super::float_where(|f| f > 0.0 && f.is_finite(), "a frame rate above 0"))]
    pub fps: Option<f64>,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference arithmetic: fp32, or bf16 (weights and activations in bf16, scores f32; fast
    /// on GPUs, slower than fp32 on the CPU backends).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

/// Where frames come from.
enum Input {
    Frames {
        dir: PathBuf,
        naming: FrameNaming,
        count: usize,
    },
    /// A video source and what ffprobe said of it (probed once).
    Video(Source, VideoInfo),
}

/// How each frame is prepared: short side `scale`, centre crop `size`², normalised for the model.
#[derive(Clone, Copy)]
struct Prep {
    scale: u32,
    size: u32,
    spec: InputSpec,
}

impl Prep {
    fn apply(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let crop = test_crops(w, h, self.size, 1)[0];
        let mut out = Vec::with_capacity(3 * (self.size * self.size) as usize);
        crop_normalise_append(img, crop, self.size, &self.spec, &mut out);
        out
    }
}

pub fn run(a: StreamArgs) -> Result<()> {
    if a.online && (super::given("window") || super::given("stride")) {
        bail!("--online scores every frame as it arrives: --window and --stride do not apply");
    }
    let schedule = if a.online { Schedule::new(1, 1)? } else { Schedule::new(a.window, a.stride)? };
    if let Some(out) = &a.render {
        check_render(&a, out)?;
    }
    let device = gateshift::backend::device(&a.backend)?;
    let input = open(&a)?;
    let (model, names, prep) = load(&a, &device)?;
    let fps = match &input {
        Input::Video(_, info) => Some(info.fps),
        Input::Frames { .. } => a.fps,
    };

    // The decoder runs ahead by up to two windows while the model scores.
    // (Bounded by two windows, not by the stride: a channel's slots are allocated up front.)
    let (tx, rx) = sync_channel(a.window + a.stride.min(a.window));
    let producer = std::thread::spawn(move || {
        if let Err(e) = produce(&input, prep, &tx) {
            let _ = tx.send(Err(e));
        }
    });
    let wall = Instant::now();
    let size = prep.size as usize;
    let mut stdout = std::io::stdout().lock();
    let mut online = match (&model, a.online) {
        (WindowModel::Recognizer(m, config), true) => Some(gateshift::infer::online::Online::new(m, config)?),
        _ => None,
    };
    let mut scored_windows: Vec<(usize, Vec<f32>)> = Vec::new();
    let summary = gateshift::stream::run(
        &rx,
        schedule,
        a.latest,
        |frames| match online.as_mut() {
            Some(online) => Ok(gateshift::stream::score_online(online, frames[0], size, &device)),
            None => Ok(model.score(frames, size, &device)),
        },
        |scored| {
            if a.render.is_some() {
                scored_windows.push((scored.frames.end, scored.probs.clone()));
            }
            let line = describe(scored, fps, names.as_deref(), a.topk, a.json);
            writeln!(stdout, "{line}").and_then(|_| stdout.flush()).context("writing to stdout")
        },
    );
    drop(rx);
    let _ = producer.join();
    let summary = summary.with_context(|| format!("streaming {}", a.input))?;
    report(&summary, fps, wall.elapsed().as_secs_f64(), if a.online { "frame" } else { "window" });
    if let Some(out) = &a.render {
        render(&a, out, &scored_windows, summary.frames, fps.unwrap_or(25.0), names.as_deref())?;
    }
    Ok(())
}

/// `--render` needs a file or folder to decode again, and an output apart from the inputs.
fn check_render(a: &StreamArgs, out: &Path) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !["mp4", "mkv", "avi", "mov"].contains(&ext) {
        bail!("--render {}: name a .mp4, .mkv, .avi or .mov file", out.display());
    }
    let input = Path::new(&a.input);
    if a.input_format.is_some() || !(input.is_file() || input.is_dir()) {
        bail!("--render draws on a video file or frame folder; {} is a live source", a.input);
    }
    let inputs: Vec<&Path> = [Some(input), a.checkpoint.as_deref()].into_iter().flatten().collect();
    gateshift::io::check_output_apart(out, &inputs)
}

/// The result video: each frame with the latest window scored by then (`windows`: each
/// window's end frame and probabilities, in order) and the strip of their top classes.
fn render(
    a: &StreamArgs,
    out: &Path,
    windows: &[(usize, Vec<f32>)],
    frames: usize,
    fps: f64,
    names: Option<&[String]>,
) -> Result<()> {
    use gateshift::report::render::{Frames, Labels};
    // The window shown at frame i: the last one whose frames end by i + 1.
    let shown = |i: usize| windows.partition_point(|(end, _)| *end <= i + 1).checked_sub(1);
    let ranked = |probs: &[f32]| {
        let mut r: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        r.sort_by(|x, y| y.1.total_cmp(&x.1));
        r.truncate(a.topk);
        r
    };
    let name = |i: usize| names.map(|n| n[i].clone()).unwrap_or_else(|| format!("class {i}"));
    let at = |i: usize| {
        shown(i).map_or(Vec::new(), |w| ranked(&windows[w].1).into_iter().map(|(c, p)| (name(c), p)).collect())
    };
    let timeline: Vec<Option<usize>> = (0..frames).map(|i| shown(i).map(|w| ranked(&windows[w].1)[0].0)).collect();
    let naming = a.frames.naming()?;
    let input = Path::new(&a.input);
    let source = if input.is_dir() {
        Frames::Folder { dir: input, naming: &naming, count: frames }
    } else {
        Frames::Video(input)
    };
    let (n, (w, h)) = gateshift::report::render::render(source, &Labels { at: &at, timeline: &timeline }, fps, out)?;
    eprintln!("rendered {n} frames ({w}×{h}) to {}", out.display());
    Ok(())
}

/// The model a stream is scored with, its class names, and how frames are prepared for it.
fn load(a: &StreamArgs, device: &burn::tensor::Device) -> Result<(WindowModel, Option<Vec<String>>, Prep)> {
    Ok(match (a.model, &a.checkpoint) {
        (Some(Pretrained::I3dKinetics400), _) => {
            let model = WindowModel::I3d { model: Box::new(load_i3d(device, a.precision)?), length: a.window };
            (model, Some(i3d::kinetics400_names()), Prep { scale: 256, size: 224, spec: i3d::INPUT })
        }
        (None, Some(checkpoint)) => {
            let options = gateshift::infer::Options { fit: gateshift::checkpoint::Fit::Strict, precision: a.precision };
            let p = open_checkpoint(&a.model_args, checkpoint, options, device)?;
            if p.config.noun_classes > 0 {
                bail!(
                    "{} has two heads (verb, noun): `gateshift predict` and `test` score them; stream shows one head",
                    checkpoint.display()
                );
            }
            if p.config.modality == gateshift::model::Modality::Flow {
                bail!(
                    "{} is a flow network: stream feeds RGB frames; score flow with `gateshift predict` \
                     (it computes the flow) or `test` on `data extract-flow`'s pairs",
                    checkpoint.display()
                );
            }
            let names = p.class_names(a.labels.as_deref())?;
            let (size, scale) = p.input_sizes(a.sizes.input_size, a.sizes.scale_size)?;
            let spec = p.config.arch.input();
            if a.online {
                // Refused here, before any frame is read, if the model is not causal.
                gateshift::infer::online::Online::new(&p.model, &p.config)?;
            }
            (WindowModel::Recognizer(Box::new(p.model), p.config), names, Prep { scale, size, spec })
        }
        (None, None) => bail!("give --checkpoint or --model"),
    })
}

/// Recognises the input: a frame folder (counted), else a video source (`Source::open`:
/// a file, FIFO or device, or a network URL).
fn open(a: &StreamArgs) -> Result<Input> {
    let path = Path::new(&a.input);
    if path.is_dir() && a.input_format.is_none() {
        let naming = a.frames.naming()?;
        let count = naming.count(path)?;
        if count == 0 {
            bail!("frame folder {} holds no frames named like {}", path.display(), a.frames.template);
        }
        return Ok(Input::Frames { dir: path.to_path_buf(), naming, count });
    }
    let timeout = std::time::Duration::from_secs_f64(a.timeout);
    let source = Source::open(&a.input, a.input_format.clone(), timeout)?;
    let info = source.probe()?;
    Ok(Input::Video(source, info))
}

/// Decodes the input in order and sends each prepared frame; stops when the receiver is gone.
fn produce(input: &Input, prep: Prep, tx: &SyncSender<Result<Vec<f32>>>) -> Result<()> {
    let send = |frame: Vec<f32>| tx.send(Ok(frame)).map_err(|_| anyhow::anyhow!("stream stopped"));
    match input {
        Input::Frames { dir, naming, count } => {
            for i in 0..*count {
                let img = read_rgb(&naming.path(dir, 0, i))?;
                send(prep.apply(&resize_short(&img, prep.scale)))?;
            }
        }
        Input::Video(source, info) => {
            source.for_each_frame(info, Some(prep.scale), |_, img| send(prep.apply(&img)))?;
        }
    }
    Ok(())
}

/// One output line for a scored window.
fn describe(s: &Scored, fps: Option<f64>, names: Option<&[String]>, topk: usize, json: bool) -> String {
    let mut ranked: Vec<(usize, f32)> = s.probs.iter().copied().enumerate().collect();
    ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
    ranked.truncate(topk);
    let name = |i: usize| names.map(|n| n[i].clone()).unwrap_or_else(|| format!("class {i}"));
    let seconds = fps.map(|f| (s.frames.start as f64 / f, s.frames.end as f64 / f));
    let ms = 1e3 * s.latency.as_secs_f64();
    if json {
        let top: Vec<_> =
            ranked.iter().map(|&(i, p)| json!({"class": i, "label": name(i), "probability": p})).collect();
        let mut v = json!({"frames": [s.frames.start, s.frames.end], "top": top, "ms": ms, "skipped": s.skipped});
        if let Some((a, b)) = seconds {
            v["seconds"] = json!([a, b]);
        }
        return v.to_string();
    }
    let when = match seconds {
        Some((a, b)) => format!("{a:7.2}–{b:7.2} s "),
        None => String::new(),
    };
    let top: Vec<String> = ranked.iter().map(|&(i, p)| format!("{} {:.1}%", name(i), 100.0 * p)).collect();
    let skipped = if s.skipped > 0 { format!(", {} skipped", s.skipped) } else { String::new() };
    format!(
        "{when}frames {:>5}–{:<5} {}  ({ms:.0} ms{skipped})",
        s.frames.start,
        s.frames.end.saturating_sub(1),
        top.join(" | ")
    )
}

/// Totals on stderr: windows, model latency, and how the run compares with real time.
fn report(s: &Summary, fps: Option<f64>, wall_s: f64, unit: &str) {
    let mut ms: Vec<f64> = s.latencies.iter().map(|d| 1e3 * d.as_secs_f64()).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
    let realtime = match fps {
        Some(f) if f > 0.0 && wall_s > 0.0 => format!(", {:.2}× real time", s.frames as f64 / f / wall_s),
        _ => String::new(),
    };
    eprintln!(
        "stream: {} frames, {} {unit}s scored ({} skipped), model {median:.1} ms per {unit} (median), \
         {wall_s:.1} s in all{realtime}",
        s.frames, s.windows, s.skipped
    );
}
