//! The one trait through which every method attaches to a layer and composes with the others.
//!
//! Following He et al. (ICLR 2022), every method is a modification `h ← compose(h, Δh)` that
//! differs in *where* it acts ([`Site`]), what `Δh` is computed from (the layer input or its output),
//! the function, and the composition. A [`Tuner`] declares the first and builds itself from a config;
//! [`TunerForward`] carries the data flow: [`pre`](TunerForward::pre) may change the layer's input
//! (IA3 on feed-forward layers), [`post`](TunerForward::post) changes its output (LoRA adds a
//! low-rank product, a bottleneck adapter adds `up(act(down(h)))`, a prefix concatenates keys and
//! values). Because [`crate::Tuned`] is itself a layer, wrappers nest, and methods on different
//! sites compose by construction.

use std::any::Any;

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::{Layer, PeftError, Result};

/// Where in a network a method acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Between a weight layer's input and output (LoRA, DoRA, IA3).
    Weight,
    /// On a sub-layer's output, or in parallel to it (bottleneck adapters).
    SubLayer,
    /// On attention keys and values (prefix prompts).
    KeyValue,
}

/// A method's adapter for one layer of type `L`.
pub trait Tuner<B: Backend, L: Module<B>>: Module<B> + burn::module::ModuleDisplay + Sized {
    /// Where this method acts.
    const SITE: Site;

    /// Whether `config` is this method's config.
    fn accepts(config: &dyn Any) -> bool;

    /// Builds the adapter for `base` at module `path` from `config`, or `None` when `config`
    /// belongs to another method. A method may adjust the frozen base (PiSSA moves the principal
    /// part of the weight into the adapter); on error the caller discards both.
    fn from_config(config: &dyn Any, base: &mut L, path: &str) -> Option<Result<Self>>;

    /// Folds the adapter into the base weights. Methods that cannot be merged keep the default.
    fn merge(&mut self, base: L, path: &str) -> Result<L> {
        let _ = base;
        Err(PeftError::Unsupported(format!("this method cannot be merged (at `{path}`)")))
    }

    /// Takes a merged adapter back out of the base weights.
    fn unmerge(&mut self, base: L, path: &str) -> Result<L> {
        let _ = base;
        Err(PeftError::Unsupported(format!("this method cannot be unmerged (at `{path}`)")))
    }

    /// One adapter equivalent to the weighted `parts` (HF peft's `add_weighted_adapter`).
    fn combine(parts: &[(&Self, f64)], how: Combination) -> Result<Self> {
        let _ = (parts, how);
        Err(PeftError::Unsupported("this method cannot combine adapters".into()))
    }
}

/// The data flow of a [`Tuner`] around a layer called with input `I`.
pub trait TunerForward<B: Backend, L: Layer<B, I>, I>: Tuner<B, L> {
    /// Changes the input before the base layer sees it. Default: unchanged.
    fn pre(&self, base: &L, input: I) -> I {
        let _ = base;
        input
    }

    /// Changes the base output `output`, given the (possibly changed) input. Default: unchanged.
    fn post(&self, base: &L, input: &I, output: L::Output) -> L::Output {
        let _ = (base, input);
        output
    }
}

/// The config of one method, as stored in an adapter config file.
pub trait MethodConfig: Any {
    /// The method's name, as HF peft's `peft_type` (`LORA`, `IA3`, ...).
    fn peft_type(&self) -> &'static str;
    /// Which modules the method attaches to.
    fn targeting(&self) -> &crate::Targeting;
}

/// How [`Tuner::combine`] joins several adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combination {
    /// Weighted sum of the factors (same rank required): `A = Σ sgn(wᵢ)·sqrt(|wᵢ|·sᵢ)·Aᵢ`,
    /// `B = Σ sqrt(|wᵢ|·sᵢ)·Bᵢ`, scaling 1. Approximate: cross terms `AᵢBⱼ` appear, as in HF peft.
    Linear,
    /// Concatenated ranks: `A = [w₁s₁A₁ | w₂s₂A₂ | …]`, `B = [B₁; B₂; …]`, scaling 1.
    /// Exact: the update is `Σ wᵢ·sᵢ·AᵢBᵢ`.
    Cat,
}
