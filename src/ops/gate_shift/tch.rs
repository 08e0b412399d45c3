//! The fused GSM on burn's libtorch backend (`--features tch`): libtorch's float32 CPU tensors
//! go through the CPU kernels of `ops/gate_shift/kernels.rs`, its float32 and bfloat16 CUDA tensors
//! through the NVRTC kernels of `ops/gate_shift/cuda.rs`. Outputs are libtorch tensors allocated on the
//! input's device, of the input's dtype.

// burn 0.22 marks its libtorch backend deprecated (in favour of CubeCL, whose CUDA build is
// not possible offline); it is the backend this file extends.
#![allow(deprecated)]

use burn::backend::libtorch::TchTensor;
use burn::backend::{DispatchDevice, LibTorch, LibTorchDevice};
use burn::tensor::Device;
use tch::{Device as TchDevice, Kind, Tensor};

use super::cuda::{self, Elem, Kernels};
use super::flex::{GateShift, GateShiftKernels};
use super::gate_gemm::{self, Layout};
use super::kernels::{self as kernels, Affine, Dims};
use super::unit::GateShiftUnit;
use crate::ops::torch::{is_channels_last, to_channels_last};

/// Whether the fused kernels run on this libtorch device for float32 (`bf16 == false`) or
/// bfloat16: float32 always on CPU; both on a GPU when the CUDA kernels compiled and loaded
/// (otherwise says why, once, and GSM runs composed).
pub fn available(device: &Device, bf16: bool) -> bool {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::LibTorch(LibTorchDevice::Cpu) => !bf16,
        DispatchDevice::LibTorch(LibTorchDevice::Cuda(i)) => match cuda::kernels(*i) {
            Ok(_) => true,
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| eprintln!("fused GSM unavailable on cuda:{i}, running it composed: {e}"));
                false
            }
        },
        _ => false,
    }
}

impl GateShift for LibTorch {
    fn gate_conv(r: TchTensor, weight: TchTensor, bias: TchTensor, segments: usize) -> TchTensor {
        Self::gate_conv_forward(r, weight, bias, segments)
    }

    fn gate_shift(x: TchTensor, gate_logits: TchTensor, segments: usize) -> TchTensor {
        Self::gate_shift_forward(x, gate_logits, segments)
    }
}

impl GateShiftKernels for LibTorch {
    fn gate_conv_forward(r: TchTensor, weight: TchTensor, bias: TchTensor, segments: usize) -> TchTensor {
        if let Some((r, d)) = cpu_channels_last(&r, segments) {
            let w = operand(&weight, &[2, d.c as i64 / 2, 3, 3, 3], Kind::Float, "gate weight");
            let b = operand(&bias, &[2], Kind::Float, "gate bias");
            let out = Tensor::empty(gate_shape(d), (Kind::Float, TchDevice::Cpu));
            torch_pool(|| gate_gemm::forward(d, Layout::ChannelsLast, cpu_any(&r), cpu(&w), cpu(&b), cpu_mut(&out)));
            return TchTensor::new(out);
        }
        let (r, d, e) = feature_map(&r, segments);
        let w = operand(&weight, &[2, d.c as i64 / 2, 3, 3, 3], r.kind(), "gate weight");
        let b = operand(&bias, &[2], r.kind(), "gate bias");
        let out = Tensor::empty(gate_shape(d), (r.kind(), r.device()));
        match on(&r) {
            None => torch_pool(|| gate_gemm::forward(d, Layout::Nchw, cpu(&r), cpu(&w), cpu(&b), cpu_mut(&out))),
            Some(k) => k.gate_conv_forward(d, e, ptr(&r), ptr(&w), ptr(&b), ptr(&out)),
        }
        TchTensor::new(out)
    }

