//! Safetensors files: reading tensors as `f32`, and writing files all-or-nothing.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::{PeftError, Result};

/// An owned tensor to write: name, dtype, shape and little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub data: Vec<u8>,
}

impl TensorEntry {
    /// An `f32` tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        Self { name: name.into(), dtype: Dtype::F32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    /// A `u8` tensor.
    pub fn u8(name: impl Into<String>, shape: Vec<usize>, values: Vec<u8>) -> Self {
        Self { name: name.into(), dtype: Dtype::U8, shape, data: values }
    }

    /// Copies a view of a file.
    pub fn from_view(name: &str, view: &TensorView<'_>) -> Self {
        Self { name: name.into(), dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    check_regular_file(path)?;
    std::fs::read(path).map_err(|source| PeftError::Io { path: path.display().to_string(), source })
}

/// Reads a UTF-8 text file whole (a regular file only, as [`read_bytes`]).
pub fn read_text(path: &Path) -> Result<String> {
    check_regular_file(path)?;
    std::fs::read_to_string(path).map_err(|source| PeftError::Io { path: path.display().to_string(), source })
}

/// Refuses anything but a regular file (after symlinks) before it is opened: reading a FIFO
/// waits forever, a device such as `/dev/zero` never ends, a folder is not a file.
pub fn check_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| PeftError::Io { path: path.display().to_string(), source })?;
    match file_kind(&meta) {
        None => Ok(()),
        Some(kind) => Err(PeftError::NotAFile { path: path.display().to_string(), kind }),
    }
}

/// `None` for a regular file, else what the path is.
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO");
        }
        if kind.is_char_device() || kind.is_block_device() {
            return Some("a device");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
    }
    Some("a special file")
}

/// Parses safetensors bytes, naming the file in the error.
pub fn parse<'a>(bytes: &'a [u8], path: &str) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| PeftError::Safetensors { path: path.into(), reason: e.to_string() })
}

/// The file's `__metadata__` map (empty when absent).
pub fn metadata(bytes: &[u8], path: &str) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| PeftError::Safetensors { path: path.into(), reason: e.to_string() })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Whether a dtype is a floating-point type this crate converts (`F32`, `F16`, `BF16`).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// HF's name of a dtype (`float32`, `bfloat16`, `float16`, `uint8`, ...).
pub fn dtype_name(dtype: Dtype) -> String {
    match dtype {
        Dtype::F32 => "float32".into(),
        Dtype::F16 => "float16".into(),
        Dtype::BF16 => "bfloat16".into(),
        Dtype::F64 => "float64".into(),
        Dtype::U8 => "uint8".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The values of a floating-point tensor as `f32`.
pub fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    let expected = view.shape().iter().product::<usize>() * view.dtype().bitsize() / 8;
    if data.len() != expected {
        return Err(PeftError::ShapeMismatch { name: name.into(), expected: vec![expected], actual: vec![data.len()] });
    }
    Ok(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => return Err(PeftError::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}"), expected: "F32, F16 or BF16" }),
    })
}

/// The shape and `f32` values of tensor `name` of `file`.
pub fn read_f32(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let view = file.tensor(name).map_err(|e| PeftError::Safetensors { path: name.into(), reason: e.to_string() })?;
    Ok((view.shape().to_vec(), to_f32(name, &view)?))
}

/// [`read_f32`], refusing a NaN or an infinity (a typed error naming the tensor).
pub fn read_finite_f32(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, values) = read_f32(file, name)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(PeftError::NonFiniteTensor(name.into()));
    }
    Ok((shape, values))
}

/// The transpose of a row-major `rows × cols` matrix.
pub fn transpose<T: Copy + Default>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); m.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = m[i * cols + j];
        }
    }
    t
}

/// `f32` values encoded as `dtype` (`F32`, `F16` or `BF16`, rounding to nearest even).
pub fn from_f32(values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    Ok(match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        other => return Err(PeftError::UnsupportedDtype { name: "(encoded floats)".into(), dtype: format!("{other:?}"), expected: "F32, F16 or BF16" }),
    })
}

