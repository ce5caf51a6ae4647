//! MAM and UniPELT on the reference BERT: several methods as one adapter, added all or none,
//! saved and loaded as one checkpoint with identical outputs, invalid unions refused.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use peft::core::adapter_file::{load_adapter_file, save_adapter_file};
use peft::models::HfModel;
use peft::prelude::*;
use peft::presets;

type B = NdArray;

fn bert() -> HfModel<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft-models/tests/fixtures/hf/models/bert");
    HfModel::load(&dir, &Default::default()).unwrap().0
}

/// Two tokens: with MAM's 30 virtual tokens, the fixture's 32 positions are all taken.
fn tokens() -> Tensor<B, 2, Int> {
    Tensor::from_ints([[3, 17]], &Default::default())
}

fn after_ffn() -> Targeting {
    Targeting::new(TargetModules::Regex(r".*layer\.\d+\.output\.layer_norm".into()))
}

fn unipelt() -> ConfigUnion {
    presets::unipelt(Targeting::names(&["query", "value"]), Targeting::names(&["kv"]), after_ffn())
}

/// Makes every value of adapter `name` non-zero, so that each part changes the output.
fn perturb(model: &mut HfModel<B>, name: &str) {
    let mut tensors = model.adapter_tensors(name).unwrap();
    for params in tensors.values_mut() {
        for data in params.values_mut() {
            let n = data.num_elements();
            *data = burn::tensor::TensorData::new((0..n).map(|i| ((i * 7) % 13) as f32 / 40.0 - 0.15).collect::<Vec<f32>>(), data.shape.clone());
        }
    }
    model.set_adapter_tensors(name, tensors).unwrap();
}

#[test]
fn a_union_is_one_adapter_saved_as_one_checkpoint() {
    for (name, config) in [("mam", presets::mam(Targeting::names(&["kv"]), after_ffn())), ("unipelt", unipelt())] {
        let mut m = bert();
        let base = m.forward(tokens()).into_data();
        let attached = m.add_adapter(name, &config).unwrap();
        assert_eq!(attached.len(), if name == "mam" { 4 } else { 8 }, "{attached:?}");
        assert_eq!(m.adapter_names(), [name]);
        perturb(&mut m, name);
        let adapted = m.forward(tokens()).into_data();
        assert_ne!(adapted, base);
        // Only the parts' parameters train.
        let report = TrainableReport::new(&m, &TrainMode::adapters());
        let values: usize = m.adapter_tensors(name).unwrap().values().flat_map(|p| p.values()).map(|d| d.num_elements()).sum();
        assert_eq!(report.trainable, values);
        // Disabled: the base, bit for bit.
        let mut off = m.clone();
        off.disable_adapters().unwrap();
        assert_eq!(off.forward(tokens()).into_data(), base);

        let file = std::env::temp_dir().join(format!("peft-union-{name}-{}.safetensors", std::process::id()));
        save_adapter_file(&mut m, name, &file).unwrap();
        let mut again = bert();
        again.add_adapter(name, &config).unwrap();
        load_adapter_file(&mut again, name, &file).unwrap();
        assert_eq!(again.forward(tokens()).into_data(), adapted, "{name}: reloaded outputs differ");
        // A file for another adapter, or a model without the adapter, is a typed error.
        assert!(matches!(load_adapter_file(&mut bert(), name, &file), Err(PeftError::UnexpectedTensor { .. })));
        std::fs::remove_file(&file).unwrap();
    }
}

#[test]
fn invalid_unions_are_refused_and_change_nothing() {
    let mut m = bert();
    let two_prefixes = ConfigUnion::new().with(PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(2)).with(PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3));
    let err = m.add_adapter("x", &two_prefixes).unwrap_err();
    assert!(matches!(&err, PeftError::InvalidConfig(t) if t.contains("two PREFIX_TUNING parts")), "{err}");
    assert!(matches!(m.add_adapter("x", &ConfigUnion::new()), Err(PeftError::InvalidConfig(_))));
    // The second part matches nothing: the first is not left behind.
    let dangling = ConfigUnion::new().with(PrefixConfig::new(Targeting::names(&["kv"]))).with(BottleneckConfig::pfeiffer(Targeting::names(&["nowhere"])));
    assert!(matches!(m.add_adapter("x", &dangling), Err(PeftError::NoTargetMatch { .. })));
    assert!(m.adapter_names().is_empty());
}
