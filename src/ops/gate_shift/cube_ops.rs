//! Launching the CubeCL kernels of `ops/gate_shift/cube.rs` on burn's CubeCL tensors: the fused GSM's
//! `GateShiftKernels` (and so, through `Autodiff`, its training path) and `GateShift` for
//! burn's `Cube` backend. Inputs are made contiguous; outputs are fresh contiguous tensors.

use burn::backend::Cube;
use burn::backend::tensor::FloatTensor;
use burn::cubecl::calculate_cube_count_elemwise;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};
use burn_backend::cubecl::dtype_to_storage_type;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::cube::{
    CUBE_UNITS, ClipDimsLaunch, WEIGHT_CHUNKS, gate_conv_bwd_input, gate_conv_bwd_weight_finish,
    gate_conv_bwd_weight_partial, gate_conv_fwd, shift_bwd_gate, shift_bwd_input, shift_fwd,
};
use super::flex::GateShiftKernels;
use super::kernels::Dims;

fn dims(x: &CubeTensor, segments: usize) -> Dims {
    Dims::of_feature_map(x.meta.shape(), segments)
}

fn check(x: &CubeTensor, expected: &[usize], dtype: DType, what: &str) {
    assert_eq!(x.dtype, dtype, "fused GSM: {what} has another element type than the feature map");
    assert_eq!(x.meta.shape(), &Shape::from(expected.to_vec()), "fused GSM: {what} shape");
}

fn empty_like(x: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, dtype)
}

/// The launch grid for one unit per value of `n`.
fn elementwise(x: &CubeTensor, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(CUBE_UNITS);
    (calculate_cube_count_elemwise(&x.client, n, dim), dim)
}

fn clip(d: Dims) -> ClipDimsLaunch {
    ClipDimsLaunch::new(d.b, d.t, d.c, d.h, d.w)
}

impl GateShiftKernels for Cube {
    fn gate_conv_forward(r: CubeTensor, weight: CubeTensor, bias: CubeTensor, segments: usize) -> CubeTensor {
        let d = dims(&r, segments);
        let dtype = r.dtype;
        check(&weight, &[2, d.c / 2, 3, 3, 3], dtype, "gate weight");
        check(&bias, &[2], dtype, "gate bias");
        let (r, weight, bias) = (into_contiguous(r), into_contiguous(weight), into_contiguous(bias));
        let out = empty_like(&r, Shape::new([d.b, 2, d.t, d.h, d.w]), dtype);
        let (count, dim) = elementwise(&r, d.b * 2 * d.t * d.h * d.w);
        let client = r.client.clone();
        // SAFETY: every index a unit reads or writes is checked against the sizes passed, which
        // are those of the contiguous tensors bound.
        unsafe {
            gate_conv_fwd::launch_unchecked(
                &client,
                count,
                dim,
                r.into_tensor_arg(),
                weight.into_tensor_arg(),
                bias.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            )
        };
        out
    }

