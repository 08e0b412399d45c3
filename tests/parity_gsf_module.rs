//! The Gate-Shift-Fuse module against the official `gsf.py` (fixture made by
//! `scripts/gsf_reference.py`): train-mode output, input and parameter gradients, BN running
//! statistics, eval-mode output — with all channels gated and with half of them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{Tensor, TensorData};
use gateshift::model::temporal::Gsf;

const PARAMS: [&str; 8] = [
    "conv3D.weight",
    "conv3D.bias",
    "bn.weight",
    "bn.bias",
    "channel_conv1.weight",
    "channel_conv1.bias",
    "channel_conv2.weight",
    "channel_conv2.bias",
];

fn check(name: &str, ours: TensorData, reference: &TensorData, tolerance: f32) {
    let (err, scale) = common::errors(&ours, reference);
    let rel = err / scale;
    println!("parity gsf {name:<40} rel {rel:.3e}  (tol {tolerance:.0e})");
    assert!(rel <= tolerance, "{name}: relative error {rel:.3e} above {tolerance:.0e}");
}

fn case(f: &BTreeMap<String, TensorData>, prefix: &str, ratio: usize, segments: usize) {
    let get = |k: &str| f.get(&format!("{prefix}{k}")).unwrap_or_else(|| panic!("fixture lacks {prefix}{k}")).clone();
    let device = common::device().autodiff();
    let x_data = get("x");
    let channels = x_data.shape()[1];
    let mut gsf = Gsf::new(channels, segments, ratio, &device);
    let packs = PARAMS.iter().map(|k| bridge::from_data(get(&format!("param.{k}")), k.to_string(), None)).collect();
    let applied = gsf.apply(packs, None, None, false);
    assert!(applied.errors.is_empty() && applied.applied.len() == PARAMS.len(), "{applied:?}");

    let x: Tensor<4> = Tensor::from_data(x_data.clone(), &device).require_grad();
    let y = gsf.forward(x.clone());
    check(&format!("{prefix}train-mode output"), y.to_data(), &get("train.y"), 1e-4);
    let grads = (y * Tensor::<4>::from_data(get("train.grad_y"), &device)).sum().backward();
    check(&format!("{prefix}grad x"), x.grad(&grads).unwrap().into_data(), &get("train.grad_x"), 1e-3);
    let param_grads = [
        ("conv3D.weight", gsf.conv3D.weight.grad(&grads).map(|g| g.into_data())),
        ("conv3D.bias", gsf.conv3D.bias.as_ref().and_then(|b| b.grad(&grads)).map(|g| g.into_data())),
        ("bn.weight", gsf.bn.weight.grad(&grads).map(|g| g.into_data())),
        ("bn.bias", gsf.bn.bias.grad(&grads).map(|g| g.into_data())),
        ("channel_conv1.weight", gsf.channel_conv1.weight.grad(&grads).map(|g| g.into_data())),
        ("channel_conv1.bias", gsf.channel_conv1.bias.as_ref().and_then(|b| b.grad(&grads)).map(|g| g.into_data())),
        ("channel_conv2.weight", gsf.channel_conv2.weight.grad(&grads).map(|g| g.into_data())),
        ("channel_conv2.bias", gsf.channel_conv2.bias.as_ref().and_then(|b| b.grad(&grads)).map(|g| g.into_data())),
    ];
    for (k, g) in param_grads {
        let g = g.unwrap_or_else(|| panic!("no gradient for {k}"));
        check(&format!("{prefix}grad {k}"), g, &get(&format!("train.grad.{k}")), 1e-3);
    }
    let rm = gsf.bn.running_mean.value_sync().into_data();
    check(&format!("{prefix}bn running_mean"), rm, &get("train.buffer_after.bn.running_mean"), 1e-4);
    let rv = gsf.bn.running_var.value_sync().into_data();
    check(&format!("{prefix}bn running_var"), rv, &get("train.buffer_after.bn.running_var"), 1e-4);
    let eval = gsf.valid();
    let y = eval.forward(Tensor::from_data(x_data, &common::device()));
    check(&format!("{prefix}eval-mode output"), y.into_data(), &get("eval.y"), 1e-4);
}

#[test]
fn gsf_matches_the_official_module() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gsf_module.safetensors");
    let f = gateshift::checkpoint::safetensors::read(&path).expect("fixture readable").0;
    case(&f, "r100.", 100, 8);
    case(&f, "r50.", 50, 4);
}
