//! Opaque keyset cursors: `(created_at, id)` of the last item served, signed so a client
//! can neither forge a position nor hand back garbage that reaches a query.

use crate::entities::PostRef;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// A position in a list ordered by `(created_at DESC, id DESC)`: the next page holds the
/// rows strictly after it in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Creation time of the last row served.
    pub created_at: DateTime<Utc>,
    /// Id of the last row served; breaks ties on `created_at`.
    pub id: i64,
}

impl Cursor {
    /// The cursor that continues after `last`.
    pub fn after(last: &PostRef) -> Self {
        Self {
            created_at: last.created_at,
            id: last.id.0,
        }
    }

    /// Whether a row at `(created_at, id)` comes after this cursor in feed order.
    pub fn precedes(&self, created_at: DateTime<Utc>, id: i64) -> bool {
        (created_at, id) < (self.created_at, self.id)
    }
}

/// A position in the discovery feed: which window of recent posts it shuffles (the rows
/// at or after `anchor`, in feed order), with which seed, and the `(rank, id)` of the last
/// item served in the shuffled order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiscoverCursor {
    /// The window starts strictly after this position.
    pub anchor: Cursor,
    pub seed: u64,
    pub rank: u64,
    pub id: i64,
}

/// Why a cursor string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not base64url, or not the length of any cursor version.
    #[error("cursor is malformed")]
    Malformed,
    /// A version this build does not know.
    #[error("cursor version {0} is not supported")]
    UnknownVersion(u8),
    /// The signature does not match: the cursor was altered or made by someone else.
    #[error("cursor signature does not match")]
    BadSignature,
    /// The timestamp is outside the representable range.
    #[error("cursor timestamp is out of range")]
    OutOfRange,
    /// A valid cursor of another list (a discovery cursor given to a keyset list, or the
    /// other way round).
    #[error("cursor belongs to a different list")]
    WrongKind,
}

impl crate::HasErrorCode for CursorError {
    fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidInput
    }
}

/// Keyset cursors.
const VERSION: u8 = 1;
/// Discovery cursors.
const DISCOVER_VERSION: u8 = 2;
const TAG_LEN: usize = 12;
const BODY_LEN: usize = 1 + 8 + 8;
const TOKEN_LEN: usize = BODY_LEN + TAG_LEN;
const DISCOVER_BODY_LEN: usize = 1 + 8 * 5;
/// No token of any version is longer than this many characters.
const MAX_TOKEN_CHARS: usize = 96;

/// Encodes and verifies cursors with a secret key (HMAC-SHA256, truncated to 96 bits).
///
/// Replicas that serve the same clients must share the key, or one replica's cursors are
/// rejected by the next.
#[derive(Clone)]
pub struct CursorCodec {
    mac: Hmac<Sha256>,
}

