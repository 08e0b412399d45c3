//! The fused training BatchNorm against float64, the composed BN and its own baseline loops.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, Tolerance};

use super::*;
use crate::model::layers::BatchNorm;

fn rel(ours: TensorData, reference: TensorData) -> f32 {
    let (err, scale) = crate::parity::max_errors(&ours, &reference).expect("same shapes");
    err / scale
}

/// A training BatchNorm with the given affine parameters and fresh running statistics of
/// its own (clones of a module share theirs).
fn bn(weight: &Tensor<1>, bias: &Tensor<1>) -> BatchNorm {
    let mut bn = BatchNorm::new(weight.dims()[0], &weight.device());
    bn.weight = Param::from_tensor(weight.clone());
    bn.bias = Param::from_tensor(bias.clone());
    bn
}

/// Seeded normal values on the host: the same inputs on every machine and run.
fn normal<const D: usize>(shape: [usize; D], mean: f32, std: f32, seed: u64) -> Tensor<D> {
    use rand::SeedableRng;
    use rand_distr::Distribution as _;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(mean, std).expect("a valid normal");
    let values: Vec<f32> = (0..shape.iter().product()).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_data(TensorData::new(values, shape), &Device::flex().autodiff())
}

/// Training BN, then the clamp, and its gradients, in float64 from the float32 inputs:
/// `(y, dx, dweight, dbias)`, each flattened in `x`'s layout.
fn reference_f64(x: &[f32], dims: &[usize], affine: [&[f32]; 2], clamp: Option<f32>, dy: &[f32]) -> [Vec<f64>; 4] {
    let (c, inner) = (dims[1], dims[2..].iter().product::<usize>());
    let channel = |i: usize| (i / inner) % c;
    let n = (x.len() / c) as f64;
    let (mut mean, mut var) = (vec![0.0f64; c], vec![0.0f64; c]);
    x.iter().enumerate().for_each(|(i, &v)| mean[channel(i)] += v as f64 / n);
    x.iter().enumerate().for_each(|(i, &v)| var[channel(i)] += (v as f64 - mean[channel(i)]).powi(2) / n);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
    let xhat: Vec<f64> = x.iter().enumerate().map(|(i, &v)| (v as f64 - mean[channel(i)]) * inv[channel(i)]).collect();
    let z: Vec<f64> =
        xhat.iter().enumerate().map(|(i, h)| h * affine[0][channel(i)] as f64 + affine[1][channel(i)] as f64).collect();
    let max = clamp.map(f64::from);
    let y = z.iter().map(|&z| max.map_or(z, |m| z.clamp(0.0, m))).collect();
    // PyTorch's ReLU / hardtanh gradient rule: through only where 0 < z < max.
    let dz: Vec<f64> =
        z.iter().zip(dy).map(|(&z, &g)| if max.is_none_or(|m| 0.0 < z && z < m) { g as f64 } else { 0.0 }).collect();
    let (mut dweight, mut dbias) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (i, g) in dz.iter().enumerate() {
        dbias[channel(i)] += g;
        dweight[channel(i)] += g * xhat[i];
    }
    let dx = (0..x.len())
        .map(|i| {
            let k = channel(i);
            affine[0][k] as f64 * inv[k] * (dz[i] - dbias[k] / n - xhat[i] * dweight[k] / n)
        })
        .collect();
    [y, dx, dweight, dbias]
}

/// Largest error of `ours` against the float64 `reference`, over the reference's largest
/// magnitude.
fn rel_f64(ours: TensorData, reference: &[f64]) -> f64 {
    let ours = ours.convert::<f32>().try_into_vec::<f32>().expect("float32 values");
    let err = ours.iter().zip(reference).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    err / reference.iter().map(|b| b.abs()).fold(f64::MIN_POSITIVE, f64::max)
}

