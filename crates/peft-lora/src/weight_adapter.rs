//! One adapter type for weight layers that holds LoRA (with its variants) or IA3, chosen per
//! adapter at run time. A model whose linear layers are `Tuned<Linear, WeightAdapter>` carries
//! LoRA on attention and IA3 on the MLP at once (HF peft's mixed model), and a tool that picks
//! the method from a file or a flag needs no code path per method.

use std::any::Any;

use burn::module::Module;
use burn::tensor::backend::Backend;
use peft_core::{Combination, Layer, MethodConfig, PeftError, Result, Site, Targeting, Tuner, TunerForward};

use crate::{Ia3, Ia3Config, Lora, LoraConfig};

/// A LoRA or an IA3 adapter on a weight layer (`Linear`, or the 4-bit `QLinear`).
// Unboxed: Burn's derive needs each variant to be a module, and a layer holds only a few adapters.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum WeightAdapter<B: Backend> {
    /// LoRA, rsLoRA, DoRA, PiSSA.
    Lora(Lora<B>),
    /// IA3.
    Ia3(Ia3<B>),
}

/// The config of a [`WeightAdapter`]: a [`LoraConfig`] or an [`Ia3Config`]. `add_adapter` takes
/// either directly.
#[derive(Clone, Debug)]
pub enum WeightAdapterConfig {
    /// LoRA and its variants.
    Lora(LoraConfig),
    /// IA3.
    Ia3(Ia3Config),
}

impl WeightAdapterConfig {
    fn inner(&self) -> &dyn MethodConfig {
        match self {
            Self::Lora(c) => c,
            Self::Ia3(c) => c,
        }
    }
}

impl MethodConfig for WeightAdapterConfig {
    fn peft_type(&self) -> &'static str {
        self.inner().peft_type()
    }
    fn site(&self) -> Site {
        Site::Weight
    }
    fn targeting(&self) -> &Targeting {
        self.inner().targeting()
    }
    fn validate(&self) -> Result<()> {
        self.inner().validate()
    }
    fn cast(config: &dyn MethodConfig) -> Option<Self> {
        let config = config as &dyn Any;
        config
            .downcast_ref::<Self>()
            .cloned()
            .or_else(|| config.downcast_ref::<LoraConfig>().cloned().map(Self::Lora))
            .or_else(|| config.downcast_ref::<Ia3Config>().cloned().map(Self::Ia3))
    }
}

impl<B: Backend, L: Module<B>> Tuner<B, L> for WeightAdapter<B>
where
    Lora<B>: Tuner<B, L, Config = LoraConfig>,
    Ia3<B>: Tuner<B, L, Config = Ia3Config>,
{
    type Config = WeightAdapterConfig;

    fn init(config: &WeightAdapterConfig, base: &mut L, path: &str) -> Result<Self> {
        match config {
            WeightAdapterConfig::Lora(c) => Lora::init(c, base, path).map(Self::Lora),
            WeightAdapterConfig::Ia3(c) => Ia3::init(c, base, path).map(Self::Ia3),
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Self::Lora(a) => Tuner::<B, L>::method(a),
            Self::Ia3(a) => Tuner::<B, L>::method(a),
        }
    }

    fn merge(&mut self, base: L, path: &str) -> Result<L> {
        match self {
            Self::Lora(a) => a.merge(base, path),
            Self::Ia3(a) => a.merge(base, path),
        }
    }

    fn unmerge(&mut self, base: L, path: &str) -> Result<L> {
        match self {
            Self::Lora(a) => a.unmerge(base, path),
            Self::Ia3(a) => a.unmerge(base, path),
        }
    }

    fn combine(parts: &[(&Self, f64)], how: Combination) -> Result<Self> {
        let loras: Option<Vec<(&Lora<B>, f64)>> = parts.iter().map(|(a, w)| if let Self::Lora(l) = a { Some((l, *w)) } else { None }).collect();
        let loras = loras.ok_or_else(|| PeftError::CannotCombine("only LoRA adapters have a weighted combination".into()))?;
        <Lora<B> as Tuner<B, L>>::combine(&loras, how).map(Self::Lora)
    }
}

impl<B: Backend, L: Layer<B, I>, I> TunerForward<B, L, I> for WeightAdapter<B>
where
    Lora<B>: TunerForward<B, L, I, Config = LoraConfig>,
    Ia3<B>: TunerForward<B, L, I, Config = Ia3Config>,
{
    fn pre(&self, base: &L, input: I) -> I {
        match self {
            Self::Lora(a) => a.pre(base, input),
            Self::Ia3(a) => a.pre(base, input),
        }
    }

    fn post(&self, base: &L, input: &I, output: L::Output) -> L::Output {
        match self {
            Self::Lora(a) => a.post(base, input, output),
            Self::Ia3(a) => a.post(base, input, output),
        }
    }
}
