//! Bearer tokens: HS256 JWTs whose `sub` is the viewer's user id and whose `exp` is
//! required. Minting lives here too, for `quiver token` and tests.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quiver_model::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds past `exp` a token is still accepted (clock skew between issuer and server).
const LEEWAY_SECS: u64 = 5;
/// Verified tokens remembered, so that a client's next request skips the signature check.
const VERIFIED_TOKENS: usize = 16_384;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The shortest HS256 secret accepted: as long as the hash (RFC 7518, section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// A signing secret shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token signing secret must be at least {MIN_SECRET_BYTES} bytes, not {0}")]
pub struct WeakSecret(pub usize);

/// Why a request's credentials were refused. Messages are shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs a bearer token")]
    Missing,
    #[error("authorization must be `Bearer <token>`")]
    Scheme,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

/// Verifies (and mints) tokens with one shared secret.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    /// Tokens whose signature checked out, by the whole token text, with their subject
    /// and expiry. Only valid tokens enter, the size is bounded, and the expiry is still
    /// checked on every request, so a hit answers exactly what verifying again would.
    verified: Arc<quick_cache::sync::Cache<Box<str>, (UserId, u64)>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Auth { secret: <redacted> }")
    }
}

impl Auth {
    /// Tokens signed with `secret`, which must be at least [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        })
    }

    /// A token for `user` valid for `ttl`.
    pub fn mint(&self, user: UserId, ttl: Duration) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(ttl)
            .as_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The viewer named by an `Authorization` header value, if it holds a valid token.
    pub fn viewer(&self, header: &[u8]) -> Result<UserId, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.viewer_at(header, now)
    }

    /// [`Auth::viewer`] at `now` (seconds since the epoch) for tokens verified before.
    fn viewer_at(&self, header: &[u8], now: u64) -> Result<UserId, AuthError> {
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Scheme)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Scheme);
        }
        let token = token.trim();
        if let Some((viewer, exp)) = self.verified.get(token) {
            return if now > exp.saturating_add(LEEWAY_SECS) {
                Err(AuthError::Expired)
            } else {
                Ok(viewer)
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let viewer = data
            .claims
            .sub
            .parse::<i64>()
            .ok()
            // Ids are positive; 0 stands for "anonymous" inside the engine.
            .filter(|id| *id > 0)
            .map(UserId)
            .ok_or(AuthError::Invalid)?;
        self.verified
            .insert(token.into(), (viewer, data.claims.exp));
        Ok(viewer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a unit test secret of 32 bytes!!";

    #[test]
    fn short_secrets_and_non_positive_subjects_are_refused() {
        assert_eq!(Auth::new(b"short").unwrap_err(), WeakSecret(5));
        let auth = Auth::new(SECRET).unwrap();
        for sub in ["0", "-7", "x"] {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &Claims {
                    sub: sub.into(),
                    exp: u64::MAX / 2,
                },
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert_eq!(
                auth.viewer(format!("Bearer {token}").as_bytes()),
                Err(AuthError::Invalid),
                "sub {sub}"
            );
        }
    }

    #[test]
    fn a_remembered_token_still_expires_and_nothing_else_rides_on_it() {
        let auth = Auth::new(SECRET).unwrap();
        let token = auth.mint(UserId(7), Duration::from_secs(60));
        let header = format!("Bearer {token}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(auth.viewer_at(header.as_bytes(), now), Ok(UserId(7)));
        assert_eq!(auth.verified.len(), 1, "verified once, remembered");
        assert_eq!(auth.viewer_at(header.as_bytes(), now + 60), Ok(UserId(7)));
        assert_eq!(
            auth.viewer_at(header.as_bytes(), now + 60 + LEEWAY_SECS + 1),
            Err(AuthError::Expired),
            "the expiry is checked on every request, cached or not"
        );
        // Same claims, another signature: not the remembered token.
        let (body, _sig) = token.rsplit_once('.').unwrap();
        let forged = format!("Bearer {body}.AAAA");
        assert_eq!(auth.viewer(forged.as_bytes()), Err(AuthError::Invalid));
        assert_eq!(auth.verified.len(), 1, "refused tokens are not remembered");
    }

    #[test]
    fn minted_tokens_verify_and_everything_else_is_refused() {
        let auth = Auth::new(SECRET).unwrap();
        let token = auth.mint(UserId(42), Duration::from_secs(60));
        assert_eq!(
            auth.viewer(format!("Bearer {token}").as_bytes()),
            Ok(UserId(42))
        );
        assert_eq!(
            auth.viewer(format!("bearer {token}").as_bytes()),
            Ok(UserId(42))
        );
        assert_eq!(auth.viewer(token.as_bytes()), Err(AuthError::Scheme));
        assert_eq!(
            auth.viewer(format!("Basic {token}").as_bytes()),
            Err(AuthError::Scheme)
        );
        assert_eq!(auth.viewer(b"Bearer abc.def.ghi"), Err(AuthError::Invalid));
        let foreign = Auth::new(b"another secret, also 32 bytes long")
            .unwrap()
            .mint(UserId(42), Duration::from_secs(60));
        assert_eq!(
            auth.viewer(format!("Bearer {foreign}").as_bytes()),
            Err(AuthError::Invalid)
        );
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "42".into(),
                exp: 1_000_000,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            auth.viewer(format!("Bearer {old}").as_bytes()),
            Err(AuthError::Expired)
        );
        // No `exp`: refused, as is a non-numeric subject.
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp { sub: "42".into() },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            auth.viewer(format!("Bearer {no_exp}").as_bytes()),
            Err(AuthError::Invalid)
        );
        let words = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: u64::MAX / 2,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            auth.viewer(format!("Bearer {words}").as_bytes()),
            Err(AuthError::Invalid)
        );
    }
}
