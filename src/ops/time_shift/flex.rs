//! TSM's shift on `flex` as one op with its own backward: per output frame, three block
//! copies (the channels taken from the next frame, those from the previous one, the rest)
//! where the composed version (`tsm.rs`) narrows, makes zero frames and concatenates twice.
//! The backward is the adjoint shift of the output gradient, so nothing is kept for it.
//!
//! [`Shift`] also describes the shifted input of the GEMM convolution (`ops/conv/gemm.rs`), which
//! in ResNet's residual shift reads the shifted map without it ever being written.

use std::ops::Range;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::ops::flex_alloc;

/// A temporal shift of a `(B·T, C, H, W)` map: channels `[0, fold)` of frame t take frame
/// t + `steps[0]`, channels `[fold, 2·fold)` frame t + `steps[1]` (zero where that is outside
/// the clip), the rest stay. TSM's shift has steps (+1, −1); its adjoint (−1, +1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    pub segments: usize,
    pub fold: usize,
    pub steps: [isize; 2],
}

impl Shift {
    /// TSM's shift (`TemporalShift.shift` of the official code).
    pub fn tsm(segments: usize, fold: usize) -> Self {
        Self { segments, fold, steps: [1, -1] }
    }

    /// Causal TSM (online TSM's shift): the first `fold` channels from the previous frame, the
    /// rest kept.
    pub fn causal(segments: usize, fold: usize) -> Self {
        Self { segments, fold, steps: [-1, 0] }
    }

    /// The adjoint shift: what the gradient of a shifted map goes through.
    pub fn adjoint(self) -> Self {
        Self { steps: [-self.steps[0], -self.steps[1]], ..self }
    }

    /// For image `n` (clip-major, `segments` frames per clip) of a map of `channels`
    /// channels: each channel range and the image it is read from (`None`: zero).
    pub fn sources(&self, n: usize, channels: usize) -> [(Range<usize>, Option<usize>); 3] {
        let t = n % self.segments;
        let frame = |step: isize| {
            let s = t as isize + step;
            (0..self.segments as isize).contains(&s).then(|| (n as isize + step) as usize)
        };
        let f = self.fold;
        [(0..f, frame(self.steps[0])), (f..2 * f, frame(self.steps[1])), (2 * f..channels, Some(n))]
    }

    /// Panics unless a map of `images` images and `channels` channels can be shifted.
    pub fn check(&self, images: usize, channels: usize) {
        assert!(
            self.segments > 0 && images.is_multiple_of(self.segments),
            "TSM: {images} frames, {} segments",
            self.segments
        );
        assert!(2 * self.fold <= channels, "TSM: fold {} of {channels} channels", self.fold);
    }
}

/// Whether `TemporalShift::forward` takes the fused op for `x` ([`available`]).
pub fn applies(x: &Tensor<4>) -> bool {
    available(&x.device(), x.dtype())
}

/// Whether the fused shift runs on maps of `dtype` on `device`: float32 on flex, unless
/// `GATESHIFT_FUSED_TSM=0` (which also turns off the shifted convolution: `bench` compares
/// against the composed version that way).
pub fn available(device: &Device, dtype: DType) -> bool {
    enabled() && dtype == DType::F32 && crate::backend::is_flex(device)
}