    fn gate_conv_backward(
        r: CubeTensor,
        weight: CubeTensor,
        da: CubeTensor,
        segments: usize,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let d = dims(&r, segments);
        let dtype = r.dtype;
        check(&weight, &[2, d.c / 2, 3, 3, 3], dtype, "gate weight");
        check(&da, &[d.b, 2, d.t, d.h, d.w], dtype, "gate gradient");
        let (r, weight, da) = (into_contiguous(r), into_contiguous(weight), into_contiguous(da));
        let client = r.client.clone();
        let dr = empty_like(&r, r.meta.shape().clone(), dtype);
        let (count, dim) = elementwise(&r, d.b * d.t * d.c * d.h * d.w);
        let partial = empty_like(&r, Shape::new([d.c * 28 * WEIGHT_CHUNKS as usize]), DType::F32);
        let dweight = empty_like(&r, Shape::new([2, d.c / 2, 3, 3, 3]), dtype);
        let dbias = empty_like(&r, Shape::new([2]), dtype);
        let (finish_count, finish_dim) = elementwise(&r, d.c * 27 + 2);
        // One cube column per weight and tap: 28·C cubes, within WebGPU's 65535 up to 2340 channels.
        let max_cubes = r.client.properties().hardware.max_cube_count.0 as usize;
        assert!(d.c * 28 <= max_cubes, "fused GSM: {} channels exceed the weight-gradient grid", d.c);
        // SAFETY: as in `gate_conv_forward`; the partial sums have one slot per (weight, cube).
        unsafe {
            gate_conv_bwd_input::launch_unchecked(
                &client,
                count,
                dim,
                da.clone().into_tensor_arg(),
                weight.into_tensor_arg(),
                dr.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            );
            gate_conv_bwd_weight_partial::launch_unchecked(
                &client,
                CubeCount::Static((d.c * 28) as u32, WEIGHT_CHUNKS, 1),
                CubeDim::new_1d(CUBE_UNITS),
                r.into_tensor_arg(),
                da.into_tensor_arg(),
                partial.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            );
            gate_conv_bwd_weight_finish::launch_unchecked(
                &client,
                finish_count,
                finish_dim,
                partial.into_tensor_arg(),
                dweight.clone().into_tensor_arg(),
                dbias.clone().into_tensor_arg(),
                d.c as u32,
                WEIGHT_CHUNKS,
                dtype_to_storage_type(dtype),
            );
        }
        (dr, dweight, dbias)
    }

    fn gate_shift_forward(x: CubeTensor, gate_logits: CubeTensor, segments: usize) -> CubeTensor {
        let d = dims(&x, segments);
        let dtype = x.dtype;
        check(&gate_logits, &[d.b, 2, d.t, d.h, d.w], dtype, "gate logits");
        let (x, a) = (into_contiguous(x), into_contiguous(gate_logits));
        let out = empty_like(&x, x.meta.shape().clone(), dtype);
        let (count, dim) = elementwise(&x, d.b * d.t * d.c * d.h * d.w);
        let client = x.client.clone();
        // SAFETY: as in `gate_conv_forward`.
        unsafe {
            shift_fwd::launch_unchecked(
                &client,
                count,
                dim,
                x.into_tensor_arg(),
                a.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            )
        };
        out
    }

    fn gate_shift_backward(
        x: CubeTensor,
        gate_logits: CubeTensor,
        dy: CubeTensor,
        segments: usize,
    ) -> (CubeTensor, CubeTensor) {
        let d = dims(&x, segments);
        let dtype = x.dtype;
        check(&gate_logits, &[d.b, 2, d.t, d.h, d.w], dtype, "gate logits");
        check(&dy, &[d.b * d.t, d.c, d.h, d.w], dtype, "output gradient");
        let (x, a, dy) = (into_contiguous(x), into_contiguous(gate_logits), into_contiguous(dy));
        let dx = empty_like(&x, x.meta.shape().clone(), dtype);
        let da = empty_like(&x, a.meta.shape().clone(), dtype);
        let (count_x, dim_x) = elementwise(&x, d.b * d.t * d.c * d.h * d.w);
        let (count_a, dim_a) = elementwise(&x, d.b * 2 * d.t * d.h * d.w);
        let client = x.client.clone();
        // SAFETY: as in `gate_conv_forward`.
        unsafe {
            shift_bwd_input::launch_unchecked(
                &client,
                count_x,
                dim_x,
                a.clone().into_tensor_arg(),
                dy.clone().into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            );
            shift_bwd_gate::launch_unchecked(
                &client,
                count_a,
                dim_a,
                x.into_tensor_arg(),
                a.into_tensor_arg(),
                dy.into_tensor_arg(),
                da.clone().into_tensor_arg(),
                clip(d),
                dtype_to_storage_type(dtype),
            );
        }
        (dx, da)
    }
}

impl super::flex::GateShift for Cube {
    fn gate_conv(
        r: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        segments: usize,
    ) -> FloatTensor<Self> {
        Self::gate_conv_forward(r, weight, bias, segments)
    }

