//! `peft`: burn-peft's command line.
//!
//! - `peft quantize --in FILE --out FILE --quant-type nf4|fp4 [--blocksize N] [--double-quant] [--include REGEX]`
//! - `peft dequantize --in FILE --out FILE`
//!
//! Errors print one line and exit non-zero; output files appear whole or not at all.

mod quantize;

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
    },
    /// Turns every 4-bit weight back into a dense f32 tensor with its name and shape.
    Dequantize {
        /// Input safetensors file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quantize { input, out, quant_type, blocksize, double_quant, include } => {
            quantize::quantize(&input, &out, &quant_type, blocksize, double_quant, include.as_deref())
        }
        Command::Dequantize { input, out } => quantize::dequantize(&input, &out),
    };
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