/// Output and every gradient of the fused op match training BN (and the clamp) computed in
/// float64; so does the composed reference, more loosely (it sums in float32), which ties
/// the float64 formula to burn's ops and ReLU / clamp rule. The running statistics match
/// the composed reference's. Cases: 4-D maps, a 5-D one as GSM's composed BatchNorm3d
/// sees, a channel of 3 values, and maps with a large mean (offset). Inputs are seeded,
/// so a run here is a run on CI.
fn compare<const D: usize>(shape: [usize; D], offset: f32, clamp: Option<f32>) {
    let c = shape[1];
    let seed = shape.iter().fold(offset.to_bits() as u64, |s, &d| s * 31 + d as u64);
    let (weight, bias) = (normal([c], 0.0, 1.0, seed), normal([c], 0.0, 0.5, seed + 1));
    let x = normal(shape, offset, 1.5, seed + 2);
    let upstream = normal(shape, 0.0, 1.0, seed + 3);
    assert!(applies(&x));
    let values = |t: &Tensor<1>| t.to_data().try_into_vec::<f32>().expect("float32 values");
    let reference = reference_f64(
        &x.to_data().try_into_vec::<f32>().expect("float32 values"),
        &shape,
        [&values(&weight), &values(&bias)],
        clamp,
        &upstream.to_data().try_into_vec::<f32>().expect("float32 values"),
    );
    let run = |fused: bool| {
        let module = bn(&weight, &bias);
        let x = x.clone().require_grad();
        let y = match (fused, clamp) {
            (true, None) => module.forward(x.clone()),
            (true, Some(max)) => module.forward_clamp(x.clone(), max),
            (false, None) => module.forward_composed(x.clone()),
            (false, Some(max)) => crate::model::layers::clamp(module.forward_composed(x.clone()), max),
        };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let grad = |t: Option<Tensor<1>>| t.expect("gradient").into_data();
        let stats = [module.running_mean.value_sync(), module.running_var.value_sync()].map(|t| t.into_data());
        let outputs = [
            y.into_data(),
            x.grad(&grads).expect("dx").into_data(),
            grad(module.weight.grad(&grads)),
            grad(module.bias.grad(&grads)),
        ];
        (outputs, stats)
    };
    let ((fused, fused_stats), (composed, composed_stats)) = (run(true), run(false));
    for (((what, f), r), reference) in ["y", "dx", "dweight", "dbias"].iter().zip(fused).zip(composed).zip(&reference) {
        let (e, e_composed) = (rel_f64(f, reference), rel_f64(r, reference));
        let case = format!("{shape:?} offset {offset} clamp {clamp:?}: {what}");
        assert!(e <= 1e-5, "{case}: fused rel {e:e} to float64");
        assert!(e_composed <= 1e-4, "{case}: composed rel {e_composed:e} to float64");
    }
    for (f, r) in fused_stats.into_iter().zip(composed_stats) {
        let e = rel(f, r);
        assert!(e <= 1e-5, "{shape:?} offset {offset}: running statistics rel {e:e}");
    }
}

#[test]
fn matches_the_composed_batch_norm() {
    compare([4, 8, 5, 7], 0.0, None);
    compare([3, 5, 1, 1], 2.0, None);
    compare([2, 16, 3, 4, 6], 0.0, None);
    compare([8, 3, 9, 9], 50.0, None);
}

/// With the ReLU, and with a clamp low enough (0.5) that both of its bounds cut.
#[test]
fn fused_activation_matches_bn_then_activation() {
    for clamp in [f32::INFINITY, 0.5, 6.0] {
        compare([4, 8, 5, 7], 0.0, Some(clamp));
        compare([2, 16, 3, 4, 6], 0.0, Some(clamp));
        compare([8, 3, 9, 9], 50.0, Some(clamp));
    }
}

/// The plane loops give the same bits whether they run as compiled for AVX2 (chosen at run
/// time where the CPU has it) or as baseline code, with and without the clamp's mask, on a
/// plane whose length is not a multiple of the lanes.
#[test]
fn avx2_and_baseline_loops_agree() {
    let values = |seed| normal([1, 1, 1003], 0.3, 1.0, seed).to_data().try_into_vec::<f32>().unwrap();
    let (xs, gs) = (values(1), values(2));
    let mask = Mask { mean: 0.25, a: 1.5, b: 0.1, max: 1.0 };
    for m in [None, Some(mask)] {
        assert_eq!(plane_sums(&xs, &gs, 0.25, m), sums_body(&xs, &gs, 0.25, m));
        let (mut fast, mut base) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        plane_dx(&xs, &gs, &mut fast, [0.7, -0.2, 0.05], 0.25, m);
        dx_body(&xs, &gs, &mut base, [0.7, -0.2, 0.05], 0.25, m);
        assert_eq!(fast, base);
    }
    for clamp in [None, Some(0.8)] {
        let (mut fast, mut base) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        plane_forward(&xs, &mut fast, [0.25, 1.5, 0.1], clamp);
        forward_body(&xs, &mut base, [0.25, 1.5, 0.1], clamp);
        assert_eq!(fast, base);
    }
    for mean in [None, Some(0.3)] {
        assert_eq!(plane_stats(&xs, mean), stats_body(&xs, mean));
    }
}

/// The statistics are the batch mean and biased variance per channel; a frozen-weight
/// input (no gradient wanted for weight and bias) still gets its input gradient.
#[test]
fn statistics_and_untracked_parameters() {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_floats([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[5.0, 7.0]], [[0.0, 4.0]]]], &device);
    let stats = batch_stats(x.clone()).into_data();
    stats.assert_approx_eq::<f32>(&TensorData::from([[4.0f32, 2.0], [5.0, 2.0]]), Tolerance::absolute(1e-6));
    let x = x.require_grad();
    let (w, b) = (Tensor::<1>::ones([2], &device), Tensor::<1>::zeros([2], &device));
    let y = normalize(x.clone(), [w, b], batch_stats(x.clone()), 1e-5, None);
    let grads = (y.clone() * y).sum().backward();
    let dx = x.grad(&grads).expect("input gradient");
    // d Σ x̂² / dx = 0: the squared normalised values always sum to n per channel.
    assert!(dx.abs().max().into_scalar::<f32>() < 1e-3);
}
