//! `ops::conv::gemm` against burn's own convolution (the tested reference).

use burn::nn::conv::{Conv2dConfig, Conv3dConfig};
use burn::tensor::{Distribution, TensorData};

use burn::tensor::Device;

use super::*;

fn rel(ours: TensorData, reference: TensorData) -> f32 {
    let (err, scale) = crate::parity::max_errors(&ours, &reference).expect("same shapes");
    err / scale
}

/// Error of a weight or bias gradient against `bound`, an upper bound of the sum of the
/// magnitudes it adds up (per entry). Those gradients sum over every output position of
/// the batch, tens of thousands of terms here that largely cancel: float32 rounding grows
/// with the magnitudes summed, not with the result, so measured against the result two
/// correct summation orders can differ by more than 1e-5 on some random inputs. A wrong
/// or missing term is still caught: one term is about 1 / (terms · 0.8) of the bound.
fn sum_rel(ours: TensorData, reference: TensorData, bound: f32) -> f32 {
    let (err, _) = crate::parity::max_errors(&ours, &reference).expect("same shapes");
    err / bound
}

/// Σ |dy| over every position of the batch, largest over output channels (`dy` is
/// (N, O, …)), and max |x|: bounds of what a bias (Σ dy) and a weight gradient (Σ x·dy)
/// add up per entry.
fn sum_bounds<const D: usize>(x: &Tensor<D>, dy: &Tensor<D>) -> (f32, f32) {
    let o = dy.dims()[1];
    let per_channel = dy.clone().abs().swap_dims(0, 1).reshape([o as i64, -1]).sum_dim(1);
    let db = per_channel.max().into_scalar::<f32>();
    (db, db * x.clone().abs().max().into_scalar::<f32>())
}

/// Output and the input, weight and bias gradients of this op against burn's own
/// convolution (`Conv2d::forward`), for one geometry.
fn compare(
    n: usize,
    [c, o]: [usize; 2],
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    bias: bool,
) {
    let device = Device::flex().autodiff();
    let conv = Conv2dConfig::new([c, o], kernel)
        .with_stride(stride)
        .with_padding(PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]))
        .with_bias(bias)
        .init(&device);
    let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let g = applies(&conv, &x).expect("the op takes this convolution");
    let out = conv.forward(x.clone()).dims();
    let upstream = Tensor::<4>::random(out, Distribution::Normal(0.0, 1.0), &device);
    let run = |ours: bool| {
        let x = x.clone().require_grad();
        let y = if ours { conv2d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let db = conv.bias.as_ref().map(|b| b.grad(&grads).expect("bias gradient").into_data());
        (y.into_data(), x.grad(&grads).expect("dx").into_data(), conv.weight.grad(&grads).expect("dw").into_data(), db)
    };
    let (ours, burn) = (run(true), run(false));
    let (db_bound, dw_bound) = sum_bounds(&x, &upstream);
    let what = format!("n {n}, {c}→{o}, {h}×{w}, kernel {kernel:?} stride {stride:?} padding {padding:?}");
    let dw = sum_rel(ours.2, burn.2, dw_bound);
    for (name, e) in [("y", rel(ours.0, burn.0)), ("dx", rel(ours.1, burn.1)), ("dw / Σ|x·dy|", dw)] {
        assert!(e <= 1e-5, "{what}: {name} rel {e:e}");
    }
    if let (Some(a), Some(b)) = (ours.3, burn.3) {
        let e = sum_rel(a, b, db_bound);
        assert!(e <= 1e-5, "{what}: db / Σ|dy| rel {e:e}");
    }
}

#[test]
fn matches_burns_convolution() {
    let threads = rayon::current_num_threads();
    for n in [1, threads + 1] {
        compare(n, [5, 7], [9, 11], [1, 1], [1, 1], [0, 0], true); // pointwise
        compare(n, [6, 4], [9, 10], [1, 1], [2, 2], [0, 0], false); // 1×1, stride 2
        compare(n, [4, 6], [8, 7], [3, 3], [1, 1], [1, 1], true);
        compare(n, [3, 5], [13, 12], [3, 3], [2, 2], [1, 1], false);
        compare(n, [3, 8], [17, 15], [7, 7], [2, 2], [3, 3], true); // BN-Inception's conv1
        compare(n, [4, 4], [6, 9], [1, 3], [1, 1], [0, 1], true); // InceptionV3's 1×n
        compare(n, [4, 4], [9, 6], [3, 1], [1, 1], [1, 0], false);
        compare(n, [2, 3], [5, 5], [3, 3], [2, 2], [0, 0], true); // no padding, stride 2
        compare(n, [2, 3], [4, 4], [5, 5], [1, 1], [2, 2], true); // kernel wider than the map's half
        compare(n, [64, 4], [120, 121], [3, 3], [1, 1], [1, 1], true); // columns in several tiles
        compare(n, [64, 3], [121, 120], [3, 3], [2, 2], [1, 1], false);
    }
}

