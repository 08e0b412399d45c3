//! What a gated layer routed in one forward (`gateshift explain`): the records `infer::explain`
//! measures and `report::gate_maps` draws.

use serde::Serialize;

/// Where each half's gated part comes from, in the official order: GSM's (and GSF's), or
/// causal GSM's (`--causal`: both from the frame before).
pub fn halves(causal: bool) -> [&'static str; 2] {
    if causal {
        ["forward in time (from t-1; causal)", "forward in time (from t-1; causal)"]
    } else {
        ["back in time (from t+1)", "forward in time (from t-1)"]
    }
}

/// One gated layer of a forward.
#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// `gsm` or `gsf`, and its position among the network's gated layers (0-based).
    pub module: String,
    pub index: usize,
    /// Gated channels (both halves), frames, and the map's height and width.
    pub channels: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Per half.
    pub halves: [Half; 2],
    /// The first clip's tanh gates, `(2, T, H, W)` (not in the JSON: the images show them).
    #[serde(skip)]
    pub gate: Vec<f32>,
}

/// A half's gates over a batch.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Half {
    pub mean_gate: f64,
    pub mean_abs_gate: f64,
    /// `Σ|g·x| / Σ|x|`, and the same per frame.
    pub routed: f64,
    pub routed_per_frame: Vec<f64>,
}
