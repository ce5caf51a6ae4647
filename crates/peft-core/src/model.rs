//! Walking a user's model to reach every [`Tuned`] layer by module path, and the model-level
//! adapter operations built on that walk (add, activate, disable, delete, merge).

use std::collections::BTreeSet;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;

use crate::adapter_tensors::{AdapterTensors, AssignTensors, CollectTensors};
use crate::{Combination, LayerKind, MethodConfig, PeftError, Result, TargetMatcher, Tuned, Tuner};

/// Something that may contain [`Tuned`] layers: a layer, a block, a whole model.
///
/// Implemented for Burn's `Linear`, `Embedding` and `Conv2d`, for [`Tuned`], `Vec` and `Option`.
/// Implement it for your own modules with [`adaptable!`](crate::adaptable).
pub trait Adaptable<B: Backend>: Module<B> + burn::module::ModuleDisplay {
    /// The kind of layer this is, for targeting.
    fn kind(&self) -> LayerKind {
        LayerKind::Other
    }

    /// The width of the layer's output, when it has one (used by adapters that need it).
    fn output_features(&self) -> Option<usize> {
        None
    }

    /// Calls `visitor` on every [`Tuned`] layer below `self`, `path` being `self`'s module path.
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        let _ = (path, visitor);
    }
}

/// A function over every [`Tuned`] layer of a model.
pub trait TunedVisitor<B: Backend> {
    /// Called once per wrapped layer with its module path.
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>);
}

/// `parent.child`, or `child` at the root.
pub fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

impl<B: Backend> Adaptable<B> for Linear<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.weight.dims()[1])
    }
}

impl<B: Backend> Adaptable<B> for Embedding<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Embedding
    }
}

impl<B: Backend> Adaptable<B> for Conv2d<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Conv2d
    }
}

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Vec<M> {
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_tuned(&join_path(path, &i.to_string()), visitor);
        }
    }
}

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Option<M> {
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        if let Some(m) = self {
            m.visit_tuned(path, visitor);
        }
    }
}

impl<B: Backend, L: Adaptable<B>, T: Tuner<B, L>> Adaptable<B> for Tuned<B, L, T> {
    fn kind(&self) -> LayerKind {
        self.base.kind()
    }

    fn output_features(&self) -> Option<usize> {
        self.base.output_features()
    }

    /// Visits this layer, then any wrapper nested inside it under the same path.
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        visitor.visit(path, self);
        self.base.visit_tuned(path, visitor);
    }
}

/// Implements [`Adaptable`] for a module struct generic over `B`, listing the fields that
/// contain tuned layers.
///
/// ```ignore
/// peft_core::adaptable!(Block { attention, feed_forward });
/// // A sub-layer that bottleneck adapters wrap also says which field gives its output width:
/// peft_core::adaptable!(FeedForward { up, down }, output = down);
/// // A module generic over the method of its linear layers:
/// peft_core::adaptable!(Attention<T: MyLinearAdapter<B>> { q_proj, v_proj });
/// ```
#[macro_export]
macro_rules! adaptable {
    ($name:ident { $($field:ident),* $(,)? }, output = $out:ident) => {
        impl<B: burn::tensor::backend::Backend> $crate::Adaptable<B> for $name<B> {
            fn output_features(&self) -> Option<usize> {
                $crate::Adaptable::<B>::output_features(&self.$out)
            }
            fn visit_tuned<V: $crate::TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
                $( $crate::Adaptable::<B>::visit_tuned(&mut self.$field, &$crate::join_path(path, stringify!($field)), visitor); )*
            }
        }
    };
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl<B: burn::tensor::backend::Backend> $crate::Adaptable<B> for $name<B> {
            fn visit_tuned<V: $crate::TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
                $( $crate::Adaptable::<B>::visit_tuned(&mut self.$field, &$crate::join_path(path, stringify!($field)), visitor); )*
            }
        }
    };
    ($name:ident<$t:ident: $bound:path> { $($field:ident),* $(,)? }) => {
        impl<B: burn::tensor::backend::Backend, $t: $bound> $crate::Adaptable<B> for $name<B, $t> {
            fn visit_tuned<V: $crate::TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
                $( $crate::Adaptable::<B>::visit_tuned(&mut self.$field, &$crate::join_path(path, stringify!($field)), visitor); )*
            }
        }
    };
    ($name:ident: $kind:expr) => {
        impl<B: burn::tensor::backend::Backend> $crate::Adaptable<B> for $name<B> {
            fn kind(&self) -> $crate::LayerKind {
                $kind
            }
        }
    };
}

/// One wrapped layer, as seen by [`PeftModel::tuned_layers`].
#[derive(Clone, Debug, PartialEq)]
pub struct TunedLayerInfo {
    /// Module path.
    pub path: String,
    /// Kind of the base layer.
    pub kind: LayerKind,
    /// Names of its adapters.
    pub adapters: Vec<String>,
}

