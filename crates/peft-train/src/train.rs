//! The training loop: AdamW with a warmed-up schedule, gradient accumulation, global-norm
//! clipping, evaluation and checkpoints every N steps, and resumption that ends exactly where the
//! uninterrupted run ends (on the CPU backend: bit for bit).
//!
//! Why a loop of our own rather than burn-train's `Learner`: exact resumption needs the data
//! position, the dropout seeds and the optimizer's state by parameter path in the checkpoint, and
//! checkpoints here hold adapters (a few MB), not the frozen base.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use peft_core::{PeftError, PeftModel, Result, TargetModules, Targeting, TrainMode, TrainableReport, all_finite, set_trainable};
use peft_hf::{HfCheckpoint, HfMethod, SaveOptions, save_adapter};
use peft_adapter::BottleneckConfig;
use peft_lora::{Ia3Config, LoraConfig};
use peft_models::HfModel;
use peft_ptuning::{PrefixConfig, PrefixProjectionConfig, PromptEncoderConfig, PromptEncoderKind, PromptTuningConfig};
use peft_quant::QuantConfig;
use peft_quant::backend::QuantLinearBackend;
use serde::Serialize;

use crate::checkpoint::{TrainState, ids_from_paths, latest_checkpoint, load_trainable, save_checkpoint, save_trainable};
use crate::optimizer_record::{TrainableShape, load_optimizer, save_optimizer};
use crate::plan::{BatchStream, Cursor, DataPlan};
use crate::{AdapterPreset, ClsBatch, Encoded, EncoderType, Encoder, EvalResult, LmBatch, LmLoss, Method, Task, TrainConfig, classification_loss, evaluate, evaluate_classifier, learning_rate, lm_loss, modules};

/// What a run needs besides its settings.
#[derive(Clone, Copy, Debug)]
pub struct TrainSetup<'a> {
    /// The pretrained model (`config.json`, `model.safetensors`).
    pub model_dir: &'a Path,
    /// Training examples.
    pub train: &'a [Encoded],
    /// Evaluation examples (may be empty).
    pub eval: &'a [Encoded],
    /// The padding token.
    pub pad_id: u32,
    /// Settings.
    pub config: &'a TrainConfig,
    /// Where the adapter, checkpoints, log and plot go.
    pub out: &'a Path,
    /// Continue from the newest checkpoint in `out`.
    pub resume: bool,
}

/// One optimizer step, as logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLog {
    /// Optimizer steps done.
    pub step: usize,
    /// Mean loss per counted token of this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens read (padding excluded).
    pub tokens: usize,
    /// Tokens per second over this step.
    pub tokens_per_s: f64,
}

/// Hooks into a run: progress display, and a way to stop early.
pub trait Observer {
    /// The run starts at step `start` of `total`.
    fn started(&mut self, start: usize, total: usize) {
        let _ = (start, total);
    }
    /// A step finished.
    fn step(&mut self, log: &StepLog) {
        let _ = log;
    }
    /// An evaluation finished.
    fn evaluated(&mut self, step: usize, result: &EvalResult) {
        let _ = (step, result);
    }
    /// Whether to stop after `step` (its checkpoint, if due, is written first).
    fn stop_after(&mut self, step: usize) -> bool {
        let _ = step;
        false
    }
}

/// An observer that does nothing.
impl Observer for () {}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Optimizer steps done.
    pub steps: usize,
    /// Steps the run makes in all (`steps` is less when stopped early).
    pub total_steps: usize,
    /// The checkpoint it resumed from.
    pub resumed_from: Option<usize>,
    /// Trainable and total parameters.
    pub trainable: TrainableReport,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Evaluation at the end, when there is evaluation data.
    pub eval: Option<EvalResult>,
    /// The trained adapter (a peft folder), or the whole model for full fine-tuning.
    pub output: PathBuf,
    /// Every step and evaluation, one JSON object per line.
    pub log: PathBuf,
}

