//! Response compression: which encoding a client accepts, and encoding a body with it.
//! zstd is preferred over gzip when both are accepted (smaller and cheaper at the levels
//! used; see the `server` bench); both run at fast levels, since bodies are compressed
//! per request.

use std::io::Write as _;

/// A content coding the service can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The encoding to use for an `Accept-Encoding` value: zstd, else gzip, honouring `q=0`.
pub fn choose(accept: &str) -> Option<Encoding> {
    let mut gzip = false;
    let mut zstd = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match name.to_ascii_lowercase().as_str() {
            "zstd" => zstd = true,
            "gzip" | "x-gzip" => gzip = true,
            "*" => {
                zstd = true;
                gzip = true;
            }
            _ => {}
        }
    }
    if zstd {
        Some(Encoding::Zstd)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// `body` compressed with `encoding` at a fast level; `None` if the encoder failed.
pub fn encode(body: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Zstd => zstd::bulk::compress(body, 1).ok(),
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::fast(),
            );
            enc.write_all(body).ok()?;
            enc.finish().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_chosen_by_preference_and_refusals_count() {
        assert_eq!(choose("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(choose("gzip"), Some(Encoding::Gzip));
        assert_eq!(choose("zstd;q=0, gzip;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(choose("identity"), None);
        assert_eq!(choose("gzip;q=0"), None);
        assert_eq!(choose("*"), Some(Encoding::Zstd));
    }
}
