//! An HF checkpoint directory (`config.json` + `model.safetensors`) as one of the reference
//! models, chosen by `model_type`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use peft_core::checkpoint::{parse, read_bytes};
use peft_core::{Adaptable, PeftError, PeftModel, Result, TunedVisitor};
use peft_hf::{HfCheckpoint, LoadReport, WeightMap};
use peft_lora::WeightAdapter;
use peft_quant::{BaseLinear, QuantConfig};
use peft_quant::backend::QuantLinearBackend;

use crate::attention::{LinearAdapter, LinearTuner};
use crate::bert::Bert;
use crate::generate::CausalLm;
use crate::gpt2::Gpt2;
use crate::hf_config::HfModelConfig;
use crate::llama::Llama;

/// A reference model loaded from an HF checkpoint, its linear layers carrying adapters `T`
/// (by default [`WeightAdapter`]: LoRA and IA3, mixed).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum HfModel<B: Backend, T: Module<B> = WeightAdapter<B>> {
    /// `LlamaForCausalLM`.
    Llama(Llama<B, T>),
    /// `GPT2LMHeadModel`.
    Gpt2(Gpt2<B, T>),
    /// `BertModel`.
    Bert(Bert<B, T>),
}

/// `body` with `m` bound to whichever architecture `model` is.
macro_rules! each_architecture {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            HfModel::Llama($m) => $body,
            HfModel::Gpt2($m) => $body,
            HfModel::Bert($m) => $body,
        }
    };
}

impl<B: Backend, T: LinearTuner<B>> HfModel<B, T> {
    /// Builds the architecture `config` names, with zero weights.
    pub fn init(config: &HfModelConfig, device: &B::Device) -> Result<Self> {
        Ok(match config {
            HfModelConfig::Llama(c) => Self::Llama(c.init(device)?),
            HfModelConfig::Gpt2(c) => Self::Gpt2(c.init(device)?),
            HfModelConfig::Bert(c) => Self::Bert(c.init(device)?),
        })
    }