/// `GATESHIFT_FUSED_TSM` is not `0`.
pub fn enabled() -> bool {
    crate::ops::route::switches().fused_tsm
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait TimeShift: Backend {
    /// `x` (B·T, C, H, W) → the same shape, shifted by `shift`.
    fn time_shift(x: FloatTensor<Self>, shift: Shift) -> FloatTensor<Self>;
}

/// The kernel a backend provides so that `Autodiff<B>` can differentiate the op.
pub trait TimeShiftKernels: Backend {
    fn time_shift_kernel(x: FloatTensor<Self>, shift: Shift) -> FloatTensor<Self>;
}

/// `x` shifted by `shift` in one pass (see [`applies`]).
pub fn time_shift(x: Tensor<4>, shift: Shift) -> Tensor<4> {
    crate::ops::profile::timed_map(
        || "time shift".into(),
        x.dims(),
        || Tensor::from_dispatch(<Dispatch as TimeShift>::time_shift(x.into_dispatch(), shift)),
    )
}

impl TimeShift for Flex {
    fn time_shift(x: FlexTensor, shift: Shift) -> FlexTensor {
        Self::time_shift_kernel(x, shift)
    }
}

impl TimeShiftKernels for Flex {
    fn time_shift_kernel(x: FlexTensor, shift: Shift) -> FlexTensor {
        assert!(x.dtype() == DType::F32, "TSM: fused shift is float32, got {:?}", x.dtype());
        let shape = x.layout().shape().clone();
        assert_eq!(shape.num_dims(), 4, "TSM: feature map must be 4-D, got {shape:?}");
        let (n, c) = (shape[0], shape[1]);
        shift.check(n, c);
        let x = x.to_contiguous();
        let xv = x.as_slice::<f32>().expect("contiguous float32 tensor");
        let mut y = flex_alloc::zeros(shape);
        let (image, plane) = (xv.len() / n.max(1), xv.len() / (n * c).max(1));
        if image > 0 {
            let out = y.storage_mut::<f32>();
            out.par_chunks_mut(image).enumerate().for_each(|(i, out)| {
                for (range, from) in shift.sources(i, c) {
                    let dst = &mut out[range.start * plane..range.end * plane];
                    // The output is zero-filled: a zero source needs no write.
                    if let Some(from) = from {
                        dst.copy_from_slice(&xv[from * image + range.start * plane..][..dst.len()]);
                    }
                }
            });
        }
        y
    }
}

#[derive(Debug)]
struct TimeShiftBackward;

impl<B: TimeShiftKernels> Backward<B, 1> for TimeShiftBackward {
    type State = Shift;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::time_shift_kernel(dy, ops.state.adjoint()));
        }
    }
}

