//! Compositions of methods as one adapter, built from one config: He et al.'s **MAM adapter**
//! (prefix tuning + a parallel adapter) and Mao et al.'s **UniPELT** (LoRA + prefix tuning + a
//! gated sequential adapter). Each is a [`ConfigUnion`]: added under one name, it is one adapter
//! for every operation, and [`save_adapter_file`](crate::core::adapter_file::save_adapter_file)
//! keeps it as one checkpoint.
//!
//! The targets say where each part goes on your model; on the reference BERT:
//!
//! ```
//! use burn::backend::NdArray;
//! use peft::prelude::*;
//! use peft::models::{HfModel, HfModelConfig};
//! use peft::presets;
//!
//! let config = HfModelConfig::parse(
//!     r#"{"model_type": "bert", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
//!         "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32}"#,
//!     "config.json",
//! )?;
//! let mut model = HfModel::<NdArray>::init(&config, &Default::default())?;
//! let after_ffn = || Targeting::new(TargetModules::Regex(r".*layer\.\d+\.output\.layer_norm".into()));
//! let attached = model.add_adapter("mam", &presets::mam(Targeting::names(&["kv"]), after_ffn()))?;
//! assert_eq!(attached.len(), 2 + 2); // a prefix and a parallel adapter in each layer
//! model.delete_adapter("mam")?; // one name for all its parts
//! let unipelt = presets::unipelt(Targeting::names(&["query", "value"]), Targeting::names(&["kv"]), after_ffn());
//! assert_eq!(model.add_adapter("unipelt", &unipelt)?.len(), 4 + 2 + 2);
//! # Ok::<(), peft::PeftError>(())
//! ```

use peft_adapter::BottleneckConfig;
use peft_core::{ConfigUnion, Targeting};
use peft_lora::LoraConfig;
use peft_ptuning::PrefixConfig;

/// The MAM adapter (He et al., 2022; AdapterHub's `MAMConfig`): 30 virtual tokens of prefix
/// tuning at `kv`, and a parallel adapter (reduction 2, scaling 4) at `adapter`. AdapterHub
/// trains its prefix through an MLP, whose keys and values start near zero; this one is the flat
/// prefix (P-Tuning v2's trained form) started near zero too (N(0, 0.02)): 30 prefix positions
/// of N(0, 1) keys and values swamp a small model's attention.
pub fn mam(kv: Targeting, adapter: Targeting) -> ConfigUnion {
    ConfigUnion::new().with(PrefixConfig::new(kv).with_num_virtual_tokens(30).with_init_std(0.02)).with(BottleneckConfig::parallel(adapter))
}

/// UniPELT (Mao et al., 2022; AdapterHub's `UniPELTConfig`): LoRA r 8 at `lora` and a Pfeiffer
/// adapter (reduction 16) at `adapter`, and 10 virtual tokens of prefix tuning at `kv`, each with
/// a learned gate (AdapterHub's `use_gating`: the gate takes the place of LoRA's `alpha/r`, and
/// multiplies the prefix's keys and values).
pub fn unipelt(lora: Targeting, kv: Targeting, adapter: Targeting) -> ConfigUnion {
    ConfigUnion::new()
        .with(LoraConfig::new(lora).with_r(8).with_alpha(8.0).with_gating(true))
        .with(PrefixConfig::new(kv).with_num_virtual_tokens(10).with_gating(true))
        .with(BottleneckConfig::pfeiffer(adapter).with_gating(true))
}