struct Collect<'a> {
    config: Option<&'a dyn MethodConfig>,
    out: Vec<TunedLayerInfo>,
}

impl<B: Backend> TunedVisitor<B> for Collect<'_> {
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) {
        let fits = self.config.is_none_or(|c| T::accepts(c as &dyn std::any::Any));
        if fits {
            self.out.push(TunedLayerInfo {
                path: path.into(),
                kind: layer.kind(),
                adapters: layer.names().to_vec(),
            });
        }
    }
}

struct Attach<'a, C: MethodConfig> {
    name: &'a str,
    config: &'a C,
    selected: BTreeSet<String>,
    attached: Vec<String>,
    error: Option<PeftError>,
}

impl<B: Backend, C: MethodConfig> TunedVisitor<B> for Attach<'_, C> {
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) {
        if self.error.is_some() || !self.selected.contains(path) {
            return;
        }
        let Some(adapter) = T::from_config(self.config, &mut layer.base, path) else { return };
        let result = adapter.and_then(|a| {
            layer.add_adapter(self.name, a).map_err(|_| PeftError::DuplicateAdapter {
                name: self.name.into(),
                path: path.into(),
            })
        });
        match result {
            Ok(()) => self.attached.push(path.into()),
            Err(e) => self.error = Some(e),
        }
    }
}

/// A closure-like visitor: applies `f` to every tuned layer and keeps the first error.
struct Each<F> {
    f: F,
    error: Option<PeftError>,
}

/// The operation [`Each`] applies, generic over the layer and method types.
pub(crate) trait LayerOp<B: Backend> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()>;
}

impl<B: Backend, F: LayerOp<B>> TunedVisitor<B> for Each<F> {
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) {
        if self.error.is_none()
            && let Err(e) = self.f.apply(path, layer)
        {
            self.error = Some(e);
        }
    }
}

pub(crate) fn for_each<B: Backend, M: Adaptable<B>, F: LayerOp<B>>(model: &mut M, f: F) -> Result<F> {
    let mut each = Each { f, error: None };
    model.visit_tuned("", &mut each);
    match each.error {
        Some(e) => Err(e),
        None => Ok(each.f),
    }
}

struct SetActive<'a>(&'a [&'a str]);
impl<B: Backend> LayerOp<B> for SetActive<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, _: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        layer.set_active(self.0);
        Ok(())
    }
}

struct SetEnabled(bool);
impl<B: Backend> LayerOp<B> for SetEnabled {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, _: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        layer.set_enabled(self.0)
    }
}

struct Delete<'a>(&'a str);
impl<B: Backend> LayerOp<B> for Delete<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, _: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        if layer.names().iter().any(|n| n == self.0) {
            layer.delete_adapter(self.0)?;
        }
        Ok(())
    }
}

struct Merge(bool);
impl<B: Backend> LayerOp<B> for Merge {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        layer.merge(path, self.0)
    }
}

struct Unmerge;
impl<B: Backend> LayerOp<B> for Unmerge {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        layer.unmerge(path)
    }
}

struct Combine<'a> {
    parts: &'a [(&'a str, f64)],
    name: &'a str,
    how: Combination,
}
impl<B: Backend> LayerOp<B> for Combine<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        let present: Vec<(&T, f64)> = self.parts.iter().filter_map(|(n, w)| layer.adapter(n).map(|a| (a, *w))).collect();
        if present.is_empty() {
            return Ok(());
        }
        if present.len() != self.parts.len() {
            return Err(PeftError::Unsupported(format!("`{path}` carries only some of the adapters to combine")));
        }
        let combined = T::combine(&present, self.how)?;
        layer.add_adapter(self.name, combined).map_err(|_| PeftError::DuplicateAdapter { name: self.name.into(), path: path.into() })?;
        layer.set_active(&[self.name]);
        Ok(())
    }
}

/// Model-level adapter management, available on every [`Adaptable`] model.
///
/// Every operation either succeeds on the whole model or returns an error and leaves the model
/// as it was.
pub trait PeftModel<B: Backend>: Adaptable<B> + Sized {
    /// Every wrapped layer, with its path, kind and adapter names.
    fn tuned_layers(&mut self) -> Vec<TunedLayerInfo> {
        let mut collect = Collect { config: None, out: Vec::new() };
        self.visit_tuned("", &mut collect);
        collect.out
    }

    /// The adapter names present anywhere in the model, sorted.
    fn adapter_names(&mut self) -> Vec<String> {
        let names: BTreeSet<String> = self.tuned_layers().into_iter().flat_map(|l| l.adapters).collect();
        names.into_iter().collect()
    }

