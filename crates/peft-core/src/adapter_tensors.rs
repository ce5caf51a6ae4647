//! Reading and writing an adapter's parameter values across a model, by module path: the
//! mechanism every checkpoint format (HF peft's included) goes through.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::path::{ModulePath, ParamMapper, ParamVisitor, map_params, visit_params};
use crate::walk::LayerOp;
use crate::{Adaptable, PeftError, Result, Tuned, Tuner};

/// An adapter's values: module path → parameter path inside the adapter → value.
pub type AdapterTensors = BTreeMap<String, BTreeMap<String, TensorData>>;

struct Read(BTreeMap<String, TensorData>);

impl<B: Backend> ParamVisitor<B> for Read {
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        self.0.insert(path.path(), param.val().into_data());
    }
}

struct Write {
    module: String,
    values: BTreeMap<String, TensorData>,
    error: Option<PeftError>,
}

impl<B: Backend> ParamMapper<B> for Write {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let name = path.path();
        let full = format!("{}.{name}", self.module);
        let Some(data) = self.values.remove(&name) else {
            self.error = Some(PeftError::MissingTensor(full));
            return param;
        };
        let expected = param.shape().dims::<D>().to_vec();
        if data.shape.to_vec() != expected {
            self.error = Some(PeftError::ShapeMismatch { name: full, expected, actual: data.shape.to_vec() });
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let value = Tensor::<B, D>::from_data(data, &tensor.device()).set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, value, mapper)
    }
}

pub(crate) struct CollectTensors<'a> {
    pub(crate) name: &'a str,
    pub(crate) out: AdapterTensors,
}

impl<B: Backend> LayerOp<B> for CollectTensors<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        if let Some(adapter) = layer.adapter(self.name) {
            let mut read = Read(BTreeMap::new());
            visit_params(adapter, &mut read);
            self.out.insert(path.into(), read.0);
        }
        Ok(())
    }
}

pub(crate) struct AssignTensors<'a> {
    pub(crate) name: &'a str,
    pub(crate) tensors: AdapterTensors,
}

impl<B: Backend> LayerOp<B> for AssignTensors<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        let Some(adapter) = layer.adapter_mut(self.name) else { return Ok(()) };
        let Some(values) = self.tensors.remove(path) else {
            return Err(PeftError::MissingTensor(format!("{path} (adapter `{}`)", self.name)));
        };
        let mut write = Write { module: path.into(), values, error: None };
        let updated = map_params(adapter.clone(), &mut write);
        if let Some(e) = write.error {
            return Err(e);
        }
        if let Some(extra) = write.values.keys().next() {
            return Err(PeftError::UnexpectedTensor { name: format!("{path}.{extra}"), reason: format!("not a parameter of adapter `{}`", self.name) });
        }
        *adapter = updated;
        Ok(())
    }
}
