//! A restricted reader of PyTorch's `torch.save` files (a zip archive holding `data.pkl` and one
//! entry per storage), for the state dicts adapters are published as (AdapterHub's
//! `pytorch_adapter.bin`).
//!
//! The pickle is interpreted, never executed: the only callables it may name are the tensor
//! rebuilders, the storage types and `OrderedDict` that a state dict uses (torch's own
//! `weights_only` list, narrowed); anything else is [`PeftError::UnsafePickle`]. Every length is
//! checked against the bytes that hold it, and the values the pickle builds are counted against
//! a budget, so a small file cannot make a large allocation.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use peft_core::{PeftError, Result};
use safetensors::Dtype;

use crate::folder::HfTensor;

/// Values a pickle may build, counted in nodes: far above any state dict's (a few per tensor).
const NODE_BUDGET: usize = 1 << 22;
/// Containers nested deeper than this are refused.
const MAX_DEPTH: usize = 64;

/// The tensors of the state dict in the `torch.save` file `bytes`, in the order the file lists
/// them, as `f32` (from f32, f16 or bf16 storages). `label` names the file in errors.
pub fn read_state_dict(bytes: &[u8], label: &str) -> Result<Vec<HfTensor>> {
    let bad = |reason: String| PeftError::TorchFile { path: label.into(), reason };
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(bad("not a zip archive (files saved before torch 1.6, or with `_use_new_zipfile_serialization=False`, are not read: save them again, or as safetensors)".into()));
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(format!("zip: {e}")))?;
    let pickle_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| bad("no `<archive>/data.pkl` entry".into()))?;
    let root = pickle_name.trim_end_matches("data.pkl").to_string();
    let pickle = entry(&mut archive, &pickle_name, bytes.len(), label)?;
    let dict = Machine::new(&pickle, label).run()?;
    let Value::Dict(items) = dict else {
        return Err(bad("the pickle holds no dict of tensors".into()));
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(items.len().min(bytes.len()));
    for (key, value) in items {
        let Value::Str(name) = key else { return Err(bad("a state dict key that is not a string".into())) };
        let Value::Tensor(t) = value else { return Err(bad(format!("`{name}` is not a tensor"))) };
        if !storages.contains_key(&t.storage.key) {
            let data = entry(&mut archive, &format!("{root}data/{}", t.storage.key), bytes.len(), label)?;
            storages.insert(t.storage.key.clone(), data);
        }
        let values = t.values(&storages[&t.storage.key]).map_err(|reason| bad(format!("`{name}`: {reason}")))?;
        out.push(HfTensor { key: name, dtype: t.storage.dtype, shape: t.shape, values });
    }
    Ok(out)
}

/// The bytes of the stored (uncompressed) zip entry `name`.
fn entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str, file_len: usize, label: &str) -> Result<Vec<u8>> {
    let bad = |reason: String| PeftError::TorchFile { path: label.into(), reason };
    let mut file = archive.by_name(name).map_err(|e| bad(format!("entry `{name}`: {e}")))?;
    if file.compression() != zip::CompressionMethod::Stored {
        return Err(bad(format!("entry `{name}` is compressed ({}); torch.save stores entries uncompressed", file.compression())));
    }
    let size = usize::try_from(file.size()).ok().filter(|&s| s <= file_len).ok_or_else(|| bad(format!("entry `{name}` claims {} bytes, more than the file", file.size())))?;
    let mut data = Vec::with_capacity(size);
    file.by_ref().take(size as u64).read_to_end(&mut data).map_err(|e| bad(format!("entry `{name}`: {e}")))?;
    if data.len() != size {
        return Err(bad(format!("entry `{name}` is truncated")));
    }
    Ok(data)
}

