//! `gateshift explain`: what the gates of a GSM (or GSF) checkpoint route. For one video or
//! frame folder: every gated layer's tanh gate maps over the frames (a PNG grid per channel
//! half and an mp4 strip), the share of each half routed through time per layer, and the
//! prediction, in `report.md` and `gates.json`. With `--list`: the routed share by layer and
//! class over a whole list (`routing.png`, `routing.csv`). A model without gates (TSN, TSM,
//! …) has nothing to explain, and says so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use gateshift::checkpoint::Fit;
use gateshift::data::list::{List, ListFormat};
use gateshift::data::{ClipDataset, Pipeline};
use gateshift::infer::explain::{self, Layer};
use gateshift::infer::{Options, Predictor};
use gateshift::io::write_atomic;
use gateshift::model::ModelConfig;
use gateshift::report::gate_maps;
use rand::SeedableRng;
use serde_json::json;

use super::{FrameArgs, SizeArgs, open_checkpoint};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// A video file or a folder of frames (not with --list).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub input: Option<PathBuf>,
    /// A GSM or GSF checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (created; files of the same names in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// A list of clips (as `test` reads them): the routed share by layer and class.
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Folder the list's paths are relative to (default: the list's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelConfig,
    /// Class names, one per line (default: the names stored in the checkpoint).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub frames: FrameArgs,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[arg(long, default_value = "flex")]
    pub backend: String,
}

