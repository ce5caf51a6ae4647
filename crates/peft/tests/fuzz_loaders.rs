//! Every loader of an untrusted file, fuzzed: mutations of the committed fixtures (byte sets,
//! bit flips, truncations, insertions, removals, and numbers in the JSON parts replaced by
//! extreme ones) must give `Ok` or a typed error: never a panic. proptest shrinks a failure to
//! the smallest mutation list that still fails.
//!
//! Memory is measured too: an allocator that counts bytes checks that no case's peak exceeds
//! `MEMORY_FACTOR` times the size of its input files plus `MEMORY_SLACK`.
//!
//! CI runs `FUZZ_CASES` cases per loader; `PEFT_FUZZ_CASES=1000000 cargo test --release -p peft
//! --test fuzz_loaders -- --test-threads 1` is the long run of docs/reliability.md (`PEFT_FUZZ_ONLY=llama_prompt`
//! keeps one case of a loader with several).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::NdArray;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const FUZZ_CASES: u32 = 300;
/// A case may allocate at most this many times the bytes of its input files ...
const MEMORY_FACTOR: usize = 8;
/// ... plus this much (Burn's and the test's own bookkeeping).
const MEMORY_SLACK: usize = 4 << 20;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One fuzz target at a time, so that the peak is the case's own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Numbers that break naive size arithmetic, and values of the wrong kind.
const EXTREMES: &[&str] = &[
    "0", "-1", "1", "3", "255", "65536", "4294967296", "1000000000", "9007199254740993", "18446744073709551615", "99999999999999999999999",
    "1e308", "-1e308", "1e-320", "NaN", "null", "true", "\"x\"", "[]", "{}", "[1,2]", "0.5",
];

#[derive(Clone, Debug)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Flip { at: usize, bit: u8 },
    Truncate { keep: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Number { which: usize, value: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..48).prop_map(|(at, len)| Mutation::Remove { at, len }),
        4 => (any::<usize>(), 0..EXTREMES.len()).prop_map(|(which, value)| Mutation::Number { which, value }),
    ]
}

/// Mutations for each of `files` files (possibly none for some).
fn mutations(files: usize) -> impl Strategy<Value = Vec<Vec<Mutation>>> {
    prop::collection::vec(prop::collection::vec(mutation(), 0..5), files)
}

