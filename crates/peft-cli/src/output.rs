//! Outputs never replace the commands' own inputs unless asked to (`--force`).

use std::path::Path;

use crate::quantize::CliError;

/// The files a command reads from an input path: the file itself, or a model or adapter
/// folder's files.
fn input_files(input: &Path) -> Vec<std::path::PathBuf> {
    if input.is_dir() {
        ["model.safetensors", "config.json", "tokenizer.json", peft_hf::folder::WEIGHTS_FILE, peft_hf::folder::CONFIG_FILE].iter().map(|f| input.join(f)).collect()
    } else {
        vec![input.to_path_buf()]
    }
}

/// Whether `a` and `b` name the same existing file (hard links and symlinks included).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
        false
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
    }
}

/// Refuses `out` when it is one of the files the command reads from `inputs`, unless `force`.
pub fn refuse_overwriting_inputs(out: &Path, inputs: &[&Path], force: bool) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    match inputs.iter().flat_map(|i| input_files(i)).find(|file| same_file(out, file)) {
        Some(file) => Err(CliError::Nothing(format!("--out `{}` is the input `{}`; choose another output (or pass --force to replace it)", out.display(), file.display()))),
        None => Ok(()),
    }
}
