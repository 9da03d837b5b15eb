//! Tokens: who may send spans and who may read them.
//!
//! A token is known by its SHA-256 only, unless it was given in a file (then its text is
//! kept too, for the Postgres listener's SCRAM, which needs the password itself). Tokens
//! are compared by hash in constant time, and neither a token nor its hash is ever put in
//! a log line, an error or a metric label. With no token configured, everything is open.

use std::fmt::{self, Write};

use base64::Engine;
use callwatch_storage::Counter;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Send spans over OTLP.
    Ingest,
    /// Read: the dashboard, the APIs, `/metrics` and Postgres.
    Read,
    Admin,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "ingest" => Ok(Self::Ingest),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope {other:?}: use \"ingest\", \"read\" or \"admin\""
            )),
        }
    }
}

/// One configured token.
#[derive(Clone)]
pub struct TokenSpec {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    /// The token itself, when it was given in a file.
    pub secret: Option<String>,
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl TokenSpec {
    /// A token given by its SHA-256 in hex, as `sha256sum` prints it.
    pub fn from_hash(name: &str, sha256_hex: &str, scopes: Vec<Scope>) -> Result<Self, String> {
        let hex = sha256_hex.trim();
        let bytes = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
            .ok_or_else(|| {
                format!("token {name:?}: sha256 must be 64 hex digits (`sha256sum` of the token)")
            })?;
        Ok(Self {
            name: name.to_string(),
            sha256: bytes.try_into().expect("32 bytes"),
            scopes,
            secret: None,
        })
    }

    /// A token given as text (the first line of a token file).
    pub fn from_secret(name: &str, secret: &str, scopes: Vec<Scope>) -> Result<Self, String> {
        if secret.is_empty() {
            return Err(format!("token {name:?} is empty"));
        }
        Ok(Self {
            name: name.to_string(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            scopes,
            secret: Some(secret.to_string()),
        })
    }

    fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// The listeners whose failed attempts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthListener {
    OtlpGrpc,
    OtlpHttp,
    Http,
    Postgres,
}

impl AuthListener {
    const ALL: [Self; 4] = [Self::OtlpGrpc, Self::OtlpHttp, Self::Http, Self::Postgres];

    fn label(self) -> &'static str {
        match self {
            Self::OtlpGrpc => "otlp_grpc",
            Self::OtlpHttp => "otlp_http",
            Self::Http => "http",
            Self::Postgres => "postgres",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that is not configured.
    Unauthenticated,
    /// A configured token without the scope.
    Forbidden,
}

/// The configured tokens, and the failed attempts by listener.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<TokenSpec>,
    /// By [`AuthListener`], then unauthenticated and forbidden.
    failures: [[Counter; 2]; 4],
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| &t.name))
            .finish()
    }
}

impl Tokens {
    pub fn new(tokens: Vec<TokenSpec>) -> Result<Self, String> {
        for (i, token) in tokens.iter().enumerate() {
            if token.name.is_empty() {
                return Err("a token needs a name".into());
            }
            if token.scopes.is_empty() {
                return Err(format!("token {:?} has no scopes", token.name));
            }
            if tokens[..i].iter().any(|t| t.name == token.name) {
                return Err(format!("two tokens are named {:?}", token.name));
            }
            if tokens[..i].iter().any(|t| t.sha256 == token.sha256) {
                return Err(format!(
                    "token {:?} is the same token as another one",
                    token.name
                ));
            }
        }
        Ok(Self {
            tokens,
            failures: Default::default(),
        })
    }

    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The name of the token `secret` if it has `scope`; nothing when auth is off. A
    /// refusal is counted for `listener`.
    pub fn check(
        &self,
        secret: Option<&str>,
        scope: Scope,
        listener: AuthListener,
    ) -> Result<Option<&str>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let result = match secret.and_then(|secret| self.find(secret)) {
            None => Err(Denied::Unauthenticated),
            Some(token) if !token.allows(scope) => Err(Denied::Forbidden),
            Some(token) => Ok(Some(token.name.as_str())),
        };
        if let Err(denied) = result {
            self.count_failure(listener, denied);
        }
        result
    }

    /// The token whose hash is that of `secret`. Every token is compared, each in constant
    /// time.
    fn find(&self, secret: &str) -> Option<&TokenSpec> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.sha256.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        found
    }

    /// The text of the token named `name` if it may read and was given in a file: the
    /// Postgres password of that user name.
    pub fn read_secret(&self, name: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|t| t.name == name && t.allows(Scope::Read))
            .and_then(|t| t.secret.as_deref())
    }

    pub fn count_failure(&self, listener: AuthListener, denied: Denied) {
        let listener = AuthListener::ALL
            .iter()
            .position(|l| *l == listener)
            .expect("every listener is in ALL");
        self.failures[listener][(denied == Denied::Forbidden) as usize].add(1);
    }

    pub fn render(&self, out: &mut String) {
        let name = "callwatch_auth_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests and connections refused for a missing or unknown token \
             (unauthenticated) or a token without the scope (forbidden), by listener."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (listener, counters) in AuthListener::ALL.iter().zip(&self.failures) {
            for (reason, counter) in ["unauthenticated", "forbidden"].iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{}\",reason=\"{reason}\"}} {}",
                    listener.label(),
                    counter.get()
                );
            }
        }
    }
}