    fn gate_conv_backward(
        r: TchTensor,
        weight: TchTensor,
        da: TchTensor,
        segments: usize,
    ) -> (TchTensor, TchTensor, TchTensor) {
        let (r, d, e) = feature_map(&r, segments);
        let w = operand(&weight, &[2, d.c as i64 / 2, 3, 3, 3], r.kind(), "gate weight");
        let da = operand(&da, &gate_shape(d), r.kind(), "gate gradient");
        let dr = Tensor::empty(r.size(), (r.kind(), r.device()));
        let (dw, db) = match on(&r) {
            None => {
                let (dw, db) = torch_pool(|| gate_gemm::backward(d, cpu(&r), cpu(&w), cpu(&da), cpu_mut(&dr)));
                (Tensor::from_slice(&dw).reshape(w.size()), Tensor::from_slice(&db))
            }
            Some(k) => {
                // Accumulated atomically in float32, then given the inputs' dtype.
                let dw = Tensor::zeros(w.size(), (Kind::Float, r.device()));
                let db = Tensor::zeros([2], (Kind::Float, r.device()));
                k.gate_conv_backward(d, e, [ptr(&r), ptr(&w), ptr(&da)], [ptr(&dr), ptr(&dw), ptr(&db)]);
                (dw.to_kind(r.kind()), db.to_kind(r.kind()))
            }
        };
        (TchTensor::new(dr), TchTensor::new(dw), TchTensor::new(db))
    }

    fn gate_shift_forward(x: TchTensor, gate_logits: TchTensor, segments: usize) -> TchTensor {
        if let Some((x, d)) = cpu_channels_last(&x, segments) {
            let a = operand(&gate_logits, &gate_shape(d), Kind::Float, "gate logits");
            let [n, c, h, w] = [0, 1, 2, 3].map(|i| x.size()[i]);
            let y = Tensor::empty([n, h, w, c], (Kind::Float, TchDevice::Cpu)).permute([0, 3, 1, 2]);
            torch_pool(|| kernels::shift_forward_nhwc(d, cpu_any(&x), cpu(&a), None, cpu_mut_any(&y)));
            return TchTensor::new(y);
        }
        let channels_last = is_channels_last(&x.tensor);
        let (x, d, e) = feature_map(&x, segments);
        let a = operand(&gate_logits, &gate_shape(d), x.kind(), "gate logits");
        let y = Tensor::empty(x.size(), (x.kind(), x.device()));
        match on(&x) {
            None => torch_pool(|| kernels::shift_forward(d, cpu(&x), cpu(&a), None, cpu_mut(&y))),
            Some(k) => k.shift_forward(d, e, ptr(&x), ptr(&a), ptr(&y)),
        }
        // The kernels work in NCHW; a channels-last input (`ops::torch::channels_last`) gets
        // its order back, so that the BN, ReLU and concatenation after GSM stay channels-last
        // (a mixed concatenation would come out NCHW and every branch of the next block would
        // convert it again).
        TchTensor::new(if channels_last { to_channels_last(&y) } else { y })
    }

    fn gate_shift_backward(
        x: TchTensor,
        gate_logits: TchTensor,
        dy: TchTensor,
        segments: usize,
    ) -> (TchTensor, TchTensor) {
        let (x, d, e) = feature_map(&x, segments);
        let a = operand(&gate_logits, &gate_shape(d), x.kind(), "gate logits");
        let dy = operand(&dy, &x.size(), x.kind(), "output gradient");
        let dx = Tensor::empty(x.size(), (x.kind(), x.device()));
        let da = Tensor::empty(a.size(), (x.kind(), x.device()));
        match on(&x) {
            None => torch_pool(|| kernels::shift_backward(d, cpu(&x), cpu(&a), cpu(&dy), cpu_mut(&dx), cpu_mut(&da))),
            Some(k) => k.shift_backward(d, e, [ptr(&x), ptr(&a), ptr(&dy)], [ptr(&dx), ptr(&da)]),
        }
        (TchTensor::new(dx), TchTensor::new(da))
    }
}

impl GateShiftUnit for LibTorch {
    fn channels_last(x: TchTensor) -> TchTensor {
        TchTensor::new(to_channels_last(&x.tensor))
    }

