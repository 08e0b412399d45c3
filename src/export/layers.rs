//! The backbones' layers as ONNX nodes (`model/layers.rs`, burn's `nn`): convolutions (with
//! the BN already folded into them by `Recognizer::inference`), BatchNorms that could not fold
//! as one per-channel `Mul` + `Add`, and the poolings.

use anyhow::{Result, bail};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv3d};
use burn::nn::pool::{AvgPool2d, MaxPool2d};

use super::graph::{Attr, Graph, Value, host};
use crate::model::batch_norm::BatchNorm;

/// `conv(x)` with the convolution's own padding.
pub fn conv(g: &mut Graph, conv: &Conv2d, x: &Value) -> Result<Value> {
    let pads = match conv.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Same => bail!("ONNX export: a convolution with burn's `Same` padding"),
    };
    Ok(conv_padded(g, conv, x, pads))
}

/// `conv(x)` with `pads` (top, left, bottom, right).
pub fn conv_padded(g: &mut Graph, conv: &Conv2d, x: &Value, pads: [usize; 4]) -> Value {
    let [cout, _, kh, kw] = conv.weight.dims();
    let mut inputs = vec![x.name.clone(), g.tensor(conv.weight.val())];
    if let Some(b) = &conv.bias {
        inputs.push(g.tensor(b.val()));
    }
    let out = |n: i64, k: usize, s: usize, d: usize, p: usize| (n as usize + p - d * (k - 1) - 1) / s + 1;
    let (s, d) = (conv.stride, conv.dilation);
    let h = out(x.dims[2], kh, s[0], d[0], pads[0] + pads[2]);
    let w = out(x.dims[3], kw, s[1], d[1], pads[1] + pads[3]);
    let attrs = vec![
        ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
        ("strides", Attr::Ints(vec![s[0] as i64, s[1] as i64])),
        ("dilations", Attr::Ints(vec![d[0] as i64, d[1] as i64])),
        ("pads", Attr::Ints(pads.iter().map(|&p| p as i64).collect())),
        ("group", Attr::Int(conv.groups as i64)),
    ];
    let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    g.op("Conv", &names, attrs, vec![x.dims[0], cout as i64, h as i64, w as i64])
}

/// A 3×3×3 (or any odd-sized) 3-D convolution with "same" padding on `(B, C, T, H, W)`: the
/// gate convolution of GSM and GSF. `causal`: the time padding all before the clip, so the
/// taps read t−2, t−1, t (causal GSM).
pub fn conv3d(g: &mut Graph, conv: &Conv3d, x: &Value, causal: bool) -> Value {
    let [cout, _, kt, kh, kw] = conv.weight.dims();
    let mut inputs = vec![x.name.clone(), g.tensor(conv.weight.val())];
    if let Some(b) = &conv.bias {
        inputs.push(g.tensor(b.val()));
    }
    let (begin, end) = match causal {
        true => ([kt - 1, kh / 2, kw / 2], [0, kh / 2, kw / 2]),
        false => ([kt / 2, kh / 2, kw / 2], [kt / 2, kh / 2, kw / 2]),
    };
    let attrs = vec![
        ("kernel_shape", Attr::Ints(vec![kt as i64, kh as i64, kw as i64])),
        ("pads", Attr::Ints(begin.iter().chain(&end).map(|&p| p as i64).collect())),
        ("group", Attr::Int(conv.groups as i64)),
    ];
    let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut dims = x.dims.clone();
    dims[1] = cout as i64;
    g.op("Conv", &names, attrs, dims)
}

