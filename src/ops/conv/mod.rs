//! 2D and 3D convolution: which route runs a convolution, decided here. On flex in float32
//! the GEMM convolution (`gemm.rs`, with `im2col.rs`), which in inference can also apply the
//! ReLU / ReLU6 after a folded BN, add a residual, or read its input through TSM's shift;
//! with `--features tch` libtorch's convolution (`ops::torch`); burn's own convolution, the
//! reference, elsewhere.

pub mod gemm;
pub mod im2col;

use burn::nn::conv::{Conv2d, Conv3d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::ops::time_shift::{self, Shift};
use crate::ops::{clamp, profile};

/// `f()`, the convolution `weight` (Cout, C/groups, kh, kw) with `groups` and `stride` of
/// an input of dims `x`, timed in a profile (`ops::profile`) under its shapes.
fn profiled(
    weight: [usize; 4],
    groups: usize,
    stride: usize,
    x: [usize; 4],
    f: impl FnOnce() -> Tensor<4>,
) -> Tensor<4> {
    let [_, cin, h, w] = x;
    profile::timed(
        |y: &Tensor<4>| {
            let flops = profile::conv_flops(weight, y.shape().num_elements());
            (profile::conv_key(weight, groups, stride, cin, [h, w]), flops)
        },
        f,
    )
}

/// `conv(x)` on the fastest route that takes it.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    profiled(conv.weight.dims(), conv.groups, conv.stride[0], x.dims(), || conv2d_route(conv, x))
}

fn conv2d_route(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if let Some(g) = gemm::applies(conv, &x) {
        return gemm::conv2d(conv, g, x);
    }
    #[cfg(feature = "tch")]
    if let Some(g) = crate::ops::torch::geometry(conv)
        && crate::ops::torch::applies(&x)
    {
        return crate::ops::torch::conv2d(conv, g, x);
    }
    conv.forward(x)
}

/// `clamp(conv(x), 0, max)` for inference (ReLU with ∞, ReLU6 with 6): on flex the GEMMs clamp
/// each output tile as they write it; on libtorch cuDNN's fused convolution + ReLU where it
/// applies (`ops::torch::conv2d_relu`); else the convolution, then the clamp.
pub fn conv2d_clamp(conv: &Conv2d, x: Tensor<4>, max: f32) -> Tensor<4> {
    profiled(conv.weight.dims(), conv.groups, conv.stride[0], x.dims(), || conv2d_clamp_route(conv, x, max))
}

fn conv2d_clamp_route(conv: &Conv2d, x: Tensor<4>, max: f32) -> Tensor<4> {
    if let Some(g) = gemm::applies(conv, &x) {
        return gemm::conv2d(conv, g.clamped(max), x);
    }
    #[cfg(feature = "tch")]
    if max == f32::INFINITY
        && let Some(y) = crate::ops::torch::conv2d_relu(conv, &x)
    {
        return y;
    }
    clamp(conv2d(conv, x), max)
}

/// `ReLU(conv(x) + residual)` for inference: on flex one op, the residual and bias pre-filling
/// the output the GEMMs add to, clamped per tile.
pub fn conv2d_add_relu(conv: &Conv2d, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    profiled(conv.weight.dims(), conv.groups, conv.stride[0], x.dims(), || conv2d_add_relu_route(conv, x, residual))
}

fn conv2d_add_relu_route(conv: &Conv2d, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    if residual.device() == x.device()
        && residual.dtype() == x.dtype()
        && let Some(g) = gemm::applies(conv, &x)
    {
        return gemm::conv2d_residual_relu(conv, g, x, residual);
    }
    relu(conv2d(conv, x) + residual)
}

/// `conv(shift(x))` with `shift` read by the convolution itself where it can (a pointwise
/// convolution on flex: one GEMM per channel range, each reading the image the shift names,
/// forward and backward; the shifted map is never written), clamped at `max` if given.
/// `None` where no route does this: the caller shifts, then convolves.
pub fn conv2d_shifted(conv: &Conv2d, x: &Tensor<4>, shift: Shift, max: Option<f32>) -> Option<Tensor<4>> {
    if !time_shift::enabled() {
        return None;
    }
    let g = gemm::shifted(conv, gemm::applies(conv, x)?, shift)?;
    Some(profiled(conv.weight.dims(), conv.groups, conv.stride[0], x.dims(), || match max {
        Some(max) => gemm::conv2d(conv, g.clamped(max), x.clone()),
        None => gemm::conv2d(conv, g, x.clone()),
    }))
}

/// A bias-free 2D convolution with a weight computed rather than held by a layer (GST's 3D
/// kernel as three 2D ones): the GEMM convolution where it takes `x`, burn's otherwise.
pub fn conv2d_weight(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    profiled(weight.dims(), 1, stride, x.dims(), || conv2d_weight_route(x, weight, stride, padding))
}

fn conv2d_weight_route(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    if gemm::takes_input(&x) {
        return gemm::conv2d_weight(x, weight, stride, padding);
    }
    let options = burn::tensor::ops::ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
    burn::tensor::module::conv2d(x, weight, None, options)
}

/// `conv(x)` in 3D: the GEMM convolution where it takes `x`, burn's otherwise.
pub fn conv3d(conv: &Conv3d, x: Tensor<5>) -> Tensor<5> {
    let [_, cin, d, h, w] = x.dims();
    let [cout, cg, kd, kh, kw] = conv.weight.dims();
    profile::timed(
        |y: &Tensor<5>| {
            let flops = profile::conv_flops([cout, cg * kd, kh, kw], y.shape().num_elements());
            (format!("conv3d {kd}x{kh}x{kw}/{} {cin}>{cout} {d}x{h}x{w}", conv.stride[1]), flops)
        },
        || gemm::forward_3d(conv, x),
    )
}
