//! Module paths during a walk over a model's parameters: the one path tracker that every visit
//! and map in burn-peft uses (trainability, parameter lists, adapter values, weight transfer,
//! HF checkpoints, path-based LoRA).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The container type Burn's derive reports for the fields of a [`crate::Tuned`].
const TUNED_CONTAINER: &str = "Struct:Tuned";
/// The field of [`crate::Tuned`] that holds adapter parameters.
const ADAPTERS_FIELD: &str = "adapters";
/// The field of [`crate::Tuned`] that holds the wrapped layer.
const BASE_FIELD: &str = "base";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    /// A field or index: part of every path.
    Field,
    /// A wrapper's `base` field: absent from the plain (unwrapped) model's paths.
    WrapperBase,
    /// An enum module's variant: absent from paths, as in the model walk.
    Variant,
}

/// Where a Burn visit or map is: the module path, whether it lies inside adapters, and which
/// segments a plain (unwrapped) model would not have.
#[derive(Clone, Debug, Default)]
pub struct ModulePath {
    names: Vec<(String, Segment)>,
    owners: Vec<String>,
    adapter_depth: Option<usize>,
}

impl ModulePath {
    /// The path of an existing dotted name (no wrapper or variant segments known).
    pub fn parse(path: &str, in_adapter: bool) -> Self {
        let names = path.split('.').filter(|s| !s.is_empty()).map(|s| (s.to_string(), Segment::Field)).collect();
        Self { names, owners: Vec::new(), adapter_depth: in_adapter.then_some(0) }
    }

    /// Enters field `name` of a module of Burn type `container` (`Struct:Linear`, `Vec`, ...).
    pub fn enter(&mut self, name: &str, container: &str) {
        let in_tuned = container == TUNED_CONTAINER;
        if self.adapter_depth.is_none() && name == ADAPTERS_FIELD && in_tuned {
            self.adapter_depth = Some(self.names.len());
        }
        let segment = if container.starts_with("Enum:") {
            Segment::Variant
        } else if in_tuned && name == BASE_FIELD {
            Segment::WrapperBase
        } else {
            Segment::Field
        };
        self.names.push((name.to_string(), segment));
        self.owners.push(container.to_string());
    }

    /// Leaves the innermost field.
    pub fn exit(&mut self) {
        self.names.pop();
        self.owners.pop();
        if self.adapter_depth.is_some_and(|d| d >= self.names.len()) {
            self.adapter_depth = None;
        }
    }

    fn join(&self, keep: impl Fn(Segment) -> bool) -> String {
        let kept: Vec<&str> = self.names.iter().filter(|(_, s)| keep(*s)).map(|(n, _)| n.as_str()).collect();
        kept.join(".")
    }

    /// The path, such as `blocks.0.attn.q.base.weight`.
    pub fn path(&self) -> String {
        self.join(|s| s != Segment::Variant)
    }

    /// The path the unwrapped model would have: wrappers' `base` segments left out
    /// (`blocks.0.attn.q.weight`).
    pub fn plain_path(&self) -> String {
        self.join(|s| s == Segment::Field)
    }

    /// The type holding the current parameter, as Burn names it (`Struct:Linear`, ...).
    pub fn owner(&self) -> &str {
        self.owners.last().map_or("", String::as_str)
    }

    /// Whether the current position lies inside a wrapper's adapters.
    pub fn in_adapter(&self) -> bool {
        self.adapter_depth.is_some()
    }

    /// Whether the field just entered is the `base` of a [`crate::Tuned`], whose plain path is
    /// then the wrapped layer's path.
    pub fn at_wrapper_base(&self) -> bool {
        self.names.last().is_some_and(|(_, s)| *s == Segment::WrapperBase)
    }

    /// Every ancestor module path of the current parameter, innermost first.
    pub fn module_paths(&self) -> impl Iterator<Item = String> + '_ {
        let names: Vec<&str> = self.names.iter().filter(|(_, s)| *s != Segment::Variant).map(|(n, _)| n.as_str()).collect();
        (1..names.len()).rev().map(move |n| names[..n].join("."))
    }
}

/// A visit over a module's float parameters that sees each one's [`ModulePath`].
pub trait ParamVisitor<B: Backend> {
    /// Called once per float parameter.
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>);
    /// Called when the visit enters a field, after `path` includes it. Default: nothing.
    fn entered(&mut self, path: &ModulePath) {
        let _ = path;
    }
}

/// A map over a module's float parameters that sees each one's [`ModulePath`].
pub trait ParamMapper<B: Backend> {
    /// Called once per float parameter; returns its replacement.
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>>;
}

struct Tracked<'a, V> {
    path: ModulePath,
    inner: &'a mut V,
}

impl<B: Backend, V: ParamVisitor<B>> ModuleVisitor<B> for Tracked<'_, V> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
        self.inner.entered(&self.path);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.visit(&self.path, param);
    }
}

impl<B: Backend, V: ParamMapper<B>> ModuleMapper<B> for Tracked<'_, V> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.map(&self.path, param)
    }
}

/// Visits every float parameter of `module` with its path.
pub fn visit_params<B: Backend, M: Module<B>, V: ParamVisitor<B>>(module: &M, visitor: &mut V) {
    module.visit(&mut Tracked { path: ModulePath::default(), inner: visitor });
}

/// Maps every float parameter of `module` with its path.
pub fn map_params<B: Backend, M: Module<B>, V: ParamMapper<B>>(module: M, mapper: &mut V) -> M {
    module.map(&mut Tracked { path: ModulePath::default(), inner: mapper })
}

/// A 64-bit FNV-1a hash of `text` continuing from `state` (start from [`FNV_OFFSET`]): stable
/// across runs and toolchains, for ids and seeds derived from module paths.
pub fn fnv1a(state: u64, text: &str) -> u64 {
    text.bytes().fold(state, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// FNV-1a's offset basis, the start of [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
