//! LoRA fine-tuning of a reference model under burn-train's `Learner`: its training loop,
//! metrics and summary, with burn-peft's model, adapter, data, templates and loss. Chat,
//! instruction or text data trains the causal LM; `text,label` data (JSONL or CSV) trains a
//! sequence classifier (a new `score`/`classifier` head, with burn-train's accuracy metric).
//!
//! ```text
//! cargo run --release -p peft --example burn_learner -- [MODEL_DIR DATA OUT_DIR]
//! cargo run --release -p peft --example burn_learner -- crates/peft-train/tests/fixtures/llama \
//!     crates/peft-train/tests/fixtures/data/labels.csv /tmp/peft-burn-learner-cls
//! ```
//!
//! Without arguments it uses the tiny fixture Llama and chat data of
//! `crates/peft-train/tests/fixtures` (made by `tools/make_train_fixtures.py`); any Llama or
//! GPT-2 checkpoint folder with `tokenizer.json` works, and BERT for classification
//! (docs/real-models.md says how to get SmolLM2-135M-Instruct and all-MiniLM-L6-v2). The trained adapter is written to `OUT_DIR/adapter` as a peft folder;
//! burn-train's own checkpointing is left off because its records hold the whole model, the
//! frozen base included (`peft train` checkpoints adapters and resumes exactly: docs/training.md).

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use burn_train::metric::{AccuracyMetric, LossMetric};
use burn_train::{ClassificationOutput, InferenceStep, Learner, SequenceOutput, SupervisedTraining, TrainOutput, TrainStep};
use peft::models::HfModel;
use peft::prelude::*;
use peft::quant::backend::QuantLinearBackend;
use peft_train::{ClsBatch, Dataset, Encoded, Encoder, LmBatch, Prepared, classification_loss_rows, lm_loss_rows};

/// A causal language model as burn-train trains it.
#[derive(Module, Debug)]
struct CausalLmTask<B: Backend> {
    model: HfModel<B>,
}

impl<B: QuantLinearBackend> CausalLmTask<B> {
    /// The token-weighted next-token loss of `batch` (docs/training.md) and the logits.
    fn loss(&self, batch: &LmBatch<B>) -> (Tensor<B, 1>, Tensor<B, 3>) {
        let logits = self.model.causal_lm().expect("a decoder").logits(&batch.inputs, None);
        let rows = lm_loss_rows(logits.clone(), batch.targets.clone(), batch.weights.clone());
        (rows.sum().div_scalar(batch.target_count.max(1) as f64), logits)
    }
}

impl<B: AutodiffBackend + QuantLinearBackend> TrainStep for CausalLmTask<B> {
    type Input = LmBatch<B>;
    type Output = SequenceOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<SequenceOutput<B>> {
        let (loss, logits) = self.loss(&batch);
        TrainOutput::new(self, loss.backward(), SequenceOutput::new(loss, logits, None, batch.targets))
    }
}

impl<B: QuantLinearBackend> InferenceStep for CausalLmTask<B> {
    type Input = LmBatch<B>;
    type Output = SequenceOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> SequenceOutput<B> {
        let (loss, logits) = self.loss(&batch);
        SequenceOutput::new(loss, logits, None, batch.targets)
    }
}

/// A sequence classifier (the model with its classification head) as burn-train trains it.
#[derive(Module, Debug)]
struct ClassificationTask<B: Backend> {
    model: HfModel<B>,
}

impl<B: QuantLinearBackend> ClassificationTask<B> {
    /// The mean cross-entropy of the labels, the class logits and the labels.
    fn output(&self, batch: &ClsBatch<B>) -> ClassificationOutput<B> {
        let logits = self.model.classify(&batch.inputs).expect("a model with a classification head");
        let loss = classification_loss_rows(logits.clone(), batch.labels.clone()).mean();
        ClassificationOutput::new(loss, logits, batch.labels.clone())
    }
}

