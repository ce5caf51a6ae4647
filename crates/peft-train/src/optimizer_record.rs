//! The optimizer's state in a checkpoint (`optimizer.mpk`: Burn's named MessagePack record, full
//! precision), checked against the model before Burn reads it.
//!
//! Burn trusts the record it loads: a tensor whose `shape` claims more values than its `bytes`
//! hold is read past its buffer, a parameter id that does not decode panics, a state of another
//! rank panics. So the file is walked once first (with `rmp`'s MessagePack vocabulary, no
//! allocation): every entry must belong to a parameter that trains, in its rank, every tensor must
//! have that parameter's shape, `F32` values and exactly their bytes, every length must fit in the
//! file, and the step count of the state must not exceed the checkpoint's step.

use std::collections::HashMap;
use std::path::Path;

use burn::module::ParamId;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::Backend;
use peft_core::checkpoint::read_bytes;
use peft_core::{PeftError, Result};
use rmp::Marker;

/// The file's name inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";

/// Deepest nesting walked (Burn's records nest about six levels).
const MAX_DEPTH: usize = 32;

/// A parameter that trains: its id and shape.
pub(crate) type TrainableShape = (ParamId, Vec<usize>);

/// Writes `record` (the optimizer's `to_record()`) into the checkpoint folder `dir`.
pub(crate) fn save_optimizer<B: Backend, R: Record<B>>(record: R, dir: &Path) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    let fault = |reason: String| PeftError::OptimizerRecord { path: path.display().to_string(), reason };
    let bytes = Recorder::<B>::record(&NamedMpkBytesRecorder::<FullPrecisionSettings>::new(), record, ()).map_err(|e| fault(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(|source| PeftError::Io { path: path.display().to_string(), source })
}

/// Reads the optimizer's record from the checkpoint folder `dir` of step `step`, once
/// [`check_optimizer_record`] has accepted it for the parameters `trainable`.
pub(crate) fn load_optimizer<B: Backend, R: Record<B>>(dir: &Path, trainable: &[TrainableShape], step: usize, device: &B::Device) -> Result<R> {
    let path = dir.join(OPTIMIZER_FILE);
    let fault = |reason: String| PeftError::OptimizerRecord { path: path.display().to_string(), reason };
    let bytes = read_bytes(&path)?;
    check_optimizer_record(&bytes, trainable, step).map_err(fault)?;
    Recorder::<B>::load(&NamedMpkBytesRecorder::<FullPrecisionSettings>::new(), bytes, device).map_err(|e| fault(e.to_string()))
}

/// Checks a named MessagePack optimizer record (`{metadata, item: {id: {V1: {RankD: state}}}}`)
/// against the parameters that train and the checkpoint's step; the reason on failure.
pub(crate) fn check_optimizer_record(bytes: &[u8], trainable: &[TrainableShape], step: usize) -> std::result::Result<(), String> {
    let expected: HashMap<String, &[usize]> = trainable.iter().map(|(id, shape)| (id.serialize(), shape.as_slice())).collect();
    let mut walk = Walk { rest: bytes, step };
    let entries = walk.map_len()?;
    let mut items = 0;
    for _ in 0..entries {
        if walk.str()? == b"item" {
            walk.item(&expected)?;
            items += 1;
        } else {
            walk.skip(1)?;
        }
    }
    if items != 1 {
        return Err("the record has no `item`".into());
    }
    if !walk.rest.is_empty() {
        return Err(format!("{} bytes follow the record", walk.rest.len()));
    }
    Ok(())
}

/// One MessagePack value's head; strings and byte strings with their contents.
enum Token<'a> {
    Scalar,
    Uint(u64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
}

struct Walk<'a> {
    rest: &'a [u8],
    step: usize,
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!("a value of {n} bytes where {} are left", self.rest.len()));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0, |v, &b| (v << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> std::result::Result<usize, String> {
        usize::try_from(self.uint(n)?).map_err(|_| "a length beyond this machine".to_string())
    }

    fn token(&mut self) -> std::result::Result<Token<'a>, String> {
        let marker = Marker::from_u8(self.take(1)?[0]);
        Ok(match marker {
            Marker::FixPos(v) => Token::Uint(v.into()),
            Marker::U8 => Token::Uint(self.uint(1)?),
            Marker::U16 => Token::Uint(self.uint(2)?),
            Marker::U32 => Token::Uint(self.uint(4)?),
            Marker::U64 => Token::Uint(self.uint(8)?),
            Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => Token::Scalar,
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 | Marker::F32 | Marker::F64 => {
                let width = match marker {
                    Marker::I8 => 1,
                    Marker::I16 => 2,
                    Marker::I32 | Marker::F32 => 4,
                    _ => 8,
                };
                // A non-negative signed integer is a count as well.
                let value = self.uint(width)?;
                match marker {
                    Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 if value >> (width * 8 - 1) == 0 => Token::Uint(value),
                    _ => Token::Scalar,
                }
            }
            Marker::FixStr(n) => Token::Str(self.take(n.into())?),
            Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.len(head_width(marker))?;
                Token::Str(self.take(n)?)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.len(head_width(marker))?;
                Token::Bin(self.take(n)?)
            }
            Marker::FixArray(n) => Token::Array(n.into()),
            Marker::Array16 | Marker::Array32 => Token::Array(self.len(head_width(marker))?),
            Marker::FixMap(n) => Token::Map(n.into()),
            Marker::Map16 | Marker::Map32 => Token::Map(self.len(head_width(marker))?),
            Marker::FixExt1 | Marker::FixExt2 | Marker::FixExt4 | Marker::FixExt8 | Marker::FixExt16 => {
                let n = match marker {
                    Marker::FixExt1 => 1,
                    Marker::FixExt2 => 2,
                    Marker::FixExt4 => 4,
                    Marker::FixExt8 => 8,
                    _ => 16,
                };
                self.take(1 + n)?;
                Token::Scalar
            }
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                let n = self.len(head_width(marker))?;
                self.take(n.checked_add(1).ok_or("an extension beyond this machine")?)?;
                Token::Scalar
            }
            Marker::Reserved => return Err("a reserved MessagePack marker".into()),
        })
    }

    fn map_len(&mut self) -> std::result::Result<usize, String> {
        match self.token()? {
            Token::Map(n) => Ok(n),
            _ => Err("a value where a map belongs".into()),
        }
    }

    fn str(&mut self) -> std::result::Result<&'a [u8], String> {
        match self.token()? {
            Token::Str(s) => Ok(s),
            _ => Err("a key that is not a string".into()),
        }
    }

    /// Skips one value of any kind, `depth` levels down.
    fn skip(&mut self, depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        match self.token()? {
            Token::Array(n) => (0..n).try_for_each(|_| self.skip(depth + 1)),
            Token::Map(n) => (0..n).try_for_each(|_| self.skip(depth + 1).and_then(|()| self.skip(depth + 1))),
            _ => Ok(()),
        }
    }

    /// The record's item: one state per parameter that trains, by id.
    fn item(&mut self, expected: &HashMap<String, &[usize]>) -> std::result::Result<(), String> {
        let entries = self.map_len()?;
        for _ in 0..entries {
            let key = self.str()?;
            let shape = std::str::from_utf8(key).ok().and_then(|k| expected.get(k)).ok_or_else(|| format!("state for `{}`, which is not a parameter that trains", String::from_utf8_lossy(key)))?;
            self.variant(b"V1")?;
            self.variant(format!("Rank{}", shape.len()).as_bytes())?;
            self.state(shape, 3)?;
        }
        Ok(())
    }

    /// An enum's variant `name`, as a map of one entry whose value follows.
    fn variant(&mut self, name: &[u8]) -> std::result::Result<(), String> {
        let entries = self.map_len()?;
        let key = self.str()?;
        if entries != 1 || key != name {
            return Err(format!("`{}` where `{}` belongs", String::from_utf8_lossy(key), String::from_utf8_lossy(name)));
        }
        Ok(())
    }

    /// A parameter's optimizer state: every tensor in it has the parameter's `shape`.
    fn state(&mut self, shape: &[usize], depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        match self.token()? {
            Token::Array(n) => (0..n).try_for_each(|_| self.state(shape, depth + 1)),
            Token::Map(n) => self.state_map(n, shape, depth),
            _ => Ok(()),
        }
    }

    fn state_map(&mut self, entries: usize, shape: &[usize], depth: usize) -> std::result::Result<(), String> {
        let (mut bytes, mut dims, mut dtype) = (None, None, None);
        for _ in 0..entries {
            match self.str()? {
                b"bytes" => match self.token()? {
                    Token::Bin(b) => bytes = Some(b.len()),
                    _ => return Err("tensor bytes that are not a byte string".into()),
                },
                b"shape" => dims = Some(self.dims(shape)?),
                b"dtype" => match self.token()? {
                    Token::Str(s) => dtype = Some(s),
                    _ => return Err("a tensor dtype that is not a string".into()),
                },
                b"time" => match self.token()? {
                    Token::Uint(t) if t <= self.step as u64 => {}
                    _ => return Err(format!("a step count that is not a whole number up to the checkpoint's step {}", self.step)),
                },
                _ => self.state(shape, depth + 1)?,
            }
        }
        match (bytes, dims, dtype) {
            (None, None, None) => Ok(()),
            (Some(bytes), Some(values), Some(b"F32")) if Some(bytes) == values.checked_mul(4) => Ok(()),
            (Some(bytes), Some(_), Some(b"F32")) => Err(format!("a tensor of shape {shape:?} (f32) in {bytes} bytes")),
            (Some(_), Some(_), Some(dtype)) => Err(format!("a tensor of dtype `{}` where F32 belongs", String::from_utf8_lossy(dtype))),
            _ => Err("a tensor without its bytes, shape or dtype".into()),
        }
    }

    /// A tensor's shape, which must be `shape`; its number of values.
    fn dims(&mut self, shape: &[usize]) -> std::result::Result<usize, String> {
        let Token::Array(n) = self.token()? else { return Err("a tensor shape that is not a list".into()) };
        let mut dims = Vec::with_capacity(n.min(shape.len() + 1));
        for _ in 0..n {
            match self.token()? {
                Token::Uint(d) if dims.len() < shape.len() => dims.push(d),
                Token::Uint(_) => return Err(format!("a tensor of more dimensions than the parameter's {shape:?}")),
                _ => return Err("a tensor dimension that is not a whole number".into()),
            }
        }
        if dims.iter().copied().ne(shape.iter().map(|&d| d as u64)) {
            return Err(format!("a tensor of shape {dims:?} for a parameter of shape {shape:?}"));
        }
        Ok(shape.iter().product())
    }
}

