//! Reading and writing an adapter's parameter values across a model, by module path: the
//! mechanism every checkpoint format (HF peft's included) goes through.

use std::collections::BTreeMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::LayerOp;
use crate::{Adaptable, PeftError, Result, Tuned, Tuner};

/// An adapter's values: module path → parameter path inside the adapter → value.
pub type AdapterTensors = BTreeMap<String, BTreeMap<String, TensorData>>;

#[derive(Default)]
struct Names(Vec<String>);

impl Names {
    fn path(&self) -> String {
        self.0.join(".")
    }
}

struct Read {
    names: Names,
    out: BTreeMap<String, TensorData>,
}

impl<B: Backend> ModuleVisitor<B> for Read {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.names.0.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.names.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.insert(self.names.path(), param.val().into_data());
    }
}

struct Write {
    module: String,
    names: Names,
    values: BTreeMap<String, TensorData>,
    error: Option<PeftError>,
}

impl<B: Backend> ModuleMapper<B> for Write {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.names.0.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.names.0.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let name = self.names.path();
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
            let mut read = Read { names: Names::default(), out: BTreeMap::new() };
            adapter.visit(&mut read);
            self.out.insert(path.into(), read.out);
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
        let Some(i) = layer.names().iter().position(|n| n == self.name) else { return Ok(()) };
        let Some(values) = self.tensors.remove(path) else {
            return Err(PeftError::MissingTensor(format!("{path} (adapter `{}`)", self.name)));
        };
        let mut write = Write { module: path.into(), names: Names::default(), values, error: None };
        let adapter = layer.adapters[i].clone().map(&mut write);
        if let Some(e) = write.error {
            return Err(e);
        }
        if let Some(extra) = write.values.keys().next() {
            return Err(PeftError::Unsupported(format!("tensor `{path}.{extra}` is not a parameter of adapter `{}`", self.name)));
        }
        layer.adapters[i] = adapter;
        Ok(())
    }
}
