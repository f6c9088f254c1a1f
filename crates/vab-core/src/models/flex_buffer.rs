//! Flex tensors as plain f32 buffers, for the kernels of [`super::conv`] and
//! [`super::batch_norm`].

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};

/// The values of a contiguous f32 tensor (call `to_contiguous` first).
pub fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A Flex tensor that takes ownership of `values`.
pub fn flex(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// Test helpers comparing a kernel's results with burn's.
#[cfg(test)]
pub mod testing {
    use burn::tensor::Tensor;

    /// A tensor's f32 values.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().expect("f32 values")
    }

    /// Asserts |got - want| ≤ tolerance · (1 + max |want|) element by element.
    pub fn assert_close(what: &str, got: Vec<f32>, want: Vec<f32>, tolerance: f32) {
        assert_eq!(got.len(), want.len(), "{what}: sizes differ");
        let scale = 1.0 + want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tolerance * scale, "{what}[{i}]: {g} vs burn's {w}");
        }
    }
}
