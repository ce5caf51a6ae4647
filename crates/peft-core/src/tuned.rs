//! [`Tuned`]: a layer wrapped with any number of named adapters of one method.

use core::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bool, Int, Tensor};
use burn::tensor::backend::Backend;

use crate::{Layer, PeftError, Result, Rows, Tuner, TunerForward, all_finite};

/// Per-adapter state that is not a tensor.
#[derive(Clone, Debug, Default)]
pub struct AdapterSlots {
    names: Vec<String>,
    active: Vec<bool>,
    merged: Vec<bool>,
    disabled: bool,
    /// Per-example adapters: the adapter (index) of each row of the batch, or none for the base.
    rows: Option<Vec<Option<usize>>>,
}

/// A base layer `L` with named adapters of type `T`.
///
/// With no adapter, or with adapters disabled, the forward pass is exactly `base.forward(x)`.
/// The base is frozen when wrapped; only the adapters' parameters train.
#[derive(Module, Debug)]
pub struct Tuned<B: Backend, L: Module<B>, T: Module<B>> {
    /// The wrapped layer, with its pretrained weights.
    pub base: L,
    /// The adapters, in the order they were added.
    pub adapters: Vec<T>,
    #[module(skip)]
    slots: AdapterSlots,
    phantom: PhantomData<B>,
}

/// Initializes every parameter it visits (a lazy one draws its values).
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        param.val();
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        param.val();
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        param.val();
    }
}

impl<B: Backend, L: Module<B>, T: Module<B>> Tuned<B, L, T> {
    /// Wraps `base`, freezing its parameters. The weights are taken as they are.
    pub fn new(base: L) -> Self {
        Self { base: base.no_grad(), adapters: Vec::new(), slots: AdapterSlots::default(), phantom: PhantomData }
    }

    /// Adds an adapter under `name` and activates it. Its parameters take their values now:
    /// Burn draws a lazily initialized parameter's values on first use, separately in each clone,
    /// so a model cloned before its first pass would otherwise hold a different adapter.
    pub fn add_adapter(&mut self, name: &str, adapter: T) -> Result<()> {
        if self.slots.names.iter().any(|n| n == name) {
            return Err(PeftError::DuplicateAdapter { name: name.into(), path: String::new() });
        }
        adapter.visit(&mut Materialize);
        self.slots.names.push(name.to_string());
        self.slots.active.push(true);
        self.slots.merged.push(false);
        self.adapters.push(adapter);
        Ok(())
    }

    /// Builder form of [`add_adapter`](Self::add_adapter).
    pub fn with_adapter(mut self, name: &str, adapter: T) -> Result<Self> {
        self.add_adapter(name, adapter)?;
        Ok(self)
    }

    /// The adapter names, in order.
    pub fn names(&self) -> &[String] {
        &self.slots.names
    }

