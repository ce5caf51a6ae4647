//! An HF checkpoint directory (`config.json` + `model.safetensors`) as one of the reference
//! models, chosen by `model_type`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use std::collections::{BTreeMap, BTreeSet};

use peft_core::checkpoint::{TensorEntry, parse, read_bytes, read_f32, serialize};
use peft_core::{Adaptable, AdapterTensors, LayerKind, PeftError, PeftModel, Result, Targeting, TunedVisitor};
use peft_ptuning::PrefixConfig;
use peft_hf::{HfCheckpoint, LoadReport, WeightMap};
use peft_lora::WeightAdapter;
use peft_quant::layout::{part_names, quantized_names};
use peft_quant::{BaseLinear, QLinear, QuantConfig, Quantized4bit};
use safetensors::SafeTensors;
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

    /// Reads `dir/config.json` and `dir/model.safetensors` (f32, f16 or bf16). A checkpoint that
    /// transformers saved in 4 bits (bitsandbytes' layout, as a QLoRA base) loads with its linear
    /// layers kept in 4 bits ([`QLinear`]); other 4-bit tensors (an output
    /// head, embeddings) are dequantized.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, LoadReport)> {
        let config = HfModelConfig::read(dir)?;
        let path = dir.join("model.safetensors");
        let bytes = read_bytes(&path)?;
        let file = parse(&bytes, &path.display().to_string())?;
        let quantized = quantized_names(&file);
        // A 4-bit weight holds two values per byte.
        let holds = file.iter().try_fold(0u64, |sum, (name, view)| {
            let per_value: u64 = if quantized.iter().any(|q| q == name) { 2 } else { 1 };
            view.shape().iter().try_fold(per_value, |n, &d| n.checked_mul(d as u64)).and_then(|n| sum.checked_add(n))
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
        let mut model = match &config {
            HfModelConfig::Bert(c) => {
                let pooler = file.names().iter().any(|n| n.ends_with("pooler.dense.weight"));
                Self::Bert(c.init_with_pooler(pooler, device)?)
            }
            other => Self::init(other, device)?,
        };
        // A checkpoint of a `*ForSequenceClassification` model (or our own full fine-tuning of
        // one) holds its head.
        let head = format!("{}.weight", model.classifier_name());
        if let Ok(view) = file.tensor(&head) {
            model.set_classifier(model.saved_head_labels(view.shape())?, false)?;
        }
        if quantized.is_empty() {
            return model.assign_hf_weights(&file, false);
        }
        model.assign_4bit_weights(&file, &quantized, &path.display().to_string(), device)
    }

    /// Loads a checkpoint in bitsandbytes' 4-bit layout: the linear layers whose weight is 4-bit
    /// become [`QLinear`]s built from the file's codes and scales (its shape
    /// must be `[d_out, d_in]`, as transformers' `Linear4bit` stores it), every other tensor loads
    /// as usual, 4-bit ones dequantized.
    fn assign_4bit_weights(mut self, file: &SafeTensors<'_>, quantized: &[String], label: &str, device: &B::Device) -> Result<(Self, LoadReport)> {
        let map = self.weight_map();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for (path, slot) in self.linear_layers() {
            let Some(name) = map.find_in(&format!("{}.weight", map.to_hf(&path)), file).filter(|n| quantized.contains(n)) else { continue };
            let BaseLinear::Dense(dense) = &*slot else { continue };
            let [d_in, d_out] = dense.weight.dims();
            let q = Quantized4bit::read(file, &name)?;
            if q.state.shape != [d_out, d_in] {
                return Err(PeftError::ShapeMismatch { name, expected: vec![d_out, d_in], actual: q.state.shape.clone() });
            }
            let bias_name = format!("{}.bias", name.strip_suffix(".weight").unwrap_or(&name));
            let bias = match (&dense.bias, file.tensor(&bias_name).is_ok()) {
                (Some(_), true) => Some(read_f32(file, &bias_name)?.1),
                (Some(_), false) => return Err(PeftError::MissingTensor(bias_name)),
                (None, _) => None,
            };
            *slot = BaseLinear::Quantized(QLinear::from_quantized(&q, bias.as_deref(), device)?);
            taken.extend(part_names(&name));
            taken.insert(bias_name);
        }
        let parts: BTreeSet<String> = quantized.iter().flat_map(|q| part_names(q)).collect();
        let mut entries = Vec::new();
        for name in file.names() {
            if taken.contains(name) || (parts.contains(name) && !quantized.iter().any(|q| q == name)) {
                continue;
            }
            if quantized.iter().any(|q| q == name) {
                let q = Quantized4bit::read(file, name)?;
                entries.push(TensorEntry::f32(name, q.state.shape.clone(), &q.dequantize()));
            } else {
                let view = file.tensor(name).map_err(|e| PeftError::Safetensors { path: label.into(), reason: e.to_string() })?;
                entries.push(TensorEntry::from_view(name, &view));
            }
        }
        let dense = serialize(&entries, None, label)?;
        let (model, mut report) = self.assign_hf_weights(&parse(&dense, label)?, false)?;
        report.loaded += taken.iter().filter(|n| quantized.contains(n)).count();
        Ok((model, report))
    }

    /// Turns the projected prefix `name` (peft's `prefix_projection`) into a plain prefix adapter
    /// of the same name at every attention layer's key/value site, holding the MLP's output: the
    /// same outputs, without the MLP (P-Tuning v2's reparameterization is for training only).
    pub fn eject_prefix_projection(&mut self, name: &str) -> Result<()> {
        let projected = match self {
            Self::Llama(m) => m.model.prefix_projection.adapter(name).map(|p| (p.keys_values(&m.model.prefix_projection.base), m.model.prefix_projection.is_active(name))),
            Self::Gpt2(m) => m.transformer.prefix_projection.adapter(name).map(|p| (p.keys_values(&m.transformer.prefix_projection.base), m.transformer.prefix_projection.is_active(name))),
            Self::Bert(m) => m.prefix_projection.adapter(name).map(|p| (p.keys_values(&m.prefix_projection.base), m.prefix_projection.is_active(name))),
        };
        let Some((projected, active)) = projected else {
            return Err(PeftError::UnknownAdapter { name: format!("{name} (a projected prefix)"), known: self.adapter_names() });
        };
        let n = projected.first().map_or(0, |(k, _)| k.dims()[2]);
        let sites: Vec<String> = self.tuned_layers().into_iter().filter(|l| l.kind == LayerKind::KeyValue).map(|l| l.path).collect();
        let host = |t: &Tensor<B, 4>| {
            let [_, heads, tokens, width] = t.dims();
            t.clone().reshape([heads, tokens, width]).into_data().convert::<f32>()
        };
        let tensors: AdapterTensors = sites.iter().zip(&projected).map(|(site, (k, v))| (site.clone(), BTreeMap::from([("keys".to_string(), host(k)), ("values".to_string(), host(v))]))).collect();
        let mut model = self.clone();
        model.delete_adapter(name)?;
        model.add_adapter(name, &PrefixConfig::new(Targeting::names(&sites)).with_num_virtual_tokens(n))?;
        model.set_adapter_tensors(name, tensors)?;
        if !active {
            let kv_sites: Vec<&mut peft_ptuning::PrefixKv<B>> = match &mut model {
                Self::Llama(m) => m.model.layers.iter_mut().map(|l| &mut l.self_attn.kv).collect(),
                Self::Gpt2(m) => m.transformer.h.iter_mut().map(|b| &mut b.attn.kv).collect(),
                Self::Bert(m) => m.encoder.layer.iter_mut().map(|l| &mut l.attention.self_attn.kv).collect(),
            };
            for kv in kv_sites {
                let keep: Vec<String> = kv.names().iter().filter(|n| *n != name && kv.is_active(n)).cloned().collect();
                kv.set_active(&keep.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        *self = model;
        Ok(())
    }

    /// Weights and biases held in 4-bit layers (they are not Burn parameters, but the model's).
    pub fn quantized_parameters(&mut self) -> usize {
        self.linear_layers()
            .into_iter()
            .filter_map(|(_, l)| match l {
                BaseLinear::Quantized(q) => Some(q.meta.d_input * q.meta.d_output + q.bias.as_ref().map_or(0, |b| b.dims()[0])),
                BaseLinear::Dense(_) => None,
            })
            .sum()
    }

    /// Every linear layer but the output head, with its module path: what 4 bits apply to.
    fn linear_layers(&mut self) -> Vec<(String, &mut BaseLinear<B>)> {
        match self {
            Self::Llama(m) => m.model.layers.iter_mut().enumerate().flat_map(|(i, l)| {
                let (a, f) = (&mut l.self_attn, &mut l.mlp);
                let at = |name: &str| format!("model.layers.{i}.{name}");
                [
                    (at("self_attn.q_proj"), &mut a.q_proj.base),
                    (at("self_attn.k_proj"), &mut a.k_proj.base),
                    (at("self_attn.v_proj"), &mut a.v_proj.base),
                    (at("self_attn.o_proj"), &mut a.o_proj.base),
                    (at("mlp.gate_proj"), &mut f.gate_proj.base),
                    (at("mlp.up_proj"), &mut f.up_proj.base),
                    (at("mlp.down_proj"), &mut f.down_proj.base),
                ]
            }).collect(),
            Self::Gpt2(m) => m.transformer.h.iter_mut().enumerate().flat_map(|(i, b)| {
                let at = |name: &str| format!("transformer.h.{i}.{name}");
                [(at("attn.c_attn"), &mut b.attn.c_attn.base), (at("attn.c_proj"), &mut b.attn.c_proj.base), (at("mlp.c_fc"), &mut b.mlp.c_fc.base), (at("mlp.c_proj"), &mut b.mlp.c_proj.base)]
            }).collect(),
            Self::Bert(m) => m.encoder.layer.iter_mut().enumerate().flat_map(|(i, l)| {
                let a = &mut l.attention;
                let at = |name: &str| format!("encoder.layer.{i}.{name}");
                [
                    (at("attention.self_attn.query"), &mut a.self_attn.query.base),
                    (at("attention.self_attn.key"), &mut a.self_attn.key.base),
                    (at("attention.self_attn.value"), &mut a.self_attn.value.base),
                    (at("attention.output.dense"), &mut a.output.dense.base),
                    (at("intermediate.dense"), &mut l.intermediate.dense.base),
                    (at("output.dense"), &mut l.output.dense.base),
                ]
            }).collect(),
        }
    }

    /// Quantizes every linear layer but the output head to 4 bits (`config`, bitsandbytes-exact):
    /// the base of QLoRA. Returns how many layers were quantized. Quantize before adding adapters.
    /// Layers already in 4 bits (a checkpoint saved so) stay as they are.
    pub fn quantize(&mut self, config: QuantConfig) -> Result<usize> {
        let layers = self.linear_layers();
        let count = layers.len();
        for (_, layer) in layers {
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
            Self::Bert(m) => m.embeddings.word_embeddings.base.weight.val(),
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
