//! What per-example adapters cost: the reference Llama carrying four LoRA adapters, a batch run
//! with one active adapter against the same batch whose rows use all four
//! (`PeftModel::set_example_adapters`, two rows each), forward pass and training step. Ratios in
//! one run.
//!
//! ```text
//! cargo bench -p peft --bench mixed_batch
//! ```
//!
//! Shape: that of `dispatch` (hidden 256, 4 layers, vocabulary 1000, sequence 128, batch 8);
//! LoRA r = 8 on q_proj and v_proj.

use std::hint::black_box;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Int, Tensor};
use peft::models::llama::{Llama, LlamaConfig};
use peft::prelude::*;
use peft::quant::backend::QuantLinearBackend;

#[path = "common/mod.rs"]
mod common;
use common::{alternating, stepper};

type Train = Autodiff<NdArray>;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// The model with four adapters; `mixed`: rows 0-1 use `a`, 2-3 `b`, ... (per-example
/// adapters); otherwise `a` is the active adapter, the usual path.
fn model<B: QuantLinearBackend>(device: &B::Device, mixed: bool) -> Llama<B, WeightAdapter<B>> {
    B::seed(device, 1);
    let config: LlamaConfig = serde_json::from_str(r#"{"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4}"#).expect("a Llama config");
    let mut m = config.init::<B, WeightAdapter<B>>(device).expect("a valid config");
    for name in NAMES {
        m.add_adapter(name, &LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(8).with_init(LoraInit::Gaussian)).expect("targets exist");
    }
    if mixed {
        let rows: Vec<Option<&str>> = (0..8).map(|r| Some(NAMES[r / 2])).collect();
        m.set_example_adapters(&rows).expect("known adapters");
    } else {
        m.set_active_adapters(&["a"]).expect("a known adapter");
    }
    set_trainable(m, &TrainMode::adapters())
}

fn main() {
    let device = Default::default();
    let tokens = Tensor::<NdArray, 2>::random([8, 128], Distribution::Uniform(0.0, 1000.0), &device).int();
    let (one, four) = (model::<NdArray>(&device, false), model::<NdArray>(&device, true));
    let mut forward_one = || drop(black_box(one.forward(tokens.clone()).into_data()));
    let mut forward_four = || drop(black_box(four.forward(tokens.clone()).into_data()));
    alternating(3, &mut forward_one, &mut forward_four);
    let (f1, f4) = alternating(30, &mut forward_one, &mut forward_four);

    let train_tokens = Tensor::<Train, 2, Int>::from_data(tokens.into_data(), &device);
    let mut step_one = stepper(model::<Train>(&device, false), |m, t| m.forward(t), train_tokens.clone());
    let mut step_four = stepper(model::<Train>(&device, true), |m, t| m.forward(t), train_tokens);
    alternating(3, &mut step_one, &mut step_four);
    let (s1, s4) = alternating(20, &mut step_one, &mut step_four);

    println!("| measure (medians of alternating runs) | one adapter, 8 rows | four adapters, 2 rows each | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| forward (30 runs) | {f1:.1} ms | {f4:.1} ms | {:.3} |", f4 / f1);
    println!("| training step (20 runs) | {s1:.1} ms | {s4:.1} ms | {:.3} |", s4 / s1);
}
