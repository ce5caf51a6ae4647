//! Parameters by path: which ones train, how many there are, and whether they are finite.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::path::{ModulePath, ParamMapper, ParamVisitor, map_params, visit_params};
use crate::targeting::name_matches;

/// One floating-point parameter of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Full path, such as `layers.0.attn.q.base.weight`.
    pub path: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Whether it belongs to an adapter.
    pub is_adapter: bool,
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct ListParams(Vec<ParamInfo>);

impl<B: Backend> ParamVisitor<B> for ListParams {
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        self.0.push(ParamInfo { path: path.path(), shape: param.shape().dims::<D>().to_vec(), is_adapter: path.in_adapter() });
    }
}

/// Every floating-point parameter of `module`, with its path.
pub fn list_params<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    let mut list = ListParams(Vec::new());
    visit_params(module, &mut list);
    list.0
}

/// What trains: adapters (plus named modules saved in full), or everything.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainMode {
    /// Only adapter parameters, plus every parameter under a module matching one of
    /// `modules_to_save` (exactly or as a `.`-suffix, like target names).
    Adapters {
        /// Modules trained and saved in full, such as a classifier head.
        modules_to_save: Vec<String>,
    },
    /// Full fine-tuning: every parameter trains. The baseline.
    Full,
}

impl TrainMode {
    /// Adapters only.
    pub fn adapters() -> Self {
        Self::Adapters { modules_to_save: Vec::new() }
    }

    /// Adapters plus the named modules.
    pub fn adapters_and<S: AsRef<str>>(modules_to_save: &[S]) -> Self {
        Self::Adapters { modules_to_save: modules_to_save.iter().map(|s| s.as_ref().to_string()).collect() }
    }

    fn trains(&self, path: &ModulePath) -> bool {
        match self {
            Self::Full => true,
            Self::Adapters { modules_to_save } => {
                path.in_adapter() || path.module_paths().any(|p| modules_to_save.iter().any(|m| name_matches(m, &p)))
            }
        }
    }

    /// Whether the parameter `info` trains under this mode.
    pub fn trains_param(&self, info: &ParamInfo) -> bool {
        self.trains(&ModulePath::parse(&info.path, info.is_adapter))
    }
}

struct Freeze<'a>(&'a TrainMode);

impl<B: Backend> ParamMapper<B> for Freeze<'_> {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let trains = self.0.trains(path);
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_require_grad(trains), mapper)
    }
}

/// Sets which parameters of `model` receive gradients (and so optimizer state).
pub fn set_trainable<B: Backend, M: Module<B>>(model: M, mode: &TrainMode) -> M {
    map_params(model, &mut Freeze(mode))
}

/// Trainable and total parameter counts, like HF peft's `print_trainable_parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainableReport {
    /// Parameters that train.
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

impl TrainableReport {
    /// Counts the parameters of `model` that train under `mode`.
    pub fn new<B: Backend, M: Module<B>>(model: &M, mode: &TrainMode) -> Self {
        let params = list_params(model);
        Self {
            trainable: params.iter().filter(|p| mode.trains_param(p)).map(ParamInfo::numel).sum(),
            total: params.iter().map(ParamInfo::numel).sum(),
        }
    }

    /// Trainable share in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 { 0.0 } else { 100.0 * self.trainable as f64 / self.total as f64 }
    }
}

impl core::fmt::Display for TrainableReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            self.percent()
        )
    }
}

struct Finite(bool);

impl<B: Backend> ModuleVisitor<B> for Finite {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.0 {
            self.0 = param.val().is_finite().all().into_data().iter::<bool>().all(|b| b);
        }
    }
}

/// Whether every floating-point parameter of `module` is finite (no NaN, no infinity).
pub fn all_finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    let mut v = Finite(true);
    module.visit(&mut v);
    v.0
}

/// `t` in `dtype`, untouched (no cast recorded) when it already is.
pub fn in_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: burn::tensor::DType) -> Tensor<B, D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `param` in f32 when it is in a half-precision type (f16, bf16), same id and trainability:
/// trainable weights kept in f32 while the frozen base computes in half precision, as HF peft's
/// `autocast_adapter_dtype` does.
pub fn upcast_half<B: Backend, const D: usize>(param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
    let value = param.val();
    if !matches!(value.dtype(), burn::tensor::DType::F16 | burn::tensor::DType::BF16) {
        return param;
    }
    let grad = value.is_require_grad();
    // Through the host: a cast is an operation, and its result cannot become a leaf to train.
    let device = value.device();
    let f32 = Tensor::from_data(value.into_data().convert::<f32>(), (&device, burn::tensor::DType::F32));
    Param::initialized(param.id, f32.set_require_grad(grad))
}

/// A new trainable parameter holding `value`.
pub fn trainable<B: Backend, const D: usize>(value: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(burn::module::ParamId::new(), value.require_grad())
}

/// `param` with its value replaced by `value`, same id, frozen (for merged base weights).
pub fn frozen_like<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>, value: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(param.id, value.detach().set_require_grad(false))
}