/// Attaches the method of `config` to `model` as adapter `default` (QLoRA: after quantizing the
/// base to NF4 with double quantization, as QLoRA does); what trains.
fn attach<B: Backend>(model: &mut HfModel<B>, config: &TrainConfig) -> Result<(TrainMode, Option<HfMethod>)> {
    let targets = Targeting::new(config.targets());
    if config.method == Method::Qlora {
        model.quantize(QuantConfig::qlora())?;
    }
    let method = match config.method {
        Method::Lora | Method::Qlora => HfMethod::Lora(LoraConfig::new(targets).with_r(config.r).with_alpha(config.alpha).with_dropout(config.dropout)),
        Method::Ia3 => HfMethod::Ia3(Ia3Config::new(targets).with_feedforward_modules(modules(&config.feedforward))),
        Method::Prefix if config.prefix_projection => HfMethod::PrefixProjection(
            PrefixProjectionConfig::new(Targeting::new(TargetModules::names(&["prefix_projection"]))).with_num_virtual_tokens(config.num_virtual_tokens).with_encoder_hidden_size(config.encoder_hidden_size),
        ),
        Method::Prefix => HfMethod::Prefix(PrefixConfig::new(Targeting::new(TargetModules::names(&["kv"]))).with_num_virtual_tokens(config.num_virtual_tokens)),
        Method::Prompt | Method::Ptuning => {
            let kind = match config.encoder_reparameterization_type {
                EncoderType::Mlp => PromptEncoderKind::Mlp,
                EncoderType::Lstm => PromptEncoderKind::Lstm,
            };
            let encoder = (config.method == Method::Ptuning).then(|| PromptEncoderConfig::new().with_hidden_size(config.encoder_hidden_size).with_kind(kind).with_num_layers(config.encoder_num_layers));
            HfMethod::Prompt(PromptTuningConfig::new(Targeting::new(TargetModules::names(&["prompt"]))).with_num_virtual_tokens(config.num_virtual_tokens).with_encoder(encoder))
        }
        Method::Full => return Ok((TrainMode::Full, None)),
        Method::Adapter => {
            let preset = match config.adapter_config {
                AdapterPreset::Pfeiffer => BottleneckConfig::pfeiffer(targets),
                AdapterPreset::Houlsby => BottleneckConfig::houlsby(targets),
                AdapterPreset::Parallel => BottleneckConfig::parallel(targets),
            };
            let rf = config.reduction_factor.unwrap_or(preset.reduction_factor);
            HfMethod::Bottleneck(preset.with_reduction_factor(rf))
        }
    };
    model.add_adapter("default", method.config())?;
    Ok((TrainMode::adapters(), Some(method)))
}

/// One forward pass's batch, for the task.
enum TaskBatch<B: Backend> {
    Lm(LmBatch<B>),
    Cls(ClsBatch<B>),
}

impl<B: Backend> TaskBatch<B> {
    fn new(task: Task, rows: &[Vec<&Encoded>], pad_id: u32, device: &B::Device) -> Self {
        match task {
            Task::CausalLm => Self::Lm(LmBatch::new(rows, pad_id, device)),
            Task::SeqCls => Self::Cls(ClsBatch::new(&rows.iter().flatten().copied().collect::<Vec<_>>(), pad_id, device)),
        }
    }

    /// Predictions the loss counts.
    fn counted(&self) -> usize {
        match self {
            Self::Lm(b) => b.target_count,
            Self::Cls(b) => b.labels.dims()[0],
        }
    }

    /// Tokens read, padding excluded.
    fn tokens(&self) -> usize {
        let inputs = match self {
            Self::Lm(b) => &b.inputs,
            Self::Cls(b) => &b.inputs,
        };
        inputs.segments.clone().not_equal_elem(0).int().sum().into_scalar().elem::<i64>() as usize
    }
}

impl<B: AutodiffBackend + QuantLinearBackend> TaskBatch<B> {
    fn loss(&self, model: &HfModel<B>) -> Result<LmLoss<B>> {
        match self {
            Self::Lm(b) => Ok(lm_loss(model.causal_lm()?, b)),
            Self::Cls(b) => classification_loss(model, b),
        }
    }
}

/// Evaluates `model` on `examples` for the task.
fn evaluate_task<B: QuantLinearBackend>(task: Task, model: &HfModel<B>, examples: &[Encoded], batch_size: usize, pad_id: u32, device: &B::Device) -> Result<EvalResult> {
    match task {
        Task::CausalLm => Ok(evaluate(model.causal_lm()?, examples, batch_size, pad_id, device)),
        Task::SeqCls => evaluate_classifier(model, examples, batch_size, pad_id, device),
    }
}