    fn gsm_unit(
        x: TchTensor,
        gate_weight: TchTensor,
        gate_bias: TchTensor,
        scale: TchTensor,
        shift: TchTensor,
        post_scale: TchTensor,
        post_shift: TchTensor,
        max: f32,
        segments: usize,
    ) -> TchTensor {
        if let (TchDevice::Cuda(_), true) = (x.tensor.device(), is_channels_last(&x.tensor)) {
            // Two passes over the channels-last map, no conversion to NCHW and back.
            let x = x.tensor;
            let (d, e, kind) = (map_dims(&x, segments), elem(&x), x.kind());
            let w = operand(&gate_weight, &[2, d.c as i64 / 2, 3, 3, 3], kind, "gate weight");
            let b = operand(&gate_bias, &[2], kind, "gate bias");
            let [s, sh, ps, pb] =
                [(&scale, "scale"), (&shift, "shift"), (&post_scale, "post scale"), (&post_shift, "post shift")]
                    .map(|(v, what)| cuda_operand(v, d, &x, what));
            let gates = Tensor::empty(gate_shape(d), (Kind::Float, x.device()));
            let y = empty_like_order(&x, true);
            let inputs = [&x, &w, &b, &s, &sh].map(ptr);
            on(&x).expect("a CUDA tensor").unit_nhwc((d, e), inputs, [ptr(&ps), ptr(&pb)], [ptr(&gates), ptr(&y)], max);
            return TchTensor::new(y);
        }
        let r = Self::affine_act(x.clone(), scale, shift, f32::INFINITY, segments);
        let gate_logits = Self::gate_conv_forward(r, gate_weight, gate_bias, segments);
        Self::gate_shift_affine(x, gate_logits, post_scale, post_shift, max, segments)
    }

    fn affine_act(x: TchTensor, scale: TchTensor, shift: TchTensor, max: f32, segments: usize) -> TchTensor {
        if let TchDevice::Cuda(_) = x.tensor.device() {
            // NCHW, which the gate convolution's CUDA kernel reads next.
            let (x, d, e) = feature_map(&x, segments);
            let (scale, shift) = (cuda_operand(&scale, d, &x, "scale"), cuda_operand(&shift, d, &x, "shift"));
            let y = Tensor::empty(x.size(), (x.kind(), x.device()));
            on(&x).expect("a CUDA tensor").affine_act(d, e, [ptr(&x), ptr(&scale), ptr(&shift)], ptr(&y), max);
            return TchTensor::new(y);
        }
        let (x, d, channels_last) = cpu_map(&x, segments);
        let (scale, shift) = (unit_operand(&scale, d, "scale"), unit_operand(&shift, d, "shift"));
        let out = empty_like_order(&x, channels_last);
        let a = Affine { scale: cpu(&scale), shift: cpu(&shift), max };
        torch_pool(|| kernels::affine_act(d, cpu_any(&x), &a, channels_last, cpu_mut_any(&out)));
        TchTensor::new(out)
    }

    fn gate_shift_affine(
        x: TchTensor,
        gate_logits: TchTensor,
        scale: TchTensor,
        shift: TchTensor,
        max: f32,
        segments: usize,
    ) -> TchTensor {
        if let TchDevice::Cuda(_) = x.tensor.device() {
            let channels_last = is_channels_last(&x.tensor);
            let (x, d, e) = feature_map(&x, segments);
            let a = operand(&gate_logits, &gate_shape(d), x.kind(), "gate logits");
            let (scale, shift) = (cuda_operand(&scale, d, &x, "scale"), cuda_operand(&shift, d, &x, "shift"));
            let y = Tensor::empty(x.size(), (x.kind(), x.device()));
            let k = on(&x).expect("a CUDA tensor");
            k.shift_forward_affine(d, e, [ptr(&x), ptr(&a), ptr(&scale), ptr(&shift)], ptr(&y), max);
            // Back to the backbone's memory order, as `gate_shift_forward` does.
            return TchTensor::new(if channels_last { to_channels_last(&y) } else { y });
        }
        let (x, d, channels_last) = cpu_map(&x, segments);
        let a = operand(&gate_logits, &gate_shape(d), Kind::Float, "gate logits");
        let (scale, shift) = (unit_operand(&scale, d, "scale"), unit_operand(&shift, d, "shift"));
        let y = empty_like_order(&x, channels_last);
        let post = Affine { scale: cpu(&scale), shift: cpu(&shift), max };
        torch_pool(|| {
            if channels_last {
                kernels::shift_forward_nhwc(d, cpu_any(&x), cpu(&a), Some(&post), cpu_mut_any(&y))
            } else {
                kernels::shift_forward(d, cpu(&x), cpu(&a), Some(&post), cpu_mut(&y))
            }
        });
        TchTensor::new(y)
    }
}

