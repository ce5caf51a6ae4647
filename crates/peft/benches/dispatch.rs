//! What the mixed adapter type costs: the reference Llama with `WeightAdapter` (LoRA or IA3 chosen
//! per adapter at run time) against the same model with `Lora` (one method, known at compile
//! time), same weights and adapter, forward pass and training step. Ratios in one run.
//!
//! ```text
//! cargo bench -p peft --bench dispatch
//! ```
//!
//! Shape (the CPU anchor of docs/benchmarks.md): hidden 256, 4 layers, 4 heads, intermediate
//! 1024, vocabulary 1000, sequence 128, batch 8; LoRA r = 8 on q_proj and v_proj.

use std::hint::black_box;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Int, Tensor};
use peft::lora::Lora;
use peft::models::LinearAdapter;
use peft::quant::backend::QuantLinearBackend;
use peft::models::llama::{Llama, LlamaConfig};
use peft::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::{alternating, stepper};

type Train = Autodiff<NdArray>;

fn config() -> LlamaConfig {
    let json = r#"{"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4}"#;
    serde_json::from_str(json).expect("a Llama config")
}

fn model<B: QuantLinearBackend, T: LinearAdapter<B>>(device: &B::Device) -> Llama<B, T> {
    B::seed(device, 1);
    let mut m = config().init::<B, T>(device).expect("a valid config");
    m.add_adapter("bench", &LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(8).with_alpha(16.0)).expect("targets exist");
    set_trainable(m, &TrainMode::adapters())
}

fn main() {
    let device = Default::default();
    let tokens = Tensor::<NdArray, 2>::random([8, 128], Distribution::Uniform(0.0, 1000.0), &device).int();
    let (mono, mixed) = (model::<NdArray, Lora<NdArray>>(&device), model::<NdArray, WeightAdapter<NdArray>>(&device));
    let mut forward_mono = || drop(black_box(mono.forward(tokens.clone()).into_data()));
    let mut forward_mixed = || drop(black_box(mixed.forward(tokens.clone()).into_data()));
    alternating(3, &mut forward_mono, &mut forward_mixed);
    let (fm, fx) = alternating(30, &mut forward_mono, &mut forward_mixed);

    let train_tokens = Tensor::<Train, 2, Int>::from_data(tokens.into_data(), &device);
    let mut step_mono = stepper(model::<Train, Lora<Train>>(&device), |m, t| m.forward(t), train_tokens.clone());
    let mut step_mixed = stepper(model::<Train, WeightAdapter<Train>>(&device), |m, t| m.forward(t), train_tokens);
    alternating(3, &mut step_mono, &mut step_mixed);
    let (sm, sx) = alternating(20, &mut step_mono, &mut step_mixed);

    println!("| measure (medians of alternating runs) | Llama<Lora> | Llama<WeightAdapter> | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| forward (30 runs) | {fm:.1} ms | {fx:.1} ms | {:.3} |", fx / fm);
    println!("| training step (20 runs) | {sm:.1} ms | {sx:.1} ms | {:.3} |", sx / sm);
}
