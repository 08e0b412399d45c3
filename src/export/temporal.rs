//! The temporal modules as standard ONNX operators, on `(B·T, C, H, W)` maps viewed as
//! `(B, T, C, H, W)`: shifts as `Slice` + `Pad` (zero frames at the clip's ends), GSM's and
//! GSF's gate as a grouped 3-D `Conv` on the `(B, C, T, H, W)` transpose, the re-interleave
//! as `Reshape` / `Transpose` / `Reshape`. Each follows its module's composed reference
//! (`Gsm::shift_composed`, `Gsf::fuse_composed`, `TemporalShift::forward_composed`).

use anyhow::{Result, bail};

use super::graph::{Graph, Value};
use super::layers::{batch_norm, conv, conv3d};
use crate::model::temporal::{Gsf, Gsm, Temporal, TemporalShift};

/// The module `t` on `x`; the modules without an export are refused by name.
/// Its nodes are named in the scope of the module's name (`gsm/conv_12`).
pub fn forward(g: &mut Graph, t: &Temporal, x: &Value) -> Result<Value> {
    match t {
        Temporal::Tsm(m) => Ok(g.scoped("tsm", |g| tsm(g, m, x))),
        Temporal::Gsm(m) => Ok(g.scoped("gsm", |g| gsm(g, m, x))),
        Temporal::Gsf(m) => g.scoped("gsf", |g| gsf(g, m, x)),
        other => bail!(
            "ONNX export of {} is not implemented (TSN, TSM, GSM and GSF export); run it with \
             `gateshift predict` / `stream` instead",
            other.spec().label
        ),
    }
}

/// `(B·T, C, H, W)` → `(B, T, C, H, W)`.
fn clip(g: &mut Graph, x: &Value, t: usize) -> Value {
    let d = &x.dims;
    g.reshape(x, vec![-1, t as i64, d[1], d[2], d[3]])
}

/// `(B, T, C, H, W)` → `(B·T, C, H, W)`.
fn frames(g: &mut Graph, x: &Value) -> Value {
    let d = &x.dims;
    g.reshape(x, vec![-1, d[2], d[3], d[4]])
}

/// `x` (`(B, T, …)`) one frame to the past (frame t takes frame t+1, zero last) or, with
/// `from_future` false, to the future (frame t takes t−1, zero first).
fn shift_time(g: &mut Graph, x: &Value, from_future: bool) -> Value {
    let t = x.dim(1);
    if t == 1 {
        // Every frame takes one from outside the clip: zeros.
        return g.binary("Sub", x, x);
    }
    if from_future {
        let kept = g.slice(x, 1, 1, t);
        g.pad(&kept, 1, 0, 1)
    } else {
        let kept = g.slice(x, 1, 0, t - 1);
        g.pad(&kept, 1, 1, 0)
    }
}

/// TSM: the first C/div channels from t+1, the next C/div from t−1, the rest kept (causal:
/// the first C/div from t−1, the rest kept).
pub fn tsm(g: &mut Graph, m: &TemporalShift, x: &Value) -> Value {
    let c = x.dim(1);
    let fold = c / m.shift_div;
    if fold == 0 {
        return x.clone();
    }
    let x5 = clip(g, x, m.num_segments);
    if m.causal {
        let past = g.slice(&x5, 2, 0, fold);
        let past = shift_time(g, &past, false);
        let rest = g.slice(&x5, 2, fold, c);
        let y = g.concat(&[past, rest], 2);
        return frames(g, &y);
    }
    let left = g.slice(&x5, 2, 0, fold);
    let left = shift_time(g, &left, true);
    let right = g.slice(&x5, 2, fold, 2 * fold);
    let right = shift_time(g, &right, false);
    let mut parts = vec![left, right];
    if c > 2 * fold {
        parts.push(g.slice(&x5, 2, 2 * fold, c));
    }
    let y = g.concat(&parts, 2);
    frames(g, &y)
}

/// The gate of GSM and GSF: tanh of the grouped 3-D convolution on ReLU(BN3d(x)), as
/// `(B, T, 2, H, W)`; `causal`: its temporal taps on t−2, t−1, t.
fn gate(
    g: &mut Graph,
    bn: &crate::model::batch_norm::BatchNorm,
    conv: &burn::nn::conv::Conv3d,
    x: &Value,
    t: usize,
    causal: bool,
) -> Value {
    let r = batch_norm(g, bn, x);
    let r = g.clamp(&r, f32::INFINITY);
    let r = clip(g, &r, t);
    let r = g.transpose(&r, &[0, 2, 1, 3, 4]);
    let logits = conv3d(g, conv, &r, causal);
    let gate = g.unary("Tanh", &logits);
    g.transpose(&gate, &[0, 2, 1, 3, 4])
}