    /// The adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<&T> {
        self.index(name).map(|i| &self.adapters[i])
    }

    /// Mutable access to the adapter called `name`.
    pub fn adapter_mut(&mut self, name: &str) -> Option<&mut T> {
        self.index(name).map(|i| &mut self.adapters[i])
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.slots.names.iter().position(|n| n == name)
    }

    fn unknown(&self, name: &str) -> PeftError {
        PeftError::UnknownAdapter { name: name.into(), known: self.slots.names.clone() }
    }

    /// Makes exactly the named adapters active; names this layer does not have are ignored.
    pub fn set_active(&mut self, names: &[&str]) {
        for (i, n) in self.slots.names.iter().enumerate() {
            self.slots.active[i] = names.contains(&n.as_str());
        }
    }

    /// Whether the adapter called `name` is active.
    pub fn is_active(&self, name: &str) -> bool {
        self.index(name).is_some_and(|i| self.slots.active[i])
    }

    /// Turns every adapter off (`enabled = false`) or back on, keeping which ones are active.
    pub fn set_enabled(&mut self, enabled: bool) -> Result<()> {
        if !enabled && let Some(i) = self.slots.merged.iter().position(|m| *m) {
            return Err(PeftError::Merged(self.slots.names[i].clone()));
        }
        self.slots.disabled = !enabled;
        Ok(())
    }

    /// Whether adapters are enabled.
    pub fn is_enabled(&self) -> bool {
        !self.slots.disabled
    }

    /// Removes the adapter called `name`.
    pub fn delete_adapter(&mut self, name: &str) -> Result<T> {
        let i = self.index(name).ok_or_else(|| self.unknown(name))?;
        if self.slots.merged[i] {
            return Err(PeftError::Merged(name.into()));
        }
        self.slots.names.remove(i);
        self.slots.active.remove(i);
        self.slots.merged.remove(i);
        self.slots.rows = None;
        Ok(self.adapters.remove(i))
    }

    /// Indices of the adapters that take part in the forward pass: with per-example adapters,
    /// those some row uses.
    fn live(&self) -> Vec<usize> {
        if self.slots.disabled {
            return Vec::new();
        }
        if let Some(rows) = &self.slots.rows {
            let mut used: Vec<usize> = rows.iter().flatten().copied().collect();
            used.sort_unstable();
            used.dedup();
            return used;
        }
        (0..self.adapters.len()).filter(|&i| self.slots.active[i] && !self.slots.merged[i]).collect()
    }

    /// The adapters that take part in the forward pass (active, not merged, not disabled; with
    /// per-example adapters, those some row uses).
    pub fn live_adapters(&self) -> impl Iterator<Item = &T> {
        self.live().into_iter().map(|i| &self.adapters[i])
    }

    /// Gives each example of the following batches its own adapter: row `i` uses the adapter
    /// called `rows[i]` (none: the base layer), whatever the active ones. A name this layer does
    /// not carry is the base layer for that row. Refused while an adapter is merged.
    pub fn set_example_adapters(&mut self, rows: &[Option<&str>]) -> Result<()> {
        if let Some(i) = self.slots.merged.iter().position(|m| *m) {
            return Err(PeftError::Merged(self.slots.names[i].clone()));
        }
        self.slots.rows = Some(rows.iter().map(|r| r.and_then(|name| self.index(name))).collect());
        Ok(())
    }

    /// With per-example adapters ([`set_example_adapters`](Self::set_example_adapters)), each
    /// row's adapter as an index into [`adapters`](Self::adapters) (none: the base layer); `None`
    /// while the rows share the active adapters or the adapters are disabled.
    pub fn example_adapters(&self) -> Option<&[Option<usize>]> {
        self.slots.rows.as_deref().filter(|_| !self.slots.disabled)
    }

    /// Back to the active adapters for every example.
    pub fn clear_example_adapters(&mut self) {
        self.slots.rows = None;
    }

    /// Forward pass: the base layer with every live adapter applied in order; with
    /// per-example adapters ([`set_example_adapters`](Self::set_example_adapters)), each row
    /// with its own adapter.
    ///
    /// Shapes are those of the base layer (for [`burn::nn::Linear`], `[..., d_in] -> [..., d_out]`).
    ///
    /// # Panics
    ///
    /// With per-example adapters, when the batch does not have one row per adapter given, or
    /// when the rows' adapters give outputs of different shapes (prefixes of a key/value site:
    /// `peft_ptuning::prepend_prefixes` takes those).
    pub fn forward<I: Rows>(&self, input: I) -> L::Output
    where
        L: Layer<B, I>,
        L::Output: Rows,
        T: TunerForward<B, L, I>,
    {
        if let Some(rows) = self.slots.rows.as_ref().filter(|_| !self.slots.disabled) {
            return self.forward_rows(input, rows);
        }
        let live = self.live();
        if live.is_empty() {
            return self.base.forward_base(input);
        }
        let input = live.iter().fold(input, |x, &i| self.adapters[i].pre(&self.base, x));
        let output = self.base.forward_base(input.clone());
        live.iter().fold(output, |h, &i| self.adapters[i].post(&self.base, &input, h))
    }
}

