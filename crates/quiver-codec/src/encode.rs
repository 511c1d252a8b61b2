//! Encoding of whole structures, for what is not pre-encoded.
//!
//! Measured on a 20-item, 14.6 KB feed page (`cargo bench -p quiver-benches --bench codec`,
//! one run): serde_json 20.6 µs, simd-json's serde-compatible serializer 24.2 µs (slower:
//! its serde path adds indirection this shape does not repay), simd-json-derive 11.2 µs,
//! splicing pre-encoded fragments 1.37 µs. So pages are spliced
//! ([`crate::fragment`]), and everything else goes through the code simd-json-derive
//! generates ([`encode`]), the fastest correct serializer here; [`encode_serde_json`] and
//! [`encode_simd_serde`] stay for the bench and the equivalence tests.

use serde::Serialize;

/// `value` as JSON bytes, with the code simd-json-derive generated for it (the analog of
/// Go's easyjson).
pub fn encode<T: simd_json_derive::Serialize>(value: &T) -> Vec<u8> {
    value.json_vec().expect("writing to a Vec cannot fail")
}

/// `value` as JSON bytes, with simd-json's serde-compatible serializer.
pub fn encode_simd_serde<T: Serialize>(value: &T) -> Vec<u8> {
    simd_json::to_vec(value).expect("wire types always serialize")
}

/// `value` as JSON bytes, with serde_json (the baseline).
pub fn encode_serde_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types always serialize")
}
