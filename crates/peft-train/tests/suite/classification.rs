//! Sequence classification (task `seq-cls`) in the workflow: the eval of a peft `SEQ_CLS` adapter
//! equals transformers + peft's (fixture of `tools/make_seq_cls_fixtures.py`), every method
//! trains the new head with its adapter, the adapter is saved as peft saves one, and a resumed
//! run ends bit for bit where the uninterrupted run ends.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use peft_core::checkpoint::read_bytes;
use peft_models::HfModel;
use peft_train::{Dataset, Encoded, Encoder, Method, Observer, StepLog, Task, TrainConfig, TrainSetup, evaluate_classifier, train};

type B = Autodiff<NdArray>;

use crate::turn;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn labeled() -> Vec<Encoded> {
    let encoder = Encoder::from_model_dir(&root().join("llama"), false).unwrap();
    Dataset::read(&root().join("data/labels.csv"), false).unwrap().records.iter().map(|r| encoder.encode(r).unwrap()).collect()
}

fn out(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-cls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[derive(Default)]
struct Losses(Vec<f64>, Option<usize>);

impl Observer for Losses {
    fn step(&mut self, log: &StepLog) {
        self.0.push(log.loss);
    }
    fn stop_after(&mut self, step: usize) -> bool {
        self.1 == Some(step)
    }
}

fn setup<'a>(config: &'a TrainConfig, data: &'a [Encoded], dir: &'a Path, resume: bool) -> TrainSetup<'a> {
    TrainSetup { model_dir: Box::leak(Box::new(root().join("llama"))), train: data, eval: data, pad_id: 0, config, out: dir, resume }
}

#[test]
fn eval_of_a_seq_cls_adapter_equals_transformers_and_peft() {
    // Loading an adapter initializes it first (drawing from the generator) before its values
    // are set: it takes its turn too.
    let _turn = turn();
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join("expected_seq_cls.json")).unwrap()).unwrap();
    let examples = labeled();
    assert!(examples.iter().all(|e| e.label.is_some() && e.target_count() == 1));
    let device = Default::default();
    let mut model = HfModel::<NdArray>::load(&root().join("llama"), &device).unwrap().0;
    model.load_adapter_folder(&root().join("seq_cls_adapter"), "task").unwrap();
    let ours = evaluate_classifier(&model, &examples, 3, 0, &device).unwrap();
    let diff = (ours.loss - expected["loss"].as_f64().unwrap()).abs();
    assert!(diff < 1e-4, "loss {} vs transformers + peft {} ({diff:e})", ours.loss, expected["loss"]);
    assert_eq!((ours.accuracy, ours.tokens as u64), (expected["accuracy"].as_f64().unwrap(), expected["examples"].as_u64().unwrap()));
    println!("seq-cls eval: loss {:.6} ({diff:.1e} from transformers + peft), accuracy {}", ours.loss, ours.accuracy);
}

