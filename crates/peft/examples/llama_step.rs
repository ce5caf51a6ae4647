//! One training step of a transformers Llama checkpoint, timed: the Rust side of the speed
//! comparison with torch + peft (`benches/llama_step_torch.py` runs the same protocol).
//!
//! ```text
//! python3 crates/peft/benches/llama_step_torch.py make --out /tmp/llama-step [--vocab 32000]
//! cargo run --release -p peft --example llama_step -- \
//!     --model /tmp/llama-step --batch-file /tmp/llama-step/batch.txt --mode lora_qv
//! ```
//!
//! `--model` is a folder with `config.json` and `model.safetensors`; `--batch-file` holds the
//! token ids of one batch (rows on lines, ids separated by whitespace). Modes: `full` (every
//! parameter), `lora_qv` (LoRA r 8, alpha 16 on q_proj and v_proj), `lora_all` (LoRA r 16,
//! alpha 32 on every linear layer but the output head), `qlora_qv` and `qlora_all` (the same
//! adapters on a base whose linear layers but the head are NF4, blocks of 64, double
//! quantization: QLoRA's choice). One step = forward + next-token
//! cross-entropy over every position + backward + AdamW (lr 1e-4, torch's defaults otherwise).
//! Prints one line: `median_ms=` of 20 steps after 5 warm-up steps, `loss0=` (the first step's
//! loss) and `cores=` (the process's CPU time over the wall time of the timed steps), then the
//! medians of the step's phases: `forward_ms=` (forward pass and loss; the fused loss computes
//! the head's gradients here), `backward_ms=` (backward pass), `optimizer_ms=` (AdamW's update).
//! `--steps N --warmup N` change the counts; `--loss logits` computes the loss from the whole
//! logits instead of peft-train's fused, chunked head and loss (`lm_loss`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use peft::models::HfModel;
use peft::prelude::*;
use peft_train::{Encoded, LmBatch, LmLoss, lm_loss};

/// burn-ndarray, the default; burn-flex with `--features flex`; libtorch with `--features tch`.
#[cfg(not(any(feature = "flex", feature = "tch")))]
type Cpu = burn::backend::NdArray;
#[cfg(all(feature = "flex", not(feature = "tch")))]
type Cpu = burn::backend::Flex;
#[cfg(feature = "tch")]
type Cpu = burn::backend::LibTorch<f32>;
type Train = Autodiff<Cpu>;

/// mimalloc, keeping freed memory for reuse (peft-train's `allocator`, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;

/// What trains: every parameter, or LoRA on q_proj and v_proj or on every linear layer but the
/// head, over the dense base or one quantized to NF4.
#[derive(Clone, Copy)]
enum Mode {
    Full,
    Lora { all_linear: bool, nf4_base: bool },
}

impl Mode {
    fn parse(name: &str) -> Option<Self> {
        let lora = |all_linear, nf4_base| Self::Lora { all_linear, nf4_base };
        match name {
            "full" => Some(Self::Full),
            "lora_qv" => Some(lora(false, false)),
            "lora_all" => Some(lora(true, false)),
            "qlora_qv" => Some(lora(false, true)),
            "qlora_all" => Some(lora(true, true)),
            _ => None,
        }
    }
}

struct Args {
    model: PathBuf,
    batch_file: PathBuf,
    mode_name: String,
    mode: Mode,
    steps: usize,
    warmup: usize,
    fused: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut batch_file, mut mode, mut steps, mut warmup, mut fused) = (None, None, None, 20, 5, true);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--batch-file" => batch_file = Some(PathBuf::from(value()?)),
            "--mode" => mode = Some(value()?),
            "--steps" => steps = value()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--warmup" => warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--loss" => {
                fused = match value()?.as_str() {
                    "fused" => true,
                    "logits" => false,
                    other => return Err(format!("--loss {other}: expected fused or logits")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let usage = "usage: llama_step --model DIR --batch-file FILE --mode full|lora_qv|lora_all|qlora_qv|qlora_all";
    let mode_name = mode.ok_or(usage)?;
    let mode = Mode::parse(&mode_name).ok_or_else(|| format!("--mode {mode_name}: expected full, lora_qv, lora_all, qlora_qv or qlora_all"))?;
    if steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    Ok(Args { model: model.ok_or(usage)?, batch_file: batch_file.ok_or(usage)?, mode_name, mode, steps, warmup, fused })
}

/// The rows of token ids in `path`, all of one length.
fn read_batch(path: &PathBuf) -> Result<Vec<Encoded>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows: Vec<Vec<u32>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|t| t.parse::<u32>().map_err(|e| format!("{}: token {t:?}: {e}", path.display()))).collect())
        .collect::<Result<_, _>>()?;
    let seq = rows.first().map_or(0, Vec::len);
    if seq < 2 || rows.iter().any(|r| r.len() != seq) {
        return Err(format!("{}: expected rows of at least 2 token ids, all of one length", path.display()));
    }
    // Every token but the first is predicted from those before it.
    Ok(rows.into_iter().map(|ids| Encoded { targets: vec![true; ids.len()], ids, label: None }).collect())
}