pub fn run(a: ExplainArgs) -> Result<()> {
    let device = gateshift::backend::device(&a.backend)?;
    let p =
        open_checkpoint(&a.model, &a.checkpoint, Options { fit: Fit::Strict, precision: Default::default() }, &device)?;
    if !explain::has_gates(p.config.temporal) {
        say!(
            "{}: a {} model has no gates, so there is nothing to explain (explain shows what GSM's and GSF's learned \
             gates route; TSN combines frames only at the consensus, TSM shifts a fixed share of channels)",
            a.checkpoint.display(),
            p.config.temporal.label()
        )?;
        return Ok(());
    }
    if a.out.exists() && !a.out.is_dir() {
        bail!("--out {} exists and is not a folder", a.out.display());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let names = p.class_names(a.labels.as_deref())?;
    let name = |i: usize| names.as_ref().map_or_else(|| format!("class {i}"), |n| n[i].clone());
    match (&a.input, &a.list) {
        (Some(input), None) => one_clip(&a, &p, input, &name, &device),
        (None, Some(list)) => over_list(&a, &p, list, &name, &device),
        _ => bail!("give a video or frame folder, or --list"),
    }
}

/// The test pipeline of the checkpoint: one centre crop of one clip.
fn pipeline(a: &ExplainArgs, p: &Predictor) -> Result<(Pipeline, usize)> {
    if p.config.modality != gateshift::model::Modality::Rgb {
        bail!("explain draws RGB frames; this model reads {} input", p.config.modality.name());
    }
    let (size, scale) = p.input_sizes(a.sizes.input_size, a.sizes.scale_size)?;
    Ok((Pipeline::for_model(&p.config, size, scale, 1, 1), size as usize))
}

/// Clip `i` of `ds` through the model: its frames, its scores and its gated layers.
fn explain_clip(p: &Predictor, ds: &ClipDataset, i: usize, size: usize, device: &Device) -> Result<Explained> {
    let clip = ds.get(i, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    let t = p.config.segments;
    let x = Tensor::<4>::from_data(TensorData::new(clip.data.clone(), [1, t * 3, size, size]), device);
    let (logits, layers) = explain::forward(&p.model, x)?;
    let scores = burn::tensor::activation::softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let frames = gate_maps::frames(&clip.data, t, size, &p.config.arch.input());
    Ok(Explained { frames, scores, layers, label: clip.label })
}

struct Explained {
    frames: Vec<image::RgbImage>,
    scores: Vec<f32>,
    layers: Vec<Layer>,
    label: usize,
}

fn one_clip(
    a: &ExplainArgs,
    p: &Predictor,
    input: &Path,
    name: &dyn Fn(usize) -> String,
    device: &Device,
) -> Result<()> {
    let (pipeline, size) = pipeline(a, p)?;
    let entry = super::predict::entry_for(input, &a.frames)?;
    let list = List { file: input.to_path_buf(), format: ListFormat::Auto, entries: vec![entry] };
    let ds = ClipDataset { list, naming: a.frames.naming()?, pipeline };
    eprintln!("explaining {} with {} ({})", input.display(), a.checkpoint.display(), p.config.temporal.label());
    let e = explain_clip(p, &ds, 0, size, device)?;
    let top = gateshift::infer::metrics::argmax(&e.scores[..p.config.classes]);
    for half in 0..2 {
        gate_maps::grid(&e.frames, &e.layers, half, &a.out.join(format!("gates_half{}.png", half + 1)))?;
    }
    let video = gateshift::data::video::available();
    if video {
        gate_maps::strip(&e.frames, &e.layers, &a.out.join("gates.mp4"))?;
    }
    let json = json!({
        "input": input, "checkpoint": a.checkpoint, "model": p.config,
        "prediction": {"class": top, "label": name(top), "probability": e.scores[top]},
        "halves": explain::halves(p.config.causal), "layers": e.layers,
    });
    write_atomic(&a.out.join("gates.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let prediction = format!("{} ({:.1}%)", name(top), 100.0 * e.scores[top]);
    let report = report(a, input, &e.layers, &prediction, (video, p.config.causal));
    write_atomic(&a.out.join("report.md"), report.as_bytes())?;
    say!("{}", table(&e.layers, p.config.causal))?;
    say!("prediction: {} ({:.1}%) · report {}", name(top), 100.0 * e.scores[top], a.out.join("report.md").display())?;
    Ok(())
}

/// Per layer: module, map, mean |g| and routed share of each half.
fn table(layers: &[Layer], causal: bool) -> String {
    let [h1, h2] = explain::halves(causal);
    let mut t = format!(
        "| layer | channels | map | half 1 mean abs(g) | half 1 routed {h1} | half 2 mean abs(g) | half 2 routed {h2} |\n|---|---|---|---|---|---|---|\n"
    );
    for l in layers {
        let [b, f] = &l.halves;
        t.push_str(&format!(
            "| {} {} | {} | {}×{}×{} | {:.3} | {:.1}% | {:.3} | {:.1}% |\n",
            l.module,
            l.index,
            l.channels,
            l.frames,
            l.height,
            l.width,
            b.mean_abs_gate,
            100.0 * b.routed,
            f.mean_abs_gate,
            100.0 * f.routed
        ));
    }
    t
}

fn report(a: &ExplainArgs, input: &Path, layers: &[Layer], prediction: &str, (video, causal): (bool, bool)) -> String {
    let strip = if video { "\nThe gates frame by frame: [gates.mp4](gates.mp4).\n" } else { "" };
    let [h1, h2] = explain::halves(causal);
    format!(
        "# What the gates route\n\n`{}` through `{}`: predicted **{prediction}**.\n\n\
         Each gated layer splits its channels in two halves with a tanh gate map each; a half's gated \
         part `g·x` comes to frame t from another frame — half 1: {h1}, half 2: {h2} — and `x − g·x` \
         stays. Routed = Σ|g·x| / Σ|x| over the half's channels, frames and positions.\n\n\
         {}\n## Half 1: {h1}\n\nRed: positive gate, blue: negative; the stronger, the larger |g|.\n\n\
         ![gates, half 1](gates_half1.png)\n\n## Half 2: {h2}\n\n![gates, half 2](gates_half2.png)\n{strip}\n\
         Whether the model relies on frame order at all: `gateshift test --checkpoint {} --list LIST \
         --frame-order shuffle` reports the accuracy drop with shuffled frames.\n",
        input.display(),
        a.checkpoint.display(),
        table(layers, causal),
        a.checkpoint.display()
    )
}

fn over_list(
    a: &ExplainArgs,
    p: &Predictor,
    list_path: &Path,
    name: &dyn Fn(usize) -> String,
    device: &Device,
) -> Result<()> {
    let (pipeline, size) = pipeline(a, p)?;
    let root = a.root.clone().unwrap_or_else(|| list_path.parent().map(Path::to_path_buf).unwrap_or_default());
    let list = List::read(list_path, Some(&root), ListFormat::Auto, Some(p.config.classes))?;
    let ds = ClipDataset { list, naming: a.frames.naming()?, pipeline };
    let bar = gateshift::report::progress::progress_bar(true, ds.len() as u64, "explain");
    // Per class: clips seen and the summed routed share per layer and half.
    let mut sums: Vec<(usize, Vec<[f64; 2]>)> = vec![(0, Vec::new()); p.config.classes];
    for i in 0..ds.len() {
        let e = explain_clip(p, &ds, i, size, device)?;
        let (n, s) = &mut sums[e.label];
        s.resize(e.layers.len(), [0.0; 2]);
        for (acc, l) in s.iter_mut().zip(&e.layers) {
            *acc = [acc[0] + l.halves[0].routed, acc[1] + l.halves[1].routed];
        }
        *n += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut csv = String::from("class,name,clips,layer,routed_half1,routed_half2\n");
    let mut rows = Vec::new();
    for (c, (n, s)) in sums.iter().enumerate().filter(|(_, (n, _))| *n > 0) {
        let mean: Vec<[f64; 2]> = s.iter().map(|v| [v[0] / *n as f64, v[1] / *n as f64]).collect();
        for (l, m) in mean.iter().enumerate() {
            csv.push_str(&format!("{c},\"{}\",{n},{l},{:.6},{:.6}\n", name(c).replace('"', "\"\""), m[0], m[1]));
        }
        rows.push((name(c), mean));
    }
    write_atomic(&a.out.join("routing.csv"), csv.as_bytes())?;
    let halves = explain::halves(p.config.causal);
    gate_maps::routing_by_class(&rows, halves, &a.out.join("routing.png"))?;
    let table = class_table(&rows);
    let report = format!(
        "# What the gates route, by class\n\n`{}` through `{}`, one centre crop per clip. Routed = Σ|g·x| / Σ|x| \
         of a half (half 1: {}; half 2: {}), averaged over the class's clips.\n\n\
         {table}\n![routed share by layer and class](routing.png)\n\nPer clip: `gateshift explain CLIP --checkpoint {1} --out DIR`.\n",
        list_path.display(),
        a.checkpoint.display(),
        halves[0],
        halves[1]
    );
    write_atomic(&a.out.join("report.md"), report.as_bytes())?;
    say!("{table}")?;
    say!("wrote report.md, routing.csv and routing.png in {}", a.out.display())?;
    Ok(())
}

/// Routed % back / forward per class and layer.
fn class_table(rows: &[(String, Vec<[f64; 2]>)]) -> String {
    let layers = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let head: String = (0..layers).map(|l| format!(" layer {l} half 1 / 2 |")).collect();
    let mut t = format!("| class |{head}\n|---|{}\n", "---|".repeat(layers));
    for (class, v) in rows {
        let cells: String = v.iter().map(|m| format!(" {:.1}% / {:.1}% |", 100.0 * m[0], 100.0 * m[1])).collect();
        t.push_str(&format!("| {class} |{cells}\n"));
    }
    t
}
