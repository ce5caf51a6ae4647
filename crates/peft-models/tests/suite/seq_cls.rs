//! Sequence classification against transformers + peft, on the fixtures of
//! `tools/make_seq_cls_fixtures.py`: `*ForSequenceClassification` with LoRA and
//! `task_type="SEQ_CLS"` (the head saved in `modules_to_save`), on a batch padded on the right.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{PeftError, PeftModel};
use peft_hf::{HfCheckpoint, SaveOptions, save_adapter};
use peft_models::{HfModel, Padding, TokenBatch};

type B = NdArray;

const ROWS: [&[u32]; 2] = [&[3, 17, 5, 42, 8, 1, 60], &[9, 4, 33, 2]];
const PAD: u32 = 0;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn model(name: &str) -> HfModel<B> {
    HfModel::load(&root().join("models").join(name), &Default::default()).unwrap().0
}

fn batch(rows: &[&[u32]], side: Padding) -> TokenBatch<B> {
    let rows: Vec<Vec<&[u32]>> = rows.iter().map(|r| vec![*r]).collect();
    TokenBatch::new(&rows, PAD, side, &Default::default())
}

fn max_diff(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

fn expected(case: &str) -> Tensor<B, 2> {
    let bytes = read_bytes(&root().join("adapters").join(case).join("expected.safetensors")).unwrap();
    let st = parse(&bytes, case).unwrap();
    let view = st.tensor("class_logits").unwrap();
    let shape: [usize; 2] = view.shape().try_into().unwrap();
    Tensor::from_data(burn::tensor::TensorData::new(to_f32("class_logits", &view).unwrap(), shape), &Default::default())
}

#[test]
fn classifiers_with_lora_match_peft_seq_cls_on_a_padded_batch() {
    for (case, model_name, head, labels) in [("llama_seq_cls", "llama", "score", 3), ("gpt2_seq_cls", "gpt2_f16", "score", 2), ("bert_seq_cls", "bert", "classifier", 3)] {
        let mut m = model(model_name);
        assert_eq!(m.num_labels(), None);
        let loaded = m.load_adapter_folder(&root().join("adapters").join(case), "hf").unwrap();
        assert!(loaded.base_tensors.contains(&format!("base_model.model.{head}.weight")), "{:?}", loaded.base_tensors);
        assert_eq!((m.classifier_name(), m.num_labels()), (head, Some(labels)));
        let ours = m.classify(&batch(&ROWS, Padding::Right)).unwrap();
        let diff = max_diff(ours.clone(), expected(case));
        assert!(diff < 1e-4, "{case}: class logits differ from peft by {diff}");
        // Each row alone, and (decoders) padded on the left, give the same logits; BERT pools its
        // first position, so it is padded on the right, as its tokenizer does.
        let alone = Tensor::cat(ROWS.iter().map(|r| m.classify(&batch(&[r], Padding::Right)).unwrap()).collect(), 0);
        assert!(max_diff(alone, ours.clone()) < 1e-5, "{case}");
        if head == "score" {
            let left = m.classify(&batch(&ROWS, Padding::Left)).unwrap();
            assert!(max_diff(left, ours.clone()) < 1e-5, "{case}: left padding");
        }
        println!("{case}: {diff:.1e} from peft");

        // Saved as peft does (head in modules_to_save), loaded back: the same logits.
        let dir = std::env::temp_dir().join(format!("peft-seq-cls-{case}-{}", std::process::id()));
        save_adapter(&mut m, "hf", &loaded.method, &dir, &SaveOptions { task_type: Some("SEQ_CLS"), modules_to_save: &[head] }).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!((config["task_type"].as_str(), config["modules_to_save"][0].as_str()), (Some("SEQ_CLS"), Some(head)));
        let mut again = model(model_name);
        again.load_adapter_folder(&dir, "x").unwrap();
        assert_eq!(again.classify(&batch(&ROWS, Padding::Right)).unwrap().into_data(), ours.clone().into_data(), "{case}");
        std::fs::remove_dir_all(&dir).unwrap();

        // A whole checkpoint with the head (full fine-tuning's output) loads with it.
        let full = std::env::temp_dir().join(format!("peft-seq-cls-full-{case}-{}", std::process::id()));
        std::fs::create_dir_all(&full).unwrap();
        std::fs::copy(root().join("models").join(model_name).join("config.json"), full.join("config.json")).unwrap();
        let mut merged = m.clone();
        merged.merge_adapters(false).unwrap();
        peft_core::checkpoint::write_atomic(&full.join("model.safetensors"), &merged.hf_tensors(&|_| true), None).unwrap();
        let whole = HfModel::<B>::load(&full, &Default::default()).unwrap().0;
        assert_eq!(whole.num_labels(), Some(labels));
        assert!(max_diff(whole.classify(&batch(&ROWS, Padding::Right)).unwrap(), ours) < 1e-5, "{case}: whole checkpoint");
        std::fs::remove_dir_all(&full).unwrap();
    }
}

#[test]
fn a_model_without_a_head_or_with_a_misfit_one_is_a_typed_error() {
    let mut m = model("llama");
    assert!(matches!(m.classify(&batch(&ROWS, Padding::Right)), Err(PeftError::InvalidConfig(_))));
    assert!(matches!(m.set_classifier(0, true), Err(PeftError::InvalidConfig(_))));
    // A SEQ_CLS folder of another model's width: refused, the model unchanged.
    let err = m.load_adapter_folder(&root().join("adapters/gpt2_seq_cls"), "x").unwrap_err();
    assert!(matches!(err, PeftError::NoTargetMatch { .. }), "{err}");
    assert_eq!(m.num_labels(), None);
    assert!(m.adapter_names().is_empty());
    // A new head is drawn from N(0, 0.02) as transformers does; the bias (BERT) starts at 0.
    let mut bert = model("bert");
    bert.set_classifier(4, true).unwrap();
    let HfModel::Bert(b) = &bert else { unreachable!() };
    let head = b.classifier.as_ref().unwrap();
    let w = head.weight.val();
    let std = w.clone().var(0).mean().sqrt().into_scalar();
    assert!((0.01..0.03).contains(&std), "{std}");
    assert_eq!(head.bias.as_ref().unwrap().val().abs().sum().into_scalar(), 0.0);
}
