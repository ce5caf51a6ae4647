//! Assigning base (non-adapter) weights by path: the mechanism shared by
//! [`crate::transfer_base_weights`] and [`crate::hf_weights::load_hf_weights`].

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::params::PathStack;
use crate::{PeftError, Result};

/// Where base weights come from.
pub(crate) trait WeightSource {
    /// The value for the parameter at the stack's position, `expected` its shape in the model.
    /// `Ok(None)` keeps the parameter as it is.
    fn take(&mut self, stack: &PathStack, expected: &[usize]) -> Result<Option<TensorData>>;
}

struct Assign<'a, B: Backend, S: WeightSource> {
    path: PathStack,
    source: &'a mut S,
    error: Option<PeftError>,
    device: Option<B::Device>,
}

impl<B: Backend, S: WeightSource> ModuleMapper<B> for Assign<'_, B, S> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.in_adapter() || self.error.is_some() {
            return param;
        }
        let expected = param.shape().dims::<D>().to_vec();
        let data = match self.source.take(&self.path, &expected) {
            Ok(Some(data)) => data,
            Ok(None) => return param,
            Err(e) => {
                self.error = Some(e);
                return param;
            }
        };
        if data.shape.to_vec() != expected {
            self.error = Some(PeftError::ShapeMismatch { name: self.path.plain_path(), expected, actual: data.shape.to_vec() });
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let device = self.device.get_or_insert_with(|| tensor.device()).clone();
        let value = Tensor::<B, D>::from_data(data, &device).set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Replaces every base parameter of `model` with what `source` gives; the first error wins.
pub(crate) fn assign_base_weights<B: Backend, M: Module<B>, S: WeightSource>(model: M, source: &mut S) -> Result<M> {
    let mut assign = Assign::<B, S> { path: PathStack::default(), source, error: None, device: None };
    let model = model.map(&mut assign);
    match assign.error {
        Some(e) => Err(e),
        None => Ok(model),
    }
}