/// `entries` as the bytes of a safetensors file (`name` labels errors).
pub fn serialize(entries: &[TensorEntry], metadata: Option<HashMap<String, String>>, name: &str) -> Result<Vec<u8>> {
    let error = |e: safetensors::SafeTensorError| PeftError::Safetensors { path: name.into(), reason: e.to_string() };
    let views = entries
        .iter()
        .map(|e| TensorView::new(e.dtype, e.shape.clone(), &e.data).map(|v| (e.name.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(error)?;
    safetensors::serialize(views, metadata).map_err(error)
}

/// Writes `entries` to `path` all-or-nothing (see [`write_bytes_atomic`]).
pub fn write_atomic(path: &Path, entries: &[TensorEntry], metadata: Option<HashMap<String, String>>) -> Result<()> {
    write_bytes_atomic(path, &serialize(entries, metadata, &path.display().to_string())?)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place at
/// the end: a failure never leaves a partial file at `path`. An existing `path` must be a
/// regular file (renaming over a device or a FIFO would replace it). Temporary files are named
/// `.NAME.tmp-PID`; those a killed run left beside `path` (their process is gone) are removed
/// first, so crashed runs leave at most one per output.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && let Some(kind) = file_kind(&meta)
    {
        return Err(PeftError::NotAFile { path: path.display().to_string(), kind });
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    remove_stale_temporaries(path, &file_name);
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|source| PeftError::Io { path: path.display().to_string(), source })
}

/// Removes `.NAME.tmp-PID` files beside `path` whose process no longer runs (Linux's `/proc`
/// tells; elsewhere nothing is removed).
fn remove_stale_temporaries(path: &Path, file_name: &str) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let prefix = format!(".{file_name}.tmp-");
    let Ok(entries) = std::fs::read_dir(&folder) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| PeftError::Json { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_leaves_a_partial_file() {
        let dir = std::env::temp_dir().join(format!("peft-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let entries = vec![
            TensorEntry::f32("w", vec![2, 2], &[1.0, -2.0, 3.5, 0.25]),
            TensorEntry { name: "h".into(), dtype: Dtype::BF16, shape: vec![2], data: from_f32(&[1.5, -3.0], Dtype::BF16).unwrap() },
        ];
        write_atomic(&path, &entries, None).unwrap();
        let bytes = read_bytes(&path).unwrap();
        let st = parse(&bytes, "a").unwrap();
        assert_eq!(to_f32("w", &st.tensor("w").unwrap()).unwrap(), vec![1.0, -2.0, 3.5, 0.25]);
        assert_eq!(to_f32("h", &st.tensor("h").unwrap()).unwrap(), vec![1.5, -3.0]);
        // A bad entry: nothing is written.
        let bad = vec![TensorEntry::f32("w", vec![3], &[1.0])];
        let other = dir.join("b.safetensors");
        assert!(write_atomic(&other, &bad, None).is_err());
        assert!(!other.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a temporary file was left behind");
        // A killed run's temporary file is removed by the next write of the same output.
        let stale = dir.join(".a.safetensors.tmp-4194303");
        std::fs::write(&stale, b"partial").unwrap();
        write_atomic(&path, &entries, None).unwrap();
        assert!(!stale.exists(), "a stale temporary file survived");
        // Special files are refused as inputs and as outputs, before any read or write.
        assert!(matches!(read_bytes(&dir), Err(PeftError::NotAFile { kind: "a folder", .. })));
        #[cfg(unix)]
        {
            assert!(matches!(read_bytes(Path::new("/dev/zero")), Err(PeftError::NotAFile { kind: "a device", .. })));
            assert!(matches!(write_atomic(Path::new("/dev/null"), &entries, None), Err(PeftError::NotAFile { kind: "a device", .. })));
        }
        // Truncated input is a typed error.
        assert!(matches!(parse(&bytes[..bytes.len() - 3], "a"), Err(PeftError::Safetensors { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
