//! Assigning base (non-adapter) weights by path: the mechanism shared by
//! [`crate::transfer_base_weights`] and the HF checkpoint loader of `peft-hf`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::path::{ModulePath, ParamMapper, map_params};
use crate::{PeftError, Result};

/// Where base weights come from.
pub trait WeightSource {
    /// The value for the parameter at `path`, `expected` its shape in the model.
    /// `Ok(None)` keeps the parameter as it is.
    fn take(&mut self, path: &ModulePath, expected: &[usize]) -> Result<Option<TensorData>>;
}

struct Assign<'a, B: Backend, S: WeightSource> {
    source: &'a mut S,
    error: Option<PeftError>,
    device: Option<B::Device>,
}

impl<B: Backend, S: WeightSource> ParamMapper<B> for Assign<'_, B, S> {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if path.in_adapter() || self.error.is_some() {
            return param;
        }
        let expected = param.shape().dims::<D>().to_vec();
        let data = match self.source.take(path, &expected) {
            Ok(Some(data)) => data,
            Ok(None) => return param,
            Err(e) => {
                self.error = Some(e);
                return param;
            }
        };
        if data.shape.to_vec() != expected {
            self.error = Some(PeftError::ShapeMismatch { name: path.plain_path(), expected, actual: data.shape.to_vec() });
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let device = self.device.get_or_insert_with(|| tensor.device()).clone();
        let value = Tensor::<B, D>::from_data(data, &device).set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Replaces every base parameter of `model` with what `source` gives; the first error wins.
pub fn assign_base_weights<B: Backend, M: Module<B>, S: WeightSource>(model: M, source: &mut S) -> Result<M> {
    let mut assign = Assign::<B, S> { source, error: None, device: None };
    let model = map_params(model, &mut assign);
    match assign.error {
        Some(e) => Err(e),
        None => Ok(model),
    }
}
