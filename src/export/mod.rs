//! ONNX export (`gateshift export`): a recognizer as one standard ONNX graph that ONNX Runtime,
//! OpenVINO or TensorRT run without gateshift. The graph is built beside the model, unit by
//! unit (`backbone/*.rs` mirror `model/backbone/*.rs`, `temporal.rs` the temporal modules'
//! composed references); BatchNorms are already folded into the convolutions by
//! `Recognizer::inference`, and the ones a temporal module separates from their convolution
//! become one per-channel `Mul` + `Add`. Only standard operators of opset 17; no custom domain.
//!
//! The graph takes what `Recognizer::forward` takes — `frames`, float32 `(batch, segments ·
//! frames-per-segment · 3, H, W)`, normalised as the backbone wants (recorded in the metadata)
//! — and gives `logits` `(batch, classes)`, the mean of the segments' scores (with EPIC's
//! noun head, `noun_logits` too), and `frame_scores` `(batch, segments, all classes)`.

mod backbone;
pub mod graph;
mod layers;
mod temporal;
mod units;

use anyhow::{Result, bail};
use serde_json::json;

use crate::model::{ModelConfig, Recognizer};
use graph::{Graph, Value};

/// What the exported graph takes and records.
pub struct Export<'a> {
    /// The model's configuration (stored as the `gateshift.model` property).
    pub config: &'a ModelConfig,
    /// Input side (the crop size the model was trained with).
    pub size: usize,
    /// A fixed batch size, or `None` for a dynamic one.
    pub batch: Option<usize>,
    /// Class names (the `gateshift.classes` property, a JSON list), if known.
    pub classes: Option<&'a [String]>,
}

/// The serialised ONNX model of `model` (best in inference form, `Recognizer::inference`).
pub fn onnx(model: &Recognizer, e: &Export) -> Result<Vec<u8>> {
    if let Some(b) = e.batch.filter(|&b| b == 0 || b > crate::limits::MAX_BATCH) {
        bail!("--batch {b}: must be 1 to {}", crate::limits::MAX_BATCH);
    }
    e.config.arch.check_input_size(e.size)?;
    let mut g = Graph::default();
    let (t, size) = (model.num_segments as i64, e.size as i64);
    let per_segment = model.input.channels_per_segment() as i64;
    let batch = e.batch.map_or(-1, |b| b as i64);
    let input = Value { name: "frames".into(), dims: vec![batch, t * per_segment, size, size] };
    let frames = match model.input.modality {
        crate::model::Modality::Rgbdiff => differences(&mut g, &input, model.input.length, size),
        _ => g.reshape(&input, vec![-1, model.input.backbone_channels() as i64, size, size]),
    };
    let features = backbone::forward(&mut g, &model.base_model, &frames)?;
    let f = features.dims[1];
    let features = g.reshape(&features, vec![-1, f]);
    let classes = model.new_fc.weight.dims()[1] as i64;
    let w = g.tensor(model.new_fc.weight.val());
    let mut inputs = vec![features.name.clone(), w];
    if let Some(b) = &model.new_fc.bias {
        inputs.push(g.tensor(b.val()));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let scores = g.op("Gemm", &inputs, vec![], vec![-1, classes]);
    let scores = g.reshape(&scores, vec![-1, t, classes]);
    let logits = g.reduce_mean(&scores, &[1], false);
    let scores = named(&mut g, &scores, "frame_scores", vec![batch, t, classes]);
    // EPIC's two heads share `new_fc`: verbs first, then nouns, each its own output.
    let nouns = e.config.noun_classes;
    let verbs = classes as usize - nouns;
    let mut outputs = vec![];
    if nouns > 0 {
        let (v, n) = (g.slice(&logits, 1, 0, verbs), g.slice(&logits, 1, verbs, verbs + nouns));
        outputs.push(named(&mut g, &v, "logits", vec![batch, verbs as i64]));
        outputs.push(named(&mut g, &n, "noun_logits", vec![batch, nouns as i64]));
    } else {
        outputs.push(named(&mut g, &logits, "logits", vec![batch, classes]));
    }
    outputs.push(scores);
    let outputs: Vec<&Value> = outputs.iter().collect();
    let model = g.model(&input, &outputs, &metadata(e, model)?);
    graph::encode(&model)
}

/// `x` under the graph output name `name`.
fn named(g: &mut Graph, x: &Value, name: &str, dims: Vec<i64>) -> Value {
    let y = g.unary("Identity", x);
    g.rename(&y, name, dims)
}

/// TSN's RGB difference (`model::modality::differences`): `(B, T·(L+1)·3, H, W)` →
/// `(B·T, 3·L, H, W)`.
fn differences(g: &mut Graph, x: &Value, l: usize, size: i64) -> Value {
    let frames = g.reshape(x, vec![-1, l as i64 + 1, 3, size, size]);
    let later = g.slice(&frames, 1, 1, l + 1);
    let earlier = g.slice(&frames, 1, 0, l);
    let d = g.binary("Sub", &later, &earlier);
    g.reshape(&d, vec![-1, 3 * l as i64, size, size])
}

/// The model's properties: its configuration, class names and input convention.
fn metadata(e: &Export, model: &Recognizer) -> Result<Vec<(String, String)>> {
    use crate::checkpoint::metadata::{CLASSES, MODEL};
    let spec = e.config.arch.input();
    let order = if spec.bgr { "BGR" } else { "RGB" };
    let per_segment = model.input.frames_per_segment();
    let layout = match model.input.planes_per_frame() {
        2 => "(batch, segments * frames_per_segment * 2 (flow x, y), height, width), float32",
        _ => "(batch, segments * frames_per_segment * 3, height, width), float32",
    };
    let input = json!({
        "name": "frames",
        "layout": layout,
        "segments": model.num_segments,
        "frames_per_segment": per_segment,
        "modality": e.config.modality.name(),
        "size": e.size,
        "pixel_range": spec.range,
    });
    let mut input = input;
    if model.input.planes_per_frame() == 2 {
        let (mean, std) = spec.flow();
        input["mean"] = json!([mean]);
        input["std"] = json!([std]);
        input["normalise"] = json!(format!(
            "x = (pixel / 255 * {} - mean) / std for the x and y planes of data extract-flow's JPEGs",
            spec.range
        ));
    } else {
        input["channel_order"] = json!(order);
        input["mean"] = json!(spec.mean);
        input["std"] = json!(spec.std);
        input["normalise"] =
            json!(format!("x = (pixel / 255 * {} - mean) / std, channels in {order} order", spec.range));
    }
    let mut props = vec![
        (MODEL.to_string(), serde_json::to_string(e.config)?),
        ("gateshift.input".to_string(), input.to_string()),
        (
            "gateshift.output".to_string(),
            "logits (batch, classes): the mean over the segments of frame_scores (batch, segments, classes); \
             softmax for probabilities"
                .to_string(),
        ),
    ];
    if let Some(names) = e.classes {
        props.push((CLASSES.to_string(), serde_json::to_string(names)?));
    }
    Ok(props)
}
