//! The training loop on the tiny fixture Llama: every method lowers the loss while the base stays
//! as it was, a resumed run ends bit for bit where the uninterrupted one does, and an
//! interrupted checkpoint write never replaces the last complete checkpoint.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use peft_core::checkpoint::read_bytes;
use peft_train::checkpoint::latest_checkpoint;
use peft_train::{Dataset, Encoded, Encoder, Method, Observer, StepLog, TrainConfig, TrainSetup, train};

type B = Autodiff<NdArray>;

use crate::turn;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn examples() -> Vec<Encoded> {
    let encoder = Encoder::from_model_dir(&root().join("llama"), false).unwrap();
    ["chat", "alpaca", "prompt_completion", "text"]
        .iter()
        .flat_map(|f| Dataset::read(&root().join(format!("data/{f}.jsonl")), false).unwrap().records)
        .map(|r| encoder.encode(&r).unwrap())
        .collect()
}

fn out(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Records the losses; stops after a given step.
#[derive(Default)]
struct Record {
    losses: Vec<f64>,
    stop: Option<usize>,
}

impl Observer for Record {
    fn step(&mut self, log: &StepLog) {
        self.losses.push(log.loss);
    }
    fn stop_after(&mut self, step: usize) -> bool {
        self.stop == Some(step)
    }
}

fn run(config: &TrainConfig, data: &[Encoded], dir: &Path, resume: bool, observer: &mut Record) -> peft_train::TrainSummary {
    let setup = TrainSetup { model_dir: &root().join("llama"), train: data, eval: &data[..4], pad_id: 0, config, out: dir, resume };
    train::<B>(&setup, &Default::default(), observer).unwrap()
}

#[test]
fn every_method_lowers_the_loss_and_leaves_the_base_alone() {
    let _turn = turn();
    // A few examples to learn by heart, so that each method shows within a few steps. The random
    // output head is small (std 0.02 over a width of 32), so a method that leaves it frozen can
    // move the logits only so far from uniform: a fall of 0.1 nats is what 24 steps show.
    let data = examples()[..8].to_vec();
    let methods = [(Method::Lora, false, 2e-2), (Method::Qlora, false, 2e-2), (Method::Ia3, false, 3e-1), (Method::Adapter, false, 1e-1), (Method::Prefix, false, 2e-1), (Method::Prefix, true, 1e-2), (Method::Prompt, false, 3e-1), (Method::Ptuning, false, 1e-2), (Method::Full, false, 1e-2)];
    for (method, prefix_projection, lr) in methods {
        // Bottleneck adapters go to their preset's places (`all-linear` stands for them).
        let target = if method == Method::Adapter { "all-linear" } else { "q_proj,v_proj,down_proj" };
        let config = TrainConfig { method, prefix_projection, lr, max_steps: Some(24), batch_size: 4, schedule: peft_train::Schedule::Constant, target: target.into(), ..Default::default() };
        let dir = out(&format!("{method:?}{}", if prefix_projection { "-projected" } else { "" }));
        let mut record = Record::default();
        let summary = run(&config, &data, &dir, false, &mut record);
        let (first, last) = (record.losses[..4].iter().sum::<f64>() / 4.0, record.losses[20..].iter().sum::<f64>() / 4.0);
        println!("{method:?}{}: loss {first:.3} -> {last:.3}, {}", if prefix_projection { " (projected)" } else { "" }, summary.trainable);
        // A prompt (P-Tuning's too) acts only through attention to its virtual tokens, whose values pass through the
        // random v_proj (std 0.02): on this model it moves the loss least.
        let fall = if matches!(method, Method::Prompt | Method::Ptuning) { 0.02 } else { 0.1 };
        assert!(last < first - fall, "{method:?}: loss {first} -> {last}");
        assert_eq!(summary.steps, 24);
        let eval = summary.eval.unwrap();
        assert!(eval.loss.is_finite() && eval.tokens > 0);
        if method == Method::Full {
            assert!(summary.output.join("model.safetensors").exists());
            assert_eq!(summary.trainable.trainable, summary.trainable.total);
        } else {
            // Only the adapter trained: the base weights in the model folder are untouched, and the
            // adapter loads into a fresh model as peft would.
            assert!(summary.trainable.trainable * 10 < summary.trainable.total, "{}", summary.trainable);
            let bytes = read_bytes(&dir.join("checkpoints/step-24/trainable.safetensors")).unwrap();
            let saved = peft_core::checkpoint::parse(&bytes, "trainable").unwrap();
            assert!(saved.names().iter().all(|n| n.contains(".adapters.")), "{method:?} trained a base parameter: {:?}", saved.names());
            let mut fresh = peft_models::HfModel::<NdArray>::load(&root().join("llama"), &Default::default()).unwrap().0;
            peft_hf::load_adapter(&mut fresh, &summary.output, "trained").unwrap();
        }
        let log = std::fs::read_to_string(&summary.log).unwrap();
        assert_eq!(log.lines().filter(|l| l.contains("\"loss\"")).count(), 24);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_resumed_run_ends_bit_for_bit_where_the_uninterrupted_run_ends() {
    let _turn = turn();
    let data = examples();
    // Dropout, accumulation, warm-up and clipping all on, so that each has to resume exactly.
    let config = TrainConfig { lr: 1e-2, dropout: 0.1, grad_accum: 2, batch_size: 3, warmup: 2, max_grad_norm: 0.5, max_steps: Some(6), save_every: 2, ..Default::default() };
    let whole = out("whole");
    let mut uninterrupted = Record::default();
    let a = run(&config, &data, &whole, false, &mut uninterrupted);

    let parts = out("parts");
    let mut first = Record { stop: Some(4), ..Default::default() };
    let b = run(&config, &data, &parts, false, &mut first);
    assert_eq!(b.steps, 4);
    // An interrupted write of a later checkpoint and a folder without its state are ignored.
    let checkpoints = parts.join("checkpoints");
    std::fs::create_dir_all(checkpoints.join(".step-6.tmp-1")).unwrap();
    std::fs::write(checkpoints.join(".step-6.tmp-1/trainable.safetensors"), b"half a file").unwrap();
    std::fs::create_dir_all(checkpoints.join("step-8")).unwrap();
    assert_eq!(latest_checkpoint(&parts).unwrap().unwrap().1.step, 4);
    assert!(!checkpoints.join(".step-6.tmp-1").exists());
    let mut second = Record::default();
    let c = run(&config, &data, &parts, true, &mut second);
    assert_eq!(c.resumed_from, Some(4));
    assert_eq!((c.steps, second.losses.len()), (6, 2));

    let losses: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(losses, uninterrupted.losses, "the resumed run's losses differ");
    for file in ["adapter/adapter_model.safetensors", "checkpoints/step-6/trainable.safetensors"] {
        assert_eq!(read_bytes(&parts.join(file)).unwrap(), read_bytes(&whole.join(file)).unwrap(), "{file} differs");
    }
    let steps = |dir: &Path| std::fs::read_to_string(a.log.parent().unwrap().parent().unwrap().join(dir).join("log.jsonl")).unwrap().lines().count();
    assert_eq!(steps(&parts), steps(&whole));
    // Resuming with other settings is refused.
    let other = TrainConfig { lr: 2e-2, ..config };
    let setup = TrainSetup { model_dir: &root().join("llama"), train: &data, eval: &[], pad_id: 0, config: &other, out: &parts, resume: true };
    let err = train::<B>(&setup, &Default::default(), &mut ()).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&parts).unwrap();
}

#[test]
fn packing_and_length_grouping_train_on_the_same_tokens() {
    let _turn = turn();
    let data = examples();
    let targets: usize = data.iter().map(Encoded::target_count).sum();
    for (packing, group_by_length) in [(false, false), (true, false), (false, true)] {
        let config = TrainConfig { packing, group_by_length, max_len: 128, epochs: 1, batch_size: 4, ..Default::default() };
        let dir = out("packing");
        let summary = run(&config, &data, &dir, false, &mut Record::default());
        let log = std::fs::read_to_string(&summary.log).unwrap();
        let read: usize = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["tokens"].as_u64()).sum::<u64>() as usize;
        let all: usize = data.iter().map(|e| e.ids.len()).sum();
        assert_eq!(read, all, "packing {packing}, grouping {group_by_length}: one epoch reads every token once");
        assert!(targets > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn p_tuning_with_an_lstm_encoder_trains_and_saves_peft_s_folder() {
    let _turn = turn();
    let data = examples()[..8].to_vec();
    let config = TrainConfig { method: Method::Ptuning, encoder_reparameterization_type: peft_train::EncoderType::Lstm, encoder_hidden_size: Some(16), lr: 1e-2, max_steps: Some(24), batch_size: 8, schedule: peft_train::Schedule::Constant, ..Default::default() };
    let dir = out("ptuning-lstm");
    let mut record = Record::default();
    let summary = run(&config, &data, &dir, false, &mut record);
    let (first, last) = (record.losses[..4].iter().sum::<f64>() / 4.0, record.losses[20..].iter().sum::<f64>() / 4.0);
    println!("P-Tuning (LSTM): loss {first:.3} -> {last:.3}, {}", summary.trainable);
    // The LSTM's output is bounded (tanh) before its MLP, and a prompt acts only through the
    // random v_proj (std 0.02) of this model: the fall is small, but steady on the one batch.
    assert!(last < first - 0.01, "loss {first} -> {last}");
    assert!(record.losses.windows(8).all(|w| w[7] < w[0]), "{:?}", record.losses);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary.output.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((json["peft_type"].as_str(), json["encoder_reparameterization_type"].as_str(), json["encoder_num_layers"].as_u64()), (Some("P_TUNING"), Some("LSTM"), Some(2)));
    let mut fresh = peft_models::HfModel::<NdArray>::load(&root().join("llama"), &Default::default()).unwrap().0;
    peft_hf::load_adapter(&mut fresh, &summary.output, "trained").unwrap();
    assert!(TrainConfig { method: Method::Lora, encoder_reparameterization_type: peft_train::EncoderType::Lstm, ..Default::default() }.validate().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
