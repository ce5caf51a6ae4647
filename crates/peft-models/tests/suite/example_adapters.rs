//! Per-example adapters in one batch (`PeftModel::set_example_adapters`): each row of a mixed
//! batch (LoRA with embeddings, IA3 on attention and the MLP, a Houlsby adapter, the base) gets
//! what it gets alone, and in training each adapter learns from its own rows only.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use peft_adapter::BottleneckConfig;
use peft_core::{PeftError, PeftModel, TargetModules, Targeting};
use peft_lora::{Ia3Config, LoraConfig};
use peft_models::HfModel;
use peft_ptuning::PrefixConfig;

type B = NdArray;

fn llama<B2: peft_quant::backend::QuantLinearBackend>() -> HfModel<B2> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/models/llama");
    HfModel::load(&dir, &Default::default()).unwrap().0
}

/// `a`: LoRA on q/v and the embeddings; `b`: IA3 on k/v and down_proj; `c`: a Houlsby adapter;
/// all with non-zero values.
fn with_adapters<B2: peft_quant::backend::QuantLinearBackend>() -> HfModel<B2> {
    let mut m = llama::<B2>();
    m.add_adapter("a", &LoraConfig::new(Targeting::names(&["q_proj", "v_proj", "embed_tokens"])).with_r(2)).unwrap();
    m.add_adapter("b", &Ia3Config::new(Targeting::names(&["k_proj", "v_proj", "down_proj"])).with_feedforward_modules(TargetModules::names(&["down_proj"]))).unwrap();
    m.add_adapter("c", &BottleneckConfig::houlsby(Targeting::names(&["attention_adapters", "output_adapters"])).with_reduction_factor(8)).unwrap();
    set_values(&mut m, &["a", "b", "c"]);
    m
}

/// Sets every value of the adapters `names` (not drawn), so that every copy of the model holds
/// the same.
pub(crate) fn set_values<B2: peft_quant::backend::QuantLinearBackend>(m: &mut HfModel<B2>, names: &[&str]) {
    for (k, name) in names.iter().enumerate() {
        let mut tensors = m.adapter_tensors(name).unwrap();
        for params in tensors.values_mut() {
            for data in params.values_mut() {
                let n = data.num_elements();
                *data = TensorData::new((0..n).map(|i| ((i * 5 + k * 3) % 11) as f32 / 30.0 + 0.6).collect::<Vec<f32>>(), data.shape.clone());
            }
        }
        m.set_adapter_tensors(name, tensors).unwrap();
    }
}

pub(crate) fn batch<B2: Backend>() -> Tensor<B2, 2, Int> {
    Tensor::from_ints([[3, 17, 5, 42, 8], [9, 1, 60, 2, 33], [11, 12, 13, 14, 15], [7, 7, 21, 40, 5], [50, 3, 2, 1, 0]], &Default::default())
}

#[test]
fn each_row_of_a_mixed_batch_gets_what_it_gets_alone() {
    let rows = [Some("a"), None, Some("b"), Some("c"), Some("a")];
    let mut m = with_adapters::<B>();
    m.set_example_adapters(&rows).unwrap();
    let mixed = m.forward(batch());
    let mut worst = 0.0f32;
    for (r, name) in rows.iter().enumerate() {
        let mut alone = with_adapters::<B>();
        match name {
            Some(n) => alone.set_active_adapters(&[n]).unwrap(),
            None => alone.disable_adapters().unwrap(),
        }
        let row = batch::<B>().narrow(0, r, 1);
        let want = alone.forward(row).into_data().into_vec::<f32>().unwrap();
        let got = mixed.clone().narrow(0, r, 1).into_data().into_vec::<f32>().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-6, "row {r} ({name:?}) differs from running it alone by {diff}");
        worst = worst.max(diff);
    }
    println!("mixed batch of 5 rows (LoRA, base, IA3, Houlsby, LoRA): largest difference {worst:.1e}");
    // Cleared, the active adapters (all three) apply to every row again.
    m.clear_example_adapters().unwrap();
    assert_eq!(m.forward(batch()).into_data(), with_adapters::<B>().forward(batch()).into_data());
    // Deleting an adapter ends the row assignments everywhere.
    m.set_example_adapters(&rows).unwrap();
    m.delete_adapter("b").unwrap();
    let mut rest = with_adapters::<B>();
    rest.delete_adapter("b").unwrap();
    assert_eq!(m.forward(batch()).into_data(), rest.forward(batch()).into_data());
}

#[test]
fn in_training_each_adapter_learns_from_its_own_rows() {
    type T = Autodiff<NdArray>;
    let mut m = with_adapters::<T>();
    m.set_example_adapters(&[Some("a"), Some("a"), None, Some("c"), None]).unwrap();
    let before = |m: &mut HfModel<T>, n: &str| m.adapter_tensors(n).unwrap();
    let (a0, b0, c0) = (before(&mut m, "a"), before(&mut m, "b"), before(&mut m, "c"));
    let loss = m.forward(batch()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let mut optim = SgdConfig::new().init::<T, HfModel<T>>();
    let mut m = optim.step(0.1, m, grads);
    assert_ne!(m.adapter_tensors("a").unwrap(), a0, "adapter a learned nothing");
    assert_ne!(m.adapter_tensors("c").unwrap(), c0, "adapter c learned nothing");
    assert_eq!(m.adapter_tensors("b").unwrap(), b0, "adapter b, used by no row, changed");
    let _ = m.valid();
}

#[test]
fn unknown_names_and_merged_adapters_are_refused() {
    let mut m = with_adapters::<B>();
    assert!(matches!(m.set_example_adapters(&[Some("zz")]), Err(PeftError::UnknownAdapter { .. })));
    // An active prefix that no row names: at the attention those rows run without it, as each
    // runs alone with its own adapter.
    let mut m = with_adapters::<B>();
    m.add_adapter("p", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(2)).unwrap();
    m.set_example_adapters(&[Some("a"), None, Some("c"), Some("a"), None]).unwrap();
    let mixed = m.forward(batch());
    let mut alone = with_adapters::<B>();
    alone.set_active_adapters(&["c"]).unwrap();
    let want = alone.forward(batch().narrow(0, 2, 1));
    let diff: f32 = (mixed.narrow(0, 2, 1) - want).abs().max().into_scalar();
    assert!(diff <= 1e-6, "an unnamed active prefix changed a row by {diff}");
    let mut merged = with_adapters::<B>();
    merged.set_active_adapters(&["a"]).unwrap();
    merged.merge_adapters(true).unwrap();
    assert!(matches!(merged.set_example_adapters(&[Some("b")]), Err(PeftError::Merged(_))));
}
