//! Loading a pretrained model's weights into the same model with typed wrappers.
//!
//! Wrapping `q: Linear` as `q: Tuned<Linear, _>` moves its parameters from `q.weight` to
//! `q.base.weight`. [`transfer_base_weights`] copies every parameter of a plain model (loaded with
//! your usual Burn code) into the wrapped one, matching paths with the wrappers' `base` segments
//! removed; adapter parameters are left as they are.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::params::PathStack;
use crate::weights::{WeightSource, assign_base_weights};
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

impl WeightSource for HashMap<String, TensorData> {
    fn take(&mut self, stack: &PathStack, _expected: &[usize]) -> Result<Option<TensorData>> {
        let path = stack.plain_path();
        self.remove(&path).map(Some).ok_or(PeftError::MissingTensor(path))
    }
}

/// Copies the weights of `source` (a plain model) into `target` (the same model with typed
/// wrappers), matching parameter paths with the wrappers' `base` segments removed. Every
/// non-adapter parameter of `target` must be found with its shape, and every parameter of
/// `source` must be used; otherwise a typed error names the tensor and `target` is not returned.
pub fn transfer_base_weights<B: Backend, S: Module<B>, T: Module<B>>(target: T, source: &S) -> Result<T> {
    let mut collect = Collect { path: PathStack::default(), out: HashMap::new() };
    source.visit(&mut collect);
    let mut source = collect.out;
    let target = assign_base_weights(target, &mut source)?;
    if let Some(unused) = source.keys().min() {
        return Err(PeftError::Unsupported(format!("source parameter `{unused}` has no place in the wrapped model")));
    }
    Ok(target)
}
