//! A reader for PyTorch's legacy (pre-zip, before 1.6) checkpoint format, which
//! candle cannot read: four pickles (magic number, protocol version, system info,
//! the object with storages as persistent ids), a pickle listing the storage keys,
//! then each storage as a little-endian u64 element count and its raw bytes.
//!
//! Only what state dicts need is understood: a small pickle machine for protocol
//! 2-4 opcodes, `OrderedDict`, `torch._utils._rebuild_tensor_v2` and float/long
//! storages. Every read is bounds-checked; malformed input is an error, never a panic.

use std::collections::HashMap;

const MAGIC: i64 = 0x1950_a86a_20f9_469c_fc6c_u128 as i64;

/// A tensor read from a checkpoint: f32 values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A storage reference: (key, dtype name, element count).
    Storage(String, String, usize),
    Tensor {
        storage: String,
        dtype: String,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    /// An object we do not need (kept so the stack stays consistent).
    Opaque,
    Mark,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn err<T>(message: impl Into<String>) -> Result<T, String> {
    Err(message.into())
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("truncated checkpoint")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| "truncated")?,
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "truncated")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "truncated")?,
        ))
    }
    fn line(&mut self) -> Result<String, String> {
        let start = self.pos;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line in pickle")?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.bytes[start..start + len]).into_owned())
    }

    /// Runs one pickle to its STOP and returns the value.
    fn pickle(&mut self) -> Result<Value, String> {
        let mut stack: Vec<Value> = Vec::new();
        let mut memo: HashMap<u32, Value> = HashMap::new();
        let pop = |stack: &mut Vec<Value>| {
            stack
                .pop()
                .ok_or_else(|| "pickle stack underflow".to_string())
        };
        let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
            let at = stack
                .iter()
                .rposition(|v| *v == Value::Mark)
                .ok_or("pickle MARK missing")?;
            let items = stack.split_off(at + 1);
            stack.pop();
            Ok(items)
        };
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return pop(&mut stack),
                b'(' => stack.push(Value::Mark),
                b'N' => stack.push(Value::None),
                0x88 => stack.push(Value::Bool(true)),
                0x89 => stack.push(Value::Bool(false)),
                b'J' => stack.push(Value::Int(self.u32()? as i32 as i64)),
                b'K' => stack.push(Value::Int(self.u8()? as i64)),
                b'M' => stack.push(Value::Int(self.u16()? as i64)),
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 16 {
                        return err("integer too long");
                    }
                    let mut v: i128 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= (*byte as i128) << (8 * i);
                    }
                    if n > 0 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    stack.push(Value::Int(v as i64));
                }
                b'G' => stack.push(Value::Float(f64::from_be_bytes(
                    self.take(8)?.try_into().map_err(|_| "truncated")?,
                ))),
                b'X' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Str(
                        String::from_utf8_lossy(self.take(n)?).into_owned(),
                    ));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Str(
                        String::from_utf8_lossy(self.take(n)?).into_owned(),
                    ));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Bytes(self.take(n)?.to_vec()));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Bytes(self.take(n)?.to_vec()));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(Value::Global(module, name));
                }
                b')' => stack.push(Value::Tuple(Vec::new())),
                0x85 => {
                    let a = pop(&mut stack)?;
                    stack.push(Value::Tuple(vec![a]));
                }
                0x86 => {
                    let b = pop(&mut stack)?;
                    let a = pop(&mut stack)?;
                    stack.push(Value::Tuple(vec![a, b]));
                }
                0x87 => {
                    let c = pop(&mut stack)?;
                    let b = pop(&mut stack)?;
                    let a = pop(&mut stack)?;
                    stack.push(Value::Tuple(vec![a, b, c]));
                }
                b't' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::Tuple(items));
                }
                b']' => stack.push(Value::List(Vec::new())),
                b'}' => stack.push(Value::Dict(Vec::new())),
                b'a' => {
                    let v = pop(&mut stack)?;
                    if let Some(Value::List(l)) = stack.last_mut() {
                        l.push(v);
                    }
                }
                b'e' => {
                    let items = pop_mark(&mut stack)?;
                    if let Some(Value::List(l)) = stack.last_mut() {
                        l.extend(items);
                    }
                }
                b's' => {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    if let Some(Value::Dict(d)) = stack.last_mut() {
                        d.push((k, v));
                    }
                }
                b'u' => {
                    let items = pop_mark(&mut stack)?;
                    if let Some(Value::Dict(d)) = stack.last_mut() {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    memo.insert(i, stack.last().cloned().ok_or("BINPUT on an empty stack")?);
                }
                b'r' => {
                    let i = self.u32()?;
                    memo.insert(
                        i,
                        stack
                            .last()
                            .cloned()
                            .ok_or("LONG_BINPUT on an empty stack")?,
                    );
                }
                0x94 => {
                    let i = memo.len() as u32;
                    memo.insert(i, stack.last().cloned().ok_or("MEMOIZE on an empty stack")?);
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    stack.push(memo.get(&i).cloned().ok_or("BINGET of an unknown memo")?);
                }
                b'j' => {
                    let i = self.u32()?;
                    stack.push(
                        memo.get(&i)
                            .cloned()
                            .ok_or("LONG_BINGET of an unknown memo")?,
                    );
                }
                b'Q' => {
                    let id = pop(&mut stack)?;
                    stack.push(storage_of(id)?);
                }
                b'R' | 0x81 => {
                    let args = pop(&mut stack)?;
                    let func = pop(&mut stack)?;
                    stack.push(reduce(func, args)?);
                }
                b'b' => {
                    pop(&mut stack)?; // BUILD state (e.g. an OrderedDict's _metadata): not needed
                }
                other => {
                    return err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn storage_of(id: Value) -> Result<Value, String> {
    // ('storage', torch.FloatStorage, key, location, size[, view metadata])
    match id {
        Value::Tuple(items) if items.len() >= 5 => match (&items[1], &items[2], &items[4]) {
            (Value::Global(_, dtype), Value::Str(key), Value::Int(size)) if *size >= 0 => {
                Ok(Value::Storage(key.clone(), dtype.clone(), *size as usize))
            }
            _ => err("unexpected storage reference"),
        },
        _ => err("unexpected persistent id"),
    }
}

fn ints(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => err("expected a tuple of sizes"),
            })
            .collect(),
        _ => err("expected a tuple"),
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    match (&func, &args) {
        (Value::Global(m, n), _) if m == "collections" && n == "OrderedDict" => {
            Ok(Value::Dict(Vec::new()))
        }
        (Value::Global(m, n), Value::Tuple(a))
            if m == "torch._utils" && n == "_rebuild_tensor_v2" && a.len() >= 4 =>
        {
            let Value::Storage(key, dtype, _) = &a[0] else {
                return err("a tensor without storage");
            };
            let Value::Int(offset) = a[1] else {
                return err("a tensor offset that is not an integer");
            };
            Ok(Value::Tensor {
                storage: key.clone(),
                dtype: dtype.clone(),
                offset: offset.max(0) as usize,
                shape: ints(&a[2])?,
                stride: ints(&a[3])?,
            })
        }
        _ => Ok(Value::Opaque),
    }
}

