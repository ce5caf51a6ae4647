//! Fine-tunes a small pretrained transformer to a shifted domain with LoRA, and compares with
//! full fine-tuning. Runs offline on the CPU in a few minutes:
//!
//! ```text
//! cargo run -p peft --example finetune
//! ```
//!
//! 1. Pretrain on the general domain (full training: the baseline mode of the same API).
//! 2. Add a LoRA adapter and fine-tune it on the shifted domain.
//! 3. Disable it: the general-domain model comes back exactly (no catastrophic forgetting).
//! 4. Merge it: the merged model gives the adapted results with no extra cost at inference.
//! 5. Full fine-tuning on the same data, for comparison.

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use peft_toy::synthetic::{Domain, dataset};
use peft_toy::train::{FitConfig, Metrics, evaluate, fit};
use peft_toy::{TinyTransformer, TinyTransformerConfig};
use peft::prelude::*;

type Train = Autodiff<NdArray>;

fn report(label: &str, model: &TinyTransformer<Train>, general: &[peft_toy::synthetic::Example], shifted: &[peft_toy::synthetic::Example]) -> (Metrics, Metrics) {
    let inner = peft_toy::train::inference(model);
    let (g, s) = (evaluate(&inner, general), evaluate(&inner, shifted));
    println!("{label:<34} general: {g} | shifted: {s}");
    (g, s)
}

fn main() -> Result<(), PeftError> {
    let device = Default::default();
    // Seeded: the same numbers on every run.
    <Train as burn::tensor::backend::Backend>::seed(&device, 42);
    let steps = std::env::var("FINETUNE_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let config = TinyTransformerConfig::new(peft_toy::synthetic::VOCAB, peft_toy::synthetic::SEQ_LEN, 2);
    let general_train = dataset(Domain::General, 4000, 1);
    let shifted_train = dataset(Domain::Shifted, 4000, 2);
    let general_test = dataset(Domain::General, 1000, 3);
    let shifted_test = dataset(Domain::Shifted, 1000, 4);

    let fit_config = FitConfig { steps, batch_size: 32, lr: 3e-3, seed: 5 };
    let start = Instant::now();
    let (pretrained, _) = fit(config.init::<Train>(&device), &general_train, &TrainMode::Full, fit_config);
    println!("pretrained on the general domain in {:.1?}", start.elapsed());
    let (general_before, _) = report("pretrained model", &pretrained, &general_test, &shifted_test);

    let mut model = pretrained.clone();
    let lora = LoraConfig::new(Targeting::new(TargetModules::AllLinear)).with_r(8).with_alpha(16.0);
    let attached = model.add_adapter("shifted", &lora)?;
    println!("LoRA r=8 on {} layers; {}", attached.len(), TrainableReport::new(&model, &TrainMode::adapters()));
    let start = Instant::now();
    let (mut model, losses) = fit(model, &shifted_train, &TrainMode::adapters(), FitConfig { steps: 2 * steps, ..fit_config });
    println!("LoRA fine-tuning: loss {:.4} -> {:.4} in {:.1?}", losses[0], losses.last().unwrap(), start.elapsed());
    let (_, lora_shifted) = report("with the LoRA adapter", &model, &general_test, &shifted_test);

    model.disable_adapters()?;
    let (general_disabled, _) = report("adapter disabled", &model, &general_test, &shifted_test);
    assert_eq!(general_disabled, general_before, "disabling the adapter must give the pretrained model back exactly");
    model.enable_adapters()?;

    model.merge_adapters(true)?;
    let (_, merged_shifted) = report("adapter merged", &model, &general_test, &shifted_test);
    println!("merged vs unmerged shifted accuracy: {:.1}% vs {:.1}%", 100.0 * merged_shifted.accuracy, 100.0 * lora_shifted.accuracy);

    let start = Instant::now();
    let (full, _) = fit(pretrained, &shifted_train, &TrainMode::Full, FitConfig { lr: 3e-3, ..fit_config });
    println!("full fine-tuning took {:.1?}; {}", start.elapsed(), TrainableReport::new(&full, &TrainMode::Full));
    report("full fine-tuning (no way back)", &full, &general_test, &shifted_test);
    println!("\nNext, a real language model on your own data (docs/training.md):");
    println!("  cargo run --release -p peft-cli -- train --model MODEL_DIR --data train.jsonl --eval-split 0.1 --out run --method lora --max-steps 500");
    Ok(())
}