/// One half's gated part and residual: `(g·x shifted, x − g·x)`.
fn gated_parts(g: &mut Graph, x: &Value, gate: &Value, from_future: bool) -> (Value, Value) {
    let y = g.binary("Mul", x, gate);
    let residual = g.binary("Sub", x, &y);
    (shift_time(g, &y, from_future), residual)
}

/// Within a half `(B, T, C', H, W)`: channels viewed as (2, C'/4·2) → (C'/2, 2).
fn interleave(g: &mut Graph, z: &Value) -> Value {
    let d = z.dims.clone();
    let v = g.reshape(z, vec![-1, d[1], 2, d[2] / 2, d[3] * d[4]]);
    let v = g.transpose(&v, &[0, 1, 3, 2, 4]);
    g.reshape(&v, vec![-1, d[1], d[2], d[3], d[4]])
}

/// GSM: half 1's gated part from t+1, half 2's from t−1, residuals stay, halves
/// re-interleaved; causal GSM (`Gsm::causal`) as its own composition.
pub fn gsm(g: &mut Graph, m: &Gsm, x: &Value) -> Value {
    let (t, c) = (m.num_segments, x.dim(1));
    let gate = gate(g, &m.bn, &m.conv3D, x, t, m.causal);
    let x5 = clip(g, x, t);
    let mut halves = Vec::new();
    // Half 1's gated part from t+1 (causal: t−1), half 2's from t−1.
    for (k, from_future) in [(0, !m.causal), (1, false)] {
        let xk = g.slice(&x5, 2, k * c / 2, (k + 1) * c / 2);
        let gk = g.slice(&gate, 2, k, k + 1);
        let (shifted, residual) = gated_parts(g, &xk, &gk, from_future);
        let z = g.binary("Add", &shifted, &residual);
        halves.push(interleave(g, &z));
    }
    let y = g.concat(&halves, 2);
    frames(g, &y)
}

/// GSF: on the first `gsf_plane` channels, GSM's gated shift whose shifted and residual parts
/// each half fuses as `w·shifted + (1 − w)·residual`, `w` the sigmoid of a 3×3 convolution
/// over (channels, time) of their spatial means; the other channels pass.
pub fn gsf(g: &mut Graph, m: &Gsf, x: &Value) -> Result<Value> {
    let (t, c, cg) = (m.num_segments, x.dim(1), m.gsf_plane);
    let gated = if cg < c { g.slice(x, 1, 0, cg) } else { x.clone() };
    let gate = gate(g, &m.bn, &m.conv3D, &gated, t, false);
    let x5 = clip(g, &gated, t);
    let half = cg / 2;
    let mut halves = Vec::new();
    for (k, from_future, fuse) in [(0, true, &m.channel_conv1), (1, false, &m.channel_conv2)] {
        let xk = g.slice(&x5, 2, k * half, (k + 1) * half);
        let gk = g.slice(&gate, 2, k, k + 1);
        let (shifted, residual) = gated_parts(g, &xk, &gk, from_future);
        // Spatial means (B, T, C') → (B, 1, C', T), the two stacked as channels.
        let mut means = Vec::new();
        for v in [&shifted, &residual] {
            let mean = g.reduce_mean(v, &[3, 4], false);
            let mean = g.transpose(&mean, &[0, 2, 1]);
            means.push(g.reshape(&mean, vec![-1, 1, half as i64, t as i64]));
        }
        let map = g.concat(&means, 1);
        let w = conv(g, fuse, &map)?;
        let w = g.unary("Sigmoid", &w);
        let w = g.reshape(&w, vec![-1, half as i64, t as i64]);
        let w = g.transpose(&w, &[0, 2, 1]);
        let w = g.reshape(&w, vec![-1, t as i64, half as i64, 1, 1]);
        let one = g.scalar(1.0);
        let keep = g.op("Sub", &[&one, &w.name], vec![], w.dims.clone());
        let a = g.binary("Mul", &shifted, &w);
        let b = g.binary("Mul", &residual, &keep);
        let z = g.binary("Add", &a, &b);
        halves.push(interleave(g, &z));
    }
    let y = g.concat(&halves, 2);
    let y = frames(g, &y);
    if cg < c {
        let rest = g.slice(x, 1, cg, c);
        return Ok(g.concat(&[y, rest], 1));
    }
    Ok(y)
}