/// The JSON part of a file: all of a JSON file, the header of a safetensors file.
fn json_region(bytes: &[u8], safetensors: bool) -> usize {
    if !safetensors || bytes.len() < 8 {
        return bytes.len();
    }
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    bytes.len().min(8usize.saturating_add(header))
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation], safetensors: bool) -> Vec<u8> {
    for m in mutations {
        let region = json_region(&bytes, safetensors).max(1).min(bytes.len().max(1));
        match m {
            Mutation::Set { at, byte } if !bytes.is_empty() => bytes[at % region] = *byte,
            Mutation::Flip { at, bit } if !bytes.is_empty() => bytes[at % region] ^= 1 << bit,
            Mutation::Truncate { keep } => bytes.truncate(keep % (bytes.len() + 1)),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (region.min(bytes.len()) + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove { at, len } if !bytes.is_empty() => {
                let at = at % region.min(bytes.len());
                bytes.drain(at..(at + len).min(bytes.len()));
            }
            Mutation::Number { which, value } => {
                let end = region.min(bytes.len());
                let numbers: Vec<(usize, usize)> = number_spans(&bytes[..end]);
                if let Some(&(start, stop)) = numbers.get(which % numbers.len().max(1)) {
                    bytes.splice(start..stop, EXTREMES[*value].bytes());
                }
            }
            _ => {}
        }
    }
    bytes
}

/// Byte ranges of the runs of ASCII digits (with a leading minus) in `text`.
fn number_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = if i > 0 && text[i - 1] == b'-' { i - 1 } else { i };
            while i < text.len() && (text[i].is_ascii_digit() || text[i] == b'.' || text[i] == b'e') {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

fn cases() -> u32 {
    std::env::var("PEFT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(FUZZ_CASES)
}

/// Whether to fuzz `case` of a loader with several: all, or those named in `PEFT_FUZZ_ONLY`
/// (comma-separated), for a long run of one.
fn selected(case: &str) -> bool {
    std::env::var("PEFT_FUZZ_ONLY").map_or(true, |only| only.split(',').any(|o| o == case))
}

/// Runs `check` on `cases()` mutation lists of `files` files; a panic fails (and is shrunk), and
/// so does a case whose allocations peak above the memory bound for `input_bytes`.
fn fuzz(name: &str, files: usize, input_bytes: usize, check: impl Fn(&[Vec<Mutation>]) -> Result<(), TestCaseError>) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Panics caught inside a loader (a dependency's, turned into an error) print nothing and
    // capture no backtrace, whose symbol tables would count against the case's memory; proptest
    // reports the panics that escape.
    std::panic::set_hook(Box::new(|_| {}));
    let config = Config { cases: cases(), failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let (count, worst) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let bound = MEMORY_FACTOR * input_bytes + MEMORY_SLACK;
    let result = runner.run(&mutations(files), |m| {
        count.fetch_add(1, Ordering::Relaxed);
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        check(&m)?;
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        worst.fetch_max(peak, Ordering::Relaxed);
        prop_assert!(peak <= bound, "allocated {peak} bytes at the peak for {input_bytes} bytes of input");
        Ok(())
    });
    // The silent hook would hide the failure's own message.
    drop(std::panic::take_hook());
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    println!("{name}: {} cases, 0 panics, peak allocation at most {:.1} MB (bound {:.1} MB)", count.into_inner(), worst.into_inner() as f64 / 1e6, bound as f64 / 1e6);
}

/// Every number of every JSON file among `files` (a config, or a safetensors header: shapes and
/// offsets) set to every value of `EXTREMES`, one at a time: the sweep of docs/reliability.md.
fn sweep(name: &str, files: &[(PathBuf, bool)], check: impl Fn(&[Vec<Mutation>])) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bound = MEMORY_FACTOR * size(files) + MEMORY_SLACK;
    let mut count = 0;
    for (f, (source, safetensors)) in files.iter().enumerate() {
        let bytes = std::fs::read(source).expect("a fixture");
        let numbers = number_spans(&bytes[..json_region(&bytes, *safetensors)]).len();
        for which in 0..numbers {
            for (value, extreme) in EXTREMES.iter().enumerate() {
                let mut mutations = vec![Vec::new(); files.len()];
                mutations[f] = vec![Mutation::Number { which, value }];
                let before = LIVE.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mutations)));
                assert!(run.is_ok(), "{name}: number {which} of {} set to {extreme} panicked", source.display());
                let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
                assert!(peak <= bound, "{name}: number {which} of {} set to {extreme}: {peak} bytes allocated", source.display());
                count += 1;
            }
        }
    }
    println!("{name}: swept {count} settings, 0 panics");
}

fn size(files: &[(PathBuf, bool)]) -> usize {
    files.iter().map(|(f, _)| std::fs::metadata(f).map_or(0, |m| m.len() as usize)).sum()
}

/// Writes each `(source, mutations)` file into `dir` under its own name.
fn write_mutated(dir: &Path, files: &[(PathBuf, bool)], mutations: &[Vec<Mutation>]) {
    for ((source, safetensors), m) in files.iter().zip(mutations) {
        let bytes = apply(std::fs::read(source).expect("a fixture"), m, *safetensors);
        std::fs::write(dir.join(source.file_name().expect("a file name")), bytes).expect("a scratch file");
    }
}

