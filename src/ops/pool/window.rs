//! A pooling window and its axes (sizes, valid input ranges, PyTorch's output rounding and
//! divisors), shared by the row-wise passes (`flex.rs`) and the whole-plane ones (`flat.rs`).

/// What a window reduces to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Max,
    /// The mean; the divisor counts the padded positions inside the window if `count_include_pad`.
    Avg {
        count_include_pad: bool,
    },
}

/// A pooling window: kernel, stride, symmetric padding (rows, columns), output rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub reduce: Reduce,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
}

/// PyTorch's output size along one axis. A kernel larger than the padded input leaves one
/// window over what there is in ceil mode and none otherwise (as burn and PyTorch).
fn output_size(input: usize, kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> usize {
    assert!(kernel > 0 && stride > 0, "pool: kernel and stride must be positive");
    if input + 2 * pad < kernel {
        return usize::from(ceil_mode && input > 0);
    }
    let span = input + 2 * pad - kernel;
    if !ceil_mode {
        return span / stride + 1;
    }
    let out = span.div_ceil(stride) + 1;
    if (out - 1) * stride >= input + pad { out - 1 } else { out }
}

/// One axis of a window: input size, kernel, stride, padding and output size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    pub(super) input: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) output: usize,
}

impl Axis {
    pub(super) fn new(input: usize, kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> Self {
        Self { input, kernel, stride, pad, output: output_size(input, kernel, stride, pad, ceil_mode) }
    }
    /// The input positions window `o` covers (never empty: a window starting in the trailing
    /// padding is dropped by [`output_size`]).
    pub(super) fn valid(&self, o: usize) -> std::ops::Range<usize> {
        let start = o * self.stride;
        start.saturating_sub(self.pad)..(start + self.kernel).saturating_sub(self.pad).min(self.input)
    }
    /// The window's length inside the padded input (PyTorch's divisor with the padding counted).
    pub(super) fn padded_len(&self, o: usize) -> usize {
        self.kernel.min(self.input + 2 * self.pad - o * self.stride)
    }
    /// Length of a row padded on both sides so that every window indexes inside it.
    pub(super) fn padded_row(&self) -> usize {
        (self.input + 2 * self.pad).max(self.output.saturating_sub(1) * self.stride + self.kernel)
    }
}

/// The maximum that propagates NaN (PyTorch's `val > max || isnan(val)`).
#[inline(always)]
pub(super) fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}
