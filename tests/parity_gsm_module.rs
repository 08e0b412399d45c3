//! The Gate-Shift Module and TSM shift against the official code's outputs.

mod common;

use burn::module::Module;
use burn::tensor::Tensor;
use gateshift::model::temporal::Gsm;

#[test]
fn gsm_forward_backward_and_running_stats_match_official() {
    let Some(shared) = common::shared() else { return };
    let path = shared.join("fixtures/gsm_module.safetensors");
    let (f, metadata) = gateshift::checkpoint::safetensors::read(&path).unwrap();
    let segments = gateshift::parity::fixture_segments(&metadata).unwrap();
    assert_eq!(segments, 8);
    // The fused kernels (what `Gsm::forward` uses on flex) and the composed reference.
    for (fused, path) in [(true, "fused"), (false, "composed")] {
        for c in gateshift::parity::gsm_module(&f, segments, &common::device(), fused).unwrap() {
            println!("parity gsm {path:<8} {:<32} rel {:.3e}  (tol {:.0e})", c.name, c.rel, c.tolerance);
            assert!(c.passed(), "{path} {}: relative error {:.3e} above {:.0e}", c.name, c.rel, c.tolerance);
        }
    }
}

#[test]
fn gsm_at_zero_gates_is_the_channel_permutation() {
    // Official init (zero gate conv): output = input with each half re-interleaved.
    let device = common::device();
    let gsm = Gsm::new(8, 2, &device).valid();
    let data: Vec<f32> = (0..2 * 8).map(|i| i as f32).collect();
    let x: Tensor<4> = Tensor::from_data(burn::tensor::TensorData::new(data, [2, 8, 1, 1]), &device);
    let y = gsm.forward(x).into_data().convert::<f32>();
    // Frame 0 channels 0..8: half 1 = [0,1,2,3] viewed (2,2) → transposed [0,2,1,3]; half 2 likewise.
    let expected = [0., 2., 1., 3., 4., 6., 5., 7., 8., 10., 9., 11., 12., 14., 13., 15.];
    assert_eq!(y.as_slice::<f32>().unwrap(), &expected);
}