/// Reads every tensor of a legacy checkpoint's state dict, by name, in file order.
/// Integer tensors (batch-norm counters) are skipped.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, TorchTensor)>, String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.pickle()? != Value::Int(MAGIC) {
        return err("not a legacy PyTorch checkpoint (wrong magic number; zip checkpoints load with candle)");
    }
    match r.pickle()? {
        Value::Int(1001) => {}
        other => return err(format!("unsupported legacy protocol version {other:?}")),
    }
    r.pickle()?; // system info
    let object = r.pickle()?;
    let Value::List(keys) = r.pickle()? else {
        return err("no storage key list");
    };
    let Value::Dict(entries) = object else {
        return err("the checkpoint is not a state dict");
    };
    // Storages follow in key-list order.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut dtypes: HashMap<String, String> = HashMap::new();
    let storage_types: HashMap<String, String> = entries
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Tensor { storage, dtype, .. } => Some((storage.clone(), dtype.clone())),
            _ => None,
        })
        .collect();
    for key in keys {
        let Value::Str(key) = key else {
            return err("a storage key that is not a string");
        };
        let count = r.u64()? as usize;
        // A storage no tensor uses is still in the file: read it as bytes to skip it.
        let dtype = storage_types
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "ByteStorage".into());
        let size = match dtype.as_str() {
            "FloatStorage" | "IntStorage" => 4,
            "LongStorage" | "DoubleStorage" => 8,
            "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
            "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
            other => return err(format!("unsupported storage type {other}")),
        };
        let data = r
            .take(count.checked_mul(size).ok_or("storage too large")?)?
            .to_vec();
        dtypes.insert(key.clone(), dtype);
        storages.insert(key, data);
    }
    let mut out = Vec::new();
    for (name, value) in entries {
        let (
            Value::Str(name),
            Value::Tensor {
                storage,
                offset,
                shape,
                stride,
                ..
            },
        ) = (name, value)
        else {
            continue;
        };
        if dtypes.get(&storage).map(String::as_str) != Some("FloatStorage") {
            continue;
        }
        let raw = storages
            .get(&storage)
            .ok_or_else(|| format!("tensor `{name}` names a missing storage"))?;
        let floats: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n);
        // Gather through the strides (most are contiguous; this handles views too).
        let mut index = vec![0usize; shape.len()];
        for _ in 0..n {
            let at = offset + index.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
            data.push(
                *floats
                    .get(at)
                    .ok_or_else(|| format!("tensor `{name}` reaches past its storage"))?,
            );
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out.push((name, TorchTensor { shape, data }));
    }
    Ok(out)
}
