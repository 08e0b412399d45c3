//! Temporal Shift Module (Lin, Gan, Han, ICCV 2019): 1/`shift_div` of the channels take
//! the next frame's values, the next 1/`shift_div` the previous frame's, the rest stay;
//! zero padded at the clip ends. Exactly the official `TemporalShift.shift`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{from_future, from_past};

#[derive(Module, Debug)]
pub struct TemporalShift {
    pub num_segments: usize,
    pub shift_div: usize,
}

impl TemporalShift {
    pub fn new(num_segments: usize, shift_div: usize) -> Self {
        Self { num_segments, shift_div }
    }

    /// `(batch*segments, C, H, W)` → same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "TSM: {bt} frames is not a multiple of {t} segments");
        let fold = c / self.shift_div;
        if fold == 0 {
            return x;
        }
        let x = x.reshape([bt / t, t, c, h, w]);
        let left = from_future(x.clone().narrow(2, 0, fold), 1);
        let right = from_past(x.clone().narrow(2, fold, fold), 1);
        let rest = x.narrow(2, 2 * fold, c - 2 * fold);
        Tensor::cat(vec![left, right, rest], 2).reshape([bt, c, h, w])
    }
}
