//! The model-level adapter operations (add, activate, disable, delete, merge, combine, values),
//! each built on the walk of [`crate::walk`] and all-or-nothing on the whole model.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::adapter_tensors::{AdapterTensors, AssignTensors, CollectTensors};
use crate::path::{ModulePath, ParamVisitor, visit_params};
use crate::walk::{LayerOp, for_each};
use crate::{Adaptable, Combination, LayerKind, MethodConfig, PeftError, Result, TargetMatcher, Tuned, Tuner, TunedVisitor};

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

/// The config given to `add_adapter`, cast once to the config type of each method met in the walk.
struct Configs<'a> {
    given: &'a dyn MethodConfig,
    cast: HashMap<TypeId, Option<Box<dyn Any>>>,
}

impl<'a> Configs<'a> {
    fn new(given: &'a dyn MethodConfig) -> Self {
        Self { given, cast: HashMap::new() }
    }

    /// `given` as a `C`, when the method of `C` takes it.
    fn get<C: MethodConfig + Clone>(&mut self) -> Option<&C> {
        let given = self.given;
        let cast = self.cast.entry(TypeId::of::<C>()).or_insert_with(|| C::cast(given).map(|c| Box::new(c) as Box<dyn Any>));
        cast.as_ref()?.downcast_ref()
    }
}

/// Every wrapped layer, or only those whose method takes a config.
struct Collect<'a> {
    configs: Option<Configs<'a>>,
    out: Vec<TunedLayerInfo>,
}

impl<B: Backend> TunedVisitor<B> for Collect<'_> {
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) {
        if self.configs.as_mut().is_none_or(|c| c.get::<T::Config>().is_some()) {
            self.out.push(TunedLayerInfo { path: path.into(), kind: layer.kind(), adapters: layer.names().to_vec() });
        }
    }
}

struct Attach<'a> {
    name: &'a str,
    configs: Configs<'a>,
    selected: BTreeSet<String>,
    attached: Vec<String>,
}

impl<B: Backend> LayerOp<B> for Attach<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        if !self.selected.contains(path) {
            return Ok(());
        }
        let Some(config) = self.configs.get::<T::Config>() else { return Ok(()) };
        let adapter = T::init(config, &mut layer.base, path)?;
        layer.add_adapter(self.name, adapter).map_err(|_| PeftError::DuplicateAdapter { name: self.name.into(), path: path.into() })?;
        self.attached.push(path.into());
        Ok(())
    }
}

/// The wrapped layers that Burn's own visit finds but the model walk does not reach (a field
/// missing from an `adaptable!` list), as an error; `None` when the walk reaches them all.
fn unreached_layers<B: Backend, M: PeftModel<B>>(model: &mut M) -> Option<PeftError> {
    struct Wrapped(BTreeSet<String>);
    impl<B: Backend> ParamVisitor<B> for Wrapped {
        fn visit<const D: usize>(&mut self, _: &ModulePath, _: &Param<Tensor<B, D>>) {}
        fn entered(&mut self, path: &ModulePath) {
            if path.at_wrapper_base() {
                self.0.insert(path.plain_path());
            }
        }
    }
    let mut wrapped = Wrapped(BTreeSet::new());
    visit_params(model, &mut wrapped);
    let reached: BTreeSet<String> = model.tuned_layers().into_iter().map(|l| l.path).collect();
    let paths: Vec<String> = wrapped.0.difference(&reached).cloned().collect();
    (!paths.is_empty()).then_some(PeftError::UnreachedLayers { paths })
}

/// The per-layer half of each model-level operation.
enum Op<'a> {
    SetActive(&'a [&'a str]),
    SetEnabled(bool),
    Delete(&'a str),
    Merge { safe: bool, skip_unmergeable: bool },
    Unmerge,
    Combine { parts: &'a [(&'a str, f64)], name: &'a str, how: Combination },
    SetRows(&'a [Option<&'a str>]),
    ClearRows,
}

