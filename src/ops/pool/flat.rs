//! Stride-1 pooling that keeps the plane's size (odd kernel, padding (k − 1)/2: the 3×3/1
//! pools of BN-Inception's and InceptionV3's blocks) in passes over the whole plane rather than
//! row by row. On their 14×14 and 28×28 maps a row is one or two vectors, so the row-wise
//! passes of `flex.rs` spent their time in loop set-up and scalar divisions (a profile put
//! them at ten times OpenVINO's pools). Here the rows' reduction is `k` long slices of the
//! plane, the columns' another `k` (then the `2·pad` columns per row that such a slice reads
//! across a row's end are redone), and the average divides by a divisor plane made once per
//! call. Same reduction order and divisors as `flex.rs`, so the same values.

use super::window::{Axis, Reduce, max_nan};
use crate::ops::avx2::with_avx2;

/// Whether both axes keep their size at stride 1 with an odd kernel centred by the padding.
pub(super) fn applies(rows: &Axis, cols: &Axis) -> bool {
    [rows, cols].iter().all(|a| a.stride == 1 && a.output == a.input && a.kernel == 2 * a.pad + 1)
}

/// The average's divisor at every output position (PyTorch's: the window inside the padded
/// input if `count_include_pad`, else inside the input), row-major.
pub(super) fn divisors(rows: &Axis, cols: &Axis, count_include_pad: bool) -> Vec<f32> {
    let len = |a: &Axis, o: usize| if count_include_pad { a.padded_len(o) } else { a.valid(o).len() };
    (0..rows.output).flat_map(|oh| (0..cols.output).map(move |ow| (len(rows, oh) * len(cols, ow)) as f32)).collect()
}

/// `dst ⊕= src` element-wise: maximum (NaN propagating) or sum.
#[inline(always)]
fn combine(max: bool, dst: &mut [f32], src: &[f32]) {
    if max {
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a = max_nan(*a, b));
    } else {
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
    }
}

/// Pools one plane `x (h, w)` into `y (h, w)`; `v` is scratch of `h·w` values, `divisor` the
/// average's ([`divisors`]; empty for the maximum).
#[inline(always)]
fn plane_body(reduce: Reduce, rows: &Axis, cols: &Axis, x: &[f32], y: &mut [f32], v: &mut [f32], divisor: &[f32]) {
    let max = reduce == Reduce::Max;
    let (h, w) = (rows.input, cols.input);
    // Rows: output row oh reduces input rows valid(oh); the rows whose window is whole are one
    // run of the plane, reduced as k long slices.
    let (p, k) = (rows.pad, rows.kernel);
    let whole = p..h.saturating_sub(p).max(p);
    if !whole.is_empty() {
        let n = whole.len() * w;
        let out = &mut v[whole.start * w..][..n];
        out.copy_from_slice(&x[..n]);
        (1..k).for_each(|j| combine(max, out, &x[j * w..][..n]));
    }
    for oh in (0..h).filter(|oh| !whole.contains(oh)) {
        let valid = rows.valid(oh);
        let out = &mut v[oh * w..][..w];
        out.copy_from_slice(&x[valid.start * w..][..w]);
        valid.skip(1).for_each(|ih| combine(max, out, &x[ih * w..][..w]));
    }
    // Columns: y[i] = ⊕ v[i − p + j] over the plane, then the columns whose window crosses a
    // row's end redone from their valid columns.
    let (p, k, n) = (cols.pad, cols.kernel, h * w);
    if n > 2 * p {
        let out = &mut y[p..n - p];
        out.copy_from_slice(&v[..n - 2 * p]);
        (1..k).for_each(|j| combine(max, out, &v[j..][..n - 2 * p]));
    }
    for ow in (0..p.min(w)).chain(w.saturating_sub(p).max(p.min(w))..w) {
        let valid = cols.valid(ow);
        for oh in 0..h {
            let row = &v[oh * w + valid.start..oh * w + valid.end];
            y[oh * w + ow] = row[1..].iter().fold(row[0], |a, &b| if max { max_nan(a, b) } else { a + b });
        }
    }
    if !max {
        y.iter_mut().zip(divisor).for_each(|(o, &d)| *o /= d);
    }
}

with_avx2!(plane_avx2, plane_body, (
    reduce: Reduce, rows: &Axis, cols: &Axis, x: &[f32], y: &mut [f32], v: &mut [f32], divisor: &[f32]
));

/// [`plane_body`], vectorised with AVX2 where the CPU has it.
pub(super) fn forward_plane(
    reduce: Reduce,
    rows: &Axis,
    cols: &Axis,
    x: &[f32],
    y: &mut [f32],
    v: &mut [f32],
    divisor: &[f32],
) {
    plane_avx2(reduce, rows, cols, x, y, v, divisor)
}