impl<B: TimeShiftKernels, C: CheckpointStrategy> TimeShift for Autodiff<B, C> {
    fn time_shift(x: FloatTensor<Self>, shift: Shift) -> FloatTensor<Self> {
        let prep = TimeShiftBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let x = x.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => prep.finish(shift, B::time_shift_kernel(x, shift)),
            OpsKind::UnTracked(prep) => prep.finish(B::time_shift_kernel(x, shift)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor, TensorData};

    use super::*;
    use crate::model::temporal::TemporalShift;

    fn normal(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// One segment, odd planes, a fold of zero, several clips, all channels shifted.
    const CASES: [(usize, usize, usize, usize, usize, usize); 5] =
        [(2, 8, 16, 5, 7, 8), (1, 1, 8, 3, 3, 8), (3, 4, 12, 2, 3, 4), (1, 3, 5, 4, 4, 8), (2, 3, 4, 2, 2, 2)];

    #[test]
    fn forward_and_backward_match_the_composed_shift() {
        let device = Device::flex().autodiff();
        for (b, t, c, h, w, div) in CASES {
            let tsm = TemporalShift::new(t, div);
            let x = normal([b * t, c, h, w], &device);
            let dy = normal([b * t, c, h, w], &device);
            let run = |fused: bool| {
                let x = x.clone().require_grad();
                let y =
                    if fused { time_shift(x.clone(), Shift::tsm(t, c / div)) } else { tsm.forward_composed(x.clone()) };
                let g = (y.clone() * dy.clone()).sum().backward();
                (y.into_data(), x.grad(&g).expect("x is tracked").into_data())
            };
            let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
            // A shift only moves values: bit for bit.
            assert_eq!(y.as_slice::<f32>().unwrap(), y_ref.as_slice::<f32>().unwrap(), "{b}×{t}×{c}×{h}×{w}/{div}");
            assert_eq!(dx.as_slice::<f32>().unwrap(), dx_ref.as_slice::<f32>().unwrap(), "{b}×{t}×{c}×{h}×{w}/{div}");
        }
    }

    /// The shift against its definition, value by value, on a map of distinct values.
    #[test]
    fn shift_moves_each_channel_by_its_step() {
        let (t, c, hw) = (3, 8, 2);
        let x: Tensor<4> =
            Tensor::arange(0..(2 * t * c * hw) as i64, &Device::flex()).float().reshape([2 * t, c, 1, hw]);
        let y = time_shift(x, Shift::tsm(t, 2)).into_data();
        let y = y.as_slice::<f32>().unwrap();
        for n in 0..2 * t {
            for ch in 0..c {
                let from = match ch {
                    0..2 => (n % t + 1 < t).then_some(n + 1),
                    2..4 => (n % t > 0).then(|| n - 1),
                    _ => Some(n),
                };
                for p in 0..hw {
                    let expected = from.map_or(0.0, |m| ((m * c + ch) * hw + p) as f32);
                    assert_eq!(y[(n * c + ch) * hw + p], expected, "image {n}, channel {ch}");
                }
            }
        }
    }

    /// ResNet's residual shift (`layers::shift_conv_bn_relu`, the pointwise convolution reading
    /// the map through the shift) against the shift, then conv → BN → ReLU: a training step's
    /// output and gradients of x, the convolution and the BN, and folded inference.
    #[test]
    fn residual_shift_unit_matches_shifting_first() {
        use crate::model::layers::{BatchNorm, ConvSpec, conv_bn_relu, shift_conv_bn_relu};
        use burn::module::{Module, Param};
        let device = Device::flex().autodiff();
        let (b, t, c, o, h, w) = (2, 4, 16, 6, 5, 3);
        let tsm = TemporalShift::new(t, 8);
        let conv = ConvSpec::new(c, o, 1, 1, 0).init(&device);
        let mut bn = BatchNorm::new(o, &device);
        bn.weight = Param::from_tensor(normal([1, 1, 1, o], &device).reshape([o]));
        bn.bias = Param::from_tensor(normal([1, 1, 1, o], &device).reshape([o]));
        let x = normal([b * t, c, h, w], &device);
        let dy = normal([b * t, o, h, w], &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused {
                shift_conv_bn_relu(&tsm, &conv, &bn, x.clone())
            } else {
                conv_bn_relu(&conv, &bn, tsm.forward_composed(x.clone()))
            };
            let g = (y.clone() * dy.clone()).sum().backward();
            let grads = [
                x.grad(&g).map(|d| d.into_data()),
                conv.weight.grad(&g).map(|d| d.into_data()),
                bn.weight.grad(&g).map(|d| d.into_data()),
            ]
            .map(|d| d.expect("tracked"));
            (y.into_data(), grads)
        };
        let ((y, grads), (y_ref, grads_ref)) = (run(true), run(false));
        let rel = |a: TensorData, b: TensorData| {
            let (err, scale) = crate::parity::max_errors(&a, &b).expect("same shapes");
            err / scale
        };
        assert!(rel(y, y_ref) <= 1e-5);
        for (name, (g, g_ref)) in ["x", "conv weight", "bn weight"].into_iter().zip(grads.into_iter().zip(grads_ref)) {
            let e = rel(g, g_ref);
            assert!(e <= 1e-4, "gradient of {name}: rel {e:e}");
        }
        // Inference with the BN folded into the convolution, against the unfolded unit.
        let (mut conv, mut bn) = (conv.valid(), bn.valid());
        let x = x.inner();
        let reference = conv_bn_relu(&conv, &bn, tsm.forward_composed(x.clone()));
        bn.fold_into(&mut conv);
        assert!(rel(shift_conv_bn_relu(&tsm, &conv, &bn, x).into_data(), reference.into_data()) <= 1e-5);
    }

    /// On an autodiff device with nothing tracked the op still shifts (burn's untracked path),
    /// and bf16 maps are left to the composed shift.
    #[test]
    fn untracked_input_is_shifted_and_bf16_is_not_taken() {
        let device = Device::flex().autodiff();
        let x = normal([4, 8, 2, 2], &device);
        let y = time_shift(x.clone(), Shift::tsm(4, 1)).into_data();
        let reference = TemporalShift::new(4, 8).forward_composed(x).into_data();
        assert_eq!(y.as_slice::<f32>().unwrap(), reference.as_slice::<f32>().unwrap());
        assert!(applies(&normal([4, 8, 2, 2], &device)));
        assert!(!applies(&normal([4, 8, 2, 2], &Device::flex()).cast(DType::BF16)));
    }
}
