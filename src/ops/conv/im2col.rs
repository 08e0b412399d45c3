//! The columns matrix of a convolution (im2col) and its adjoint (col2im), built straight from
//! NCHW / NCDHW float32 maps in tiles of output lines, for the GEMM convolution of
//! `ops/conv/gemm.rs`.
//!
//! Row `(c, a, i, j)` of the columns holds, for every output position, the input value that
//! kernel tap `(a, i, j)` of channel `c` multiplies there (zero in the padding); so
//! `W (Cout, C·kd·kh·kw) · cols` is the convolution. Each kernel tap's valid output range is
//! computed once per axis, and each output line is a contiguous copy at column stride 1.

use std::cell::RefCell;
use std::ops::Range;

use burn::backend::flex::FlexTensor;
use burn::tensor::Shape;

use crate::ops::time_shift::Shift;

/// Stride and symmetric padding (depth, rows, columns) of a convolution this op takes; a 2D
/// convolution has depth stride 1 and no depth padding. `max`: in inference, the outputs
/// clamped to `[0, max]` as each tile is computed (the ReLU or ReLU6 after a folded BN:
/// `layers::conv_bn_relu`), which saves the activation's pass over the map; the autodiff op
/// refuses it. `shift`: the input is read shifted in time (pointwise convolutions only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub max: Option<f32>,
    pub shift: Option<Shift>,
}

impl Geometry {
    /// The same convolution with its outputs clamped to `[0, max]`.
    pub fn clamped(self, max: f32) -> Self {
        Self { max: Some(max), ..self }
    }
}

/// Sizes of one convolution, spatial axes (depth, rows, columns): input (n, c, `input`),
/// kernel (o, c, `kernel`), output (n, o, `output`); `dims` 4 (2D, depth 1) or 5.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub output: [usize; 3],
    pub dims: usize,
    pub g: Geometry,
}

impl Sizes {
    pub fn of(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> Self {
        let (xs, ws) = (x.layout().shape(), weight.layout().shape());
        let dims = xs.num_dims();
        assert!(matches!(dims, 4 | 5) && ws.num_dims() == dims, "conv: 4-D or 5-D input and weight");
        assert_eq!(xs[1], ws[1], "conv: input channels {} against the weight's {}", xs[1], ws[1]);
        let spatial = |s: &[usize]| if dims == 4 { [1, s[2], s[3]] } else { [s[2], s[3], s[4]] };
        let (input, kernel) = (spatial(xs.as_slice()), spatial(ws.as_slice()));
        let output = std::array::from_fn(|a| {
            let (size, k, s, p) = (input[a], kernel[a], g.stride[a], g.padding[a]);
            assert!(size + 2 * p >= k && s > 0, "conv: kernel {k} larger than the padded input {size}+2·{p}");
            (size + 2 * p - k) / s + 1
        });
        Self { n: xs[0], c: xs[1], o: ws[0], input, kernel, output, dims, g }
    }
    pub fn output_shape(&self) -> Shape {
        let [d, h, w] = self.output;
        if self.dims == 4 { Shape::new([self.n, self.o, h, w]) } else { Shape::new([self.n, self.o, d, h, w]) }
    }
    /// Rows of the columns matrix (the GEMM's inner dimension).
    pub fn k(&self) -> usize {
        self.c * self.kernel.iter().product::<usize>()
    }
    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.output.iter().product()
    }
    pub fn image(&self) -> usize {
        self.c * self.input.iter().product::<usize>()
    }
    /// A 1×1(×1), stride-1, unpadded convolution: the input image already is its columns matrix.
    pub fn pointwise(&self) -> bool {
        self.kernel == [1, 1, 1] && self.g.stride == [1, 1, 1] && self.g.padding == [0, 0, 0]
    }
    /// Per axis, the outputs at which kernel tap `t` reads inside the input (not the padding).
    fn tap(&self, t: [usize; 3]) -> [Range<usize>; 3] {
        // o·s + k − pad ∈ [0, size)  ⇔  o ∈ [⌈(pad − k)/s⌉, ⌊(size − 1 + pad − k)/s⌋]
        std::array::from_fn(|a| {
            let (outputs, size, k, s, pad) = (self.output[a], self.input[a], t[a], self.g.stride[a], self.g.padding[a]);
            let lo = pad.saturating_sub(k).div_ceil(s).min(outputs);
            let hi = if size + pad > k { ((size - 1 + pad - k) / s + 1).min(outputs) } else { 0 };
            lo..hi.max(lo)
        })
    }
    /// The input index along axis `a` that output `o` reads at kernel offset `k` (inside the tap's range).
    fn at(&self, a: usize, o: usize, k: usize) -> usize {
        o * self.g.stride[a] + k - self.g.padding[a]
    }
    /// Every kernel tap `(depth, row, column)` with its row of the columns matrix, per channel `c`.
    fn taps(&self) -> impl Iterator<Item = [usize; 3]> + use<> {
        let [kd, kh, kw] = self.kernel;
        (0..kd).flat_map(move |a| (0..kh).flat_map(move |i| (0..kw).map(move |j| [a, i, j])))
    }
    fn row_of(&self, c: usize, [a, i, j]: [usize; 3]) -> usize {
        let [_, kh, kw] = self.kernel;
        ((c * self.kernel[0] + a) * kh + i) * kw + j
    }
}

