//! Keys and stored values shared by the durable stores (sled and redb): order-preserving key
//! parts, instants as sortable bytes, and the record codec wrapped in the store's error type,
//! so both stores lay records out the same way and report bad bytes the same way.

use jiff::Timestamp;
use uuid::Uuid;

use super::codec::Stored;
use super::{HistoryRecord, Result, StoreError};

pub(super) fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

/// Builds an order-preserving key: fixed-width big-endian numbers, and strings escaped and
/// terminated so that no string's encoding is a prefix of another's (`0x00` becomes
/// `0x00 0xFF`, the end is `0x00 0x01`), which also keeps string order.
pub(super) struct Key(Vec<u8>);

impl Key {
    /// A key that starts with a one-byte kind (sled keeps every kind in one tree).
    pub(super) fn new(kind: u8) -> Self {
        let mut bytes = Vec::with_capacity(40);
        bytes.push(kind);
        Key(bytes)
    }
    /// A key without a kind byte (redb keeps each kind in its own table).
    pub(super) fn empty() -> Self {
        Key(Vec::with_capacity(40))
    }
    pub(super) fn id(mut self, id: Uuid) -> Self {
        self.0.extend_from_slice(id.as_bytes());
        self
    }
    pub(super) fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(super) fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(super) fn str(mut self, s: &str) -> Self {
        for &byte in s.as_bytes() {
            self.0.push(byte);
            if byte == 0 {
                self.0.push(0xFF);
            }
        }
        self.0.extend_from_slice(&[0, 1]);
        self
    }
    pub(super) fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A name and key as they appear inside subscription and message keys.
pub(super) fn topic(name: &str, key: &str) -> Vec<u8> {
    Key::empty().str(name).str(key).into_bytes()
}

/// An instant as 16 bytes that sort like the instant: nanoseconds since the epoch, sign bit
/// flipped so earlier (even negative) instants sort first.
pub(super) fn time_bytes(at: Timestamp) -> [u8; 16] {
    ((at.as_nanosecond() as u128) ^ (1 << 127)).to_be_bytes()
}

pub(super) fn read_time(bytes: &[u8], what: &str) -> Result<Timestamp> {
    let raw: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {} bytes, not 16", bytes.len())))?;
    let nanos = (u128::from_be_bytes(raw) ^ (1 << 127)) as i128;
    Timestamp::from_nanosecond(nanos)
        .map_err(|e| StoreError::Corrupt(format!("{what}: not an instant: {e}")))
}

pub(super) fn read_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(raw))
}

pub(super) fn encode<T: Stored>(what: &str, record: &T) -> Result<Vec<u8>> {
    record
        .to_bytes()
        .map_err(|e| io(format!("cannot encode {what}: {e}")))
}

pub(super) fn decode<T: Stored>(what: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    T::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what} at key {}: {e}", show(key))))
}

/// A key as readable text for error messages.
pub(super) fn show(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// The history lines of one instance written by one batch, as one value: each line a
/// big-endian u32 length, then the encoded line. Both stores' cost is per key written, and a
/// step of an instance typically writes several lines at once.
pub(super) fn encode_history(lines: &[HistoryRecord]) -> Result<Vec<u8>> {
    let mut value = Vec::new();
    for line in lines {
        let bytes = encode("history line", line)?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| io(format!("a history line of {} bytes", bytes.len())))?;
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(&bytes);
    }
    Ok(value)
}

/// Decodes a value written by `encode_history` (found at `key`) into `lines`.
pub(super) fn decode_history(
    key: &[u8],
    value: &[u8],
    lines: &mut Vec<HistoryRecord>,
) -> Result<()> {
    let mut rest = value;
    while !rest.is_empty() {
        let corrupt = || StoreError::Corrupt(format!("history lines at key {}", show(key)));
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        lines.push(decode("history line", key, &tail[..len])?);
        rest = &tail[len..];
    }
    Ok(())
}