/// A float32 CPU feature map for the unit's kernels: channels-last as it is, else
/// contiguous; its sizes, and which of the two it is.
fn cpu_map(x: &TchTensor, segments: usize) -> (Tensor, Dims, bool) {
    if let Some((x, d)) = cpu_channels_last(x, segments) {
        return (x, d, true);
    }
    let (x, d, e) = feature_map(x, segments);
    assert!(x.device() == TchDevice::Cpu && e == Elem::F32, "fused GSM unit: float32 CPU tensors only");
    (x, d, false)
}

/// A per-channel vector of the unit on a GPU, in the feature map's dtype, checked.
fn cuda_operand(v: &TchTensor, d: Dims, x: &Tensor, what: &str) -> Tensor {
    operand(v, &[d.c as i64], x.kind(), what)
}

/// A per-channel float32 vector of the unit, checked.
fn unit_operand(x: &TchTensor, d: Dims, what: &str) -> Tensor {
    operand(x, &[d.c as i64], Kind::Float, what)
}

/// An uninitialised tensor of `x`'s sizes, kind and device, channels-last or contiguous.
fn empty_like_order(x: &Tensor, channels_last: bool) -> Tensor {
    let options = (x.kind(), x.device());
    if channels_last {
        let [n, c, h, w] = [0, 1, 2, 3].map(|i| x.size()[i]);
        Tensor::empty([n, h, w, c], options).permute([0, 3, 1, 2])
    } else {
        Tensor::empty(x.size(), options)
    }
}

/// The contiguous feature map `(B·T, C, H, W)`, its sizes and element type (float32, or
/// bfloat16 on a GPU).
fn feature_map(x: &TchTensor, segments: usize) -> (Tensor, Dims, Elem) {
    let x = x.tensor.contiguous();
    let (d, e) = (map_dims(&x, segments), elem(&x));
    (x, d, e)
}

/// The sizes of a feature map `(B·T, C, H, W)`.
fn map_dims(x: &Tensor, segments: usize) -> Dims {
    let s: Vec<usize> = x.size().iter().map(|&v| v as usize).collect();
    Dims::of_feature_map(&s, segments)
}

/// The kernels' element type for `x`: float32, or bfloat16 on a GPU.
fn elem(x: &Tensor) -> Elem {
    match (x.kind(), x.device()) {
        (Kind::Float, _) => Elem::F32,
        (Kind::BFloat16, TchDevice::Cuda(_)) => Elem::Bf16,
        (kind, device) => panic!("fused GSM: no kernels for {kind:?} on {device:?}"),
    }
}

/// A float32 CPU feature map stored channels-last, and its sizes: the NHWC forward kernels
/// read it as it is (libtorch's CPU inference, `ops::torch::channels_last`).
fn cpu_channels_last(x: &TchTensor, segments: usize) -> Option<(Tensor, Dims)> {
    let x = &x.tensor;
    if x.device() != TchDevice::Cpu || x.kind() != Kind::Float || !is_channels_last(x) {
        return None;
    }
    let s: Vec<usize> = x.size().iter().map(|&v| v as usize).collect();
    Some((x.shallow_clone(), Dims::of_feature_map(&s, segments)))
}

/// Another input, contiguous, checked for dtype and shape.
fn operand(x: &TchTensor, shape: &[i64], kind: Kind, what: &str) -> Tensor {
    let x = x.tensor.contiguous();
    assert_eq!(x.kind(), kind, "fused GSM: {what} dtype");
    assert_eq!(x.size(), shape, "fused GSM: {what} shape");
    x
}

fn gate_shape(d: Dims) -> Vec<i64> {
    [d.b, 2, d.t, d.h, d.w].iter().map(|&v| v as i64).collect()
}

/// Runs CPU kernels on libtorch's intra-op thread pool (`torch_autograd::parallel_for`).
fn torch_pool<R>(f: impl FnOnce() -> R) -> R {
    kernels::on_pool(crate::ops::torch::shim::parallel_for, f)
}

