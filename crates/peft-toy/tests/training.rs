//! A small transformer fine-tuned with LoRA learns a task. Alone in its test binary, because
//! Burn's random generator is global and the run must be reproducible.
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use peft_core::{PeftModel, TargetModules, Targeting, TrainMode};
use peft_lora::LoraConfig;
use peft_toy::TinyTransformerConfig;
use peft_toy::synthetic::{Domain, SEQ_LEN, VOCAB, dataset};
use peft_toy::train::{FitConfig, evaluate, fit, inference};

type Ad = Autodiff<NdArray>;

#[test]
fn lora_fine_tuning_of_a_small_transformer_learns_the_task() {
    let device = Default::default();
    <Ad as burn::tensor::backend::Backend>::seed(&device, 7);
    let mut m = TinyTransformerConfig::new(VOCAB, SEQ_LEN, 2).with_d_model(16).with_d_ff(32).with_n_heads(2).init::<Ad>(&device).no_grad();
    m.add_adapter("task", &LoraConfig::new(Targeting::new(TargetModules::AllLinear)).with_r(4).with_alpha(8.0)).unwrap();
    let train = dataset(Domain::Shifted, 4000, 3);
    let test = dataset(Domain::Shifted, 500, 4);
    let before = evaluate(&inference(&m), &test);
    let mode = TrainMode::adapters_and(&["head"]);
    let (m, losses) = fit(m, &train, &mode, FitConfig { steps: 300, batch_size: 32, lr: 5e-3, seed: 5 });
    let after = evaluate(&inference(&m), &test);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    println!("train loss {first:.3} -> {last:.3}; test {before} -> {after}");
    assert!(last < 0.6 * first, "train loss {first} -> {last}");
    assert!(after.loss < 0.45, "test loss {}", after.loss);
    assert!(after.accuracy > 0.78, "test accuracy {}", after.accuracy);
}