#[test]
fn every_method_trains_the_head_and_saves_a_seq_cls_adapter() {
    let _turn = turn();
    let data = labeled();
    let device = Default::default();
    for (method, lr) in [(Method::Lora, 2e-2), (Method::Qlora, 2e-2), (Method::Ia3, 1e-1), (Method::Prefix, 1e-1), (Method::Full, 1e-2)] {
        let config = TrainConfig { task: Task::SeqCls, num_labels: Some(3), method, lr, max_steps: Some(12), batch_size: 3, target: "q_proj,v_proj,down_proj".into(), schedule: peft_train::Schedule::Constant, ..Default::default() };
        let dir = out(&format!("{method:?}"));
        let mut losses = Losses::default();
        let summary = train::<B>(&setup(&config, &data, &dir, false), &device, &mut losses).unwrap();
        let (first, last) = (losses.0[..2].iter().sum::<f64>() / 2.0, losses.0[10..].iter().sum::<f64>() / 2.0);
        println!("{method:?}: loss {first:.3} -> {last:.3}, {}", summary.trainable);
        assert!(last < first - 0.1, "{method:?}: loss {first} -> {last}");
        let eval = summary.eval.unwrap();
        assert_eq!(eval.tokens, data.len());
        // The saved run classifies as the trained model did.
        let mut fresh = HfModel::<NdArray>::load(&root().join("llama"), &device).unwrap().0;
        if method == Method::Qlora {
            fresh.quantize(peft_quant::QuantConfig::qlora()).unwrap();
        }
        if method == Method::Full {
            fresh = HfModel::<NdArray>::load(&summary.output, &device).unwrap().0;
            // A model that already classifies keeps its head (3 labels) for data with 2.
            let config = TrainConfig { task: Task::SeqCls, max_steps: Some(1), batch_size: 3, target: "q_proj".into(), ..Default::default() };
            let again = out("again");
            let setup = TrainSetup { model_dir: &summary.output, train: &data, eval: &[], pad_id: 0, config: &config, out: &again, resume: false };
            let run = train::<B>(&setup, &device, &mut ()).unwrap();
            let mut reloaded = HfModel::<NdArray>::load(&summary.output, &device).unwrap().0;
            reloaded.load_adapter_folder(&run.output, "x").unwrap();
            assert_eq!(reloaded.num_labels(), Some(3));
            std::fs::remove_dir_all(&again).unwrap();
        } else {
            let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary.output.join("adapter_config.json")).unwrap()).unwrap();
            assert_eq!((config["task_type"].as_str(), config["modules_to_save"][0].as_str()), (Some("SEQ_CLS"), Some("score")));
            fresh.load_adapter_folder(&summary.output, "trained").unwrap();
            // The base stayed frozen: only adapter tensors and the head trained.
            let bytes = read_bytes(&dir.join("checkpoints/step-12/trainable.safetensors")).unwrap();
            let saved = peft_core::checkpoint::parse(&bytes, "trainable").unwrap();
            assert!(saved.names().iter().all(|n| n.contains(".adapters.") || n.starts_with("score.")), "{method:?}: {:?}", saved.names());
            assert!(saved.names().iter().any(|n| n.starts_with("score.")));
        }
        assert_eq!(fresh.num_labels(), Some(3));
        let again = evaluate_classifier(&fresh, &data, 4, 0, &device).unwrap();
        assert!((again.loss - eval.loss).abs() < 1e-5 && again.accuracy == eval.accuracy, "{method:?}: {again:?} vs {eval:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_resumed_seq_cls_run_ends_bit_for_bit_and_wrong_data_is_refused() {
    let _turn = turn();
    let data = labeled();
    let device = Default::default();
    let config = TrainConfig { task: Task::SeqCls, lr: 1e-2, dropout: 0.1, grad_accum: 2, batch_size: 2, max_steps: Some(4), save_every: 2, target: "q_proj,v_proj".into(), ..Default::default() };
    let (whole, parts) = (out("whole"), out("parts"));
    let mut a = Losses::default();
    train::<B>(&setup(&config, &data, &whole, false), &device, &mut a).unwrap();
    let mut b = Losses(Vec::new(), Some(2));
    train::<B>(&setup(&config, &data, &parts, false), &device, &mut b).unwrap();
    let mut c = Losses::default();
    let resumed = train::<B>(&setup(&config, &data, &parts, true), &device, &mut c).unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!([b.0, c.0].concat(), a.0);
    let file = "adapter/adapter_model.safetensors";
    assert_eq!(read_bytes(&parts.join(file)).unwrap(), read_bytes(&whole.join(file)).unwrap());

    // Labels with the causal-LM task, text without labels for seq-cls, a label beyond num_labels.
    let as_lm = TrainConfig { task: Task::CausalLm, ..config.clone() };
    let err = train::<B>(&setup(&as_lm, &data, &out("lm"), false), &device, &mut ()).unwrap_err();
    assert!(err.to_string().contains("seq-cls"), "{err}");
    let mut unlabeled = data.clone();
    unlabeled[0].label = None;
    let err = train::<B>(&setup(&config, &unlabeled, &out("unlabeled"), false), &device, &mut ()).unwrap_err();
    assert!(err.to_string().contains("text+label"), "{err}");
    let narrow = TrainConfig { num_labels: Some(1), ..config.clone() };
    let err = train::<B>(&setup(&narrow, &data, &out("narrow"), false), &device, &mut ()).unwrap_err();
    assert!(err.to_string().contains("num_labels"), "{err}");
    for method in [Method::Prompt, Method::Ptuning, Method::Adapter] {
        assert!(TrainConfig { method, ..config.clone() }.validate().is_err(), "{method:?}");
    }
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&parts).unwrap();
}