/// `None` for a CPU tensor, the loaded CUDA kernels for a GPU one.
fn on(x: &Tensor) -> Option<std::sync::Arc<Kernels>> {
    match x.device() {
        TchDevice::Cpu => None,
        TchDevice::Cuda(i) => Some(cuda::kernels(i).unwrap_or_else(|e| panic!("{e}"))),
        other => panic!("fused GSM: no kernels for libtorch device {other:?}"),
    }
}

fn cpu(x: &Tensor) -> &[f32] {
    assert!(x.is_contiguous() && x.kind() == Kind::Float && x.device() == TchDevice::Cpu);
    // SAFETY: a contiguous float32 CPU tensor holds `numel` floats at `data_ptr`; the slice
    // borrows the tensor, which keeps the storage alive.
    unsafe { std::slice::from_raw_parts(x.data_ptr() as *const f32, x.numel()) }
}

#[allow(clippy::mut_from_ref)]
fn cpu_mut(x: &Tensor) -> &mut [f32] {
    assert!(x.is_contiguous() && x.kind() == Kind::Float && x.device() == TchDevice::Cpu);
    // SAFETY: as `cpu`; only called on tensors freshly allocated by this file, which no other
    // slice or tensor aliases.
    unsafe { std::slice::from_raw_parts_mut(x.data_ptr() as *mut f32, x.numel()) }
}

/// The storage of a dense float32 CPU tensor in its memory order (contiguous or
/// channels-last), starting at its first element.
fn cpu_any(x: &Tensor) -> &[f32] {
    assert!((x.is_contiguous() || is_channels_last(x)) && x.kind() == Kind::Float && x.device() == TchDevice::Cpu);
    // SAFETY: a dense (contiguous or channels-last) float32 CPU tensor holds `numel` floats
    // from `data_ptr`, in its memory order; the slice borrows the tensor.
    unsafe { std::slice::from_raw_parts(x.data_ptr() as *const f32, x.numel()) }
}

#[allow(clippy::mut_from_ref)]
fn cpu_mut_any(x: &Tensor) -> &mut [f32] {
    assert!((x.is_contiguous() || is_channels_last(x)) && x.kind() == Kind::Float && x.device() == TchDevice::Cpu);
    // SAFETY: as `cpu_any`; only called on tensors freshly allocated by this file.
    unsafe { std::slice::from_raw_parts_mut(x.data_ptr() as *mut f32, x.numel()) }
}