impl<B: Backend, L: Module<B>, T: Module<B>> Tuned<B, L, T> {
    /// Each row through its own adapter: every adapter some row uses runs on the whole batch
    /// and its rows are taken, value for value, so a row's result is what the adapter alone
    /// gives it.
    fn forward_rows<I: Rows>(&self, input: I, rows: &[Option<usize>]) -> L::Output
    where
        L: Layer<B, I>,
        L::Output: Rows,
        T: TunerForward<B, L, I>,
    {
        assert_eq!(input.batch(), rows.len(), "per-example adapters were set for {} examples, the batch has {}", rows.len(), input.batch());
        let used = self.live();
        let masks: Vec<Vec<bool>> = used.iter().map(|&i| rows.iter().map(|r| *r == Some(i)).collect()).collect();
        let mut x = input.clone();
        for (&i, mask) in used.iter().zip(&masks) {
            x = x.take_rows(self.adapters[i].pre(&self.base, input.clone()), mask);
        }
        let base = self.base.forward_base(x.clone());
        let mut out = base.clone();
        for (&i, mask) in used.iter().zip(&masks) {
            out = out.take_rows(self.adapters[i].post(&self.base, &x, base.clone()), mask);
        }
        out
    }
}

impl<B: Backend, L: Module<B>, T: Tuner<B, L>> Tuned<B, L, T> {
    /// Folds every active, unmerged adapter into the base weights.
    ///
    /// With `safe`, a merge that would produce NaN or infinite weights is refused and the layer is
    /// left as it was.
    pub fn merge(&mut self, path: &str, safe: bool) -> Result<()> {
        self.merge_with(path, safe, false)
    }

    /// [`merge`](Self::merge); with `skip_unmergeable`, adapters whose method cannot merge stay
    /// active and unmerged instead of failing the merge.
    pub fn merge_with(&mut self, path: &str, safe: bool, skip_unmergeable: bool) -> Result<()> {
        let mut base = self.base.clone();
        let mut adapters = self.adapters.clone();
        let mut merged = self.slots.merged.clone();
        for i in 0..adapters.len() {
            if !self.slots.active[i] || merged[i] {
                continue;
            }
            base = match adapters[i].merge(base.clone(), path) {
                Ok(base) => base,
                Err(PeftError::NotMergeable { .. }) if skip_unmergeable => continue,
                Err(PeftError::NotMergeable { method, path, reason, .. }) => {
                    return Err(PeftError::NotMergeable { adapter: self.slots.names[i].clone(), method, path, reason });
                }
                Err(e) => return Err(e),
            };
            if safe && !all_finite(&base) {
                return Err(PeftError::NonFinite { path: path.into(), adapter: self.slots.names[i].clone() });
            }
            merged[i] = true;
        }
        self.base = base;
        self.adapters = adapters;
        self.slots.merged = merged;
        self.slots.rows = None;
        Ok(())
    }

    /// Takes every merged adapter back out of the base weights, last merged first.
    pub fn unmerge(&mut self, path: &str) -> Result<()> {
        let mut base = self.base.clone();
        for i in (0..self.adapters.len()).rev() {
            if self.slots.merged[i] {
                base = self.adapters[i].unmerge(base, path)?;
            }
        }
        self.base = base;
        self.slots.merged.iter_mut().for_each(|m| *m = false);
        Ok(())
    }

    /// Whether any adapter is merged into the base.
    pub fn is_merged(&self) -> bool {
        self.slots.merged.iter().any(|m| *m)
    }

    /// Merges every active adapter and returns the bare base layer.
    pub fn merge_and_unload(mut self, path: &str, safe: bool) -> Result<L> {
        self.merge(path, safe)?;
        Ok(self.base)
    }
}

