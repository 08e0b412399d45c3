//! Plain pickles of nested dicts of numpy arrays (how flax/JAX projects save their
//! variables with `pickle.dump`), read by a small interpreter that knows only the opcodes
//! such a file uses and only the three numpy globals that rebuild an array
//! (`_reconstruct`, `ndarray`, `dtype`). Anything else — any other global, any opcode that
//! could run code — is refused, so a crafted file cannot execute anything.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A float array read from the pickle, converted to f32, C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Debug)]
enum Global {
    Reconstruct,
    NdArray,
    Dtype,
}

#[derive(Clone, Debug)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    /// Index into the dict arena (dicts are mutated after being memoised).
    Dict(usize),
    Global(Global),
    /// Index into the dtype arena: a type code such as `<f4` (its byte order is set by a
    /// later BUILD, which must reach copies already memoised).
    Dtype(usize),
    /// `_reconstruct(ndarray, ...)` before its state.
    EmptyArray,
    Array(Array),
}

/// Reads every array of the pickle at `path`, keyed by its dict path joined with `/`
/// (`params/Conv3d_1a_7x7/Conv_0/kernel`).
pub fn read(path: &Path) -> Result<BTreeMap<String, Array>> {
    let bytes = crate::io::read_regular(path, "pickle")?;
    parse(&bytes).with_context(|| format!("{} is not a pickle of numpy arrays", path.display()))
}

pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Array>> {
    let mut vm = Vm { bytes, pos: 0, stack: Vec::new(), memo: BTreeMap::new(), dicts: Vec::new(), dtypes: Vec::new() };
    let root = vm.run()?;
    let mut out = BTreeMap::new();
    vm.flatten(&root, String::new(), &mut out)?;
    if out.is_empty() {
        bail!("the pickle holds no arrays");
    }
    Ok(out)
}

struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: BTreeMap<u32, Value>,
    dicts: Vec<Vec<(Value, Value)>>,
    dtypes: Vec<String>,
}

