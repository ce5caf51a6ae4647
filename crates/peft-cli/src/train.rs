//! `peft train`, `peft eval` and `peft generate`: the training workflow of `peft-train` on the
//! reference decoders (Llama, GPT-2), on the CPU backend.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use peft_core::PeftError;
use peft_models::{GenerationConfig, HfModel, generate};
use peft_train::{AdapterPreset, Dataset, EncoderType, EvalResult, Message, Method, Observer, Prepared, Schedule, StepLog, Task, TrainConfig, TrainSetup, check_task, evaluate, evaluate_classifier, plot_losses, train};

use crate::quantize::CliError;

type B = NdArray;

/// `peft train`'s arguments; every setting may also come from `--config` (flags win).
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Folder with config.json, model.safetensors, tokenizer.json (and the chat template).
    #[arg(long)]
    model: PathBuf,
    /// Training data (JSONL: messages, conversations, instruction/input/output, prompt/completion,
    /// text; for --task seq-cls, JSONL text/label or CSV text,label).
    #[arg(long)]
    data: PathBuf,
    /// Evaluation data (same shapes).
    #[arg(long, conflicts_with = "eval_split")]
    eval_data: Option<PathBuf>,
    /// Where the adapter, checkpoints/, log.jsonl and loss.svg go.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out (give the run's own arguments).
    #[arg(long)]
    resume: bool,
    /// A TOML file with any of the settings below (keys as the long flags, with underscores).
    #[arg(long)]
    config: Option<PathBuf>,
    /// causal-lm (the next token; default) or seq-cls (a class per text, through a new head).
    #[arg(long)]
    task: Option<String>,
    /// seq-cls: classes of the head (default: one more than the largest label).
    #[arg(long)]
    num_labels: Option<usize>,
    /// lora, qlora, ia3, adapter, prefix, prompt, ptuning or full.
    #[arg(long)]
    method: Option<String>,
    /// Bottleneck adapters: AdapterHub's preset, pfeiffer (default), houlsby or parallel.
    #[arg(long)]
    adapter_config: Option<String>,
    /// Bottleneck adapters: width = hidden size / this (default: the preset's).
    #[arg(long)]
    reduction_factor: Option<usize>,
    /// Virtual tokens of prefix and prompt tuning.
    #[arg(long)]
    num_virtual_tokens: Option<usize>,
    /// Prompt tuning: start the virtual tokens from the embeddings of this text.
    #[arg(long)]
    prompt_init_text: Option<String>,
    /// P-Tuning, and prefix tuning with --prefix-projection: hidden width of the MLP (default:
    /// the width of what it makes).
    #[arg(long)]
    encoder_hidden_size: Option<usize>,
    /// P-Tuning's encoder: mlp (default) or lstm (peft's encoder_reparameterization_type).
    #[arg(long)]
    encoder_reparameterization_type: Option<String>,
    /// P-Tuning's LSTM layers (default 2).
    #[arg(long)]
    encoder_num_layers: Option<usize>,
    /// Prefix tuning through peft's prefix_projection MLP (P-Tuning v2); saved as its output.
    #[arg(long)]
    prefix_projection: bool,
    /// Targeted modules: names separated by commas, a regular expression, or all-linear.
    #[arg(long)]
    target: Option<String>,
    /// LoRA rank.
    #[arg(long)]
    r: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    alpha: Option<f64>,
    /// LoRA dropout.
    #[arg(long)]
    dropout: Option<f64>,
    /// Passes over the data.
    #[arg(long, conflicts_with = "max_steps")]
    epochs: Option<usize>,
    /// Optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Rows per forward pass.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Forward passes per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Longest example in tokens (longer ones are cut, or dropped with --drop-long).
    #[arg(long)]
    max_len: Option<usize>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// constant, linear or cosine.
    #[arg(long)]
    schedule: Option<String>,
    /// Seed of the adapter's initialization, the data order and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Save a checkpoint every N optimizer steps.
    #[arg(long)]
    save_every: Option<usize>,
    /// Evaluate every N optimizer steps.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Share of the data held out for evaluation.
    #[arg(long)]
    eval_split: Option<f64>,
    /// Pack short examples into rows of --max-len tokens.
    #[arg(long)]
    packing: bool,
    /// Let the loss cover prompts too.
    #[arg(long)]
    train_on_prompt: bool,
    /// Drop examples longer than --max-len instead of cutting them.
    #[arg(long)]
    drop_long: bool,
    /// Skip malformed data lines (counted) instead of refusing the file.
    #[arg(long)]
    skip_bad_lines: bool,
}