impl<B: Backend> LayerOp<B> for Op<'_> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()> {
        match *self {
            Op::SetActive(names) => layer.set_active(names),
            Op::SetEnabled(enabled) => layer.set_enabled(enabled)?,
            Op::Delete(name) if layer.names().iter().any(|n| n == name) => drop(layer.delete_adapter(name)?),
            // Row assignments name adapters by position: they end with any deletion.
            Op::Delete(_) => layer.clear_example_adapters(),
            Op::Merge { safe, skip_unmergeable } => layer.merge_with(path, safe, skip_unmergeable)?,
            Op::Unmerge => layer.unmerge(path)?,
            Op::SetRows(rows) => {
                let here = |name: &&str| layer.names().iter().any(|k| k == name);
                if matches!(layer.kind(), LayerKind::Prompt | LayerKind::PrefixProjection) && rows.iter().flatten().any(here) {
                    return Err(PeftError::NotSupportedOn { feature: "per-example adapters of prompt tuning and of prefixes through a projection (give their examples a batch of their own, or eject the projection into a plain prefix)".into(), path: path.into() });
                }
                layer.set_example_adapters(rows)?;
            }
            Op::ClearRows => layer.clear_example_adapters(),
            Op::Combine { parts, name, how } => {
                let present: Vec<(&T, f64)> = parts.iter().filter_map(|(n, w)| layer.adapter(n).map(|a| (a, *w))).collect();
                if present.is_empty() {
                    return Ok(());
                }
                if present.len() != parts.len() {
                    return Err(PeftError::CannotCombine(format!("`{path}` carries only some of the adapters to combine")));
                }
                // Rank errors of a combination are about this layer.
                let combined = T::combine(&present, how.for_layer(path)).map_err(|e| match e {
                    PeftError::ZeroRank { .. } => PeftError::ZeroRank { path: path.into() },
                    PeftError::RankTooLarge { rank, max, .. } => PeftError::RankTooLarge { path: path.into(), rank, max },
                    e => e,
                })?;
                layer.add_adapter(name, combined).map_err(|_| PeftError::DuplicateAdapter { name: name.into(), path: path.into() })?;
                layer.set_active(&[name]);
            }
        }
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
        let mut collect = Collect { configs: None, out: Vec::new() };
        self.visit_tuned("", &mut collect);
        collect.out
    }

    /// The adapter names present anywhere in the model, sorted.
    fn adapter_names(&mut self) -> Vec<String> {
        let names: BTreeSet<String> = self.tuned_layers().into_iter().flat_map(|l| l.adapters).collect();
        names.into_iter().collect()
    }

    /// Attaches a new adapter called `name`, built from `config`, to every targeted layer whose
    /// method takes the config. Returns the paths it was attached to.
    ///
    /// The config is validated once; a target that matches no wrapped layer is an error naming
    /// the closest paths (or the wrapped layers an `adaptable!` list leaves out).
    ///
    /// A [`ConfigUnion`](crate::ConfigUnion) adds each of its parts under `name`, all or none.
    fn add_adapter(&mut self, name: &str, config: &dyn MethodConfig) -> Result<Vec<String>> {
        config.validate()?;
        if let Some(union) = crate::union::as_union(config) {
            let mut work = self.clone();
            let mut attached = Vec::new();
            for part in &union.parts {
                attached.extend(work.add_adapter(name, part.as_ref())?);
            }
            *self = work;
            return Ok(attached);
        }
        let mut collect = Collect { configs: Some(Configs::new(config)), out: Vec::new() };
        self.visit_tuned("", &mut collect);
        if collect.out.is_empty() {
            let none = PeftError::NoWrappedLayer { method: config.peft_type(), site: config.site().describe() };
            return Err(unreached_layers(self).unwrap_or(none));
        }
        let candidates: Vec<(String, LayerKind)> = collect.out.iter().map(|l| (l.path.clone(), l.kind)).collect();
        let selected = match TargetMatcher::new(config.targeting())?.select(&candidates) {
            Err(e @ PeftError::NoTargetMatch { .. }) => return Err(unreached_layers(self).unwrap_or(e)),
            other => other?,
        };
        let configs = collect.configs.take().expect("set above");
        let attach = Attach { name, configs, selected: selected.into_iter().collect(), attached: Vec::new() };
        Ok(for_each(self, attach)?.attached)
    }

    /// Makes exactly the named adapters active on every layer (several may be active at once).
    fn set_active_adapters(&mut self, names: &[&str]) -> Result<()> {
        let known = self.adapter_names();
        if let Some(missing) = names.iter().find(|n| !known.iter().any(|k| k == *n)) {
            return Err(PeftError::UnknownAdapter { name: missing.to_string(), known });
        }
        for_each(self, Op::SetActive(names)).map(|_| ())
    }

    /// Turns every adapter off: the model computes exactly its base output.
    fn disable_adapters(&mut self) -> Result<()> {
        for_each(self, Op::SetEnabled(false)).map(|_| ())
    }

    /// Turns adapters back on after [`disable_adapters`](Self::disable_adapters).
    fn enable_adapters(&mut self) -> Result<()> {
        for_each(self, Op::SetEnabled(true)).map(|_| ())
    }

    /// Removes the adapter called `name` from every layer (and ends per-example adapters).
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        let known = self.adapter_names();
        if !known.iter().any(|k| k == name) {
            return Err(PeftError::UnknownAdapter { name: name.into(), known });
        }
        for_each(self, Op::Delete(name)).map(|_| ())
    }

    /// Folds every active adapter into the base weights. With `safe`, non-finite results are
    /// refused and the model is unchanged. An active adapter whose method cannot merge (prefix,
    /// bottleneck) is an error naming it, and the model is unchanged.
    fn merge_adapters(&mut self, safe: bool) -> Result<()> {
        for_each(self, Op::Merge { safe, skip_unmergeable: false }).map(|_| ())
    }

    /// Like [`merge_adapters`](Self::merge_adapters), but active adapters whose method cannot
    /// merge are left active and unmerged.
    fn merge_mergeable_adapters(&mut self, safe: bool) -> Result<()> {
        for_each(self, Op::Merge { safe, skip_unmergeable: true }).map(|_| ())
    }

    /// Adds adapter `name`, the weighted combination of the adapters `parts`, on every layer that
    /// carries them, and makes it the active one.
    fn add_weighted_adapter(&mut self, parts: &[(&str, f64)], name: &str, how: Combination) -> Result<()> {
        let known = self.adapter_names();
        if let Some((missing, _)) = parts.iter().find(|(n, _)| !known.iter().any(|k| k == n)) {
            return Err(PeftError::UnknownAdapter { name: missing.to_string(), known });
        }
        for_each(self, Op::Combine { parts, name, how }).map(|_| ())
    }

    /// Gives each example of the following batches its own adapter, in every layer: row `i`
    /// runs with adapter `rows[i]` alone (none: the base model), whatever the active adapters,
    /// for inference and for training (an adapter's gradients come from its rows only). Each
    /// layer runs every adapter some row uses on the whole batch and keeps its rows, so a row's
    /// result is the one it gets alone.
    ///
    /// Names must be known; merged adapters, and prompt-tuning adapters or projected prefixes
    /// named by a row, are refused (the model is unchanged). The batch must have `rows.len()`
    /// examples. Prefixes of different lengths share one key length: a model hides the prefix
    /// positions a row leaves empty (`peft_ptuning::prepend_prefixes` and `row_prefixes`, as the
    /// reference models do).
    fn set_example_adapters(&mut self, rows: &[Option<&str>]) -> Result<()> {
        let known = self.adapter_names();
        if let Some(missing) = rows.iter().flatten().find(|n| !known.iter().any(|k| k == *n)) {
            return Err(PeftError::UnknownAdapter { name: missing.to_string(), known });
        }
        for_each(self, Op::SetRows(rows)).map(|_| ())
    }

    /// Back to the active adapters for every example.
    fn clear_example_adapters(&mut self) -> Result<()> {
        for_each(self, Op::ClearRows).map(|_| ())
    }

    /// Takes merged adapters back out of the base weights.
    fn unmerge_adapters(&mut self) -> Result<()> {
        for_each(self, Op::Unmerge).map(|_| ())
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
            return Err(PeftError::UnexpectedTensor { name: format!("{path}.{param}"), reason: format!("the model has no adapter `{name}` at `{path}`") });
        }
        *self = model;
        Ok(())
    }
}

