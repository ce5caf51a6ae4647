//! `peft`: burn-peft's command line.
//!
//! - `peft quantize --in FILE --out FILE --quant-type nf4|fp4 [--blocksize N] [--double-quant] [--include REGEX]`
//! - `peft dequantize --in FILE --out FILE`
//! - `peft inspect ADAPTER_DIR [--json]`
//! - `peft merge --base MODEL_DIR --adapter ADAPTER_DIR --out FILE.safetensors`
//! - `peft logits --model MODEL_DIR [--adapter ADAPTER_DIR] --tokens 1,2,3 --out FILE.safetensors`
//! - `peft train --model DIR --data FILE --out DIR [--method lora|ia3|prefix|full] [--resume] [--config train.toml] ...`
//! - `peft eval --model DIR [--adapter DIR] --data FILE [--max-len N] [--json]`
//! - `peft generate --model DIR [--adapter DIR] --prompt TEXT | --messages FILE [--max-new-tokens N] [--temperature T --top-p P --seed S] [--json]`
//!
//! Errors print one line and exit non-zero; output files appear whole or not at all.

mod adapter;
mod logits;
mod output;
mod quantize;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "peft", version, about = "burn-peft: parameter-efficient fine-tuning tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantizes 2-D floating tensors of a safetensors file to bitsandbytes' 4-bit layout.
    Quantize {
        /// Input safetensors file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// `nf4` or `fp4`.
        #[arg(long)]
        quant_type: String,
        /// Values per block: a power of two from 32 to 4096.
        #[arg(long, default_value_t = 64)]
        blocksize: usize,
        /// Also quantize the per-block scales (8 bits, blocks of 256).
        #[arg(long)]
        double_quant: bool,
        /// Only tensors whose name this regular expression matches (anywhere in the name).
        #[arg(long)]
        include: Option<String>,
        /// Write even when --out is the input file.
        #[arg(long)]
        force: bool,
    },
    /// Prints an adapter's method, ranks, targeted modules, parameter count and tensors (HF peft
    /// folders, and AdapterHub bottleneck folders).
    Inspect {
        /// Folder with adapter_config.json and adapter_model.safetensors (HF peft), or
        /// adapter.safetensors / pytorch_adapter.bin (AdapterHub).
        adapter_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Merges an HF peft adapter (LoRA, rsLoRA, DoRA, IA3) into a checkpoint, like merge_and_unload.
    Merge {
        /// Folder with config.json and model.safetensors.
        #[arg(long)]
        base: PathBuf,
        /// Folder with adapter_config.json and adapter_model.safetensors.
        #[arg(long)]
        adapter: PathBuf,
        /// Output safetensors file (same tensor names, shapes and dtypes as the base).
        #[arg(long)]
        out: PathBuf,
        /// Write even when --out is one of the input files.
        #[arg(long)]
        force: bool,
    },
    /// Runs the reference model named by config.json's model_type (llama, gpt2, bert) on one
    /// sequence, optionally with an HF peft adapter; writes logits [1, seq, vocab] (causal LMs) or
    /// the last hidden state [1, seq, hidden] (BERT) as the f32 tensor `output`.
    Logits {
        /// Folder with config.json and model.safetensors.
        #[arg(long)]
        model: PathBuf,
        /// Adapter folder: HF peft (adapter_config.json, adapter_model.safetensors) or AdapterHub
        /// (adapter_config.json, adapter.safetensors or pytorch_adapter.bin).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Token ids, comma-separated.
        #[arg(long)]
        tokens: String,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Write even when --out is one of the input files.
        #[arg(long)]
        force: bool,
    },
    /// Fine-tunes a Llama or GPT-2 checkpoint on chat, instruction or text data (resumable).
    Train(Box<train::TrainArgs>),
    /// Token-weighted mean loss, perplexity and accuracy of a model (and adapter) on a data file.
    Eval {
        /// Folder with config.json, model.safetensors and tokenizer.json.
        #[arg(long)]
        model: PathBuf,
        /// An HF peft adapter folder.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Data (JSONL), scored as training scores it.
        #[arg(long)]
        data: PathBuf,
        /// Longest example in tokens (longer ones are cut).
        #[arg(long, default_value_t = 1024)]
        max_len: usize,
        /// Print {"loss", "perplexity", "tokens", "accuracy", "examples"}.
        #[arg(long)]
        json: bool,
    },
    /// Continues a conversation with a Llama or GPT-2 checkpoint (and adapter).
    Generate(Box<train::GenerateArgs>),
    /// Turns every 4-bit weight back into a dense f32 tensor with its name and shape.
    Dequantize {
        /// Input safetensors file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Write even when --out is one of the input files.
        #[arg(long)]
        force: bool,
    },
}

/// mimalloc, keeping freed memory for reuse: training steps reuse their large buffers instead of
/// faulting fresh pages in (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;

fn main() -> ExitCode {
    peft_train::allocator::keep_freed_memory();
    let cli = Cli::parse();
    // Every expected failure is a typed error; should a bug still panic, say so in one line
    // (outputs are written by rename at the very end, so nothing partial is left).
    std::panic::set_hook(Box::new(|_| {}));
    let run = std::panic::catch_unwind(move || run(cli.command));
    let result = run.unwrap_or_else(|panic| {
        let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        Err(quantize::CliError::Nothing(format!("internal error (please report): {what}")))
    });
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, quantize::CliError> {
    match command {
        Command::Quantize { input, out, quant_type, blocksize, double_quant, include, force } => {
            output::refuse_overwriting_inputs(&out, &[&input], force)?;
            quantize::quantize(&input, &out, &quant_type, blocksize, double_quant, include.as_deref())
        }
        Command::Dequantize { input, out, force } => {
            output::refuse_overwriting_inputs(&out, &[&input], force)?;
            quantize::dequantize(&input, &out)
        }
        Command::Inspect { adapter_dir, json } => adapter::inspect(&adapter_dir, json),
        Command::Merge { base, adapter, out, force } => {
            output::refuse_overwriting_inputs(&out, &[&base, &adapter], force)?;
            adapter::merge(&base, &adapter, &out)
        }
        Command::Logits { model, adapter, tokens, out, force } => {
            let inputs: Vec<&std::path::Path> = std::iter::once(model.as_path()).chain(adapter.as_deref()).collect();
            output::refuse_overwriting_inputs(&out, &inputs, force)?;
            logits::logits(&model, adapter.as_deref(), &tokens, &out)
        }
        Command::Train(args) => train::run_train(&args),
        Command::Eval { model, adapter, data, max_len, json } => train::run_eval(&model, adapter.as_deref(), &data, max_len, json),
        Command::Generate(args) => train::run_generate(&args),
    }
}