/// A storage named by a persistent id: its element type and its zip entry.
#[derive(Clone, Debug, PartialEq)]
struct Storage {
    dtype: Dtype,
    key: String,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view of a storage.
#[derive(Clone, Debug, PartialEq)]
struct TensorView {
    storage: Storage,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorView {
    /// The view's values, row-major, from the storage's bytes (little-endian).
    fn values(&self, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
        let width = self.storage.dtype.bitsize() / 8;
        let stored = bytes.len() / width;
        let numel = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("its shape overflows")?;
        // A view may repeat values (stride 0), but a state dict's never holds more than its storage.
        if numel > stored {
            return Err(format!("its view of shape {:?} holds more values than its storage of {stored}", self.shape));
        }
        if numel > 0 {
            let last = self.shape.iter().zip(&self.stride).try_fold(self.offset, |end, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| end.checked_add(x)));
            if last.is_none_or(|last| last >= stored) {
                return Err(format!("its view (offset {}, shape {:?}, stride {:?}) reaches past its storage of {stored} values", self.offset, self.shape, self.stride));
            }
        }
        let read = |i: usize| -> f32 {
            let b = &bytes[i * width..(i + 1) * width];
            match self.storage.dtype {
                Dtype::F16 => burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                Dtype::BF16 => burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            }
        };
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            values.push(read(self.offset + index.iter().zip(&self.stride).map(|(i, s)| i * s).sum::<usize>()));
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < self.shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err("it contains NaN or infinite values".into());
        }
        Ok(values)
    }
}

/// The callables a state dict's pickle may name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(Dtype),
}

impl Global {
    fn named(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch", "FloatStorage") => Self::Storage(Dtype::F32),
            ("torch", "HalfStorage") => Self::Storage(Dtype::F16),
            ("torch", "BFloat16Storage") => Self::Storage(Dtype::BF16),
            _ => return None,
        })
    }
}

/// What the pickle machine holds.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(Storage),
    Tensor(TensorView),
}

impl Value {
    /// Nodes in this value (what a copy of it costs).
    fn nodes(&self) -> usize {
        1 + match self {
            Self::Tuple(v) | Self::List(v) => v.iter().map(Self::nodes).sum(),
            Self::Dict(kv) => kv.iter().map(|(k, v)| k.nodes() + v.nodes()).sum(),
            Self::Tensor(t) => t.shape.len() * 2,
            _ => 0,
        }
    }