/// The same for a 3D convolution (I3D's units): `kernel`, `stride`, `padding` per (depth,
/// rows, columns).
fn compare_3d(
    n: usize,
    [c, o]: [usize; 2],
    size: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) {
    let device = Device::flex().autodiff();
    let conv = Conv3dConfig::new([c, o], kernel)
        .with_stride(stride)
        .with_padding(PaddingConfig3d::Explicit(padding[0], padding[1], padding[2]))
        .with_bias(true)
        .init(&device);
    let [d, h, w] = size;
    let x = Tensor::<5>::random([n, c, d, h, w], Distribution::Normal(0.0, 1.0), &device);
    let g = applies_3d(&conv, &x).expect("the op takes this convolution");
    let upstream = Tensor::<5>::random(conv.forward(x.clone()).dims(), Distribution::Normal(0.0, 1.0), &device);
    let run = |ours: bool| {
        let x = x.clone().require_grad();
        let y = if ours { conv3d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let grad = |t: Option<Tensor<1>>| t.expect("bias gradient").into_data();
        [
            y.into_data(),
            x.grad(&grads).expect("dx").into_data(),
            conv.weight.grad(&grads).expect("dw").into_data(),
            grad(conv.bias.as_ref().and_then(|b| b.grad(&grads))),
        ]
    };
    let (ours, burn) = (run(true), run(false));
    let (db_bound, dw_bound) = sum_bounds(&x, &upstream);
    for (i, (name, (a, b))) in
        ["y", "dx", "dw / Σ|x·dy|", "db / Σ|dy|"].iter().zip(ours.into_iter().zip(burn)).enumerate()
    {
        let e = match i {
            2 => sum_rel(a, b, dw_bound),
            3 => sum_rel(a, b, db_bound),
            _ => rel(a, b),
        };
        assert!(
            e <= 1e-5,
            "3D n {n}, {c}→{o}, {size:?}, kernel {kernel:?} stride {stride:?} padding {padding:?}: {name} rel {e:e}"
        );
    }
}

#[test]
fn matches_burns_3d_convolution() {
    for n in [1, rayon::current_num_threads() + 1] {
        compare_3d(n, [3, 4], [5, 6, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0]);
        compare_3d(n, [3, 4], [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]);
        compare_3d(n, [2, 5], [9, 11, 10], [7, 7, 7], [2, 2, 2], [0, 0, 0]); // I3D's stem (input padded first)
        compare_3d(n, [4, 3], [4, 7, 6], [1, 3, 3], [1, 2, 2], [0, 1, 1]);
        compare_3d(n, [2, 3], [6, 5, 5], [3, 1, 1], [2, 1, 1], [1, 0, 0]);
        compare_3d(n, [8, 4], [5, 64, 63], [3, 3, 3], [1, 1, 1], [1, 1, 1]); // several tiles
    }
}

/// Grouped, dilated and asymmetrically padded convolutions, and other backends' tensors,
/// stay with burn's own.
#[test]
fn declines_what_it_does_not_compute() {
    let device = Device::flex();
    let x = Tensor::<4>::zeros([1, 4, 6, 6], &device);
    let config = || Conv2dConfig::new([4, 4], [3, 3]);
    assert!(applies(&config().init(&device), &x).is_some());
    assert!(applies(&config().with_groups(2).init(&device), &x).is_none());
    assert!(applies(&config().with_dilation([2, 2]).init(&device), &x).is_none());
    let asymmetric = config().with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1)).init(&device);
    assert!(applies(&asymmetric, &x).is_none());
    assert!(applies(&config().init(&device), &x.clone().cast(DType::F64)).is_none());
}