    /// Reads `dir/config.json` and `dir/model.safetensors` (f32, f16 or bf16).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, LoadReport)> {
        let config = HfModelConfig::read(dir)?;
        let path = dir.join("model.safetensors");
        let bytes = read_bytes(&path)?;
        let file = parse(&bytes, &path.display().to_string())?;
        let holds = file.iter().try_fold(0u64, |sum, (_, view)| {
            view.shape().iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64)).and_then(|n| sum.checked_add(n))
        });
        let needed = config.min_parameters();
        if needed.is_none() || holds.is_none() || needed > holds {
            return Err(PeftError::CheckpointTooSmall {
                config: dir.join("config.json").display().to_string(),
                needed: needed.map_or_else(|| "more than 2^64".into(), |n| n.to_string()),
                checkpoint: path.display().to_string(),
                holds: holds.unwrap_or(u64::MAX),
            });
        }
        let model = match &config {
            HfModelConfig::Bert(c) => {
                let pooler = file.names().iter().any(|n| n.ends_with("pooler.dense.weight"));
                Self::Bert(c.init_with_pooler(pooler, device)?)
            }
            other => Self::init(other, device)?,
        };
        model.assign_hf_weights(&file, false)
    }

    /// Quantizes every linear layer but the output head to 4 bits (`config`, bitsandbytes-exact):
    /// the base of QLoRA. Returns how many layers were quantized. Quantize before adding adapters.
    pub fn quantize(&mut self, config: QuantConfig) -> Result<usize> {
        let layers: Vec<&mut BaseLinear<B>> = match self {
            Self::Llama(m) => m.model.layers.iter_mut().flat_map(|l| {
                let (a, f) = (&mut l.self_attn, &mut l.mlp);
                [&mut a.q_proj.base, &mut a.k_proj.base, &mut a.v_proj.base, &mut a.o_proj.base, &mut f.gate_proj.base, &mut f.up_proj.base, &mut f.down_proj.base]
            }).collect(),
            Self::Gpt2(m) => m.transformer.h.iter_mut().flat_map(|b| [&mut b.attn.c_attn.base, &mut b.attn.c_proj.base, &mut b.mlp.c_fc.base, &mut b.mlp.c_proj.base]).collect(),
            Self::Bert(m) => m.encoder.layer.iter_mut().flat_map(|l| {
                let a = &mut l.attention;
                [&mut a.self_attn.query.base, &mut a.self_attn.key.base, &mut a.self_attn.value.base, &mut a.output.dense.base, &mut l.intermediate.dense.base, &mut l.output.dense.base]
            }).collect(),
        };
        let count = layers.len();
        for layer in layers {
            layer.quantize(config)?;
        }
        Ok(count)
    }

    /// The longest input (prefix included) the model's position table allows, if it has one.
    pub fn max_positions(&self) -> Option<usize> {
        match self {
            Self::Llama(m) => m.max_positions,
            Self::Gpt2(m) => Some(m.transformer.wpe.weight.dims()[0]),
            Self::Bert(m) => Some(m.embeddings.position_embeddings.weight.dims()[0]),
        }
    }

    /// Sets prompt adapter `name`'s virtual tokens to the embeddings of `ids`, repeated or cut to
    /// its length (HF peft's `prompt_tuning_init = "TEXT"`, where `ids` is the tokenized
    /// `prompt_tuning_init_text`).
    pub fn init_prompt_from_tokens(&mut self, name: &str, ids: &[u32]) -> Result<()> {
        let table = match self {
            Self::Llama(m) => m.model.embed_tokens.base.weight.val(),
            Self::Gpt2(m) => m.transformer.wte.base.weight.val(),
            Self::Bert(_) => return Err(PeftError::NoWrappedLayer { method: "PROMPT_TUNING", site: peft_core::Site::Prompt.describe() }),
        };
        let [vocab, _] = table.dims();
        if ids.is_empty() {
            return Err(PeftError::InvalidConfig("the prompt's init text has no tokens".into()));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(PeftError::InvalidConfig(format!("token id {bad} of the prompt's init text is outside the vocabulary of {vocab}")));
        }
        let mut tensors = self.adapter_tensors(name)?;
        let mut found = false;
        for params in tensors.values_mut() {
            if let Some(embeddings) = params.get_mut("embeddings") {
                let n = embeddings.shape[0];
                let rows: Vec<i64> = ids.iter().cycle().take(n).map(|&t| i64::from(t)).collect();
                let index = Tensor::<B, 1, Int>::from_data(burn::tensor::TensorData::new(rows, [n]), &table.device());
                *embeddings = table.clone().select(0, index).into_data().convert::<f32>();
                found = true;
            }
        }
        if !found {
            return Err(PeftError::UnknownAdapter { name: format!("{name} (a prompt)"), known: self.adapter_names() });
        }
        self.set_adapter_tensors(name, tensors)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(m) => m.model.embed_tokens.base.weight.dims()[0],
            Self::Gpt2(m) => m.transformer.wte.base.weight.dims()[0],
            Self::Bert(m) => m.embeddings.word_embeddings.base.weight.dims()[0],
        }
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> HfModel<B, T> {
    /// Causal LMs: logits `[batch, seq, vocab]`; BERT: the last hidden state `[batch, seq, hidden]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        each_architecture!(self, m => m.forward(tokens))
    }

    /// Prefix positions the live prefix adapters add before the tokens.
    pub fn prefix_len(&self) -> usize {
        each_architecture!(self, m => m.prefix_len())
    }

    /// The model as a decoder, for generation and causal-LM training (BERT is an encoder).
    pub fn causal_lm(&self) -> Result<&dyn CausalLm<B>> {
        match self {
            Self::Llama(m) => Ok(m),
            Self::Gpt2(m) => Ok(m),
            Self::Bert(_) => Err(PeftError::UnsupportedValue { key: "model_type for a causal language model".into(), value: "bert".into(), supported: "llama, gpt2".into() }),
        }
    }
}

impl<B: Backend, T: LinearTuner<B>> Adaptable<B> for HfModel<B, T> {
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        each_architecture!(self, m => m.visit_tuned(path, visitor))
    }
}

impl<B: Backend, T: LinearTuner<B>> HfCheckpoint<B> for HfModel<B, T> {
    fn weight_map(&self) -> WeightMap {
        each_architecture!(self, m => m.weight_map())
    }
}
