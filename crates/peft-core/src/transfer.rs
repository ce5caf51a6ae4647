//! Loading a pretrained model's weights into the same model with typed wrappers.
//!
//! Wrapping `q: Linear` as `q: Tuned<Linear, _>` moves its parameters from `q.weight` to
//! `q.base.weight`. [`transfer_base_weights`] copies every parameter of a plain model (loaded with
//! your usual Burn code) into the wrapped one, matching paths with the wrappers' `base` segments
//! removed; adapter parameters are left as they are.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::params::PathStack;
use crate::{PeftError, Result};

struct Collect {
    path: PathStack,
    out: HashMap<String, TensorData>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.insert(self.path.plain_path(), param.val().into_data());
    }
}

struct Assign<B: Backend> {
    path: PathStack,
    source: HashMap<String, TensorData>,
    error: Option<PeftError>,
    assigned: usize,
    device: Option<B::Device>,
}

impl<B: Backend> ModuleMapper<B> for Assign<B> {
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
        let path = self.path.plain_path();
        let Some(data) = self.source.remove(&path) else {
            self.error = Some(PeftError::MissingTensor(path));
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let expected = tensor.dims().to_vec();
        if data.shape.to_vec() != expected {
            self.error = Some(PeftError::ShapeMismatch { name: path, expected, actual: data.shape.to_vec() });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let device = self.device.get_or_insert_with(|| tensor.device()).clone();
        let value = Tensor::<B, D>::from_data(data, &device).set_require_grad(tensor.is_require_grad());
        self.assigned += 1;
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Copies the weights of `source` (a plain model) into `target` (the same model with typed
/// wrappers), matching parameter paths with the wrappers' `base` segments removed. Every
/// non-adapter parameter of `target` must be found with its shape, and every parameter of
/// `source` must be used; otherwise a typed error names the tensor and `target` is not returned.
pub fn transfer_base_weights<B: Backend, S: Module<B>, T: Module<B>>(target: T, source: &S) -> Result<T> {
    let mut collect = Collect { path: PathStack::default(), out: HashMap::new() };
    source.visit(&mut collect);
    let mut assign = Assign::<B> { path: PathStack::default(), source: collect.out, error: None, assigned: 0, device: None };
    let target = target.map(&mut assign);
    if let Some(e) = assign.error {
        return Err(e);
    }
    if let Some(unused) = assign.source.keys().min() {
        return Err(PeftError::Unsupported(format!("source parameter `{unused}` has no place in the wrapped model")));
    }
    Ok(target)
}
