//! Query strings and path ids, parsed strictly: unknown, repeated or malformed
//! parameters are a 400 naming the parameter.

use super::*;

/// A request refused before it reaches the engine.
pub(super) struct Reject(pub(super) ProblemType, pub(super) String);

impl Reject {
    pub(super) fn response(self) -> Response<Body> {
        respond::problem(self.0, self.1)
    }
}

/// The query parameters of a list request.
pub(super) struct Query {
    pub(super) limit: u32,
    pub(super) cursor: Option<String>,
    pub(super) seed: Option<u64>,
    pub(super) status: Option<OrderStatus>,
}

impl Query {
    /// Parses `raw`, refusing unknown, repeated and malformed parameters.
    pub(super) fn parse(
        raw: Option<&str>,
        allowed: &[&str],
        config: &ServerConfig,
    ) -> Result<Self, Reject> {
        let mut q = Self {
            limit: config.default_limit,
            cursor: None,
            seed: None,
            status: None,
        };
        let mut seen: Vec<String> = Vec::new();
        let bad = |detail: String| Reject(ProblemType::InvalidParameter, detail);
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(bad(if allowed.is_empty() {
                    format!("unknown parameter `{name}`: this endpoint takes none")
                } else {
                    format!(
                        "unknown parameter `{name}`; this endpoint takes {}",
                        allowed.join(", ")
                    )
                }));
            }
            if seen.iter().any(|s| *s == name) {
                return Err(bad(format!("parameter `{name}` is given more than once")));
            }
            seen.push(name.to_string());
            match name.as_ref() {
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=config.max_limit).contains(l))
                        .ok_or_else(|| {
                            bad(format!(
                                "`limit` must be a whole number from 1 to {}",
                                config.max_limit
                            ))
                        })?;
                }
                "cursor" => q.cursor = Some(value.into_owned()),
                "seed" => {
                    q.seed = Some(value.parse().map_err(|_| {
                        bad("`seed` must be a whole number from 0 to 18446744073709551615".into())
                    })?);
                }
                "status" => {
                    q.status = Some(value.parse().map_err(|_| {
                        let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                        bad(format!("`status` must be one of {}", all.join(", ")))
                    })?);
                }
                _ => unreachable!("only allowed names get here"),
            }
        }
        Ok(q)
    }
}

/// The `{id}` of the path as a positive integer.
pub(super) fn path_id(id: &str) -> Result<i64, Reject> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Reject(
            ProblemType::InvalidParameter,
            format!("the id in the path must be a positive whole number, not `{id}`"),
        )
    })
}