    /// Attaches a new adapter called `name`, built from `config`, to every targeted layer whose
    /// method accepts the config. Returns the paths it was attached to.
    fn add_adapter<C: MethodConfig>(&mut self, name: &str, config: &C) -> Result<Vec<String>> {
        let mut collect = Collect { config: Some(config), out: Vec::new() };
        self.visit_tuned("", &mut collect);
        if collect.out.is_empty() {
            return Err(PeftError::Unsupported(format!(
                "the model has no layer wrapped for {} adapters",
                config.peft_type()
            )));
        }
        let candidates: Vec<_> = collect.out.iter().map(|l| (l.path.clone(), l.kind)).collect();
        let selected = TargetMatcher::new(config.targeting())?.select(&candidates)?;
        let mut model = self.clone();
        let mut attach = Attach { name, config, selected: selected.into_iter().collect(), attached: Vec::new(), error: None };
        model.visit_tuned("", &mut attach);
        if let Some(e) = attach.error {
            return Err(e);
        }
        *self = model;
        Ok(attach.attached)
    }

    /// Makes exactly the named adapters active on every layer (several may be active at once).
    fn set_active_adapters(&mut self, names: &[&str]) -> Result<()> {
        let known = self.adapter_names();
        if let Some(missing) = names.iter().find(|n| !known.iter().any(|k| k == *n)) {
            return Err(PeftError::UnknownAdapter { name: missing.to_string(), known });
        }
        for_each(self, SetActive(names)).map(|_| ())
    }

    /// Turns every adapter off: the model computes exactly its base output.
    fn disable_adapters(&mut self) -> Result<()> {
        let mut model = self.clone();
        for_each(&mut model, SetEnabled(false))?;
        *self = model;
        Ok(())
    }

    /// Turns adapters back on after [`disable_adapters`](Self::disable_adapters).
    fn enable_adapters(&mut self) -> Result<()> {
        for_each(self, SetEnabled(true)).map(|_| ())
    }

    /// Removes the adapter called `name` from every layer.
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        let known = self.adapter_names();
        if !known.iter().any(|k| k == name) {
            return Err(PeftError::UnknownAdapter { name: name.into(), known });
        }
        let mut model = self.clone();
        for_each(&mut model, Delete(name))?;
        *self = model;
        Ok(())
    }

    /// Folds every active adapter into the base weights. With `safe`, non-finite results are
    /// refused and the model is unchanged.
    fn merge_adapters(&mut self, safe: bool) -> Result<()> {
        let mut model = self.clone();
        for_each(&mut model, Merge(safe))?;
        *self = model;
        Ok(())
    }

    /// Adds adapter `name`, the weighted combination of the adapters `parts`, on every layer that
    /// carries them, and makes it the active one.
    fn add_weighted_adapter(&mut self, parts: &[(&str, f64)], name: &str, how: Combination) -> Result<()> {
        let known = self.adapter_names();
        if let Some((missing, _)) = parts.iter().find(|(n, _)| !known.iter().any(|k| k == n)) {
            return Err(PeftError::UnknownAdapter { name: missing.to_string(), known });
        }
        let mut model = self.clone();
        for_each(&mut model, Combine { parts, name, how })?;
        *self = model;
        Ok(())
    }

    /// Takes merged adapters back out of the base weights.
    fn unmerge_adapters(&mut self) -> Result<()> {
        let mut model = self.clone();
        for_each(&mut model, Unmerge)?;
        *self = model;
        Ok(())
    }

    /// The parameter values of adapter `name`, by module path, then by parameter path inside the
    /// adapter (`a`, `b`, `magnitude`, `scale`, `keys`, ...), in Burn's layout.
    fn adapter_tensors(&mut self, name: &str) -> Result<AdapterTensors> {
        Ok(for_each(self, CollectTensors { name, out: AdapterTensors::new() })?.out)
    }

    /// Replaces the parameter values of adapter `name` with `tensors` (as returned by
    /// [`adapter_tensors`](Self::adapter_tensors)). Every parameter of the adapter must be given
    /// with its shape, and every given tensor must be used; otherwise a typed error names the
    /// tensor and the model is unchanged.
    fn set_adapter_tensors(&mut self, name: &str, tensors: AdapterTensors) -> Result<()> {
        let mut model = self.clone();
        let assign = for_each(&mut model, AssignTensors { name, tensors })?;
        if let Some((path, params)) = assign.tensors.iter().next() {
            let param = params.keys().next().map(String::as_str).unwrap_or("");
            return Err(PeftError::Unsupported(format!("tensor `{path}.{param}` has no place: the model has no adapter `{name}` at `{path}`")));
        }
        *self = model;
        Ok(())
    }
}

impl<B: Backend, M: Adaptable<B>> PeftModel<B> for M {}