    fn gate_shift(x: FloatTensor<Self>, gate_logits: FloatTensor<Self>, segments: usize) -> FloatTensor<Self> {
        Self::gate_shift_forward(x, gate_logits, segments)
    }
}

/// The CubeCL kernels against the flex ones (themselves tested against the composed reference
/// and the official fixture), forward and every gradient, on the CubeCL device this build has:
/// CUDA with `--features cuda`, else wgpu's preferred adapter (lavapipe on a machine without a
/// GPU). Run with `cargo test --release --features wgpu` (see `scripts/test-cubecl.sh`).
#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use crate::ops::gate_shift::{applies, gate_conv, gate_shift};
    use crate::parity::max_errors;

    const SHAPES: [(usize, usize, usize, usize, usize); 4] =
        [(2, 8, 16, 5, 7), (1, 3, 8, 4, 4), (3, 1, 12, 2, 3), (1, 16, 64, 7, 7)];

    fn cube_device() -> Device {
        let name = if cfg!(feature = "cuda") { "cuda" } else { "wgpu" };
        crate::backend::device(name).expect("CubeCL device")
    }

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = max_errors(&ours, &reference).expect("same shapes");
        err / scale
    }

    /// A random tensor on flex and the same values on `device`.
    fn pair<const D: usize>(shape: [usize; D], device: &Device) -> (Tensor<D>, Tensor<D>) {
        let flex = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex().autodiff());
        let cube = Tensor::from_data(flex.to_data(), &device.clone().autodiff());
        (flex, cube)
    }

    #[test]
    fn gate_shift_matches_flex() {
        let device = cube_device();
        for (b, t, c, h, w) in SHAPES {
            let (x, xc) = pair([b * t, c, h, w], &device);
            let (a, ac) = pair([b, 2, t, h, w], &device);
            let (dy, dyc) = pair([b * t, c, h, w], &device);
            assert!(applies(&xc), "fused path on {device:?}");
            let run = |x: Tensor<4>, a: Tensor<5>, dy: Tensor<4>| {
                let (x, a) = (x.require_grad(), a.require_grad());
                let y = gate_shift(x.clone(), a.clone(), t);
                let g = (y.clone() * dy).sum().backward();
                [y.into_data(), x.grad(&g).unwrap().into_data(), a.grad(&g).unwrap().into_data()]
            };
            let (f, cb) = (run(x, a, dy), run(xc, ac, dyc));
            let errs: Vec<f32> = f.into_iter().zip(cb).map(|(f, c)| rel(c, f)).collect();
            assert!(errs.iter().all(|&e| e <= 1e-5), "{b}×{t}×{c}×{h}×{w}: y, dx, da rel {errs:?}");
        }
    }

    #[test]
    fn gate_conv_matches_flex() {
        let device = cube_device();
        for (b, t, c, h, w) in SHAPES {
            let (r, rc) = pair([b * t, c, h, w], &device);
            let (wt, wtc) = pair([2, c / 2, 3, 3, 3], &device);
            let (bias, biasc) = pair([2], &device);
            let (da, dac) = pair([b, 2, t, h, w], &device);
            let run = |r: Tensor<4>, wt: Tensor<5>, bias: Tensor<1>, da: Tensor<5>| {
                let (r, wt, bias) = (r.require_grad(), wt.require_grad(), bias.require_grad());
                let a = gate_conv(r.clone(), wt.clone(), bias.clone(), t);
                let g = (a.clone() * da).sum().backward();
                [
                    a.into_data(),
                    r.grad(&g).unwrap().into_data(),
                    wt.grad(&g).unwrap().into_data(),
                    bias.grad(&g).unwrap().into_data(),
                ]
            };
            let (f, cb) = (run(r, wt, bias, da), run(rc, wtc, biasc, dac));
            let errs: Vec<f32> = f.into_iter().zip(cb).map(|(f, c)| rel(c, f)).collect();
            assert!(errs.iter().all(|&e| e <= 1e-5), "{b}×{t}×{c}×{h}×{w}: a, dr, dw, db rel {errs:?}");
        }
    }
}
