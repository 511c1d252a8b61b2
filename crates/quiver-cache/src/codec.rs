//! The Redis value format: a small versioned envelope around the encoded value. It is its
//! own boundary (not the API's JSON): an entry written by another format or schema
//! version, or bytes that do not decode, are a miss, never an error.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

const MAGIC: u8 = b'q';
/// Version of the envelope itself.
const FORMAT: u8 = 1;
const HEADER: usize = 5;
const TAG_ABSENT: u8 = 0;
const TAG_VALUE: u8 = 1;

/// Turns values into bytes and back. Decoding garbage returns `None`.
pub trait ValueCodec<V>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &V, out: &mut Vec<u8>);
    /// The value in `bytes`, or `None` when they are not one.
    fn decode(&self, bytes: &[u8]) -> Option<V>;
    /// Whether `value` may be cached at all. One that may not (say, built while a part
    /// of it failed to load) is handed to the lookups that asked and kept in neither tier.
    fn admit(&self, value: &V) -> bool {
        let _ = value;
        true
    }
}

/// serde_json, for any serde type: compact, debuggable with `redis-cli`, and never on
/// the L1 hit path (hits hand out the decoded value).
pub struct JsonCodec<V>(PhantomData<fn() -> V>);

impl<V> Default for JsonCodec<V> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<V> std::fmt::Debug for JsonCodec<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonCodec")
    }
}

impl<V: Serialize + DeserializeOwned + 'static> ValueCodec<V> for JsonCodec<V> {
    fn encode(&self, value: &V, out: &mut Vec<u8>) {
        serde_json::to_writer(out, value).expect("serializing to a Vec cannot fail");
    }

    fn decode(&self, bytes: &[u8]) -> Option<V> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Wraps `value` (or its absence) in the envelope of `schema`.
pub(crate) fn seal<V: 'static>(
    codec: &dyn ValueCodec<V>,
    schema: u16,
    value: Option<&V>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[MAGIC, FORMAT]);
    out.extend_from_slice(&schema.to_be_bytes());
    match value {
        Some(v) => {
            out.push(TAG_VALUE);
            codec.encode(v, &mut out);
        }
        None => out.push(TAG_ABSENT),
    }
    out
}

/// `Some(Some(v))` for a value, `Some(None)` for a cached absence, `None` when the bytes
/// are of another version or do not decode.
pub(crate) fn open<V: 'static>(
    codec: &dyn ValueCodec<V>,
    schema: u16,
    bytes: &[u8],
) -> Option<Option<V>> {
    if bytes.len() < HEADER || bytes[0] != MAGIC || bytes[1] != FORMAT {
        return None;
    }
    if u16::from_be_bytes([bytes[2], bytes[3]]) != schema {
        return None;
    }
    match bytes[4] {
        TAG_ABSENT if bytes.len() == HEADER => Some(None),
        TAG_VALUE => codec.decode(&bytes[HEADER..]).map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_absence_round_trip() {
        let c = JsonCodec::<Vec<u32>>::default();
        let v = vec![1, 2, 3];
        assert_eq!(open(&c, 7, &seal(&c, 7, Some(&v))), Some(Some(v)));
        assert_eq!(open(&c, 7, &seal(&c, 7, None)), Some(None));
    }

    #[test]
    fn other_versions_and_garbage_are_misses() {
        let c = JsonCodec::<Vec<u32>>::default();
        let sealed = seal(&c, 7, Some(&vec![1]));
        assert_eq!(open(&c, 8, &sealed), None, "another schema version");
        let mut old_format = sealed.clone();
        old_format[1] = 0;
        assert_eq!(open(&c, 7, &old_format), None, "another envelope version");
        assert_eq!(open(&c, 7, b"{\"legacy\":true}"), None);
        assert_eq!(open(&c, 7, b""), None);
        let mut bad = sealed;
        bad.truncate(HEADER + 1);
        assert_eq!(open(&c, 7, &bad), None, "truncated payload");
    }
}