impl TrainArgs {
    /// The settings: the file's, then the flags over them.
    fn config(&self) -> Result<TrainConfig, CliError> {
        let mut c = match &self.config {
            Some(path) => {
                let text = peft_core::checkpoint::read_text(path)?;
                TrainConfig::from_toml(&text, &path.display().to_string())?
            }
            None => TrainConfig::default(),
        };
        if let Some(t) = &self.task {
            c.task = Task::parse(t)?;
        }
        if self.num_labels.is_some() {
            c.num_labels = self.num_labels;
        }
        if let Some(m) = &self.method {
            c.method = Method::parse(m)?;
        }
        if let Some(a) = &self.adapter_config {
            c.adapter_config = AdapterPreset::parse(a)?;
        }
        if self.reduction_factor.is_some() {
            c.reduction_factor = self.reduction_factor;
        }
        if let Some(e) = &self.encoder_reparameterization_type {
            c.encoder_reparameterization_type = EncoderType::parse(e)?;
        }
        if let Some(s) = &self.schedule {
            c.schedule = Schedule::parse(s)?;
        }
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { c.$field = v; } )* };
        }
        take!(target, r, alpha, dropout, num_virtual_tokens, encoder_num_layers, epochs, lr, batch_size, grad_accum, max_len, warmup, seed, save_every, eval_every, eval_split);
        if self.prompt_init_text.is_some() {
            c.prompt_init_text = self.prompt_init_text.clone();
        }
        if self.encoder_hidden_size.is_some() {
            c.encoder_hidden_size = self.encoder_hidden_size;
        }
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        c.packing |= self.packing;
        c.prefix_projection |= self.prefix_projection;
        c.train_on_prompt |= self.train_on_prompt;
        c.drop_long |= self.drop_long;
        c.skip_bad_lines |= self.skip_bad_lines;
        c.validate()?;
        Ok(c)
    }
}

/// A progress bar (hidden when stderr is not a terminal) with loss, learning rate and tokens/s.
struct Progress(ProgressBar);

impl Observer for Progress {
    fn started(&mut self, start: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(start as u64);
        self.0.reset_eta();
    }
    fn step(&mut self, log: &StepLog) {
        self.0.set_position(log.step as u64);
        self.0.set_message(format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", log.loss, log.lr, log.tokens_per_s));
    }
    fn evaluated(&mut self, step: usize, result: &EvalResult) {
        self.0.println(format!("step {step}: eval loss {:.4}, perplexity {:.2}, accuracy {:.1}%", result.loss, result.perplexity, 100.0 * result.accuracy));
    }
}

fn encoder(model: &Path, config: &TrainConfig) -> Result<peft_train::Encoder, CliError> {
    let mut encoder = peft_train::Encoder::from_model_dir(model, config.chatml_fallback)?;
    encoder.train_on_prompt = config.train_on_prompt;
    Ok(encoder)
}

pub fn run_train(args: &TrainArgs) -> Result<String, CliError> {
    let config = args.config()?;
    let encoder = encoder(&args.model, &config)?;
    let data = Dataset::read(&args.data, config.skip_bad_lines)?;
    let mut report = Vec::new();
    if !data.skipped.is_empty() {
        report.push(format!("skipped {} bad lines of {} (first: line {}: {})", data.skipped.len(), args.data.display(), data.skipped[0].0, data.skipped[0].1));
    }
    let mut prepared = Prepared::new(&data, &encoder, config.max_len, config.drop_long)?;
    let eval = match &args.eval_data {
        Some(path) => Prepared::new(&Dataset::read(path, config.skip_bad_lines)?, &encoder, config.max_len, config.drop_long)?.examples,
        None => prepared.split_off(config.eval_split, config.seed),
    };
    if prepared.truncated + prepared.dropped > 0 {
        report.push(format!("{} examples cut to {} tokens, {} left out", prepared.truncated, config.max_len, prepared.dropped));
    }
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]").expect("a valid template"));
    let setup = TrainSetup { model_dir: &args.model, train: &prepared.examples, eval: &eval, pad_id: encoder.pad_id(), config: &config, out: &args.out, resume: args.resume };
    let summary = train::<Autodiff<B>>(&setup, &Default::default(), &mut Progress(bar.clone()))?;
    bar.finish_and_clear();
    let plot = args.out.join("loss.svg");
    plot_losses(&summary.log, &plot)?;
    report.push(format!("{}: {} training examples, {} held out", summary.trainable, prepared.examples.len(), eval.len()));
    if let Some(step) = summary.resumed_from {
        report.push(format!("resumed from the checkpoint of step {step}"));
    }
    report.push(format!("trained {} steps; last loss {:.4}", summary.steps, summary.last_loss));
    if let Some(e) = summary.eval {
        report.push(format!("eval: loss {:.4}, perplexity {:.2}, {} tokens, accuracy {:.1}%", e.loss, e.perplexity, e.tokens, 100.0 * e.accuracy));
    }
    report.push(format!("wrote {}, {}/checkpoints, {}, {}", summary.output.display(), args.out.display(), summary.log.display(), plot.display()));
    Ok(report.join("\n"))
}

