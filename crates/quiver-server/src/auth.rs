//! Bearer tokens: HS256 JWTs whose `sub` is the viewer's user id and whose `exp` is
//! required. Minting lives here too, for `quiver token` and tests.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quiver_model::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

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
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Auth { secret: <redacted> }")
    }
}

impl Auth {
    /// Tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
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
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Scheme)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Scheme);
        }
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        data.claims
            .sub
            .parse::<i64>()
            .map(UserId)
            .map_err(|_| AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_everything_else_is_refused() {
        let auth = Auth::new(b"secret");
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
        let foreign = Auth::new(b"other").mint(UserId(42), Duration::from_secs(60));
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
            &EncodingKey::from_secret(b"secret"),
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
            &EncodingKey::from_secret(b"secret"),
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
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(
            auth.viewer(format!("Bearer {words}").as_bytes()),
            Err(AuthError::Invalid)
        );
    }
}