/// Bytes of the length that follows a marker of the 8, 16 or 32-bit family.
fn head_width(marker: Marker) -> usize {
    match marker {
        Marker::Str8 | Marker::Bin8 | Marker::Ext8 => 1,
        Marker::Str16 | Marker::Bin16 | Marker::Ext16 | Marker::Array16 | Marker::Map16 => 2,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Tensor;

    type B = Autodiff<NdArray>;

    /// An optimizer record of two AdamW steps of a 3×2 linear layer (weight [3, 2], bias [2]).
    fn record() -> (Vec<u8>, Vec<TrainableShape>) {
        let device = Default::default();
        let mut layer: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let mut optim = AdamWConfig::new().init::<B, Linear<B>>();
        for _ in 0..2 {
            let loss = layer.forward(Tensor::<B, 2>::ones([4, 3], &device)).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &layer);
            layer = optim.step(1e-3, layer, grads);
        }
        let bias = layer.bias.as_ref().map(|b: &Param<Tensor<B, 1>>| b.id).expect("a bias");
        let trainable = vec![(layer.weight.id, vec![3, 2]), (bias, vec![2])];
        let bytes = Recorder::<B>::record(&NamedMpkBytesRecorder::<FullPrecisionSettings>::new(), optim.to_record(), ()).expect("records");
        (bytes, trainable)
    }

    /// `bytes` with the first occurrence of `from` replaced by `to` (of the same length).
    fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = bytes.windows(from.len()).position(|w| w == from).expect("the pattern occurs");
        let mut out = bytes.to_vec();
        out[at..at + from.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn a_record_burn_wrote_passes_and_loads() {
        let (bytes, trainable) = record();
        check_optimizer_record(&bytes, &trainable, 2).expect("accepted");
        let dir = std::env::temp_dir().join(format!("peft-optimizer-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OPTIMIZER_FILE), &bytes).unwrap();
        type Rec = <burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Linear<B>, B> as Optimizer<Linear<B>, B>>::Record;
        let loaded: Rec = load_optimizer::<B, Rec>(&dir, &trainable, 2, &Default::default()).expect("loads");
        assert_eq!(loaded.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shape_larger_than_its_bytes_is_refused() {
        let (bytes, trainable) = record();
        // The weight's shape [3, 2] (a fixarray of two fixints) claimed as [3, 9].
        let bad = replaced(&bytes, &[0xa5, b's', b'h', b'a', b'p', b'e', 0x92, 3, 2], &[0xa5, b's', b'h', b'a', b'p', b'e', 0x92, 3, 9]);
        let reason = check_optimizer_record(&bad, &trainable, 2).unwrap_err();
        assert!(reason.contains("shape [3, 9]"), "{reason}");
    }

    #[test]
    fn unknown_ids_other_ranks_late_steps_and_short_files_are_refused() {
        let (bytes, trainable) = record();
        let weight = trainable[0].0.serialize();
        let mut other = weight.clone().into_bytes();
        other[0] = if other[0] == b'a' { b'b' } else { b'a' };
        let reason = check_optimizer_record(&replaced(&bytes, weight.as_bytes(), &other), &trainable, 2).unwrap_err();
        assert!(reason.contains("not a parameter that trains"), "{reason}");
        let reason = check_optimizer_record(&replaced(&bytes, b"Rank2", b"Rank3"), &trainable, 2).unwrap_err();
        assert!(reason.contains("`Rank3` where `Rank2`"), "{reason}");
        let reason = check_optimizer_record(&bytes, &trainable, 1).unwrap_err();
        assert!(reason.contains("step count"), "{reason}");
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(check_optimizer_record(&bytes[..cut], &trainable, 2).is_err(), "cut at {cut}");
        }
        assert!(check_optimizer_record(&[0xdd, 0xff, 0xff, 0xff, 0xff], &trainable, 2).is_err());
        let deep = [vec![0x81, 0xa8], b"metadata".to_vec(), vec![0x91; 10_000]].concat();
        assert!(check_optimizer_record(&deep, &trainable, 2).is_err());
    }
}