impl<B: Backend, M: Adaptable<B>> PeftModel<B> for M {}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::Linear;
    use burn::tensor::backend::Backend;

    use crate::testing::{B, Shift, ShiftConfig, input, layer, values};
    use crate::{PeftError, PeftModel, Site, Targeting, Tuned};

    #[derive(Module, Debug)]
    struct Block<B: Backend> {
        up: Tuned<B, Linear<B>, Shift<B>>,
        down: Tuned<B, Linear<B>, Shift<B>>,
    }
    crate::adaptable!(Block { up, down });

    fn block() -> Block<B> {
        Block { up: layer(3, 4), down: layer(4, 3) }
    }

    impl Block<B> {
        fn forward(&self, x: burn::tensor::Tensor<B, 2>) -> burn::tensor::Tensor<B, 2> {
            self.down.forward(self.up.forward(x))
        }
    }

    #[test]
    fn add_adapter_attaches_to_the_targets_and_is_all_or_nothing() {
        let mut m = block();
        assert_eq!(m.add_adapter("a", &ShiftConfig::new(&["down"], 1.0)).unwrap(), ["down"]);
        assert_eq!(m.adapter_names(), ["a"]);
        // An invalid config is refused before any layer is touched.
        assert!(matches!(m.add_adapter("b", &ShiftConfig::new(&["up", "down"], f32::NAN)), Err(PeftError::InvalidConfig(_))));
        // `down` already has `a`: the whole attach is refused, `up` included.
        assert!(matches!(m.add_adapter("a", &ShiftConfig::new(&["up", "down"], 1.0)), Err(PeftError::DuplicateAdapter { .. })));
        assert!(m.up.names().is_empty());
    }

    #[test]
    fn a_config_of_a_method_no_layer_carries_names_the_method_and_site() {
        #[derive(Clone, Debug)]
        struct Other(Targeting);
        impl crate::MethodConfig for Other {
            fn peft_type(&self) -> &'static str {
                "OTHER"
            }
            fn site(&self) -> Site {
                Site::KeyValue
            }
            fn targeting(&self) -> &Targeting {
                &self.0
            }
        }
        let err = block().add_adapter("a", &Other(Targeting::names(&["up"]))).unwrap_err();
        assert!(matches!(err, PeftError::NoWrappedLayer { method: "OTHER", .. }), "{err}");
        assert!(err.to_string().contains("keys and values"), "{err}");
    }

    #[test]
    fn a_wrapped_field_left_out_of_adaptable_is_named() {
        #[derive(Module, Debug)]
        struct Forgetful<B: Backend> {
            up: Tuned<B, Linear<B>, Shift<B>>,
            down: Tuned<B, Linear<B>, Shift<B>>,
        }
        crate::adaptable!(Forgetful { up });
        let mut m = Forgetful { up: layer(3, 4), down: layer(4, 3) };
        let err = m.add_adapter("a", &ShiftConfig::new(&["down"], 1.0)).unwrap_err();
        assert!(matches!(&err, PeftError::UnreachedLayers { paths } if paths == &["down"]), "{err}");
        assert!(err.to_string().contains("adaptable!"), "{err}");
    }

    #[test]
    fn merging_names_an_unmergeable_adapter_and_the_way_out() {
        let x = input(2, 3);
        let mut m = block();
        m.add_adapter("fold", &ShiftConfig::new(&["up", "down"], 0.5)).unwrap();
        m.add_adapter("stay", &ShiftConfig { mergeable: false, ..ShiftConfig::new(&["down"], 1.0) }).unwrap();
        m.set_active_adapters(&["fold", "stay"]).unwrap();
        let before = values(m.forward(x.clone()));
        let err = m.merge_adapters(true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`stay`") && text.contains("SHIFT") && text.contains("set_active_adapters") && text.contains("merge_mergeable_adapters"), "{text}");
        assert!(!m.up.is_merged(), "a refused merge changed the model");
        m.merge_mergeable_adapters(true).unwrap();
        assert!(m.up.is_merged() && m.down.is_merged());
        assert_eq!(values(m.forward(x)), before);
    }

    #[test]
    fn adapter_values_round_trip_by_path_and_strays_are_refused() {
        let mut m = block();
        m.add_adapter("a", &ShiftConfig::new(&["up", "down"], 0.5)).unwrap();
        let mut tensors = m.adapter_tensors("a").unwrap();
        assert_eq!(tensors.keys().collect::<Vec<_>>(), ["down", "up"]);
        assert_eq!(tensors["up"].keys().collect::<Vec<_>>(), ["c"]);
        tensors.get_mut("up").unwrap().insert("c".into(), burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [4]));
        m.set_adapter_tensors("a", tensors.clone()).unwrap();
        assert_eq!(m.adapter_tensors("a").unwrap(), tensors);
        tensors.get_mut("up").unwrap().insert("d".into(), burn::tensor::TensorData::new(vec![1.0f32], [1]));
        assert!(matches!(m.set_adapter_tensors("a", tensors), Err(PeftError::UnexpectedTensor { name, .. }) if name == "up.d"));
    }
}
