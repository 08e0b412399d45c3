//! Output buffers of the hand-written `flex` ops (convolution, depthwise, pooling, BN, GSM).
//!
//! burn-flex's `FlexTensor::empty` zeroes a byte vector and then, because a byte vector
//! promises no alignment, copies it once more into an aligned allocation: two page-faulting
//! passes over every new feature map (a tenth of EfficientNet-Lite0 + GSM inference in a
//! profile). A float vector carries its own alignment, so burn keeps it as it is: one
//! allocation, zeroed by the allocator.

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};

/// A zero-filled float32 tensor of `shape`, allocated once.
pub fn zeros(shape: Shape) -> FlexTensor {
    from_vec(vec![0f32; shape.num_elements()], shape)
}

/// A float32 tensor of `shape` that takes `values` as its storage, without a copy.
pub fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;

    #[test]
    fn zeros_are_contiguous_float32_zeros() {
        let t = zeros(Shape::new([2, 3, 5]));
        assert_eq!(t.dtype(), DType::F32);
        assert!(t.is_contiguous());
        assert_eq!(t.layout().shape().dims::<3>(), [2, 3, 5]);
        assert!(t.bytes().len() == 30 * 4 && t.bytes().iter().all(|&b| b == 0));
    }
}
