//! Encoding of whole structures, for what is not pre-encoded.
//!
//! Measured on a 20-item feed page (`cargo bench -p quiver-benches --bench codec`):
//! splicing fragments beats both serializers by far, so pages are spliced. For the rest
//! (single posts, profiles, orders, errors), [`encode`] uses simd-json's serde-compatible
//! serializer, which the bench shows at least as fast as serde_json on these shapes.
//! simd-json-derive is not used: it supports only part of serde's attributes and needs a
//! second derive on every wire type for a gain the fragments already exceed.

use serde::Serialize;

/// `value` as JSON bytes, with simd-json's serializer.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    simd_json::to_vec(value).expect("wire types always serialize")
}

/// `value` as JSON bytes, with serde_json (the baseline the bench compares against).
pub fn encode_serde_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types always serialize")
}

/// `value` as JSON bytes, with the code simd-json-derive generated for it (the analog of
/// Go's easyjson), for the comparison in the bench.
pub fn encode_derived<T: simd_json_derive::Serialize>(value: &T) -> Vec<u8> {
    value.json_vec().expect("writing to a Vec cannot fail")
}
