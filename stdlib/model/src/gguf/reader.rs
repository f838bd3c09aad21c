//! GGUF container parsing: header, metadata key/values, tensor infos and the
//! aligned data section. Every read is bounds-checked; malformed input
//! becomes a message naming the byte offset, never a panic.

use std::collections::BTreeMap;

/// GGUF magic, "GGUF" read as a little-endian u32.
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bound on counts read from the file, so a corrupt count cannot make
/// us allocate gigabytes before failing.
const MAX_COUNT: u64 = 1 << 28;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, for any integer type that is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, for float and integer types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description from the tensor-info table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: dims[0] is the fastest-varying (row length).
    pub dims: Vec<u64>,
    /// GGML type id.
    pub ggml_type: u32,
    /// Offset of the data relative to the data section.
    pub offset: u64,
}

/// A parsed GGUF file (borrowing the mapped bytes).
#[derive(Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            format!(
                "file truncated: reading {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.buf.len()
            )
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count of items that each take at least `min_item_bytes` in the
    /// file: a count the rest of the file cannot hold is an error before
    /// anything is allocated for it.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<u64, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > MAX_COUNT || n > left / min_item_bytes.max(1) {
            return Err(format!(
                "implausible {what} {n} at offset {at}: the {left} bytes after it hold at most {} (corrupt or truncated file?)",
                left / min_item_bytes.max(1)
            ));
        }
        Ok(n)
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| format!("{what} length {len} at offset {at} too large"))?;
        let bytes = self.take(len, what)?;
        // Token strings of some vocabularies hold invalid UTF-8 fragments;
        // keep them lossily rather than rejecting the file.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, String> {
        let what = format!("value of `{key}`");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => {
                let b = self.array::<1>(&what)?[0];
                if b > 1 {
                    return Err(format!(
                        "bool `{key}` has byte {b} at offset {}",
                        self.pos - 1
                    ));
                }
                Value::Bool(b == 1)
            }
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth > 4 {
                    return Err(format!("arrays nested too deeply in `{key}`"));
                }
                let elem = self.u32(&what)?;
                let n = self.count(&format!("array length of `{key}`"), min_value_bytes(elem))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(format!(
                    "unknown metadata value type {other} for `{key}` at offset {}",
                    self.pos - 4
                ))
            }
        })
    }
}

/// The fewest bytes a metadata value of type `ty` takes in the file.
fn min_value_bytes(ty: u32) -> u64 {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // the string's length
        9 => 4 + 8, // element type and length
        _ => 8,
    }
}

/// Parses the header, metadata and tensor infos of a GGUF file and checks
/// that every tensor's data lies inside the file.
pub fn parse(buf: &[u8]) -> Result<GgufFile, String> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>("the magic number")?;
    if &magic != MAGIC {
        return Err(format!(
            "bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")"
        ));
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "unsupported GGUF version {version} (supported: 2 and 3)"
        ));
    }
    // A tensor info is at least a name length, a dimension count, one
    // dimension, a type and an offset; a metadata entry a key length, a
    // type and a one-byte value.
    let n_tensors = c.count("tensor count", 8 + 4 + 8 + 4 + 8)?;
    let n_kv = c.count("metadata count", 8 + 4 + 1)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let ty = c.u32("a metadata type")?;
        let v = c.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let n_dims = c.u32(&format!("dimension count of `{name}`"))?;
        if n_dims == 0 || n_dims > 4 {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (GGUF allows 1 to 4)"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("dimensions of `{name}`"))?);
        }
        let ggml_type = c.u32(&format!("type of `{name}`"))?;
        let offset = c.u64(&format!("data offset of `{name}`"))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let alignment = match metadata.get("general.alignment") {
        Some(v) => v
            .as_u64()
            .filter(|a| *a > 0 && a.is_power_of_two())
            .ok_or_else(|| format!("general.alignment {v:?} is not a power of two"))?,
        None => DEFAULT_ALIGNMENT,
    };
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    Ok(GgufFile {
        version,
        metadata,
        tensors,
        data_start,
    })
}
