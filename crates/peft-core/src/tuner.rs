//! The one trait through which every method attaches to a layer and composes with the others.
//!
//! Following He et al. (ICLR 2022), every method is a modification `h ← compose(h, Δh)` that
//! differs in *where* it acts ([`Site`]), what `Δh` is computed from (the layer input or its output),
//! the function, and the composition. A [`Tuner`] is built from its [`MethodConfig`];
//! [`TunerForward`] carries the data flow: [`pre`](TunerForward::pre) may change the layer's input
//! (IA3 on feed-forward layers), [`post`](TunerForward::post) changes its output (LoRA adds a
//! low-rank product, a bottleneck adapter adds `up(act(down(h)))`, a prefix concatenates keys and
//! values). Because [`crate::Tuned`] is itself a layer, wrappers nest, and methods on different
//! sites compose by construction.

use std::any::Any;

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::{Layer, PeftError, Result, Targeting};

/// Where in a network a method acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Between a weight layer's input and output (LoRA, DoRA, IA3).
    Weight,
    /// On a sub-layer's output, or in parallel to it (bottleneck adapters).
    SubLayer,
    /// On attention keys and values (prefix prompts).
    KeyValue,
    /// Before the input embeddings (prompt tuning's virtual tokens).
    Prompt,
    /// Every attention layer's keys and values at once, from one MLP (prefix tuning with
    /// peft's `prefix_projection`).
    PrefixProjection,
}

impl Site {
    /// The site in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Weight => "weight layers (Linear, Embedding, Conv2d, QLinear)",
            Self::SubLayer => "sub-layers (a feed-forward network, an attention block, the norm closing a residual sub-layer)",
            Self::KeyValue => "attention keys and values (a KvSite)",
            Self::Prompt => "the input embeddings of a decoder (a PromptSite)",
            Self::PrefixProjection => "every attention layer's keys and values through one MLP (a PrefixProjectionSite)",
        }
    }
}

/// The config of one method, as given to [`crate::PeftModel::add_adapter`].
pub trait MethodConfig: Any + core::fmt::Debug {
    /// The method's name, as HF peft's `peft_type` (`LORA`, `IA3`, ...).
    fn peft_type(&self) -> &'static str;
    /// Where the method acts.
    fn site(&self) -> Site;
    /// Which modules the method attaches to.
    fn targeting(&self) -> &Targeting;
    /// Checks the config's values, once, before any layer is built. Default: nothing to check.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// This config type from `config`: itself when it is one (the default), or, for the config
    /// of a type that dispatches between methods, the method `config` belongs to.
    fn cast(config: &dyn MethodConfig) -> Option<Self>
    where
        Self: Sized + Clone,
    {
        (config as &dyn Any).downcast_ref::<Self>().cloned()
    }
}

/// A method's adapter for one layer of type `L`.
pub trait Tuner<B: Backend, L: Module<B>>: Module<B> + burn::module::ModuleDisplay + Sized {
    /// The config it is built from.
    type Config: MethodConfig + Clone;

    /// Builds the adapter for `base` at module `path`. A method may adjust the frozen base
    /// (PiSSA moves the principal part of the weight into the adapter); on error the caller
    /// discards both.
    fn init(config: &Self::Config, base: &mut L, path: &str) -> Result<Self>;

    /// The method's name (HF peft's `peft_type`), for messages.
    fn method(&self) -> &'static str;

    /// Folds the adapter into the base weights. Methods that cannot be merged keep the default.
    fn merge(&mut self, base: L, path: &str) -> Result<L> {
        let _ = base;
        Err(PeftError::NotMergeable { adapter: String::new(), method: self.method(), path: path.into(), reason: String::new() })
    }

    /// Takes a merged adapter back out of the base weights (called only after a `merge`).
    fn unmerge(&mut self, base: L, path: &str) -> Result<L> {
        let _ = base;
        Err(PeftError::NotMergeable { adapter: String::new(), method: self.method(), path: path.into(), reason: String::new() })
    }

