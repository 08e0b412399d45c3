//! `demo --two-stream`: the two-stream baseline GSM's paper sets itself against, on the demo's
//! time-reversal pairs. TV-L1 flow of every clip (`data extract-flow`), a TSN flow stream
//! trained with the demo's recipe (`--modality flow`, 5 fields per segment), late fusion with
//! the RGB TSN (RGB : flow = 1 : 1.5, as TSN fuses them), and each design's cost per clip with
//! the flow it needs computed, not assumed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Tensor;
use gateshift::data::rawframes::read_rgb;
use gateshift::data::{ClipDataset, FrameOrder, sampling};
use gateshift::flow::{TvL1, grey};
use gateshift::infer::{EvalOptions, Options, Predictor};
use gateshift::model::Modality;
use gateshift::train::config::TrainConfig;
use gateshift::train::trainer::{self, Outcome};

use super::extract_flow::ExtractFlowArgs;

/// TSN's late-fusion weights: RGB 1, flow 1.5.
const FLOW_WEIGHT: f32 = 1.5;
/// Flow fields per segment (TSN's `new_length` for flow).
const NEW_LENGTH: usize = 5;

/// An RGB model of the demo, as the two-stream table shows it.
pub struct RgbRow {
    pub name: String,
    pub normal: f64,
    pub shuffled: f64,
    pub infer_ms: f64,
}

/// What the two-stream part starts from: the demo's data and its RGB TSN run.
pub struct Setup<'a> {
    pub out: &'a Path,
    pub data_dir: &'a Path,
    /// The RGB TSN's training configuration and checkpoint.
    pub tsn: &'a TrainConfig,
    pub tsn_checkpoint: PathBuf,
    /// The demo's RGB rows (TSN first), shown beside the flow and two-stream rows.
    pub rgb: Vec<RgbRow>,
    pub train: fn(&TrainConfig, &Path) -> Result<(Outcome, f64)>,
}

/// Runs the two-stream comparison and returns its Markdown section.
pub fn run(s: Setup) -> Result<String> {
    let flow_dir = s.data_dir.join("flow");
    eprintln!("[two-stream] TV-L1 flow of every clip into {}", flow_dir.display());
    let fresh = !flow_dir.join("val.txt").exists();
    let t0 = Instant::now();
    for split in ["train", "val"] {
        extract(&s.data_dir.join(format!("{split}.txt")), &flow_dir, &flow_dir.join(format!("{split}.txt")))?;
    }
    let extraction = t0.elapsed().as_secs_f64();
    let mut cfg = s.tsn.clone();
    (cfg.model.net.modality, cfg.model.net.new_length) = (Modality::Flow, NEW_LENGTH);
    cfg.data.train_list = flow_dir.join("train.txt");
    cfg.data.val_list = Some(flow_dir.join("val.txt"));
    eprintln!("[two-stream] training the TSN flow stream");
    (s.train)(&cfg, &s.out.join("tsn-flow"))?;
    let rgb = open(&s.tsn_checkpoint, s.tsn)?;
    let flow = open(&s.out.join("tsn-flow").join("last.safetensors"), &cfg)?;
    let mut orders = Vec::new();
    for order in [FrameOrder::Normal, FrameOrder::Shuffle] {
        let (r, f) = (scores(&rgb, s.tsn, order)?, scores(&flow, &cfg, order)?);
        let same = r.len() == f.len() && r.iter().zip(&f).all(|(a, b)| a.0 == b.0);
        if !same {
            anyhow::bail!("the RGB and flow validation lists differ: fusion needs the same clips in the same order");
        }
        orders.push([accuracy(&r, None), accuracy(&f, None), accuracy(&r, Some(&f))]);
    }
    let flow_ms = flow_cost_ms(s.tsn, cfg.model.net.segments)?;
    let flow_net_ms = infer_ms(&flow.0, &cfg)?;
    let rgb_tsn_ms = s.rgb.first().map_or(f64::NAN, |r| r.infer_ms);
    let mut table = String::from(
        "| model | input | val top-1 | within its pair | val top-1, shuffled frames | flow ms/clip | network ms/clip | total ms/clip |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut row = |name: &str, input: &str, acc: (f64, f64), pair: Option<f64>, cost: (f64, f64)| {
        let pair = pair.map_or("—".to_string(), |p| format!("{:.1}%", 100.0 * p));
        let (flow, net) = cost;
        table.push_str(&format!(
            "| {name} | {input} | {:.1}% | {pair} | {:.1}% | {flow:.0} | {net:.1} | {:.1} |\n",
            100.0 * acc.0,
            100.0 * acc.1,
            flow + net
        ));
    };
    let first = s.rgb.first().ok_or_else(|| anyhow::anyhow!("no RGB TSN row"))?;
    let within = |k: usize| Some(orders[0][k].1);
    let shuffled = |k: usize| (orders[0][k].0, orders[1][k].0);
    row("TSN ResNet-Mini", "RGB", (first.normal, first.shuffled), within(0), (0.0, first.infer_ms));
    row("TSN ResNet-Mini", "flow (TV-L1)", shuffled(1), within(1), (flow_ms, flow_net_ms));
    let both = (flow_ms, rgb_tsn_ms + flow_net_ms);
    row("two-stream TSN ResNet-Mini (1 : 1.5)", "RGB + flow", shuffled(2), within(2), both);
    for r in s.rgb.iter().skip(1) {
        row(&format!("{} ResNet-Mini", r.name), "RGB", (r.normal, r.shuffled), None, (0.0, r.infer_ms));
    }
    let extraction = if fresh {
        format!("Extracting the flow of every clip took {extraction:.0} s here on every core.")
    } else {
        "The flow was extracted by an earlier run (its folders are kept).".to_string()
    };
    Ok(format!(
        "## Two-stream\n\n{table}\n\
         The flow stream is TSN with {NEW_LENGTH} stacked TV-L1 fields (x, y) per segment, its first convolution\n\
         10 channels wide, trained with the RGB models' recipe (`--modality flow`). Two-stream: the RGB and flow\n\
         TSNs' scores fused 1 : {FLOW_WEIGHT}. Within its pair: how often the true class scores above its\n\
         time-reversed twin (chance: 50%). Flow ms/clip: TV-L1 (OpenCV's defaults) of the fields one test clip\n\
         samples, on one thread, median of 3 validation clips; network ms/clip: one clip's forward pass.\n\
         {extraction}\n"
    ))
}