impl<B: AutodiffBackend + QuantLinearBackend> TrainStep for ClassificationTask<B> {
    type Input = ClsBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ClsBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let output = self.output(&batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: QuantLinearBackend> InferenceStep for ClassificationTask<B> {
    type Input = ClsBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ClsBatch<B>) -> ClassificationOutput<B> {
        self.output(&batch)
    }
}

/// Padded batches of encoded examples.
#[derive(Clone)]
struct PaddedBatcher {
    pad_id: u32,
}

impl<B: Backend> Batcher<B, Encoded, LmBatch<B>> for PaddedBatcher {
    fn batch(&self, items: Vec<Encoded>, device: &B::Device) -> LmBatch<B> {
        let rows: Vec<Vec<&Encoded>> = items.iter().map(|e| vec![e]).collect();
        LmBatch::new(&rows, self.pad_id, device)
    }
}

impl<B: Backend> Batcher<B, Encoded, ClsBatch<B>> for PaddedBatcher {
    fn batch(&self, items: Vec<Encoded>, device: &B::Device) -> ClsBatch<B> {
        ClsBatch::new(&items.iter().collect::<Vec<_>>(), self.pad_id, device)
    }
}

type Train = Autodiff<NdArray>;

fn main() -> Result<(), PeftError> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft-train/tests/fixtures");
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let (model_dir, data, out) = match args.as_slice() {
        [m, d, o] => (m.clone(), d.clone(), o.clone()),
        _ => (fixtures.join("llama"), fixtures.join("data/chat.jsonl"), std::env::temp_dir().join("peft-burn-learner")),
    };
    let device = Default::default();
    let encoder = Encoder::from_model_dir(&model_dir, true)?;
    let mut prepared = Prepared::new(&Dataset::read(&data, false)?, &encoder, 512, false)?;
    let valid = prepared.split_off(0.25, 0);
    println!("{} training and {} validation examples", prepared.examples.len(), valid.len());

    let (mut model, _) = HfModel::<Train>::load(&model_dir, &device)?;
    let targets: &[&str] = if matches!(model, HfModel::Bert(_)) { &["query", "value"] } else { &["q_proj", "v_proj"] };
    let config = LoraConfig::new(Targeting::names(targets)).with_r(8).with_alpha(16.0);
    let batcher = PaddedBatcher { pad_id: encoder.pad_id() };
    let adapter = out.join("adapter");

    if let Some(largest) = prepared.examples.iter().map(|e| e.label).collect::<Option<Vec<_>>>().and_then(|labels| labels.into_iter().max()) {
        // text,label data: a new head (as transformers draws one), trained in full with the adapter.
        model.set_classifier(largest + 1, true)?;
        model.add_adapter("default", &config)?;
        let head = model.classifier_name();
        let mode = TrainMode::adapters_and(&[head]);
        let model = set_trainable(model, &mode);
        println!("{}", TrainableReport::new(&model, &mode));
        let train = DataLoaderBuilder::new(batcher.clone()).batch_size(4).shuffle(42).build(InMemDataset::new(prepared.examples));
        let valid = DataLoaderBuilder::<NdArray, _, _>::new(batcher).batch_size(4).build(InMemDataset::new(valid));
        let learner = Learner::new(ClassificationTask { model }, AdamWConfig::new().with_weight_decay(0.0).init(), 2e-2);
        let result = SupervisedTraining::new(&out, train, valid)
            .metric_train_numeric(LossMetric::new())
            .metric_valid_numeric(LossMetric::new())
            .metric_train_numeric(AccuracyMetric::new())
            .metric_valid_numeric(AccuracyMetric::new())
            .num_epochs(3)
            .summary()
            .launch(learner);
        let mut trained = result.model.model;
        save_adapter(&mut trained, "default", &HfMethod::Lora(config), &adapter, &SaveOptions { task_type: Some("SEQ_CLS"), modules_to_save: &[head] })?;
        println!("wrote {} (a peft SEQ_CLS folder: `peft eval --adapter` and transformers + peft load it)", adapter.display());
        return Ok(());
    }

    model.add_adapter("default", &config)?;
    let model = set_trainable(model, &TrainMode::adapters());
    println!("{}", TrainableReport::new(&model, &TrainMode::adapters()));
    let train = DataLoaderBuilder::new(batcher.clone()).batch_size(4).shuffle(42).build(InMemDataset::new(prepared.examples));
    let valid = DataLoaderBuilder::<NdArray, _, _>::new(batcher).batch_size(4).build(InMemDataset::new(valid));
    let learner = Learner::new(CausalLmTask { model }, AdamWConfig::new().with_weight_decay(0.0).init(), 2e-2);
    let result = SupervisedTraining::new(&out, train, valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .num_epochs(3)
        .summary()
        .launch(learner);

    let mut trained = result.model.model;
    save_adapter(&mut trained, "default", &HfMethod::Lora(config), &adapter, &SaveOptions { task_type: Some("CAUSAL_LM"), ..Default::default() })?;
    println!("wrote {} (a peft folder: `peft eval --adapter` and transformers + peft load it)", adapter.display());
    Ok(())
}