fn ptr(x: &Tensor) -> cuda::Ptr {
    x.data_ptr() as cuda::Ptr
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor as BurnTensor};

    use crate::model::temporal::Gsm;
    use crate::parity::max_errors;

    /// On libtorch's CPU, the fused path (the shared CPU kernels on libtorch memory) against
    /// the composed one: output and the gradients of x, the gate conv and the BN.
    #[test]
    fn libtorch_cpu_fused_matches_composed() {
        let device = burn::tensor::Device::libtorch().autodiff();
        assert!(super::available(&device, false) && !super::available(&device, true));
        let (b, t, c, h, w) = (2, 8, 32, 6, 5);
        let mut gsm = Gsm::new(c, t, &device);
        gsm.conv3D.weight =
            Param::from_tensor(BurnTensor::random([2, c / 2, 3, 3, 3], Distribution::Normal(0.0, 0.2), &device));
        let x: BurnTensor<4> = BurnTensor::random([b * t, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let dy: BurnTensor<4> = BurnTensor::random([b * t, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = gsm.forward_path(x.clone(), fused);
            let g = (y.clone() * dy.clone()).sum().backward();
            let w = gsm.conv3D.weight.grad(&g).unwrap().into_data();
            let bn = gsm.bn.weight.grad(&g).unwrap().into_data();
            [y.into_data(), x.grad(&g).unwrap().into_data(), w, bn]
        };
        for (i, (f, c)) in run(true).iter().zip(run(false).iter()).enumerate() {
            let (err, scale) = max_errors(f, c).unwrap();
            assert!(err / scale <= 1e-5, "quantity {i}: rel {:e}", err / scale);
        }
    }

    /// A channels-last feature map gives the same gate logits and shifted output, the latter
    /// returned channels-last (on the CPU: the NHWC kernels, no conversion).
    #[test]
    fn channels_last_input_keeps_its_order() {
        use super::*;
        let (b, t, c, h, w) = (2i64, 4i64, 8i64, 5i64, 3i64);
        let opts = (Kind::Float, TchDevice::Cpu);
        let x = Tensor::randn([b * t, c, h, w], opts);
        let a = Tensor::randn([b, 2, t, h, w], opts);
        let shift = |x: &Tensor| {
            let y = <LibTorch as GateShiftKernels>::gate_shift_forward(
                TchTensor::new(x.shallow_clone()),
                TchTensor::new(a.shallow_clone()),
                t as usize,
            );
            y.tensor
        };
        let (y, y_cl) = (shift(&x), shift(&to_channels_last(&x)));
        assert!(is_channels_last(&y_cl) && !is_channels_last(&y));
        assert_eq!(f64::try_from((&y_cl - &y).abs().max()).unwrap(), 0.0);
        let weight = Tensor::randn([2, c / 2, 3, 3, 3], opts);
        let bias = Tensor::randn([2], opts);
        let gate = |r: &Tensor| {
            let w = TchTensor::new(weight.shallow_clone());
            <LibTorch as GateShiftKernels>::gate_conv_forward(
                TchTensor::new(r.shallow_clone()),
                w,
                TchTensor::new(bias.shallow_clone()),
                t as usize,
            )
            .tensor
        };
        let (a, a_cl) = (gate(&x), gate(&to_channels_last(&x)));
        let err = f64::try_from((&a_cl - &a).abs().max()).unwrap() / f64::try_from(a.abs().max()).unwrap();
        assert!(err <= 1e-6, "gate logits rel {err:e}");
    }

    /// The unit's ops on libtorch's CPU, NCHW and channels-last: `affine_act` is
    /// clamp(s·x + b, 0, max) per channel, `gate_shift_affine` is the same map on the shift's
    /// output; channels-last stays channels-last with the same values.
    #[test]
    fn unit_ops_in_both_memory_orders() {
        use super::*;
        let (b, t, c, h, w) = (2i64, 4i64, 8i64, 5i64, 3i64);
        let opts = (Kind::Float, TchDevice::Cpu);
        let x = Tensor::randn([b * t, c, h, w], opts);
        let a = Tensor::randn([b, 2, t, h, w], opts);
        let (scale, shift) = (Tensor::randn([c], opts), Tensor::randn([c], opts));
        let max = 1.5f32;
        let tt = |t: &Tensor| TchTensor::new(t.shallow_clone());
        let per_channel = |v: &Tensor| v.view([1, c, 1, 1]);
        let expected = (&x * per_channel(&scale) + per_channel(&shift)).clamp(0.0, max as f64);
        let shifted = <LibTorch as GateShiftKernels>::gate_shift_forward(tt(&x), tt(&a), t as usize).tensor;
        let expected_shift = (&shifted * per_channel(&scale) + per_channel(&shift)).clamp(0.0, max as f64);
        for input in [x.shallow_clone(), to_channels_last(&x)] {
            let cl = is_channels_last(&input) && !input.is_contiguous();
            let r = <LibTorch as GateShiftUnit>::affine_act(tt(&input), tt(&scale), tt(&shift), max, t as usize).tensor;
            let y = <LibTorch as GateShiftUnit>::gate_shift_affine(
                tt(&input),
                tt(&a),
                tt(&scale),
                tt(&shift),
                max,
                t as usize,
            )
            .tensor;
            assert_eq!(is_channels_last(&r) && !r.is_contiguous(), cl);
            assert_eq!(is_channels_last(&y) && !y.is_contiguous(), cl);
            assert!(f64::try_from((&r - &expected).abs().max()).unwrap() <= 1e-6, "affine_act, channels-last {cl}");
            assert!(f64::try_from((&y - &expected_shift).abs().max()).unwrap() <= 1e-6, "shift, channels-last {cl}");
        }
    }
}
