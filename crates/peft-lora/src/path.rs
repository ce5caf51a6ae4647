//! LoRA on any unmodified Burn module, attached by parameter path.
//!
//! The model's code is not touched: each targeted 2-D `weight` parameter gets factors `A`, `B`,
//! and [`PathLora::effective`] rebuilds the model with `W + s·A·B` through Burn's
//! [`ModuleMapper`]. This materializes a dense `d_in × d_out` update per layer and step, and its
//! gradient flows through that dense tensor. The typed wrappers ([`crate::LoraLinear`]) never do;
//! prefer them for training large layers, and this path to adapt or merge a model you cannot edit.

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::path::{ModulePath, ParamMapper, map_params};
use peft_core::{LayerKind, MethodConfig, PeftError, Result, TargetMatcher, TrainMode, TrainableReport, all_finite, list_params, set_trainable};

use crate::init::{check_rank, init_a};
use crate::{Lora, LoraConfig};

/// An unmodified model `M` with LoRA factors keyed by parameter path.
#[derive(Module, Debug)]
pub struct PathLora<B: Backend, M: Module<B>> {
    /// The frozen model.
    pub base: M,
    /// One low-rank update per adapted weight, in the order of `paths`.
    pub deltas: Vec<Lora<B>>,
    #[module(skip)]
    paths: Vec<String>,
    phantom: PhantomData<B>,
}

impl<B: Backend, M: Module<B>> PathLora<B, M> {
    /// Attaches LoRA to every 2-D `weight` parameter whose module path `config` targets
    /// (`all-linear` counts every such weight as linear). The model is frozen.
    pub fn new(model: M, config: &LoraConfig) -> Result<Self> {
        config.validate()?;
        let params = list_params(&model);
        let candidates: Vec<(String, LayerKind)> = params
            .iter()
            .filter(|p| p.shape.len() == 2)
            .filter_map(|p| p.path.strip_suffix(".weight").map(|m| (m.to_string(), LayerKind::Linear)))
            .collect();
        let selected = TargetMatcher::new(&config.targets)?.select(&candidates)?;
        let device = model.devices().into_iter().next().ok_or_else(|| PeftError::NoParameters("the model".into()))?;
        let mut deltas = Vec::new();
        let mut paths = Vec::new();
        for module_path in selected {
            let path = format!("{module_path}.weight");
            let info = params.iter().find(|p| p.path == path).expect("selected from these params");
            let (rows, cols) = (info.shape[0], info.shape[1]);
            // The typed wrappers carry DoRA, the LoRA bias and PiSSA; a dense update per weight
            // carries plain LoRA and rsLoRA.
            config.supported_on(&module_path, false, false, false, false)?;
            let (r, scaling) = config.rank_and_scaling(&module_path)?;
            check_rank(&module_path, r, rows, cols)?;
            let a = init_a(config.init, [rows, r], rows, r, &device);
            let mut lora = Lora::from_factors(a, Tensor::zeros([r, cols], &device), scaling)?;
            lora.dropout = burn::nn::DropoutConfig::new(config.dropout).init();
            deltas.push(lora);
            paths.push(path);
        }
        Ok(Self { base: set_trainable(model, &TrainMode::adapters()), deltas, paths, phantom: PhantomData })
    }

    /// The adapted parameter paths.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    fn with_deltas(&self, detach: bool) -> M {
        let deltas = self
            .paths
            .iter()
            .cloned()
            .zip(self.deltas.iter().map(|d| if detach { d.delta_weight().detach() } else { d.delta_weight() }))
            .collect();
        map_params(self.base.clone(), &mut AddDeltas(deltas))
    }

    /// The model with `W + s·A·B` in every adapted weight, differentiable in `A` and `B`.
    /// Call it once per training step and run the returned model's forward.
    pub fn effective(&self) -> M {
        self.with_deltas(false)
    }

    /// Folds the updates into the weights and returns the plain model. With `safe`, non-finite
    /// results are refused.
    pub fn merge(&self, safe: bool) -> Result<M> {
        let merged = self.with_deltas(true);
        if safe && !all_finite(&merged) {
            return Err(PeftError::NonFinite { path: self.paths.join(", "), adapter: "path LoRA".into() });
        }
        Ok(merged)
    }

    /// Trainable (the factors) and total parameters.
    pub fn report(&self) -> TrainableReport {
        let base = TrainableReport::new(&self.base, &TrainMode::adapters());
        let trainable: usize = self.deltas.iter().map(|d| d.num_params()).sum();
        TrainableReport { trainable, total: base.total + trainable }
    }
}

struct AddDeltas<B: Backend>(HashMap<String, Tensor<B, 2>>);

impl<B: Backend> ParamMapper<B> for AddDeltas<B> {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(delta) = self.0.remove(&path.path()) else { return param };
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        Param::from_mapped_value(id, tensor + delta.reshape::<D, _>(shape), mapper)
    }
}
