//! What a module draws while it is built (GST's `Tconv`) depends on the run's seed only, not
//! on what the process drew before (the demo trains several models in one process).
//!
//! A file of its own: the property is about the process's one random generator, which other
//! tests of a shared test binary would draw from concurrently, between the seeding and the
//! draw under test.

use burn::tensor::Tensor;
use gateshift::model::backbone::Backbone;
use gateshift::model::temporal::Temporal;
use gateshift::model::{Arch, ModelConfig, TemporalKind};
use gateshift::train::seeds::init_model;

#[test]
fn draws_at_construction_follow_the_seed() {
    let device = gateshift::backend::device("flex").unwrap();
    let cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gst, 2, 3);
    let tconv = |noise: u64, seed: u64| {
        device.seed(noise);
        let _ = Tensor::<1>::random([7], burn::tensor::Distribution::Default, &device).into_data();
        let model = init_model(&cfg, &device, seed, false);
        let Backbone::ResNet(r) = &model.base_model else { unreachable!() };
        let Some(Temporal::Gst(g)) = &r.layer1[0].temporal else { unreachable!() };
        g.weight.val().into_data()
    };
    assert_eq!(tconv(1, 5), tconv(2, 5));
    assert_ne!(tconv(1, 5), tconv(1, 6));
}
