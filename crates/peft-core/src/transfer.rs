//! Loading a pretrained model's weights into the same model with typed wrappers.
//!
//! Wrapping `q: Linear` as `q: Tuned<Linear, _>` moves its parameters from `q.weight` to
//! `q.base.weight`. [`transfer_base_weights`] copies every parameter of a plain model (loaded with
//! your usual Burn code) into the wrapped one, matching paths with the wrappers' `base` segments
//! removed; adapter parameters are left as they are.

use std::collections::HashMap;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::path::{ModulePath, ParamVisitor, visit_params};
use crate::weights::{WeightSource, assign_base_weights};
use crate::{PeftError, Result};

struct Collect(HashMap<String, TensorData>);

impl<B: Backend> ParamVisitor<B> for Collect {
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        self.0.insert(path.plain_path(), param.val().into_data());
    }
}

impl WeightSource for HashMap<String, TensorData> {
    fn take(&mut self, path: &ModulePath, _expected: &[usize]) -> Result<Option<TensorData>> {
        let path = path.plain_path();
        self.remove(&path).map(Some).ok_or(PeftError::MissingTensor(path))
    }
}

/// Copies the weights of `source` (a plain model) into `target` (the same model with typed
/// wrappers), matching parameter paths with the wrappers' `base` segments removed. Every
/// non-adapter parameter of `target` must be found with its shape, and every parameter of
/// `source` must be used; otherwise a typed error names the tensor and `target` is not returned.
pub fn transfer_base_weights<B: Backend, S: Module<B>, T: Module<B>>(target: T, source: &S) -> Result<T> {
    let mut collect = Collect(HashMap::new());
    visit_params(source, &mut collect);
    let mut source = collect.0;
    let target = assign_base_weights(target, &mut source)?;
    if let Some(unused) = source.keys().min() {
        return Err(PeftError::UnexpectedTensor { name: unused.clone(), reason: "the wrapped model has no parameter at this path".into() });
    }
    Ok(target)
}
