//! Bearer-token authentication (CONTRACT.md "Authentication"). Off unless a token
//! is configured; then the routes that read or change data need
//! `Authorization: Bearer <token>`, compared in constant time, and anything else
//! gets 401 with `WWW-Authenticate: Bearer` before the request is handled, so
//! nothing of it is stored or counted as events. `/health`, `/`, `/docs` and
//! `/openapi.json` stay open.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The configured token.
pub struct BearerToken(Box<[u8]>);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        BearerToken(token.as_bytes().into())
    }

    /// Whether the request carries this token. The comparison takes the same time
    /// whatever the bytes (only the length can differ).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        // The scheme is case-insensitive (RFC 7235); the token is not.
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
        });
        given.is_some_and(|given| bool::from(given.ct_eq(&self.0)))
    }
}

/// The routes a token guards (the guard's route labels).
pub fn protects(route: &str) -> bool {
    matches!(route, "/publish" | "/events" | "/stats" | "/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = BearerToken::new("s3cret");
        assert!(token.admits(&headers("Bearer s3cret")));
        assert!(token.admits(&headers("bearer s3cret")), "the scheme is case-insensitive");
        for wrong in
            ["Bearer s3cre", "Bearer S3CRET", "Bearer s3cret2", "Basic s3cret", "bearer", "s3cret", "Bearer "]
        {
            assert!(!token.admits(&headers(wrong)), "{wrong}");
        }
        assert!(!token.admits(&HeaderMap::new()));
        assert!(protects("/publish") && protects("/metrics") && !protects("/health") && !protects("other"));
    }
}