impl CursorCodec {
    /// A codec signing with `key`.
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(key).expect("hmac accepts keys of any length"),
        }
    }

    /// The opaque, URL-safe token for `cursor`.
    pub fn encode(&self, cursor: &Cursor) -> String {
        let mut body = [0u8; BODY_LEN];
        body[0] = VERSION;
        body[1..9].copy_from_slice(&cursor.created_at.timestamp_micros().to_be_bytes());
        body[9..17].copy_from_slice(&cursor.id.to_be_bytes());
        self.sign(&body)
    }

    /// The cursor in `token`, or why it is not one of ours.
    pub fn decode(&self, token: &str) -> Result<Cursor, CursorError> {
        let raw = self.verify(token, VERSION, BODY_LEN)?;
        cursor_at(&raw[1..17])
    }

    /// The opaque token for a discovery position.
    pub fn encode_discover(&self, cursor: &DiscoverCursor) -> String {
        let mut body = [0u8; DISCOVER_BODY_LEN];
        body[0] = DISCOVER_VERSION;
        body[1..9].copy_from_slice(&cursor.anchor.created_at.timestamp_micros().to_be_bytes());
        body[9..17].copy_from_slice(&cursor.anchor.id.to_be_bytes());
        body[17..25].copy_from_slice(&cursor.seed.to_be_bytes());
        body[25..33].copy_from_slice(&cursor.rank.to_be_bytes());
        body[33..41].copy_from_slice(&cursor.id.to_be_bytes());
        self.sign(&body)
    }

    /// The discovery position in `token`, or why it is not one of ours.
    pub fn decode_discover(&self, token: &str) -> Result<DiscoverCursor, CursorError> {
        let raw = self.verify(token, DISCOVER_VERSION, DISCOVER_BODY_LEN)?;
        let word = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        Ok(DiscoverCursor {
            anchor: cursor_at(&raw[1..17])?,
            seed: word(17),
            rank: word(25),
            id: word(33) as i64,
        })
    }

    fn sign(&self, body: &[u8]) -> String {
        let tag = self.tag(body);
        let mut buf = Vec::with_capacity(body.len() + TAG_LEN);
        buf.extend_from_slice(body);
        buf.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// The signed body of `token` if it is a genuine token of `version`.
    fn verify(&self, token: &str, version: u8, body_len: usize) -> Result<Vec<u8>, CursorError> {
        // Reject long input before decoding it, so garbage costs nothing.
        if token.len() > MAX_TOKEN_CHARS {
            return Err(CursorError::Malformed);
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| CursorError::Malformed)?;
        let known = match raw.first() {
            Some(&VERSION) => BODY_LEN,
            Some(&DISCOVER_VERSION) => DISCOVER_BODY_LEN,
            Some(&other) if raw.len() == TOKEN_LEN => {
                return Err(CursorError::UnknownVersion(other));
            }
            _ => return Err(CursorError::Malformed),
        };
        if raw.len() != known + TAG_LEN {
            return Err(CursorError::Malformed);
        }
        let mut mac = self.mac.clone();
        mac.update(&raw[..known]);
        mac.verify_truncated_left(&raw[known..])
            .map_err(|_| CursorError::BadSignature)?;
        if raw[0] != version || known != body_len {
            return Err(CursorError::WrongKind);
        }
        raw.truncate(known);
        Ok(raw)
    }

    fn tag(&self, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// The `(created_at, id)` in 16 big-endian bytes.
fn cursor_at(raw: &[u8]) -> Result<Cursor, CursorError> {
    let micros = i64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
    let id = i64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
    let created_at = DateTime::from_timestamp_micros(micros).ok_or(CursorError::OutOfRange)?;
    Ok(Cursor { created_at, id })
}

impl fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorCodec { key: <redacted> }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PostId;
    use chrono::TimeZone;

    fn sample() -> Cursor {
        Cursor::after(&PostRef {
            id: PostId(1234567),
            created_at: Utc.timestamp_micros(1_763_000_000_123_456).unwrap(),
        })
    }

    #[test]
    fn round_trips_with_microsecond_precision() {
        let codec = CursorCodec::new(b"k");
        let c = sample();
        assert_eq!(codec.decode(&codec.encode(&c)), Ok(c));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let codec = CursorCodec::new(b"k");
        let token = codec.encode(&sample());
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[byte] ^= 1 << bit;
                let err = codec.decode(&URL_SAFE_NO_PAD.encode(&bad)).unwrap_err();
                assert!(
                    matches!(
                        err,
                        CursorError::BadSignature | CursorError::UnknownVersion(_)
                    ),
                    "byte {byte} bit {bit}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn truncated_padded_and_random_tokens_are_malformed() {
        let codec = CursorCodec::new(b"k");
        let token = codec.encode(&sample());
        for bad in [
            "",
            "x",
            &token[..token.len() - 1],
            &token[..10],
            "!!!!not-base64!!!!",
            &format!("{token}AAAA"),
            &"A".repeat(1000),
        ] {
            assert_eq!(codec.decode(bad), Err(CursorError::Malformed), "{bad:?}");
        }
        // Random bytes of the right length fail the signature check.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..TOKEN_LEN)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            assert!(codec.decode(&URL_SAFE_NO_PAD.encode(&junk)).is_err());
        }
    }

    #[test]
    fn a_cursor_signed_with_another_key_is_rejected() {
        let token = CursorCodec::new(b"one").encode(&sample());
        assert_eq!(
            CursorCodec::new(b"two").decode(&token),
            Err(CursorError::BadSignature)
        );
    }

    #[test]
    fn precedes_orders_by_time_then_id() {
        let c = sample();
        assert!(c.precedes(c.created_at, c.id - 1));
        assert!(!c.precedes(c.created_at, c.id));
        assert!(!c.precedes(c.created_at, c.id + 1));
        assert!(c.precedes(c.created_at - chrono::Duration::microseconds(1), i64::MAX));
    }

    fn discover_sample() -> DiscoverCursor {
        DiscoverCursor {
            anchor: sample(),
            seed: u64::MAX - 7,
            rank: 1 << 63,
            id: -5,
        }
    }

    #[test]
    fn discovery_cursors_round_trip_and_are_not_keyset_cursors() {
        let codec = CursorCodec::new(b"k");
        let d = discover_sample();
        let token = codec.encode_discover(&d);
        assert_eq!(codec.decode_discover(&token), Ok(d));
        assert_eq!(codec.decode(&token), Err(CursorError::WrongKind));
        let keyset = codec.encode(&sample());
        assert_eq!(codec.decode_discover(&keyset), Err(CursorError::WrongKind));
        assert_eq!(
            CursorCodec::new(b"other").decode_discover(&token),
            Err(CursorError::BadSignature)
        );
    }

    #[test]
    fn every_flipped_bit_of_a_discovery_cursor_is_rejected() {
        let codec = CursorCodec::new(b"k");
        let raw = URL_SAFE_NO_PAD
            .decode(codec.encode_discover(&discover_sample()))
            .unwrap();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    codec
                        .decode_discover(&URL_SAFE_NO_PAD.encode(&bad))
                        .is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }
}
