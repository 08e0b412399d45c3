//! The Gate-Shift Module's two fused ops and its fused inference unit, as backend extensions
//! with hand-written backward: `gate_conv` (the grouped 3×3×3 gate convolution read straight
//! from ReLU(BN3d(x)) in the (B·T, C, H, W) layout) and `gate_shift` (tanh, gated shift,
//! residual, re-interleave in one pass); `unit` adds the BNs and activation around GSM in
//! inference. Routes: `flex.rs` (with the API and the autodiff registration), `tch.rs`
//! (libtorch CPU through `ops/gate_shift/gate_gemm.rs` / `kernels.rs`, CUDA through `cuda.rs`), `cube.rs` +
//! `cube_ops.rs` (CubeCL). The reference is `Gsm::shift_composed` and the Conv3d gate.

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube_ops;
#[cfg(feature = "tch")]
pub mod cuda;
mod flex;
pub mod gate_gemm;
pub mod kernels;
#[cfg(feature = "tch")]
pub mod tch;
pub mod unit;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};

pub use flex::{GateShift, GateShiftKernels};
pub use unit::{backbone_order, unit};

use crate::probe;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused path on or off process-wide (on by default; `bench --gsm composed` turns it
/// off to measure the reference).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether fused kernels exist for tensors of `dtype` on `device`: float32 on flex; with
/// `--features tch` float32 on libtorch's CPU, float32 and bfloat16 on its CUDA devices (where
/// NVRTC and the driver load); with `cuda` or `wgpu`, float32 on burn's CubeCL devices and
/// bfloat16 on CubeCL CUDA.
pub fn available(device: &Device, dtype: DType) -> bool {
    #[cfg(feature = "tch")]
    if matches!(dtype, DType::F32 | DType::BF16) && tch::available(device, dtype == DType::BF16) {
        return true;
    }
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let burn::backend::DispatchDevice::Cube(cube) = device.clone().inner().as_dispatch() {
        return dtype == DType::F32 || (dtype == DType::BF16 && matches!(cube, burn::backend::CubeDevice::Cuda(_)));
    }
    dtype == DType::F32 && *device == Device::flex()
}

/// Whether `Gsm::forward` takes the fused path for tensors like `x`: enabled and available.
pub fn applies(x: &Tensor<4>) -> bool {
    ENABLED.load(Ordering::Relaxed) && available(&x.device(), x.dtype())
}

/// The fused gate convolution on high-level tensors (float32 on flex, see [`applies`]).
pub fn gate_conv(r: Tensor<4>, weight: Tensor<5>, bias: Tensor<1>, segments: usize) -> Tensor<5> {
    let [_, c, h, w] = r.dims();
    let key = move |_: &Tensor<5>| (format!("gsm gate conv {c}>2 {h}x{w}"), 0.0);
    crate::ops::profile::timed(key, || {
        let (r, w, b) = (r.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
        Tensor::from_dispatch(<Dispatch as GateShift>::gate_conv(r, w, b, segments))
    })
}

/// The fused gated shift on high-level tensors (float32 on flex, see [`applies`]).
pub fn gate_shift(x: Tensor<4>, gate_logits: Tensor<5>, segments: usize) -> Tensor<4> {
    crate::ops::profile::timed_map(
        || "gsm gated shift".into(),
        x.dims(),
        || {
            let y = <Dispatch as GateShift>::gate_shift(x.into_dispatch(), gate_logits.into_dispatch(), segments);
            Tensor::from_dispatch(y)
        },
    )
}

/// Whether the fused unit runs for `x`: inference with the fused GSM enabled and no
/// activations probed (the unfused path taps GSM's own output), in float32 on flex or
/// libtorch's CPU, or float32 / bfloat16 on libtorch's CUDA devices (`cuda.rs`).
pub fn unit_applies(x: &Tensor<4>) -> bool {
    let device = x.device();
    !device.is_autodiff()
        && !probe::active()
        && applies(x)
        && ((x.dtype() == DType::F32 && (device == Device::flex() || unit::libtorch(&device, false)))
            || unit::libtorch(&device, true))
}