impl<B, L, T, I> Layer<B, I> for Tuned<B, L, T>
where
    B: Backend,
    I: Rows,
    L: Layer<B, I>,
    L::Output: Rows,
    T: TunerForward<B, L, I>,
{
    type Output = L::Output;
    fn forward_base(&self, input: I) -> L::Output {
        self.forward(input)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{ShiftConfig, input, layer, values};
    use crate::{PeftError, Tuner};

    fn shift(value: f32, mergeable: bool) -> crate::testing::Shift<crate::testing::B> {
        let config = ShiftConfig { mergeable, ..ShiftConfig::new(&["l"], value) };
        <crate::testing::Shift<_> as Tuner<_, _>>::init(&config, &mut layer(3, 2).base, "l").unwrap()
    }

    #[test]
    fn live_adapters_apply_in_order_and_anything_else_is_the_exact_base() {
        let x = input(4, 3);
        let mut l = layer(3, 2);
        let base = values(l.forward(x.clone()));
        l.add_adapter("a", shift(1.0, true)).unwrap();
        l.add_adapter("b", shift(0.5, true)).unwrap();
        let both: Vec<f32> = base.iter().map(|v| v + 1.5).collect();
        assert_eq!(values(l.forward(x.clone())), both);
        l.set_active(&["b"]);
        assert!(!l.is_active("a") && l.is_active("b"));
        assert_eq!(values(l.forward(x.clone())), base.iter().map(|v| v + 0.5).collect::<Vec<_>>());
        l.set_active(&[]);
        assert_eq!(values(l.forward(x.clone())), base);
        l.set_active(&["a", "b"]);
        l.set_enabled(false).unwrap();
        assert_eq!(values(l.forward(x.clone())), base);
        l.set_enabled(true).unwrap();
        l.delete_adapter("a").unwrap();
        assert_eq!(l.names(), ["b"]);
        assert!(matches!(l.add_adapter("b", shift(0.0, true)), Err(PeftError::DuplicateAdapter { .. })));
        assert!(matches!(l.delete_adapter("zz"), Err(PeftError::UnknownAdapter { .. })));
    }

    #[test]
    fn merge_equals_unmerged_and_unmerge_restores_the_base() {
        let x = input(4, 3);
        let mut l = layer(3, 2);
        let bias = l.base.bias.as_ref().unwrap().val().into_data();
        l.add_adapter("a", shift(0.25, true)).unwrap();
        let unmerged = values(l.forward(x.clone()));
        l.merge("l", true).unwrap();
        assert!(l.is_merged());
        assert_ne!(l.base.bias.as_ref().unwrap().val().into_data(), bias);
        // (x·W + b) + s against x·W + (b + s): equal up to the rounding of one addition.
        let merged = values(l.forward(x.clone()));
        assert!(merged.iter().zip(&unmerged).all(|(m, u)| (m - u).abs() <= 1e-6 * (1.0 + u.abs())), "{merged:?} != {unmerged:?}");
        assert!(matches!(l.set_enabled(false), Err(PeftError::Merged(_))));
        assert!(matches!(l.delete_adapter("a"), Err(PeftError::Merged(_))));
        l.unmerge("l").unwrap();
        assert_eq!(l.base.bias.as_ref().unwrap().val().into_data(), bias);
        assert_eq!(values(l.forward(x)), unmerged);
    }

    #[test]
    fn a_method_that_cannot_merge_is_named_or_skipped() {
        let mut l = layer(3, 2);
        l.add_adapter("fold", shift(1.0, true)).unwrap();
        l.add_adapter("stay", shift(2.0, false)).unwrap();
        let before = l.base.bias.as_ref().unwrap().val().into_data();
        match l.merge("blk.l", true) {
            Err(PeftError::NotMergeable { adapter, method, path, .. }) => assert_eq!((adapter.as_str(), method, path.as_str()), ("stay", "SHIFT", "blk.l")),
            other => panic!("expected NotMergeable, got {other:?}"),
        }
        assert_eq!(l.base.bias.as_ref().unwrap().val().into_data(), before, "a refused merge changed the layer");
        l.merge_with("blk.l", true, true).unwrap();
        assert!(l.is_merged());
        assert_eq!(l.live_adapters().count(), 1, "the unmergeable adapter stays live");
    }
}