impl Vm<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else { bail!("truncated at byte {}", self.pos) };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| anyhow::anyhow!("stack underflow at byte {}", self.pos))
    }
    /// Pops everything above the topmost mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self.stack.iter().rposition(|v| matches!(v, Value::Mark));
        let Some(at) = at else { bail!("no mark on the stack at byte {}", self.pos) };
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn string(&mut self, n: usize) -> Result<Value> {
        let s = std::str::from_utf8(self.take(n)?).context("string is not UTF-8")?;
        Ok(Value::Str(s.to_string()))
    }
    fn tuple(&mut self, n: usize) -> Result<()> {
        if self.stack.len() < n {
            bail!("stack underflow at byte {}", self.pos);
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.stack.push(Value::Tuple(items));
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            bail!("odd number of dict items at byte {}", self.pos);
        }
        let Some(Value::Dict(d)) = self.stack.last() else { bail!("dict items without a dict at byte {}", self.pos) };
        let d = *d;
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            self.dicts[d].push((k, v));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            match self.u8()? {
                b'.' => return self.pop(),
                op => self.op(op, at)?,
            }
        }
    }

    /// One opcode other than STOP, read at byte `at`.
    fn op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    bail!("unsupported pickle protocol {proto}");
                }
            }
            0x95 => {
                self.take(8)?;
            }
            b'(' => self.stack.push(Value::Mark),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'K' | b'M' | b'J' | 0x8c | b'X' | b'C' | b'B' | 0x8e => self.scalar(op)?,
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            0x85 => self.tuple(1)?,
            0x86 => self.tuple(2)?,
            0x87 => self.tuple(3)?,
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            b'}' => {
                self.dicts.push(Vec::new());
                self.stack.push(Value::Dict(self.dicts.len() - 1));
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            0x94 | b'q' | b'r' | b'h' | b'j' => self.memo_op(op, at)?,
            0x93 => self.global(at)?,
            b'R' => self.reduce(at)?,
            b'b' => self.build(at)?,
            _ => bail!("unsupported pickle opcode 0x{op:02x} at byte {at}"),
        }
        Ok(())
    }

    /// The integer, string and bytes opcodes.
    fn scalar(&mut self, op: u8) -> Result<()> {
        let v = match op {
            b'K' => Value::Int(self.u8()?.into()),
            b'M' => Value::Int(u16::from_le_bytes(self.take(2)?.try_into()?).into()),
            b'J' => Value::Int(i32::from_le_bytes(self.take(4)?.try_into()?).into()),
            0x8c => {
                let n = self.u8()? as usize;
                self.string(n)?
            }
            b'X' => {
                let n = self.u32()? as usize;
                self.string(n)?
            }
            b'C' => {
                let n = self.u8()? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            b'B' => {
                let n = self.u32()? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            _ => {
                let n = usize::try_from(u64::from_le_bytes(self.take(8)?.try_into()?))?;
                Value::Bytes(self.take(n)?.to_vec())
            }
        };
        self.stack.push(v);
        Ok(())
    }

    /// MEMOIZE, PUT, LONG_PUT, GET, LONG_GET.
    fn memo_op(&mut self, op: u8, at: usize) -> Result<()> {
        let top = || anyhow::anyhow!("memo store on an empty stack at byte {at}");
        match op {
            0x94 => {
                let v = self.stack.last().cloned().ok_or_else(top)?;
                self.memo.insert(self.memo.len() as u32, v);
            }
            b'q' | b'r' => {
                let i = if op == b'q' { self.u8()? as u32 } else { self.u32()? };
                let v = self.stack.last().cloned().ok_or_else(top)?;
                self.memo.insert(i, v);
            }
            _ => {
                let i = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                let v = self.memo.get(&i).cloned().ok_or_else(|| anyhow::anyhow!("memo {i} unset at byte {at}"))?;
                self.stack.push(v);
            }
        }
        Ok(())
    }

    /// STACK_GLOBAL: only numpy's array-rebuild globals are known; anything else is refused.
    fn global(&mut self, at: usize) -> Result<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        let (Value::Str(module), Value::Str(name)) = (module, name) else {
            bail!("malformed global at byte {at}");
        };
        let g = match (module.as_str(), name.as_str()) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
            ("numpy", "ndarray") => Global::NdArray,
            ("numpy", "dtype") => Global::Dtype,
            _ => bail!("refusing to load global {module}.{name} (byte {at}): only numpy arrays are read"),
        };
        self.stack.push(Value::Global(g));
        Ok(())
    }

    /// REDUCE: an empty array or a dtype, nothing else.
    fn reduce(&mut self, at: usize) -> Result<()> {
        let args = self.pop()?;
        let func = self.pop()?;
        let v = match (func, args) {
            (Value::Global(Global::Reconstruct), Value::Tuple(a))
                if matches!(a.first(), Some(Value::Global(Global::NdArray))) =>
            {
                Value::EmptyArray
            }
            (Value::Global(Global::Dtype), Value::Tuple(a)) => match a.first() {
                Some(Value::Str(code)) => {
                    self.dtypes.push(format!("<{}", code.trim_start_matches(['<', '>', '=', '|'])));
                    Value::Dtype(self.dtypes.len() - 1)
                }
                _ => bail!("malformed dtype at byte {at}"),
            },
            (f, _) => bail!("refusing to call {f:?} at byte {at}"),
        };
        self.stack.push(v);
        Ok(())
    }

    /// BUILD: an array's or a dtype's state.
    fn build(&mut self, at: usize) -> Result<()> {
        let state = self.pop()?;
        let obj = self.pop()?;
        let v = match obj {
            Value::EmptyArray => {
                Value::Array(build_array(state, &self.dtypes).with_context(|| format!("array at byte {at}"))?)
            }
            Value::Dtype(d) => {
                self.dtypes[d] = build_dtype(&self.dtypes[d], state)?;
                Value::Dtype(d)
            }
            other => bail!("cannot set the state of {other:?} at byte {at}"),
        };
        self.stack.push(v);
        Ok(())
    }

    fn flatten(&self, v: &Value, prefix: String, out: &mut BTreeMap<String, Array>) -> Result<()> {
        match v {
            Value::Dict(d) => {
                for (k, child) in &self.dicts[*d] {
                    let Value::Str(k) = k else { bail!("dict key {k:?} under {prefix:?} is not a string") };
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
                    self.flatten(child, path, out)?;
                }
                Ok(())
            }
            Value::Array(a) => {
                out.insert(prefix, a.clone());
                Ok(())
            }
            other => bail!("{prefix}: expected a dict or an array, found {other:?}"),
        }
    }
}

/// `dtype.__setstate__`: `(version, byteorder, ...)`; the byte order decides how the data
/// is read. Returns the code with that order (`<f4`, `>f8`).
fn build_dtype(code: &str, state: Value) -> Result<String> {
    let Value::Tuple(s) = state else { bail!("malformed dtype state") };
    let order = match s.get(1) {
        Some(Value::Str(o)) => o.clone(),
        _ => bail!("malformed dtype state"),
    };
    let order = if order == ">" { ">" } else { "<" };
    Ok(format!("{order}{}", &code[1..]))
}

