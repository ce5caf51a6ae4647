//! QLoRA: LoRA trained on a frozen 4-bit base.
use crate::common;
use common::*;

use burn::module::Param;
use peft_core::{PeftError, PeftModel, Targeting, TrainMode, TrainableReport, Tuned};
use peft_lora::{LoraConfig, merge_qlora};
use peft_quant::QuantConfig;

fn config() -> LoraConfig {
    LoraConfig::new(Targeting::names(&["up", "down"])).with_r(4).with_alpha(8.0)
}

#[test]
fn qlora_trains_only_the_adapters_and_the_loss_falls() {
    let (first, last) = train::<Ad>(burn::tensor::DType::F32);
    println!("QLoRA loss {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let mut m = QMlp::<Ad>::new(16, 1);
    m.add_adapter("task", &config()).unwrap();
    let report = TrainableReport::new(&m, &TrainMode::adapters());
    assert_eq!(report.trainable, 4 * (16 + 32) * 2);
}

#[test]
fn qlora_forward_equals_the_merged_dequantized_layer_and_requantization_reports_its_error() {
    let mut m = QMlp::<Nd>::new(16, 4);
    m.add_adapter("task", &config()).unwrap();
    let dims = m.up.adapter("task").unwrap().b.dims();
    m.up.adapter_mut("task").unwrap().b = Param::from_tensor(tensor(dims, 5));
    let x = tensor::<Nd, 2>([3, 16], 6);
    let want = values(&m.up.forward(x.clone()));
    let merged = merge_qlora(&m.up, Some(QuantConfig::qlora())).unwrap();
    assert_close(&values(&merged.dense.forward(x.clone())), &want, 1e-5, "merged dense");
    let requantized = merged.requantized.unwrap();
    assert!(merged.max_abs_error > 0.0 && merged.rms_error > 0.0 && merged.rms_error <= merged.max_abs_error);
    let w = values(&merged.dense.weight.val());
    let absmax = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(merged.max_abs_error <= 0.17 * absmax, "{} vs absmax {absmax}", merged.max_abs_error);
    assert_eq!(requantized.meta.d_output, 32);
    assert!(matches!(m.merge_adapters(true), Err(PeftError::NotMergeable { .. })), "in-place merge into 4 bits must be refused");
}

#[test]
fn memory_accounting_qlora_against_lora_on_the_same_model() {
    let d = 256;
    let mut q = QMlp::<Nd>::new(d, 7);
    q.add_adapter("task", &config()).unwrap();
    let mut l = Mlp::<Nd> { up: Tuned::new(linear(d, 2 * d, 7)), down: Tuned::new(linear(2 * d, d, 8)) };
    l.add_adapter("task", &LoraConfig::new(Targeting::names(&["up", "down"])).with_r(4).with_alpha(8.0)).unwrap();
    let adapters = |n: usize| 4 * n;
    let lora_adapter_params = TrainableReport::new(&l, &TrainMode::adapters()).trainable;
    let qlora_bytes = q.up.base.device_bytes() + q.down.base.device_bytes() + adapters(TrainableReport::new(&q, &TrainMode::adapters()).trainable);
    let lora_bytes = 4 * TrainableReport::new(&l, &TrainMode::adapters()).total;
    let ratio = qlora_bytes as f64 / lora_bytes as f64;
    println!("parameter memory QLoRA / LoRA = {ratio:.3} ({qlora_bytes} / {lora_bytes} bytes, adapters {})", adapters(lora_adapter_params));
    assert!(ratio < 0.17, "ratio {ratio}");
}
