//! Dropout before `new_fc`, with burn's `Dropout` module and rule (zero with probability
//! `prob` in training, the rest scaled by 1 / (1 − prob)), its mask drawn from a generator of
//! the training thread ([`seed`]) rather than the backend's one global generator: ranks
//! training on threads of one process (`train --devices`) draw their own masks, the same on
//! every run and every resume.

use std::cell::RefCell;

use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static GENERATOR: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Seeds this thread's dropout masks (the trainer: per iteration and rank).
pub fn seed(seed: u64) {
    GENERATOR.with(|g| *g.borrow_mut() = Some(ChaCha8Rng::seed_from_u64(seed)));
}

/// `dropout` applied to `x`: in training only (an autodiff device, the module's flag on).
pub fn forward<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if !dropout.training.is_enabled() || !x.device().is_autodiff() || dropout.prob == 0.0 {
        return x;
    }
    let keep = 1.0 - dropout.prob;
    let shape = x.shape();
    let drawn = GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        let rng = g.as_mut()?;
        Some(
            (0..shape.num_elements())
                .map(|_| if rng.random::<f64>() < keep { 1.0f32 } else { 0.0 })
                .collect::<Vec<_>>(),
        )
    });
    let mask = match drawn {
        Some(m) => Tensor::<D>::from_data(TensorData::new(m, shape), &x.device()).cast(x.dtype()),
        // Never seeded (a forward outside `train`): the backend's generator, as burn's module.
        None => x.random_like(Distribution::Bernoulli(keep)),
    };
    (x * mask).mul_scalar(1.0 / keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;

    #[test]
    fn a_seeded_mask_repeats_and_keeps_the_expectation() {
        let device = burn::tensor::Device::flex().autodiff();
        let d = DropoutConfig::new(0.5).init();
        let x = Tensor::<2>::ones([64, 64], &device);
        let draw = |s| {
            seed(s);
            forward(&d, x.clone()).into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b, c) = (draw(7), draw(7), draw(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
        // Inference: the identity.
        let plain = Tensor::<2>::ones([4, 4], &burn::tensor::Device::flex());
        assert_eq!(forward(&d, plain.clone()).into_data(), plain.into_data());
    }
}