/// `ndarray.__setstate__`: `(version, shape, dtype, is_fortran, raw bytes)`.
fn build_array(state: Value, dtypes: &[String]) -> Result<Array> {
    let Value::Tuple(s) = state else { bail!("malformed array state") };
    let [_, Value::Tuple(shape), Value::Dtype(dtype), Value::Bool(fortran), Value::Bytes(raw)] = s.as_slice() else {
        bail!("malformed array state");
    };
    let shape: Vec<usize> = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n >= 0 => Ok(*n as usize),
            _ => bail!("malformed array shape"),
        })
        .collect::<Result<_>>()?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).context("array shape overflows")?;
    if *fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!("Fortran-order arrays are not supported");
    }
    let dtype = &dtypes[*dtype];
    let big = dtype.starts_with('>');
    let data: Vec<f32> = match &dtype[1..] {
        "f4" => floats::<4>(raw, count, |b| if big { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) })?,
        "f8" => floats::<8>(raw, count, |b| (if big { f64::from_be_bytes(b) } else { f64::from_le_bytes(b) }) as f32)?,
        other => bail!("unsupported array dtype {other} (float32/float64 only)"),
    };
    Ok(Array { shape, data })
}

fn floats<const N: usize>(raw: &[u8], count: usize, f: impl Fn([u8; N]) -> f32) -> Result<Vec<f32>> {
    if count.checked_mul(N) != Some(raw.len()) {
        bail!("array data has {} bytes, its shape needs {count} values of {N} bytes", raw.len());
    }
    Ok(raw.chunks_exact(N).map(|c| f(c.try_into().expect("N bytes"))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_str(out: &mut Vec<u8>, s: &str) {
        out.push(0x8c);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }

    /// `{"w": {"k": np.array([[1, 2, 3]], "<f4")}}` as protocol 4 writes it.
    fn sample(module: &str) -> Vec<u8> {
        let mut p = vec![0x80, 4, b'}', 0x94];
        short_str(&mut p, "w");
        p.extend_from_slice(&[b'}', 0x94]);
        short_str(&mut p, "k");
        short_str(&mut p, module);
        short_str(&mut p, "_reconstruct");
        p.push(0x93);
        short_str(&mut p, "numpy");
        short_str(&mut p, "ndarray");
        p.push(0x93);
        p.extend_from_slice(&[b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
        p.extend_from_slice(&[b'(', b'K', 1, b'K', 1, b'K', 3, 0x86]);
        short_str(&mut p, "numpy");
        short_str(&mut p, "dtype");
        p.push(0x93);
        short_str(&mut p, "f4");
        p.extend_from_slice(&[0x89, 0x88, 0x87, b'R', b'(', b'K', 3]);
        short_str(&mut p, "<");
        p.extend_from_slice(b"NNNJ");
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.push(b'J');
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.extend_from_slice(&[b'K', 0, b't', b'b', 0x89, b'C', 12]);
        for v in [1.0f32, 2.0, 3.0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(b"tbss.");
        p
    }

    #[test]
    fn reads_nested_dict_of_arrays() {
        let arrays = parse(&sample("numpy.core.multiarray")).unwrap();
        assert_eq!(arrays.len(), 1);
        assert_eq!(arrays["w/k"], Array { shape: vec![1, 3], data: vec![1.0, 2.0, 3.0] });
        // numpy 2 pickles name the module `numpy._core.multiarray`.
        assert_eq!(parse(&sample("numpy._core.multiarray")).unwrap()["w/k"].data, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn refuses_other_globals_and_truncation() {
        let err = format!("{:#}", parse(&sample("os")).unwrap_err());
        assert!(err.contains("refusing to load global os._reconstruct"), "{err}");
        let full = sample("numpy.core.multiarray");
        let err = format!("{:#}", parse(&full[..full.len() - 20]).unwrap_err());
        assert!(err.contains("truncated") || err.contains("array data"), "{err}");
    }

    #[test]
    fn corrupted_bytes_are_errors_not_panics() {
        use rand::{Rng, SeedableRng};
        let good = sample("numpy.core.multiarray");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            let cut = rng.random_range(0..=bytes.len());
            // Any outcome but a panic: the parse returns Ok or a described Err.
            let _ = parse(&bytes[..cut]);
        }
    }
}