/// The token of a request: `Authorization: Bearer <token>`, or HTTP Basic with the token as
/// password (any user name).
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    token_of_header(headers.get(header::AUTHORIZATION)?)
}

fn token_of_header(value: &HeaderValue) -> Option<String> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_user, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let hash: String = Sha256::digest(b"s3cret-reader")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Tokens::new(vec![
            TokenSpec::from_hash("grafana", &hash, vec![Scope::Read]).unwrap(),
            TokenSpec::from_secret("agents", "s3cret-agent", vec![Scope::Ingest]).unwrap(),
            TokenSpec::from_secret("ops", "s3cret-admin", vec![Scope::Admin]).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn scopes_are_checked_and_refusals_counted() {
        let tokens = tokens();
        let http = AuthListener::Http;
        assert_eq!(
            tokens.check(Some("s3cret-reader"), Scope::Read, http),
            Ok(Some("grafana"))
        );
        assert_eq!(
            tokens.check(Some("s3cret-reader"), Scope::Ingest, http),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            tokens.check(Some("s3cret-agent"), Scope::Ingest, AuthListener::OtlpGrpc),
            Ok(Some("agents"))
        );
        assert_eq!(
            tokens.check(Some("s3cret-admin"), Scope::Ingest, http),
            Ok(Some("ops"))
        );
        assert_eq!(
            tokens.check(Some("s3cret-reader "), Scope::Read, http),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            tokens.check(None, Scope::Read, http),
            Err(Denied::Unauthenticated)
        );
        let mut out = String::new();
        tokens.render(&mut out);
        assert!(out.contains(
            "callwatch_auth_failures_total{listener=\"http\",reason=\"unauthenticated\"} 2"
        ));
        assert!(
            out.contains("callwatch_auth_failures_total{listener=\"http\",reason=\"forbidden\"} 1")
        );
        assert!(!out.contains("s3cret") && !format!("{tokens:?}").contains("s3cret"));
    }

    #[test]
    fn no_tokens_is_open() {
        let open = Tokens::default();
        assert_eq!(open.check(None, Scope::Admin, AuthListener::Http), Ok(None));
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&headers).as_deref(), Some("abc"));
        // grafana:abc:def — the password may hold colons.
        let basic = base64::engine::general_purpose::STANDARD.encode("grafana:abc:def");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("abc:def"));
        headers.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(presented_token(&headers), None);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(TokenSpec::from_hash("a", "abc", vec![Scope::Read]).is_err());
        assert!(TokenSpec::from_secret("a", "", vec![Scope::Read]).is_err());
        let twice = || TokenSpec::from_secret("a", "x", vec![Scope::Read]).unwrap();
        assert!(Tokens::new(vec![twice(), twice()]).is_err());
        let no_scope = TokenSpec::from_secret("b", "y", vec![]).unwrap();
        assert!(Tokens::new(vec![no_scope]).is_err());
        assert!(Scope::parse("write").is_err());
    }
}