/// `data extract-flow LIST --out DIR --out-list OUT_LIST` with its defaults.
fn extract(list: &Path, dir: &Path, out_list: &Path) -> Result<()> {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        args: ExtractFlowArgs,
    }
    let argv = [Path::new("extract-flow"), list, Path::new("--out"), dir, Path::new("--out-list"), out_list];
    super::extract_flow::run(<Flags as clap::Parser>::try_parse_from(argv)?.args)
}

/// A run's trained checkpoint for inference, with its validation set.
fn open(checkpoint: &Path, cfg: &TrainConfig) -> Result<(Predictor, Arc<ClipDataset>)> {
    let device = gateshift::backend::device(&cfg.backend)?;
    let data = trainer::load_data(cfg)?;
    let model = cfg.model_config(data.classes);
    let p = Predictor::open(checkpoint, Options::default(), &device, |_| Ok(model.clone()))?;
    Ok((p, data.val.ok_or_else(|| anyhow::anyhow!("the demo run has no validation list"))?))
}

/// Every validation clip's (label, logits) in `order`.
fn scores(run: &(Predictor, Arc<ClipDataset>), cfg: &TrainConfig, order: FrameOrder) -> Result<Vec<(usize, Vec<f32>)>> {
    let mut ds = (*run.1).clone();
    ds.pipeline.order = order;
    let options = EvalOptions { batch_size: 16, workers: cfg.data.workers, seed: cfg.seed, ..Default::default() };
    Ok(run.0.evaluate(Arc::new(ds), &options)?.scores.into_iter().map(|(_, label, s)| (label, s)).collect())
}

/// Top-1 of `a`, or of `a` fused with `flow` (RGB 1 : flow 1.5; the lists are the same clips),
/// and how often the true class scores above its twin in the reversal pair (classes 2k and
/// 2k + 1).
fn accuracy(a: &[(usize, Vec<f32>)], flow: Option<&[(usize, Vec<f32>)]>) -> (f64, f64) {
    let (mut top1, mut pair) = (0, 0);
    for (i, (label, s)) in a.iter().enumerate() {
        let fused: Vec<f32> = match flow {
            Some(f) => s.iter().zip(&f[i].1).map(|(r, f)| r + FLOW_WEIGHT * f).collect(),
            None => s.clone(),
        };
        top1 += (gateshift::infer::metrics::argmax(&fused) == *label) as usize;
        pair += (fused[*label] > fused[*label ^ 1]) as usize;
    }
    let n = a.len().max(1) as f64;
    (top1 as f64 / n, pair as f64 / n)
}

/// One clip's forward pass of the model, median of five after one warm-up.
fn infer_ms(p: &Predictor, cfg: &TrainConfig) -> Result<f64> {
    let size = cfg.input_size() as usize;
    let x = Tensor::<4>::zeros([1, cfg.model.net.input_channels(), size, size], &p.device);
    let time = || {
        let t0 = Instant::now();
        let _ = p.model.forward(x.clone()).into_data();
        t0.elapsed().as_secs_f64() * 1e3
    };
    time();
    let mut v: Vec<f64> = (0..5).map(|_| time()).collect();
    v.sort_by(f64::total_cmp);
    Ok(v[2])
}

/// TV-L1 of the distinct fields a test clip of `segments` segments samples, on one thread:
/// the median over the first 3 validation clips, in milliseconds.
fn flow_cost_ms(rgb: &TrainConfig, segments: usize) -> Result<f64> {
    let data = trainer::load_data(rgb)?;
    let val = data.val.ok_or_else(|| anyhow::anyhow!("the demo run has no validation list"))?;
    let solver = TvL1::default();
    let mut times = Vec::new();
    for e in val.list.entries.iter().take(3) {
        let fields = e.num_frames.unwrap_or(0).saturating_sub(1);
        let starts = sampling::tsn_test(fields, segments, NEW_LENGTH);
        let mut wanted = sampling::consecutive(&starts, NEW_LENGTH, fields);
        wanted.sort_unstable();
        wanted.dedup();
        let frame = |i: usize| read_rgb(&val.naming.path(&e.path, e.start, i)).map(|img| grey(&img));
        let t0 = Instant::now();
        for &i in &wanted {
            let _ = solver.flow(&frame(i)?, &frame(i + 1)?);
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
}
