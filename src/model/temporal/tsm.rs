//! Temporal Shift Module (Lin, Gan, Han, ICCV 2019): 1/`shift_div` of the channels take
//! the next frame's values, the next 1/`shift_div` the previous frame's, the rest stay;
//! zero padded at the clip ends. Exactly the official `TemporalShift.shift`. On `flex` in
//! float32 the shift is one op (`ops::time_shift`); the composed version is its reference.
//!
//! Causal (`--causal`, the uni-directional shift of TSM's online mode): the first
//! 1/`shift_div` of the channels take the previous frame's values (zero at the first frame),
//! the rest stay; online, the previous frame's come from `online`'s cache.

use burn::module::Module;
use burn::tensor::Tensor;

use burn::tensor::Device;

use super::module::{Place, Spec, TemporalModule, TemporalOpts, from_future, from_past};
use super::online;
use crate::ops::time_shift::{self, Shift};

#[derive(Module, Debug)]
pub struct TemporalShift {
    pub num_segments: usize,
    pub shift_div: usize,
    pub causal: bool,
}

impl TemporalShift {
    pub fn new(num_segments: usize, shift_div: usize) -> Self {
        Self { num_segments, shift_div, causal: false }
    }

    /// The shift this module makes on a map of `channels` channels.
    pub fn shift(&self, channels: usize) -> Shift {
        let fold = channels / self.shift_div;
        if self.causal { Shift::causal(self.num_segments, fold) } else { Shift::tsm(self.num_segments, fold) }
    }

    /// Whether a convolution may read its input through the shift (`ops::conv::conv2d_shifted`):
    /// not online, where the previous frame comes from the cache.
    pub fn readable_through(&self) -> bool {
        !(self.causal && online::active())
    }

    /// `(batch*segments, C, H, W)` → same shape; online, one frame per stream.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, ..] = x.dims();
        if c / self.shift_div == 0 {
            return x;
        }
        if self.causal && online::active() {
            return self.forward_online(x);
        }
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "TSM: {bt} frames is not a multiple of {t} segments");
        if time_shift::applies(&x) {
            return time_shift::time_shift(x, self.shift(c));
        }
        self.forward_composed(x)
    }

    /// The shift as burn ops: narrow, zero frame, concatenate (the reference of the fused op).
    pub fn forward_composed(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        let fold = c / self.shift_div;
        if fold == 0 {
            return x;
        }
        let x = x.reshape([bt / t, t, c, h, w]);
        if self.causal {
            let past = from_past(x.clone().narrow(2, 0, fold), 1);
            return Tensor::cat(vec![past, x.narrow(2, fold, c - fold)], 2).reshape([bt, c, h, w]);
        }
        let left = from_future(x.clone().narrow(2, 0, fold), 1);
        let right = from_past(x.clone().narrow(2, fold, fold), 1);
        let mut parts = vec![left, right];
        if c > 2 * fold {
            parts.push(x.narrow(2, 2 * fold, c - 2 * fold));
        }
        Tensor::cat(parts, 2).reshape([bt, c, h, w])
    }

    /// Causal, online: one frame per stream, the first channels from the previous frame's.
    fn forward_online(&self, x: Tensor<4>) -> Tensor<4> {
        let c = x.dims()[1];
        let fold = c / self.shift_div;
        let past = online::history(x.clone().narrow(1, 0, fold), 1).remove(0);
        Tensor::cat(vec![past, x.narrow(1, fold, c - fold)], 1)
    }
}

impl TemporalModule for TemporalShift {
    const SPEC: Spec = Spec { name: "tsm", label: "TSM", official: None, place: Place::Shift };

    fn build(_channels: usize, segments: usize, opts: TemporalOpts, _: &Device) -> Self {
        TemporalShift { causal: opts.causal, ..TemporalShift::new(segments, opts.shift_div) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        TemporalShift::forward(self, x)
    }
}
