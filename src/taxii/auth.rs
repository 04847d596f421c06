//! Who may read what on `sightline taxii serve`.
//!
//! Credentials are HTTP Basic (one user) and bearer tokens, each token for
//! every collection or for one. With none configured the server is open;
//! with any, a request without acceptable credentials gets 401. Secrets are
//! compared in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq as _;

use super::store::Collection;

/// What a bearer token may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every collection.
    All,
    /// One collection.
    Only(Collection),
}

/// The credentials the server accepts.
#[derive(Clone, Default)]
pub struct AuthConfig {
    basic: Option<(String, String)>,
    tokens: Vec<(String, Scope)>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("basic_user", &self.basic.as_ref().map(|(user, _)| user))
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// What an authenticated request may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(Scope);

impl Access {
    /// Whether the request may read `collection`.
    pub fn can_read(&self, collection: Collection) -> bool {
        match self.0 {
            Scope::All => true,
            Scope::Only(only) => only == collection,
        }
    }
}

/// Why a request is not let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization` header.
    #[error("authentication required")]
    Missing,
    /// An `Authorization` header that names no configured credential.
    #[error("the credentials are not valid")]
    Invalid,
}

impl AuthConfig {
    /// Accepts HTTP Basic with `user` and `password`, for every collection.
    pub fn with_basic(mut self, user: String, password: String) -> AuthConfig {
        self.basic = Some((user, password));
        self
    }

    /// Accepts `Bearer token` for what `scope` allows.
    pub fn with_token(mut self, token: String, scope: Scope) -> AuthConfig {
        self.tokens.push((token, scope));
        self
    }

    /// Whether any credential is configured (else the server is open).
    pub fn is_enabled(&self) -> bool {
        self.basic.is_some() || !self.tokens.is_empty()
    }

    /// The `WWW-Authenticate` challenges for a 401.
    pub fn challenges(&self) -> Vec<&'static str> {
        let mut challenges = Vec::new();
        if self.basic.is_some() {
            challenges.push("Basic realm=\"sightline\", charset=\"UTF-8\"");
        }
        if !self.tokens.is_empty() {
            challenges.push("Bearer realm=\"sightline\"");
        }
        challenges
    }

    /// Checks the `Authorization` header of a request.
    ///
    /// # Errors
    ///
    /// Returns [`Denied`] when credentials are configured and the header is
    /// missing or names none of them.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Access, Denied> {
        if !self.is_enabled() {
            return Ok(Access(Scope::All));
        }
        let header = authorization.ok_or(Denied::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| Denied::Invalid)?;
        let (scheme, value) = header.trim().split_once(' ').ok_or(Denied::Invalid)?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = self.basic.as_ref().ok_or(Denied::Invalid)?;
            let decoded = STANDARD.decode(value).map_err(|_| Denied::Invalid)?;
            let expected = format!("{user}:{password}");
            if bool::from(decoded.ct_eq(expected.as_bytes())) {
                return Ok(Access(Scope::All));
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            // Every token is compared, so the time taken does not tell
            // which one came close.
            let mut found = None;
            for (token, scope) in &self.tokens {
                if bool::from(value.as_bytes().ct_eq(token.as_bytes())) {
                    found = found.or(Some(*scope));
                }
            }
            if let Some(scope) = found {
                return Ok(Access(scope));
            }
        }
        Err(Denied::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::default()
            .with_basic("analyst".into(), "s3cret".into())
            .with_token("all-token".into(), Scope::All)
            .with_token("sightings-token".into(), Scope::Only(Collection::Sightings))
    }

    #[test]
    fn open_without_credentials() {
        let open = AuthConfig::default();
        assert_eq!(open.check(None), Ok(Access(Scope::All)));
        assert!(open.challenges().is_empty());
    }

    #[test]
    fn basic_and_tokens() {
        let config = config();
        let basic = format!("Basic {}", STANDARD.encode("analyst:s3cret"));
        assert_eq!(config.check(Some(basic.as_bytes())), Ok(Access(Scope::All)));
        let wrong = format!("Basic {}", STANDARD.encode("analyst:guess"));
        assert_eq!(config.check(Some(wrong.as_bytes())), Err(Denied::Invalid));
        assert_eq!(config.check(None), Err(Denied::Missing));
        assert_eq!(config.check(Some(b"Bearer nope")), Err(Denied::Invalid));
        assert_eq!(config.check(Some(b"Basic !!!")), Err(Denied::Invalid));
        assert_eq!(config.check(Some(b"garbage")), Err(Denied::Invalid));
        assert_eq!(config.check(Some(&[0xff, 0xfe])), Err(Denied::Invalid));

        let scoped = config.check(Some(b"bearer sightings-token"));
        assert!(scoped.is_ok_and(
            |a| a.can_read(Collection::Sightings) && !a.can_read(Collection::Indicators)
        ));
        assert_eq!(
            config.check(Some(b"Bearer all-token")),
            Ok(Access(Scope::All))
        );
    }
}
