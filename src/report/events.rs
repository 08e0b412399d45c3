//! TensorBoard event files: scalars as TensorFlow's `Event` protocol-buffer messages
//! (`wall_time` 1, `step` 2, `file_version` 3, `summary` 5 → `Summary.value` 1 →
//! `Value { tag 1, simple_value 2 }`), encoded with rust-protobuf's coded stream, in TFRecord
//! framing: the data's length (u64 LE), its masked CRC-32C, the data, the data's masked CRC-32C.
//! A file starts with an event whose `file_version` is `brain.Event:2`, as TensorFlow's
//! `EventsWriter` writes it.

use anyhow::{Result, bail};
use protobuf::{CodedInputStream, CodedOutputStream};

/// A name TensorBoard recognises as an event file (it reads files whose names hold `tfevents`).
pub const FILE_NAME: &str = "events.out.tfevents.gateshift";

/// One scalar of an event file: its tag, step and value (and the wall time it was logged).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub value: f32,
    pub wall_time: f64,
}

/// The framed record every event file starts with.
pub fn file_version(wall_time: f64) -> Vec<u8> {
    let mut data = Vec::new();
    let mut os = CodedOutputStream::vec(&mut data);
    os.write_double(1, wall_time).and_then(|_| os.write_string(3, "brain.Event:2")).and_then(|_| os.flush()).ok();
    drop(os);
    frame(&data)
}

/// The framed record of one scalar.
pub fn scalar(s: &Scalar) -> Vec<u8> {
    let mut value = Vec::new();
    let mut os = CodedOutputStream::vec(&mut value);
    os.write_string(1, &s.tag).and_then(|_| os.write_float(2, s.value)).and_then(|_| os.flush()).ok();
    drop(os);
    let mut summary = Vec::new();
    let mut os = CodedOutputStream::vec(&mut summary);
    os.write_bytes(1, &value).and_then(|_| os.flush()).ok();
    drop(os);
    let mut event = Vec::new();
    let mut os = CodedOutputStream::vec(&mut event);
    os.write_double(1, s.wall_time)
        .and_then(|_| os.write_int64(2, s.step))
        .and_then(|_| os.write_bytes(5, &summary))
        .and_then(|_| os.flush())
        .ok();
    drop(os);
    frame(&event)
}

/// TFRecord framing of one record.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads the scalars of an event file's bytes, checking every record's framing and CRCs; a
/// torn last record (a writer killed mid-append) ends the file, anything else wrong is an
/// error naming the record's offset.
pub fn read(bytes: &[u8]) -> Result<Vec<Scalar>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 12 {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if masked_crc(&bytes[at..at + 8]) != u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes")) {
            bail!("event record at byte {at}: length CRC mismatch");
        }
        let Some(end) =
            usize::try_from(len).ok().and_then(|l| (at + 12).checked_add(l)).filter(|&e| e + 4 <= bytes.len())
        else {
            break;
        };
        let data = &bytes[at + 12..end];
        if masked_crc(data) != u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes")) {
            bail!("event record at byte {at}: data CRC mismatch");
        }
        decode_event(data, &mut out).map_err(|e| anyhow::anyhow!("event record at byte {at}: {e}"))?;
        at = end + 4;
    }
    Ok(out)
}

/// The scalars of one `Event` (none for the file-version event).
fn decode_event(data: &[u8], out: &mut Vec<Scalar>) -> protobuf::Result<()> {
    let (mut wall_time, mut step, mut summary) = (0.0, 0, None);
    let mut is = CodedInputStream::from_bytes(data);
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        match tag {
            9 => wall_time = is.read_double()?,
            16 => step = is.read_int64()?,
            42 => summary = Some(is.read_bytes()?),
            t => is.skip_field(wire_type(t))?,
        }
    }
    let Some(summary) = summary else { return Ok(()) };
    let mut is = CodedInputStream::from_bytes(&summary);
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        if tag != 10 {
            is.skip_field(wire_type(tag))?;
            continue;
        }
        let value = is.read_bytes()?;
        let (mut name, mut v) = (String::new(), None);
        let mut vs = CodedInputStream::from_bytes(&value);
        while let Some(t) = vs.read_raw_tag_or_eof()? {
            match t {
                10 => name = vs.read_string()?,
                21 => v = Some(vs.read_float()?),
                t => vs.skip_field(wire_type(t))?,
            }
        }
        if let Some(value) = v {
            out.push(Scalar { tag: name, step, value, wall_time });
        }
    }
    Ok(())
}

fn wire_type(tag: u32) -> protobuf::rt::WireType {
    protobuf::rt::WireType::new(tag & 7).unwrap_or(protobuf::rt::WireType::LengthDelimited)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFRecord's CRC is CRC-32C (Castagnoli; check value 0xE3069283), masked; TensorBoard's
    /// reader checking the mask is the opt-in tier (`scripts/tensorboard-check.sh`).
    #[test]
    fn crc_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn scalars_read_back_and_a_torn_tail_ends_the_file() {
        let mut bytes = file_version(1.5);
        let scalars: Vec<Scalar> = (0..5)
            .map(|i| Scalar {
                tag: format!("train/t{}", i % 2),
                step: i * 7 - 3,
                value: i as f32 * 0.25,
                wall_time: 2.0,
            })
            .collect();
        for s in &scalars {
            bytes.extend(scalar(s));
        }
        assert_eq!(read(&bytes).unwrap(), scalars);
        // Killed mid-append: the last record is cut; what came before is read.
        let torn = &bytes[..bytes.len() - 3];
        assert_eq!(read(torn).unwrap(), scalars[..4]);
        // A flipped bit is an error, not a wrong value.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 6] ^= 1;
        assert!(read(&bad).unwrap_err().to_string().contains("CRC"));
    }
}
