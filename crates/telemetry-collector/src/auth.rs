//! The report token: read from a file, compared in constant time.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use hyper::header::HeaderValue;
use subtle::ConstantTimeEq;

/// The shortest token accepted: 32 characters (128 bits of hex, say).
pub const MIN_TOKEN_LEN: usize = 32;

/// The secret that opens reports.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("--token-file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The token is too short or holds characters other than visible ASCII.
    #[error(
        "--token-file {path}: the token must be at least {MIN_TOKEN_LEN} visible ASCII characters on one line (for example the output of `openssl rand -hex 32`)"
    )]
    Weak {
        /// The file.
        path: String,
    },
}

impl Token {
    /// A token from text: surrounding whitespace is ignored.
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        let visible = text.bytes().all(|byte| byte.is_ascii_graphic());
        (visible && text.len() >= MIN_TOKEN_LEN).then(|| Token(Arc::from(text.as_bytes())))
    }

    /// Reads the token from a file.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        Token::new(&text).ok_or(TokenError::Weak { path: shown })
    }

    /// Whether a token given by a client is this one, in constant time.
    pub fn matches(&self, given: &[u8]) -> bool {
        // The length is not secret (it is at least MIN_TOKEN_LEN); the bytes are.
        self.0.len() == given.len() && bool::from(self.0.ct_eq(given))
    }

    /// Whether an `Authorization` header carries this token, as `Bearer TOKEN` or as the
    /// password of HTTP Basic (any user name), which is what a browser sends.
    pub fn authorizes(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.and_then(|value| value.to_str().ok()) else {
            return false;
        };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.matches(credentials.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return false;
            };
            let password = decoded
                .iter()
                .position(|&byte| byte == b':')
                .map_or(&[][..], |colon| &decoded[colon + 1..]);
            return self.matches(password);
        }
        false
    }

    /// The token as text, to print once in `--dev` mode.
    pub(crate) fn reveal(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let token = Token::new(SECRET).unwrap();
        let header = |text: String| HeaderValue::from_str(&text).unwrap();
        assert!(token.authorizes(Some(&header(format!("Bearer {SECRET}")))));
        assert!(token.authorizes(Some(&header(format!("bearer  {SECRET} ")))));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{SECRET}"));
        assert!(token.authorizes(Some(&header(format!("Basic {basic}")))));
        assert!(!token.authorizes(None));
        assert!(!token.authorizes(Some(&header(format!("Bearer {SECRET}x")))));
        assert!(!token.authorizes(Some(&header(format!("Bearer {}", &SECRET[1..])))));
        assert!(!token.authorizes(Some(&header(SECRET.to_owned()))));
        let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{SECRET}:nope"));
        assert!(!token.authorizes(Some(&header(format!("Basic {wrong}")))));
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::new("short").is_none());
        assert!(Token::new(&format!("{SECRET} with spaces")).is_none());
        assert!(Token::new(&format!("  {SECRET}\n")).is_some());
    }
}