    /// One adapter equivalent to the weighted `parts` (HF peft's `add_weighted_adapter`).
    fn combine(parts: &[(&Self, f64)], how: Combination) -> Result<Self> {
        let method = parts.first().map_or("this", |(p, _)| p.method());
        let _ = how;
        Err(PeftError::CannotCombine(format!("{method} adapters have no weighted combination")))
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

/// How [`Tuner::combine`] joins several adapters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Combination {
    /// Weighted sum of the factors (same rank required): `A = Σ sgn(wᵢ)·sqrt(|wᵢ|·sᵢ)·Aᵢ`,
    /// `B = Σ sqrt(|wᵢ|·sᵢ)·Bᵢ`, scaling 1. Approximate: cross terms `AᵢBⱼ` appear, as in HF peft.
    Linear,
    /// Concatenated ranks: `A = [w₁s₁A₁ | w₂s₂A₂ | …]`, `B = [B₁; B₂; …]`, scaling 1.
    /// Exact: the update is `Σ wᵢ·sᵢ·AᵢBᵢ`.
    Cat,
    /// The best approximation of rank `rank` (default: the largest rank of the parts) of the
    /// update `Σ wᵢ·sᵢ·AᵢBᵢ`, from its singular value decomposition `U·S·Vᵀ`: `A = U[:, :rank]`,
    /// `B = S[:rank]·Vᵀ[:rank]`, scaling 1 (HF peft's `combination_type="svd"`; ranks may differ).
    /// Exact when `rank` reaches the update's rank.
    Svd {
        /// Rank of the combined adapter.
        rank: Option<usize>,
    },
    /// TIES-merging of the factors (same rank required), as HF peft's `combination_type="ties"`:
    /// each part's `A` (and `B`) keeps its `density` largest values by magnitude, a sign is
    /// elected per value, and the weighted values of that sign are averaged, with the weights of
    /// `Linear` (`sgn(wᵢ)·sqrt(|wᵢ|·sᵢ)` for `A`, `sqrt(|wᵢ|·sᵢ)` for `B`); scaling 1.
    Ties {
        /// Share of each factor's values kept, in `[0, 1]`.
        density: f64,
        /// How the sign of each value is elected.
        majority_sign: MajoritySign,
    },
    /// The factors pruned to their `density` largest values by magnitude, then summed with the
    /// weights of `Linear` (peft's `"magnitude_prune"`; same rank required); scaling 1.
    MagnitudePrune {
        /// Share of each factor's values kept, in `[0, 1]`.
        density: f64,
    },
    /// DARE (peft's `"dare_linear"`): each factor value kept with probability `density` and
    /// divided by it, then summed with the weights of `Linear` (same rank required); scaling 1.
    /// Random: each layer draws from `seed` and its path, so a seed gives the same adapter.
    DareLinear {
        /// Probability that a value is kept, in `(0, 1]`.
        density: f64,
        /// Seed of the random pruning.
        seed: u64,
    },
    /// DARE followed by TIES' sign election and disjoint mean (peft's `"dare_ties"`).
    DareTies {
        /// Probability that a value is kept, in `(0, 1]`.
        density: f64,
        /// How the sign of each value is elected.
        majority_sign: MajoritySign,
        /// Seed of the random pruning.
        seed: u64,
    },
}

impl Combination {
    /// The combination for the layer at `path`: DARE's seed mixed with the path (FNV-1a), so
    /// that layers of the same shape are not pruned alike; others unchanged.
    pub fn for_layer(self, path: &str) -> Self {
        let mix = |seed: u64| crate::path::fnv1a(seed ^ crate::path::FNV_OFFSET, path);
        match self {
            Self::DareLinear { density, seed } => Self::DareLinear { density, seed: mix(seed) },
            Self::DareTies { density, majority_sign, seed } => Self::DareTies { density, majority_sign, seed: mix(seed) },
            other => other,
        }
    }
}

/// How TIES-merging elects the sign of a value (peft's `majority_sign_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MajoritySign {
    /// The sign of the sum of the kept values (peft's `"total"`, its default).
    Total,
    /// The sign most of the kept values have (peft's `"frequency"`).
    Frequency,
}