    fn depth(&self) -> usize {
        1 + match self {
            Self::Tuple(v) | Self::List(v) => v.iter().map(Self::depth).max().unwrap_or(0),
            Self::Dict(kv) => kv.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// A pickle interpreter for the opcodes `torch.save` emits (protocols 2 to 5), building plain
/// values only.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    budget: usize,
    label: &'a str,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], label: &'a str) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), budget: NODE_BUDGET, label }
    }

    fn bad(&self, reason: impl Into<String>) -> PeftError {
        PeftError::TorchFile { path: self.label.into(), reason: format!("pickle at byte {}: {}", self.pos, reason.into()) }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| self.bad("ends early"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn text(&mut self, n: usize) -> Result<String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("a string that is not UTF-8"))
    }

    /// A `GLOBAL` operand: a line ending in `\n`.
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().take(256).position(|&b| b == b'\n').ok_or_else(|| self.bad("a name without an end"))?;
        let s = self.text(n)?;
        self.pos += 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> Result<()> {
        let cost = v.nodes();
        self.budget = self.budget.checked_sub(cost).ok_or_else(|| self.bad("builds more values than a state dict has"))?;
        if v.depth() > MAX_DEPTH {
            return Err(self.bad(format!("containers nested deeper than {MAX_DEPTH}")));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Checks that `v` may go inside a container on the stack (which must stay within
    /// `MAX_DEPTH`).
    fn nestable(&self, v: &Value) -> Result<()> {
        if v.depth() >= MAX_DEPTH {
            return Err(self.bad(format!("containers nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("pops an empty stack"));
        }
        Ok(self.stack.pop().expect("non-empty"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("reads an empty stack"));
        }
        Ok(self.stack.last_mut().expect("non-empty"))
    }

    /// The values pushed since the last `MARK`, which is removed.
    fn since_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, i: u32) -> Result<()> {
        let v = self.memo.get(&i).cloned().ok_or_else(|| self.bad(format!("memo {i} was never stored")))?;
        self.push(v)
    }

    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.budget = self.budget.checked_sub(v.nodes()).ok_or_else(|| self.bad("builds more values than a state dict has"))?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(self.bad(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return Err(self.bad("an integer wider than 64 bits"));
                    }
                    let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
                    let mut le = [fill; 8];
                    le[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(le)))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                b'q' => {
                    let i = self.u8()?.into();
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.bad("memo overflow"))?;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()?.into();
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b't' => {
                    let items = self.since_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    self.push(Value::Tuple(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.nestable(&v)?;
                    let Value::List(list) = self.top()? else { return Err(self.bad("APPEND to something that is not a list")) };
                    list.push(v);
                }
                b'e' => {
                    let items = self.since_mark()?;
                    items.iter().try_for_each(|v| self.nestable(v))?;
                    let Value::List(list) = self.top()? else { return Err(self.bad("APPENDS to something that is not a list")) };
                    list.extend(items);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.nestable(&k)?;
                    self.nestable(&v)?;
                    let Value::Dict(dict) = self.top()? else { return Err(self.bad("SETITEM on something that is not a dict")) };
                    dict.push((k, v));
                }
                b'u' => {
                    let items = self.since_mark()?;
                    items.iter().try_for_each(|v| self.nestable(v))?;
                    if items.len() % 2 != 0 {
                        return Err(self.bad("SETITEMS with an odd number of values"));
                    }
                    let Value::Dict(dict) = self.top()? else { return Err(self.bad("SETITEMS on something that is not a dict")) };
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.push((k, v));
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = Global::named(&module, &name).ok_or_else(|| PeftError::UnsafePickle { path: self.label.into(), global: format!("{module}.{name}") })?;
                    self.push(Value::Global(global))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else { return Err(self.bad("STACK_GLOBAL without two names")) };
                    let global = Global::named(&module, &name).ok_or_else(|| PeftError::UnsafePickle { path: self.label.into(), global: format!("{module}.{name}") })?;
                    self.push(Value::Global(global))?
                }
                b'Q' => {
                    let id = self.pop()?;
                    let storage = self.persistent(id)?;
                    self.push(Value::Storage(storage))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.push(value)?
                }
                b'b' => {
                    // BUILD: state set on an object; a state dict's `_metadata` is dropped.
                    self.pop()?;
                    self.top()?;
                }
                other => return Err(self.bad(format!("opcode 0x{other:02x}, which a state dict does not use"))),
            }
        }
    }

    /// `('storage', <storage type>, key, location, numel)`, torch's persistent id of a storage.
    fn persistent(&self, id: Value) -> Result<Storage> {
        match id {
            Value::Tuple(items) => match items.as_slice() {
                [Value::Str(kind), Value::Global(Global::Storage(dtype)), Value::Str(key), _, _] if kind == "storage" && !key.contains(['/', '\\']) && !key.contains("..") => {
                    Ok(Storage { dtype: *dtype, key: key.clone() })
                }
                _ => Err(self.bad("a persistent id that is not a tensor storage")),
            },
            _ => Err(self.bad("a persistent id that is not a tuple")),
        }
    }

    fn reduce(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else { return Err(self.bad("REDUCE arguments that are not a tuple")) };
        let dims = |v: &Value| -> Option<Vec<usize>> {
            match v {
                Value::Tuple(d) => d.iter().map(|x| if let Value::Int(i) = x { usize::try_from(*i).ok() } else { None }).collect(),
                _ => None,
            }
        };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::RebuildTensor) => match args.as_slice() {
                [Value::Storage(storage), Value::Int(offset), shape, stride, ..] => {
                    let (Some(shape), Some(stride), Ok(offset)) = (dims(shape), dims(stride), usize::try_from(*offset)) else {
                        return Err(self.bad("a tensor whose offset, shape or stride is not a tuple of sizes"));
                    };
                    if shape.len() != stride.len() {
                        return Err(self.bad("a tensor whose shape and stride differ in length"));
                    }
                    Ok(Value::Tensor(TensorView { storage: storage.clone(), offset, shape, stride }))
                }
                _ => Err(self.bad("_rebuild_tensor_v2 with arguments that are not (storage, offset, shape, stride, ...)")),
            },
            Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
                Some(tensor @ Value::Tensor(_)) => Ok(tensor),
                _ => Err(self.bad("_rebuild_parameter without a tensor")),
            },
            _ => Err(self.bad("REDUCE of something that is not a tensor rebuilder or OrderedDict()")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `torch.save` zip around `pickle` and `storages` (name, bytes).
    pub(crate) fn torch_zip(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", options).unwrap();
        zip.write_all(pickle).unwrap();
        for (name, bytes) in storages {
            zip.start_file(format!("archive/data/{name}"), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    /// `{name: tensor(storage '0', f32, offset, shape, stride)}` as protocol 2 writes it.
    fn state_dict_pickle(name: &str, offset: u8, shape: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'(', b'X'];
        p.extend((name.len() as u32).to_le_bytes());
        p.extend(name.as_bytes());
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK");
        p.push(offset);
        p.push(b'(');
        for d in shape {
            p.extend([b'K', *d]);
        }
        p.extend([b't', b'(']);
        for s in stride {
            p.extend([b'K', *s]);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtRu.");
        p
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn a_strided_view_is_read_in_row_major_order() {
        let storage = floats(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // The transpose of a [2, 3] matrix: shape [3, 2], stride [1, 3].
        let bytes = torch_zip(&state_dict_pickle("w", 0, &[3, 2], &[1, 3]), &[("0", storage)]);
        let t = read_state_dict(&bytes, "t.bin").unwrap();
        assert_eq!((t[0].key.as_str(), t[0].shape.clone(), t[0].values.clone()), ("w", vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
    }

    #[test]
    fn a_view_past_its_storage_is_a_typed_error() {
        let bytes = torch_zip(&state_dict_pickle("w", 2, &[2, 3], &[3, 1]), &[("0", floats(&[0.0; 6]))]);
        let err = read_state_dict(&bytes, "t.bin").unwrap_err();
        assert!(matches!(err, PeftError::TorchFile { .. }) && err.to_string().contains("past its storage"), "{err}");
    }

    #[test]
    fn a_pickle_that_names_any_other_callable_is_refused_unrun() {
        for (module, name) in [("os", "system"), ("builtins", "eval"), ("torch", "load"), ("collections", "defaultdict")] {
            let pickle = format!("\u{80}\u{2}c{module}\n{name}\nX\u{2}\0\0\0lsK\u{1}\u{86}R.");
            let bytes = torch_zip(&pickle.chars().map(|c| c as u8).collect::<Vec<_>>(), &[]);
            match read_state_dict(&bytes, "evil.bin") {
                Err(PeftError::UnsafePickle { global, .. }) => assert_eq!(global, format!("{module}.{name}")),
                other => panic!("{module}.{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn copies_of_copies_stop_at_the_budget() {
        // An empty list, then 40 rounds of "pair the last value with itself": 2^40 nodes if
        // copied naively.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let err = read_state_dict(&torch_zip(&p, &[]), "bomb.bin").unwrap_err();
        assert!(err.to_string().contains("more values than a state dict has") || err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn lists_nested_in_place_stop_at_the_depth_limit() {
        // 100,000 empty lists, each appended into the one below: nested that deep, dropping the
        // result would overflow the stack.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 100_000));
        p.extend(std::iter::repeat_n(b'a', 99_999));
        p.push(b'.');
        let err = read_state_dict(&torch_zip(&p, &[]), "deep.bin").unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn a_view_with_more_values_than_its_storage_is_a_typed_error() {
        // Shape [1000000] with stride 0 over one stored value.
        let mut p = state_dict_pickle("w", 0, &[1], &[0]);
        let at = p.windows(4).position(|w| w == [b'(', b'K', 1, b't']).unwrap();
        p.splice(at..at + 4, *b"(J\x40\x42\x0f\x00t");
        let err = read_state_dict(&torch_zip(&p, &[("0", floats(&[1.0]))]), "wide.bin").unwrap_err();
        assert!(err.to_string().contains("more values than its storage"), "{err}");
    }

    #[test]
    fn files_that_are_not_torch_zips_are_typed_errors() {
        for bytes in [&b"\x80\x02}q\x00."[..], b"", b"PK\x03\x04 truncated"] {
            assert!(matches!(read_state_dict(bytes, "x.bin"), Err(PeftError::TorchFile { .. })));
        }
    }
}