/// Checks that the examples suit the task (labels for `seq-cls`, none for `causal-lm`, each
/// below `num_labels`), and returns the classes of the head.
pub fn check_task(config: &TrainConfig, examples: &[&[Encoded]]) -> Result<Option<usize>> {
    let all = || examples.iter().flat_map(|e| e.iter());
    match config.task {
        Task::CausalLm if all().any(|e| e.label.is_some()) => Err(PeftError::InvalidConfig("text+label data is for sequence classification: train it with task seq-cls (--task seq-cls)".into())),
        Task::CausalLm => Ok(None),
        Task::SeqCls if all().any(|e| e.label.is_none()) => Err(PeftError::InvalidConfig("task seq-cls needs text+label data (JSONL `{\"text\", \"label\"}` or CSV text,label)".into())),
        Task::SeqCls => {
            let largest = all().filter_map(|e| e.label).max().unwrap_or(0);
            let labels = config.num_labels.unwrap_or(largest + 1);
            if largest >= labels {
                return Err(PeftError::InvalidConfig(format!("label {largest} is outside num_labels = {labels} (labels count from 0)")));
            }
            Ok(Some(labels))
        }
    }
}

/// The ids and shapes of the parameters that train.
struct TrainableIds(Vec<TrainableShape>);
impl<B: Backend> ModuleVisitor<B> for TrainableIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0.push((param.id, value.dims().to_vec()));
        }
    }
}

/// Scales `grads` so that their global L2 norm is at most `max` (torch's `clip_grad_norm_`);
/// returns the norm before clipping.
fn clip_global_norm<B: Backend>(grads: &mut GradientsParams, ids: &[TrainableShape], max: f64) -> f64 {
    fn each<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, scale: Option<f64>, sum: &mut Option<Tensor<B, 1>>) {
        let Some(g) = grads.remove::<B, D>(id) else { return };
        match scale {
            None => {
                let s = g.clone().square().sum();
                *sum = Some(sum.take().map_or(s.clone(), |t| t + s));
                grads.register(id, g);
            }
            Some(scale) => grads.register(id, g.mul_scalar(scale)),
        }
    }
    let visit = |grads: &mut GradientsParams, scale: Option<f64>, sum: &mut Option<Tensor<B, 1>>| {
        for (id, shape) in ids {
            let id = *id;
            match shape.len() {
                1 => each::<B, 1>(grads, id, scale, sum),
                2 => each::<B, 2>(grads, id, scale, sum),
                3 => each::<B, 3>(grads, id, scale, sum),
                _ => each::<B, 4>(grads, id, scale, sum),
            }
        }
    };
    let mut sum = None;
    visit(grads, None, &mut sum);
    let norm = sum.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt());
    let coef = max / (norm + 1e-6);
    if max > 0.0 && coef < 1.0 {
        visit(grads, Some(coef), &mut None);
    }
    norm
}

/// Refuses examples the model cannot take: a token outside its vocabulary (the tokenizer does not
/// belong to the model), or a sequence longer than its position table (`packed_len`: rows packed
/// up to this length).
pub fn check_examples_fit<B: QuantLinearBackend>(model: &HfModel<B>, examples: &[&[Encoded]], packed_len: Option<usize>) -> Result<()> {
    let vocab = model.vocab_size();
    if let Some(bad) = examples.iter().flat_map(|e| e.iter()).flat_map(|e| e.ids.iter()).find(|&&t| t as usize >= vocab) {
        return Err(PeftError::InvalidConfig(format!("token id {bad} is outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model")));
    }
    let longest = examples.iter().flat_map(|e| e.iter()).map(|e| e.ids.len()).max().unwrap_or(0);
    let longest = packed_len.map_or(longest, |p| p.max(longest));
    // Positions left for tokens after the virtual tokens of a prefix or prompt.
    if let Some(max) = model.max_positions().map(|m| m.saturating_sub(model.prefix_len())).filter(|&max| longest > max) {
        return Err(PeftError::InvalidConfig(format!("sequences of {longest} tokens do not fit the model's {max} positions (after any virtual tokens); set max_len to {max} or less")));
    }
    Ok(())
}

fn append_log(path: &Path, line: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let io = |source| PeftError::Io { path: path.display().to_string(), source };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    writeln!(file, "{line}").map_err(io)
}

/// Keeps the log's lines up to step `step`, as the uninterrupted run had them then.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= step)).map(|l| format!("{l}\n")).collect();
    peft_core::checkpoint::write_bytes_atomic(path, kept.as_bytes())
}