/// The model in `dir`, with the adapter in `adapter` when given.
fn model(dir: &Path, adapter: Option<&Path>) -> Result<HfModel<B>, CliError> {
    let (mut model, _) = HfModel::<B>::load(dir, &Default::default())?;
    if let Some(adapter) = adapter {
        model.load_adapter_folder(adapter, "default")?;
    }
    Ok(model)
}

pub fn run_eval(model_dir: &Path, adapter: Option<&Path>, data: &Path, max_len: usize, json: bool) -> Result<String, CliError> {
    let config = TrainConfig { max_len, ..Default::default() };
    let encoder = encoder(model_dir, &config)?;
    let prepared = Prepared::new(&Dataset::read(data, false)?, &encoder, max_len, false)?;
    if prepared.examples.is_empty() {
        return Err(CliError::Nothing(format!("{} has no example with a token to score", data.display())));
    }
    let model = model(model_dir, adapter)?;
    peft_train::check_examples_fit(&model, &[&prepared.examples], None)?;
    // A model with a classification head (its own, or its adapter's) classifies.
    let task = if model.num_labels().is_some() { Task::SeqCls } else { Task::CausalLm };
    check_task(&TrainConfig { task, num_labels: model.num_labels(), ..Default::default() }, &[&prepared.examples])?;
    let r = match task {
        Task::CausalLm => evaluate(model.causal_lm()?, &prepared.examples, 8, encoder.pad_id(), &Default::default()),
        Task::SeqCls => evaluate_classifier(&model, &prepared.examples, 8, encoder.pad_id(), &Default::default())?,
    };
    Ok(if json {
        serde_json::json!({ "loss": r.loss, "perplexity": r.perplexity, "tokens": r.tokens, "accuracy": r.accuracy, "examples": prepared.examples.len() }).to_string()
    } else if task == Task::SeqCls {
        format!("loss {:.6} (mean cross-entropy per text), accuracy {:.1}% over {} texts", r.loss, 100.0 * r.accuracy, r.tokens)
    } else {
        format!("loss {:.6}, perplexity {:.4}, {} tokens, accuracy {:.1}% over {} examples", r.loss, r.perplexity, r.tokens, 100.0 * r.accuracy, prepared.examples.len())
    })
}

/// `peft generate`'s settings.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Folder with config.json, model.safetensors, tokenizer.json (and the chat template).
    #[arg(long)]
    model: PathBuf,
    /// An HF peft adapter folder.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The user's message.
    #[arg(long, conflicts_with = "messages", required_unless_present = "messages")]
    prompt: Option<String>,
    /// A JSON file with the conversation so far: [{"role": ..., "content": ...}, ...].
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Nucleus sampling's probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print {"text": ..., "tokens": [...]}.
    #[arg(long)]
    json: bool,
}

pub fn run_generate(args: &GenerateArgs) -> Result<String, CliError> {
    let encoder = encoder(&args.model, &TrainConfig::default())?;
    let messages = match (&args.prompt, &args.messages) {
        (Some(prompt), _) => vec![Message::new("user", prompt)],
        (None, Some(path)) => peft_core::checkpoint::read_json::<Vec<Message>>(path)?,
        (None, None) => return Err(CliError::Nothing("give --prompt or --messages".into())),
    };
    let prompt = encoder.prompt(&messages)?;
    let model = model(&args.model, args.adapter.as_deref())?;
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= model.vocab_size()) {
        return Err(CliError::Nothing(format!("token id {bad} is outside the model's vocabulary: the tokenizer does not belong to this model")));
    }
    let stop = encoder.eos.iter().filter_map(|e| encoder.token_id(e)).collect();
    let config = GenerationConfig { max_new_tokens: args.max_new_tokens, temperature: args.temperature, top_p: args.top_p, seed: args.seed, stop, use_cache: true };
    let tokens = generate(model.causal_lm()?, &prompt, &config, &Default::default())?;
    let text = encoder.tokenizer.decode(&tokens, true).map_err(|e| PeftError::Tokenizer(e.to_string()))?;
    Ok(if args.json { serde_json::json!({ "text": text, "tokens": tokens }).to_string() } else { text })
}