#[test]
fn model_checkpoints() {
    let model = fixtures().join("peft-models/tests/fixtures/hf/models");
    for arch in ["llama", "gpt2_f16", "bert", "llama_4bit"].into_iter().filter(|a| selected(a)) {
        let dir = scratch(&format!("model-{arch}"));
        let files = [(model.join(arch).join("config.json"), false), (model.join(arch).join("model.safetensors"), true)];
        fuzz(&format!("model {arch}"), 2, size(&files), |m| {
            write_mutated(&dir, &files, m);
            let _ = peft::models::HfModel::<NdArray>::load(&dir, &Default::default());
            Ok(())
        });
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn numeric_sweep_of_configs_and_headers() {
    let hf = fixtures().join("peft-models/tests/fixtures/hf");
    let (base, _) = peft::models::HfModel::<NdArray>::load(&hf.join("models/llama"), &Default::default()).expect("the fixture loads");
    for arch in ["llama", "gpt2_f16", "bert", "llama_4bit"] {
        let dir = scratch(&format!("sweep-{arch}"));
        let files = [(hf.join("models").join(arch).join("config.json"), false), (hf.join("models").join(arch).join("model.safetensors"), true)];
        sweep(&format!("model {arch}"), &files, |m| {
            write_mutated(&dir, &files, m);
            let _ = peft::models::HfModel::<NdArray>::load(&dir, &Default::default());
        });
        std::fs::remove_dir_all(&dir).ok();
    }
    for case in ["llama_lora", "llama_ia3", "llama_prefix", "llama_prefix_projection", "llama_prompt", "llama_ptuning", "llama_dora_layers"] {
        let dir = scratch(&format!("sweep-{case}"));
        let src = hf.join("adapters").join(case);
        let files = [(src.join("adapter_config.json"), false), (src.join("adapter_model.safetensors"), true)];
        sweep(&format!("adapter {case}"), &files, |m| {
            write_mutated(&dir, &files, m);
            let mut model = base.clone();
            if peft::hf::load_adapter(&mut model, &dir, "fuzz").is_ok() {
                let tokens = burn::tensor::Tensor::<NdArray, 2, burn::tensor::Int>::from_ints([[1, 2, 3]], &Default::default());
                let _ = model.forward(tokens);
            }
        });
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn adapter_folders() {
    let hf = fixtures().join("peft-models/tests/fixtures/hf");
    let (base, _) = peft::models::HfModel::<NdArray>::load(&hf.join("models/llama"), &Default::default()).expect("the fixture loads");
    for case in ["llama_lora", "llama_ia3", "llama_prefix", "llama_prefix_projection", "llama_prompt", "llama_ptuning", "llama_dora_layers"].into_iter().filter(|c| selected(c)) {
        let dir = scratch(&format!("adapter-{case}"));
        let src = hf.join("adapters").join(case);
        let files = [(src.join("adapter_config.json"), false), (src.join("adapter_model.safetensors"), true)];
        fuzz(&format!("adapter {case}"), 2, size(&files) + size(&[(hf.join("models/llama/model.safetensors"), true)]), |m| {
            write_mutated(&dir, &files, m);
            let mut model = base.clone();
            if peft::hf::load_adapter(&mut model, &dir, "fuzz").is_ok() {
                let tokens = burn::tensor::Tensor::<NdArray, 2, burn::tensor::Int>::from_ints([[1, 2, 3]], &Default::default());
                let _ = model.forward(tokens);
            }
            Ok(())
        });
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// AdapterHub folders on the BERT fixture: a `torch.save` archive read by the restricted pickle
/// reader (`bert_seq_bn`) and a safetensors one (`bert_par_bn`).
#[test]
fn adapterhub_folders() {
    let hf = fixtures().join("peft-models/tests/fixtures/hf");
    let (base, _) = peft::models::HfModel::<NdArray>::load(&hf.join("models/bert"), &Default::default()).expect("the fixture loads");
    for (case, weights) in [("bert_seq_bn", "pytorch_adapter.bin"), ("bert_par_bn", "adapter.safetensors")].into_iter().filter(|(c, _)| selected(c)) {
        let dir = scratch(&format!("adapterhub-{case}"));
        let src = hf.join("adapterhub").join(case);
        let files = [(src.join("adapter_config.json"), false), (src.join(weights), weights.ends_with(".safetensors"))];
        let run = |m: &[Vec<Mutation>]| {
            write_mutated(&dir, &files, m);
            let mut model = base.clone();
            if peft::hf::load_adapter(&mut model, &dir, "fuzz").is_ok() {
                let tokens = burn::tensor::Tensor::<NdArray, 2, burn::tensor::Int>::from_ints([[1, 2, 3]], &Default::default());
                let _ = model.forward(tokens);
            }
        };
        fuzz(&format!("adapterhub {case}"), 2, size(&files) + size(&[(hf.join("models/bert/model.safetensors"), true)]), |m| {
            run(m);
            Ok(())
        });
        sweep(&format!("adapterhub {case}"), &files, run);
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn checkpoint_merges() {
    let hf = fixtures().join("peft-models/tests/fixtures/hf");
    let base_bytes = std::fs::read(hf.join("models/llama/model.safetensors")).expect("the fixture");
    let base = peft::core::checkpoint::parse(&base_bytes, "base").expect("the fixture parses");
    let dir = scratch("merge");
    let src = hf.join("adapters/llama_lora");
    let files = [(src.join("adapter_config.json"), false), (src.join("adapter_model.safetensors"), true)];
    fuzz("merge llama_lora", 2, size(&files) + base_bytes.len(), |m| {
        write_mutated(&dir, &files, m);
        if let Ok(folder) = peft::hf::AdapterFolder::read(&dir) {
            let _ = peft::hf::merge_checkpoint::<NdArray>(&base, &folder, &Default::default());
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quantized_files() {
    let fixture = fixtures().join("peft-quant/tests/fixtures/bnb_4bit.safetensors");
    let bytes = std::fs::read(&fixture).expect("the fixture");
    fuzz("bitsandbytes 4-bit file", 1, bytes.len(), |m| {
        let mutated = apply(bytes.clone(), &m[0], true);
        if let Ok(st) = peft::core::checkpoint::parse(&mutated, "fuzz") {
            for name in peft::quant::layout::quantized_names(&st) {
                if let Ok(q) = peft::quant::Quantized4bit::read(&st, &name) {
                    let _ = q.dequantize();
                }
            }
        }
        Ok(())
    });
}

#[test]
fn training_data() {
    let data = fixtures().join("peft-train/tests/fixtures/data");
    let dir = scratch("data");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&data).expect("the fixtures").flatten().map(|e| e.path()).collect();
    sources.sort();
    for source in sources {
        let name = source.file_name().expect("a name").to_string_lossy().to_string();
        fuzz(&format!("data {name}"), 1, size(&[(source.clone(), false)]), |m| {
            write_mutated(&dir, &[(source.clone(), false)], m);
            let _ = peft_train::Dataset::read(&dir.join(&name), false);
            let _ = peft_train::Dataset::read(&dir.join(&name), true);
            Ok(())
        });
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokenizers_and_chat_templates() {
    let src = fixtures().join("peft-train/tests/fixtures/llama");
    let dir = scratch("tokenizer");
    let files = [(src.join("tokenizer.json"), false), (src.join("tokenizer_config.json"), false), (src.join("chat_template.jinja"), false)];
    let messages = [peft_train::Message::new("user", "Is this review positive?"), peft_train::Message::new("assistant", "positive")];
    fuzz("tokenizer and chat template", 3, size(&files), |m| {
        write_mutated(&dir, &files, m);
        if let Ok(encoder) = peft_train::Encoder::from_model_dir(&dir, true) {
            let _ = encoder.ids("The river rose in the night.");
            if let Ok(text) = encoder.template.render(&messages, false) {
                let _ = encoder.ids(&text);
            }
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// A run with a checkpoint at step 2, resumed from a mutated copy of that checkpoint for one more
/// step: the run's state, the trainable parameters, Burn's record of the optimizer and the adapter.
#[test]
fn training_checkpoints() {
    use burn::backend::Autodiff;
    use peft_train::{Dataset, Encoder, Observer, TrainConfig, TrainSetup, train};
    /// Stops the first run after step 2, as a run killed there; resumed runs go on to step 3.
    struct StopAt(Option<usize>);
    impl Observer for StopAt {
        fn stop_after(&mut self, step: usize) -> bool {
            self.0 == Some(step)
        }
    }

    let root = fixtures().join("peft-train/tests/fixtures");
    let model_dir = root.join("llama");
    let encoder = Encoder::from_model_dir(&model_dir, false).expect("the fixture tokenizer");
    let data: Vec<_> = Dataset::read(&root.join("data/chat.jsonl"), false).expect("the fixture data").records.iter().map(|r| encoder.encode(r).expect("encodes")).collect();
    let config = TrainConfig { max_steps: Some(3), save_every: 1, batch_size: 2, ..TrainConfig::default() };
    let first = scratch("checkpoint-first");
    let setup = |out: &Path, resume: bool, stop: Option<usize>| {
        let setup = TrainSetup { model_dir: &model_dir, train: &data, eval: &data[..2], pad_id: encoder.pad_id(), config: &config, out, resume };
        train::<Autodiff<NdArray>>(&setup, &Default::default(), &mut StopAt(stop)).map(|s| s.resumed_from)
    };
    setup(&first, false, Some(2)).expect("the first run");
    let step = first.join("checkpoints/step-2");
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    let mut pending = vec![step.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("the checkpoint").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let safetensors = path.extension().is_some_and(|e| e == "safetensors");
                files.push((path, safetensors));
            }
        }
    }
    files.sort();
    let out = scratch("checkpoint-resume");
    let copy = |mutations: &[Vec<Mutation>]| {
        let _ = std::fs::remove_dir_all(&out);
        for ((source, safetensors), mutations) in files.iter().zip(mutations) {
            let target = out.join("checkpoints/step-2").join(source.strip_prefix(&step).expect("inside the checkpoint"));
            std::fs::create_dir_all(target.parent().expect("a folder")).expect("a scratch folder");
            std::fs::write(&target, apply(std::fs::read(source).expect("a checkpoint file"), mutations, *safetensors)).expect("a scratch file");
        }
    };
    copy(&vec![Vec::new(); files.len()]);
    assert_eq!(setup(&out, true, None).expect("an unchanged copy resumes"), Some(2));
    let cases_here = (cases() / 3).max(1);
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::panic::set_hook(Box::new(|_| {}));
    let mut runner = TestRunner::new(Config { cases: cases_here, failure_persistence: None, max_shrink_iters: 500, ..Config::default() });
    let count = AtomicUsize::new(0);
    let result = runner.run(&mutations(files.len()), |m| {
        count.fetch_add(1, Ordering::Relaxed);
        copy(&m);
        let _ = setup(&out, true, None);
        Ok(())
    });
    drop(std::panic::take_hook());
    if let Err(e) = result {
        panic!("training checkpoints: {e}");
    }
    println!("training checkpoints ({} files): {} cases, 0 panics", files.len(), count.into_inner());
    std::fs::remove_dir_all(&first).ok();
    std::fs::remove_dir_all(&out).ok();
}

/// Every numeric key of `train.toml` set to every extreme value: refused by validation, or a
/// one-step run that ends with `Ok` or an error (never a panic, never beyond the memory bound).
#[test]
fn numeric_sweep_of_training_settings() {
    use burn::backend::Autodiff;
    use peft_train::{Dataset, Encoder, Observer, TrainConfig, TrainSetup, train};
    struct Quiet;
    impl Observer for Quiet {}
    let root = fixtures().join("peft-train/tests/fixtures");
    let model_dir = root.join("llama");
    let encoder = Encoder::from_model_dir(&model_dir, false).expect("the fixture tokenizer");
    let data: Vec<_> = Dataset::read(&root.join("data/chat.jsonl"), false).expect("the fixture data").records.iter().map(|r| encoder.encode(r).expect("encodes")).collect();
    let keys = [
        "r", "alpha", "dropout", "num_virtual_tokens", "epochs", "max_steps", "lr", "weight_decay", "batch_size", "grad_accum", "max_len", "warmup",
        "max_grad_norm", "seed", "save_every", "eval_every", "eval_split",
    ];
    let out = scratch("train-sweep");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::panic::set_hook(Box::new(|_| {}));
    let (mut count, mut ran, mut failures) = (0, 0, Vec::new());
    for key in keys {
        for extreme in EXTREMES {
            for method in ["lora", "prefix"] {
                let text = format!("method = \"{method}\"\n{key} = {extreme}\n");
                count += 1;
                let Ok(mut config) = TrainConfig::from_toml(&text, "train.toml") else { continue };
                if config.validate().is_err() {
                    continue;
                }
                // One step whatever the schedule says (the sweep is about values, not run length);
                // a valid accumulation of many batches is accepted but not run (it is only long).
                config.max_steps = Some(1);
                config.epochs = 1;
                if config.grad_accum > 4 {
                    continue;
                }
                let before = LIVE.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let _ = std::fs::remove_dir_all(&out);
                let setup = TrainSetup { model_dir: &model_dir, train: &data, eval: &data[..2], pad_id: encoder.pad_id(), config: &config, out: &out, resume: false };
                let began = std::time::Instant::now();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train::<Autodiff<NdArray>>(&setup, &Default::default(), &mut Quiet).map(|_| ())));
                if std::env::var("PEFT_SWEEP_TRACE").is_ok() {
                    eprintln!("{method} {key}={extreme}: {:?} {:?}", began.elapsed(), run.as_ref().map(|r| r.as_ref().err().map(|e| e.to_string())));
                }
                if run.is_err() {
                    failures.push(format!("{method}: {key} = {extreme} panicked"));
                }
                let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
                if peak > 256 << 20 {
                    failures.push(format!("{method}: {key} = {extreme}: {peak} bytes allocated"));
                }
                ran += 1;
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "{failures:#?}");
    println!("training settings: swept {count} settings ({ran} valid ones trained a step), 0 panics");
    std::fs::remove_dir_all(&out).ok();
}