/// At most this many float32 values per columns buffer (8 MiB): a convolution's columns are
/// built for a tile of output lines at a time (a 3D stem's whole columns matrix would take
/// gigabytes).
const COLS_BUDGET: usize = 1 << 21;

impl Sizes {
    /// Output lines (an output row of one depth slice: `wo` positions) per image.
    pub fn lines(&self) -> usize {
        self.output[0] * self.output[1]
    }
    /// The tiles of output lines whose columns fit [`COLS_BUDGET`] (at least one line each),
    /// and at least `count` of them where there are as many lines.
    pub fn tiles(&self, count: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let lines = self.lines();
        let per = (COLS_BUDGET / (self.k() * self.output[2]).max(1)).min(lines.div_ceil(count.max(1))).max(1);
        (0..lines).step_by(per).map(move |l| l..(l + per).min(lines))
    }
}

/// `cols (k, lines·wo)`: the columns of output `lines` of one image `x (c, d, h, w)`; zero
/// where the kernel reads padding.
pub fn im2col(s: &Sizes, x: &[f32], lines: Range<usize>, cols: &mut [f32]) {
    let ([d, h, w], [_, ho, wo]) = (s.input, s.output);
    let tile = lines.len() * wo;
    for t in s.taps() {
        let [deps, rows, span] = s.tap(t);
        for c in 0..s.c {
            let row = &mut cols[s.row_of(c, t) * tile..][..tile];
            for (l, out) in lines.clone().zip(row.chunks_exact_mut(wo)) {
                let (od, oh) = (l / ho, l % ho);
                if !deps.contains(&od) || !rows.contains(&oh) {
                    out.fill(0.0);
                    continue;
                }
                let src = &x[((c * d + s.at(0, od, t[0])) * h + s.at(1, oh, t[1])) * w..][..w];
                out[..span.start].fill(0.0);
                out[span.end..].fill(0.0);
                if s.g.stride[2] == 1 {
                    out[span.clone()].copy_from_slice(&src[s.at(2, span.start, t[2])..][..span.len()]);
                } else {
                    span.clone().for_each(|ow| out[ow] = src[s.at(2, ow, t[2])]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `cols (k, lines·wo)` onto one image's gradient `dx (c, d,
/// h, w)`.
pub fn col2im(s: &Sizes, cols: &[f32], lines: Range<usize>, dx: &mut [f32]) {
    let ([d, h, w], [_, ho, wo]) = (s.input, s.output);
    let tile = lines.len() * wo;
    for t in s.taps() {
        let [deps, rows, span] = s.tap(t);
        for c in 0..s.c {
            let row = &cols[s.row_of(c, t) * tile..][..tile];
            for (l, g) in lines.clone().zip(row.chunks_exact(wo)) {
                let (od, oh) = (l / ho, l % ho);
                if !deps.contains(&od) || !rows.contains(&oh) {
                    continue;
                }
                let dst = &mut dx[((c * d + s.at(0, od, t[0])) * h + s.at(1, oh, t[1])) * w..][..w];
                if s.g.stride[2] == 1 {
                    let dst = &mut dst[s.at(2, span.start, t[2])..][..span.len()];
                    dst.iter_mut().zip(&g[span.clone()]).for_each(|(d, &v)| *d += v);
                } else {
                    span.clone().for_each(|ow| dst[s.at(2, ow, t[2])] += g[ow]);
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread column buffers (two: the backward needs the input's and the gradient's).
    static SCRATCH: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// `f` with a per-thread buffer of `len` values (contents unspecified); a fresh one if this
/// thread's is in use (a task run while another waits inside a parallel GEMM).
pub fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s[slot].try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes of `ops::conv::gemm::tests` meant to span several tiles of columns do, and the tiles cover every
    /// output line once.
    #[test]
    fn large_maps_are_tiled() {
        let sizes = |c, input: [usize; 3], kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]| {
            let g = Geometry { stride, padding, max: None, shift: None };
            let output = std::array::from_fn(|a| (input[a] + 2 * padding[a] - kernel[a]) / stride[a] + 1);
            Sizes { n: 1, c, o: 4, input, kernel, output, dims: 5, g }
        };
        for s in [
            sizes(64, [1, 120, 121], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            sizes(64, [1, 121, 120], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
            sizes(8, [5, 64, 63], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        ] {
            let tiles: Vec<_> = s.tiles(1).collect();
            assert!(tiles.len() > 1, "{s:?}");
            assert!(tiles.windows(2).all(|t| t[0].end == t[1].start) && tiles[0].start == 0);
            assert_eq!(tiles.last().map(|t| t.end), Some(s.lines()));
        }
    }
}