/// BN(x) on `(N, C, …)` with its running statistics: nothing once folded into the convolution
/// before it, otherwise `x · s + t` with s = γ/√(σ² + ε), t = β − μ·s computed in float64
/// (or γ, β themselves in affine form, `BatchNorm::into_affine`).
pub fn batch_norm(g: &mut Graph, bn: &BatchNorm, x: &Value) -> Value {
    if bn.folded {
        return x.clone();
    }
    let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let (gamma, beta) = (f64s(host(bn.weight.val())), f64s(host(bn.bias.val())));
    let (scale, shift): (Vec<f32>, Vec<f32>) = if bn.affine {
        (gamma.iter().map(|&v| v as f32).collect(), beta.iter().map(|&v| v as f32).collect())
    } else {
        let (mean, var) = (f64s(host(bn.running_mean.value())), f64s(host(bn.running_var.value())));
        let s: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + bn.epsilon).sqrt()).collect();
        let t = beta.iter().zip(&mean).zip(&s).map(|((b, m), s)| (b - m * s) as f32).collect();
        (s.into_iter().map(|v| v as f32).collect(), t)
    };
    // Per channel: shape (C, 1, …, 1) broadcasts against (N, C, …).
    let mut shape = vec![scale.len()];
    shape.extend(std::iter::repeat_n(1, x.dims.len() - 2));
    let (s, t) = (g.weight(&shape, scale), g.weight(&shape, shift));
    let scaled = g.op("Mul", &[&x.name, &s], vec![], x.dims.clone());
    g.op("Add", &[&scaled.name, &t], vec![], x.dims.clone())
}

/// `clamp(BN(conv(x)), 0, max)`.
pub fn conv_bn_clamp(g: &mut Graph, c: &Conv2d, bn: &BatchNorm, x: &Value, max: f32) -> Result<Value> {
    let y = conv(g, c, x)?;
    let y = batch_norm(g, bn, &y);
    Ok(g.clamp(&y, max))
}

/// The pooling attributes and output shape of a `k`×`k` window (PyTorch's ceil mode: a last
/// window that would start in the padding is dropped).
fn pool_attrs(
    x: &Value,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    ceil: bool,
) -> (Vec<(&'static str, Attr)>, Vec<i64>) {
    let out = |n: i64, k: usize, s: usize, p0: usize, p1: usize| {
        let span = n as usize + p0 + p1 - k;
        let mut o = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
        if ceil && (o - 1) * s >= n as usize + p0 {
            o -= 1;
        }
        o as i64
    };
    let dims = vec![
        x.dims[0],
        x.dims[1],
        out(x.dims[2], kernel[0], stride[0], pads[0], pads[2]),
        out(x.dims[3], kernel[1], stride[1], pads[1], pads[3]),
    ];
    let attrs = vec![
        ("kernel_shape", Attr::Ints(kernel.iter().map(|&k| k as i64).collect())),
        ("strides", Attr::Ints(stride.iter().map(|&s| s as i64).collect())),
        ("pads", Attr::Ints(pads.iter().map(|&p| p as i64).collect())),
        ("ceil_mode", Attr::Int(ceil as i64)),
    ];
    (attrs, dims)
}

fn pads_of(p: &PaddingConfig2d) -> Result<[usize; 4]> {
    match *p {
        PaddingConfig2d::Valid => Ok([0; 4]),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Ok([top, left, bottom, right]),
        PaddingConfig2d::Same => bail!("ONNX export: a pooling with burn's `Same` padding"),
    }
}

pub fn max_pool(g: &mut Graph, p: &MaxPool2d, x: &Value) -> Result<Value> {
    if p.dilation != [1, 1] {
        bail!("ONNX export: a dilated max pooling");
    }
    let (attrs, dims) = pool_attrs(x, p.kernel_size, p.stride, pads_of(&p.padding)?, p.ceil_mode);
    Ok(g.op("MaxPool", &[&x.name], attrs, dims))
}

pub fn avg_pool(g: &mut Graph, p: &AvgPool2d, x: &Value) -> Result<Value> {
    let (mut attrs, dims) = pool_attrs(x, p.kernel_size, p.stride, pads_of(&p.padding)?, p.ceil_mode);
    attrs.push(("count_include_pad", Attr::Int(p.count_include_pad as i64)));
    Ok(g.op("AveragePool", &[&x.name], attrs, dims))
}

/// The mean over the spatial positions, `(N, C, 1, 1)`.
pub fn global_mean(g: &mut Graph, x: &Value) -> Value {
    g.op("GlobalAveragePool", &[&x.name], vec![], vec![x.dims[0], x.dims[1], 1, 1])
}