/// The CPU time (user + system) this process has used, in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn run(args: &Args) -> Result<String, String> {
    let device = Default::default();
    let (mut model, _) = HfModel::<Train>::load(&args.model, &device).map_err(|e| e.to_string())?;
    if model.causal_lm().is_err() {
        return Err(format!("{}: not a causal language model", args.model.display()));
    }
    let rows = read_batch(&args.batch_file)?;
    let (batch, seq) = (rows.len(), rows[0].ids.len());
    if let Some(bad) = rows.iter().flat_map(|r| &r.ids).find(|&&t| t as usize >= model.vocab_size()) {
        return Err(format!("token {bad} is outside the vocabulary ({})", model.vocab_size()));
    }
    let mode = match args.mode {
        Mode::Full => TrainMode::Full,
        Mode::Lora { all_linear, nf4_base } => {
            if nf4_base {
                model.quantize(QuantConfig::qlora()).map_err(|e| e.to_string())?;
            }
            let config = if all_linear {
                LoraConfig::new(Targeting::new(TargetModules::AllLinear)).with_r(16).with_alpha(32.0)
            } else {
                LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(8).with_alpha(16.0)
            };
            model.add_adapter("bench", &config).map_err(|e| e.to_string())?;
            TrainMode::adapters()
        }
    };
    let mut model = Some(set_trainable(model, &mode));
    peft_train::allocator::keep_freed_memory();
    let mut optim = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.01).init::<Train, HfModel<Train>>();

    // transformers' causal-LM loss: the logits of positions 0..seq-1 predict tokens 1..seq.
    let lm = LmBatch::<Train>::new(&rows.iter().map(|r| vec![r]).collect::<Vec<_>>(), 0, &device);
    let predictions = lm.target_count as f64;

    // One step, and the milliseconds of its phases: forward with the loss, backward, optimizer.
    let mut step = || -> Result<(f64, [f64; 3]), String> {
        let m = model.take().expect("put back after each step");
        let t = Instant::now();
        let causal_lm = m.causal_lm().map_err(|e| e.to_string())?;
        let loss = if args.fused { lm_loss(causal_lm, &lm) } else { LmLoss::from_logits(causal_lm.logits(&lm.inputs, None), &lm) };
        let forward = t.elapsed();
        let grads = GradientsParams::from_grads(loss.sum.div_scalar(predictions).backward(), &m);
        let backward = t.elapsed();
        model = Some(optim.step(1e-4, m, grads));
        let phases = [forward, backward - forward, t.elapsed() - backward].map(|d| d.as_secs_f64() * 1e3);
        Ok((loss.value / predictions, phases))
    };
    let (loss0, _) = step()?;
    for _ in 1..args.warmup {
        step()?;
    }
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let (mut times, mut phases) = (Vec::with_capacity(args.steps), [(); 3].map(|_| Vec::with_capacity(args.steps)));
    for _ in 0..args.steps {
        let t = Instant::now();
        let (_, step_phases) = step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        for (all, one) in phases.iter_mut().zip(step_phases) {
            all.push(one);
        }
    }
    let cores = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    let [forward, backward, optimizer] = phases;
    let [median, forward, backward, optimizer] = [times, forward, backward, optimizer].map(median);
    Ok(format!(
        "mode={} batch={batch} seq={seq} median_ms={median:.1} loss0={loss0:.6} cores={cores:.2} forward_ms={forward:.1} backward_ms={backward:.1} optimizer_ms={optimizer:.1}",
        args.mode_name
    ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("llama_step: {e}");
            ExitCode::FAILURE
        }
    }
}