/// The inference forms equal their compositions, with images or tiles in parallel, for maps
/// in one tile and in several: the clamped convolution (conv → folded BN → ReLU / ReLU6)
/// equals the convolution then the clamp, and the residual form (a ResNet block's end)
/// equals ReLU(conv(x) + residual).
#[test]
fn inference_forms_equal_their_compositions() {
    let device = Device::flex();
    let threads = rayon::current_num_threads();
    for n in [1, threads + 1] {
        for (c, o, size, k, s, p) in [(5, 7, 9, 1, 1, 0), (4, 6, 11, 3, 2, 1), (64, 4, 120, 3, 1, 1)] {
            let conv = Conv2dConfig::new([c, o], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init(&device);
            let x = Tensor::<4>::random([n, c, size, size], Distribution::Normal(0.0, 1.0), &device);
            let g = applies(&conv, &x).expect("the op takes this convolution");
            let what = format!("n {n}, {c}→{o}, {size}², k{k} s{s} p{p}");
            let plain = conv.forward(x.clone());
            for max in [6.0, f32::INFINITY, 0.5] {
                let reference = plain.clone().clamp(0.0, max.min(f32::MAX));
                let e = rel(conv2d(&conv, g.clamped(max), x.clone()).into_data(), reference.into_data());
                assert!(e <= 1e-5, "{what}, max {max}: rel {e:e}");
            }
            let residual = Tensor::<4>::random(plain.dims(), Distribution::Normal(0.0, 1.0), &device);
            let reference = burn::tensor::activation::relu(plain + residual.clone());
            let e = rel(conv2d_residual_relu(&conv, g, x, residual).into_data(), reference.into_data());
            assert!(e <= 1e-5, "{what}, residual: rel {e:e}");
        }
    }
}

/// A pointwise convolution reading its input through TSM's shift equals the convolution of the
/// shifted map (burn's, on the composed shift): output and the input, weight and bias
/// gradients; one clip and several, one segment, every channel shifted, a single image.
#[test]
fn shifted_pointwise_convolution_equals_convolving_the_shifted_map() {
    use crate::model::temporal::TemporalShift;
    let device = Device::flex().autodiff();
    let threads = rayon::current_num_threads();
    for (clips, segments, [c, o], div) in
        [(1, 8, [16, 5], 8), (threads + 1, 3, [8, 6], 2), (2, 1, [8, 3], 4), (1, 1, [6, 4], 3), (2, 4, [5, 7], 8)]
    {
        let (n, (h, w)) = (clips * segments, (5, 7));
        let conv = Conv2dConfig::new([c, o], [1, 1]).init(&device);
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let tsm = TemporalShift::new(segments, div);
        let g = shifted(&conv, applies(&conv, &x).expect("pointwise"), tsm.shift(c)).expect("pointwise");
        let upstream = Tensor::<4>::random([n, o, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours { conv2d(&conv, g, x.clone()) } else { conv.forward(tsm.forward_composed(x.clone())) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let db = conv.bias.as_ref().expect("bias").grad(&grads).expect("bias gradient").into_data();
            (
                y.into_data(),
                x.grad(&grads).expect("dx").into_data(),
                conv.weight.grad(&grads).expect("dw").into_data(),
                db,
            )
        };
        let (ours, burn) = (run(true), run(false));
        let (db_bound, dw_bound) = sum_bounds(&x, &upstream);
        let what = format!("{clips} clips × {segments}, {c}→{o}, 1/{div} shifted");
        let errors = [
            ("y", rel(ours.0, burn.0)),
            ("dx", rel(ours.1, burn.1)),
            ("dw / Σ|x·dy|", sum_rel(ours.2, burn.2, dw_bound)),
            ("db / Σ|dy|", sum_rel(ours.3, burn.3, db_bound)),
        ];
        for (name, e) in errors {
            assert!(e <= 1e-5, "{what}: {name} rel {e:e}");
        }
        // Inference, clamped as after a folded BN.
        let (conv, x) = (burn::module::Module::valid(&conv), x.inner());
        let reference = conv.forward(tsm.forward_composed(x.clone())).clamp(0.0, 6.0);
        let e = rel(conv2d(&conv, g.clamped(6.0), x).into_data(), reference.into_data());
        assert!(e <= 1e-5, "{what}, inference: rel {e:e}");
    }
}

/// Only pointwise, stride-1, unpadded convolutions read a shifted input.
#[test]
fn only_pointwise_convolutions_take_a_shift() {
    let device = Device::flex();
    let x = Tensor::<4>::zeros([8, 8, 6, 6], &device);
    let shift = Shift::tsm(8, 1);
    for (k, s, p, takes) in [(1, 1, 0, true), (1, 2, 0, false), (3, 1, 1, false), (1, 1, 1, false)] {
        let conv = Conv2dConfig::new([8, 4], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init(&device);
        let g = applies(&conv, &x).expect("the op takes this convolution");
        assert_eq!(shifted(&conv, g, shift).is_some(), takes, "kernel {k}, stride {s}, padding {p}");
    }
}