/// The seed of forward pass `batch` of a run seeded `seed`: dropout draws the same numbers
/// whether or not the run was interrupted before it.
fn pass_seed(seed: u64, batch: usize) -> u64 {
    seed ^ (batch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Writes adapter `default` as a peft folder in `dir`: peft's `task_type` for the task, and a
/// classifier's head in `modules_to_save`.
fn save_task_adapter<B: Backend>(model: &mut HfModel<B>, task: Task, method: &HfMethod, dir: &Path) -> Result<()> {
    let heads = if task == Task::SeqCls { vec![model.classifier_name()] } else { Vec::new() };
    save_adapter(model, "default", method, dir, &SaveOptions { task_type: Some(task.peft_task_type()), modules_to_save: &heads })
}

/// Writes the final adapter (a peft folder), or for full fine-tuning a whole model folder.
fn save_output<B: Backend>(model: &mut HfModel<B>, task: Task, method: &Option<HfMethod>, model_dir: &Path, out: &Path) -> Result<PathBuf> {
    match method {
        Some(method) => {
            let dir = out.join("adapter");
            save_task_adapter(model, task, method, &dir)?;
            Ok(dir)
        }
        None => {
            let dir = out.join("model");
            std::fs::create_dir_all(&dir).map_err(|source| PeftError::Io { path: dir.display().to_string(), source })?;
            for file in ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
                if model_dir.join(file).exists() {
                    std::fs::copy(model_dir.join(file), dir.join(file)).map_err(|source| PeftError::Io { path: file.into(), source })?;
                }
            }
            peft_core::checkpoint::write_atomic(&dir.join("model.safetensors"), &model.hf_tensors(&|_| true), None)?;
            Ok(dir)
        }
    }
}

/// Trains as `setup` says, on `device`.
pub fn train<B: AutodiffBackend + QuantLinearBackend>(setup: &TrainSetup<'_>, device: &B::Device, observer: &mut dyn Observer) -> Result<TrainSummary>
where
    B::InnerBackend: QuantLinearBackend,
{
    let config = setup.config;
    config.validate()?;
    if setup.train.is_empty() {
        return Err(PeftError::InvalidConfig("no training example is left".into()));
    }
    let out = setup.out;
    let labels = check_task(config, &[setup.train, setup.eval])?;
    let (mut model, _) = HfModel::<B>::load(setup.model_dir, device)?;
    B::seed(device, config.seed);
    // Counted before quantization: a 4-bit weight is not a Burn parameter, but it is the model's.
    // (A new classification head trains, so it counts among the trainable parameters.)
    let base_params = TrainableReport::new(&model, &TrainMode::Full).total + model.quantized_parameters();
    if let Some(labels) = labels {
        match model.num_labels() {
            None => model.set_classifier(labels, true)?,
            // A model that already classifies keeps its head when the data fits it.
            Some(n) if n == labels || (config.num_labels.is_none() && n > labels) => {}
            Some(n) => return Err(PeftError::InvalidConfig(format!("the model's classification head has {n} labels, the run asks for {labels}"))),
        }
    }
    let (mut mode, method) = attach(&mut model, config)?;
    if labels.is_some() && mode != TrainMode::Full {
        // The new head trains in full, as peft's SEQ_CLS lists it in `modules_to_save`.
        mode = TrainMode::adapters_and(&[model.classifier_name()]);
    }
    if let (Method::Prompt, Some(text)) = (config.method, &config.prompt_init_text) {
        let ids = Encoder::from_model_dir(setup.model_dir, true)?.ids_with_special_tokens(text)?;
        model.init_prompt_from_tokens("default", &ids)?;
    }
    // After the adapter: a prefix's or prompt's virtual tokens take positions too.
    check_examples_fit(&model, &[setup.train, setup.eval], config.packing.then_some(config.max_len))?;
    let mut model = ids_from_paths(set_trainable(model, &mode));
    let counted = TrainableReport::new(&model, &mode);
    let trainable = if mode == TrainMode::Full { counted } else { TrainableReport { trainable: counted.trainable, total: base_params + counted.trainable } };
    let mut ids = TrainableIds(Vec::new());
    model.visit(&mut ids);
    // Nothing is written until the model and its adapter are ready.
    std::fs::create_dir_all(out).map_err(|source| PeftError::Io { path: out.display().to_string(), source })?;
    let mut optim = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(config.weight_decay as f32).init::<B, HfModel<B>>();

    let plan = DataPlan::new(setup.train, config.batch_size, config.packing.then_some(config.max_len), config.group_by_length, config.seed);
    let total = config.max_steps.unwrap_or_else(|| plan.batches(config.epochs).div_ceil(config.grad_accum));
    let log = out.join("log.jsonl");
    let (mut start, mut cursor, mut resumed_from) = (0, Cursor::default(), None);
    if setup.resume && let Some((dir, state)) = latest_checkpoint(out)? {
        if state.fingerprint != config.fingerprint() {
            return Err(PeftError::InvalidConfig(format!("the checkpoint in {} was made with other settings; resume with the run's own arguments", dir.display())));
        }
        model = load_trainable(model, &dir)?;
        optim = optim.load_record(load_optimizer::<B, _>(&dir, &ids.0, state.step, device)?);
        (start, cursor, resumed_from) = (state.step, state.cursor, Some(state.step));
        truncate_log(&log, state.step)?;
    } else if log.exists() {
        std::fs::remove_file(&log).map_err(|source| PeftError::Io { path: log.display().to_string(), source })?;
    }

    let mut stream = BatchStream::new(plan, cursor);
    observer.started(start, total);
    let (mut last_loss, mut steps) = (f64::NAN, start);
    for step in start..total {
        let began = Instant::now();
        let batches: Vec<TaskBatch<B>> = (0..config.grad_accum)
            .map(|_| {
                let rows: Vec<Vec<&Encoded>> = stream.next_batch().iter().map(|r| r.iter().map(|&i| &setup.train[i]).collect()).collect();
                TaskBatch::new(config.task, &rows, setup.pad_id, device)
            })
            .collect();
        let counted: usize = batches.iter().map(TaskBatch::counted).sum::<usize>().max(1);
        let tokens: usize = batches.iter().map(TaskBatch::tokens).sum();
        let mut accumulator = GradientsAccumulator::<HfModel<B>>::new();
        let mut loss_sum = 0.0;
        for (i, batch) in batches.into_iter().enumerate() {
            B::seed(device, pass_seed(config.seed, step * config.grad_accum + i));
            let loss = batch.loss(&model)?;
            loss_sum += loss.value / counted as f64;
            accumulator.accumulate(&model, GradientsParams::from_grads(loss.sum.div_scalar(counted as f64).backward(), &model));
        }
        if !loss_sum.is_finite() {
            return Err(PeftError::NonFiniteResult(format!("the training loss of step {} (lower the learning rate; checkpoints written so far are kept)", step + 1)));
        }
        let mut grads = accumulator.grads();
        let grad_norm = clip_global_norm::<B::InnerBackend>(&mut grads, &ids.0, config.max_grad_norm);
        let lr = learning_rate(config, step, total);
        model = optim.step(lr, model, grads);
        steps = step + 1;
        last_loss = loss_sum;
        let entry = StepLog { step: steps, loss: loss_sum, lr, grad_norm, tokens, tokens_per_s: tokens as f64 / began.elapsed().as_secs_f64() };
        append_log(&log, &serde_json::json!(entry))?;
        observer.step(&entry);
        if !setup.eval.is_empty() && config.eval_every > 0 && steps % config.eval_every == 0 && steps < total {
            let result = evaluate_task(config.task, &model.valid(), setup.eval, config.batch_size, setup.pad_id, device)?;
            append_log(&log, &serde_json::json!({ "step": steps, "eval_loss": result.loss, "eval_perplexity": result.perplexity, "eval_accuracy": result.accuracy }))?;
            observer.evaluated(steps, &result);
        }
        if (config.save_every > 0 && steps % config.save_every == 0) || steps == total {
            // A diverged update is not saved over the last good checkpoint.
            if !all_finite(&model) {
                return Err(PeftError::NonFiniteResult(format!("the parameters after step {steps} (lower the learning rate; checkpoints written so far are kept)")));
            }
            let state = TrainState { step: steps, total_steps: total, cursor: stream.cursor, fingerprint: config.fingerprint() };
            save_checkpoint(out, &state, |dir| {
                save_trainable(&model, dir)?;
                save_optimizer::<B, _>(optim.to_record(), dir)?;
                if let Some(method) = &method {
                    save_task_adapter(&mut model.clone(), config.task, method, &dir.join("adapter"))?;
                }
                Ok(())
            })?;
        }
        if observer.stop_after(steps) {
            break;
        }
    }
    let eval = if !setup.eval.is_empty() && steps == total {
        let result = evaluate_task(config.task, &model.valid(), setup.eval, config.batch_size, setup.pad_id, device)?;
        append_log(&log, &serde_json::json!({ "step": steps, "eval_loss": result.loss, "eval_perplexity": result.perplexity, "eval_accuracy": result.accuracy }))?;
        observer.evaluated(steps, &result);
        Some(result)
    } else {
        None
    };
    let output = save_output(&mut model, config.task, &method, setup.model_dir, out)?;
    Ok(TrainSummary { steps, total_steps: total, resumed_from, trainable, last_loss, eval, output, log })
}
