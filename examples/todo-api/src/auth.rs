//! Bearer-token authentication: an HS256 JWT whose `tenant` claim names the tenant.
//!
//! Unlike the original example, the token is verified: its signature with `JWT_SECRET`, its
//! `exp` (and `nbf` when present), and its `aud` when `JWT_AUDIENCE` is set.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Why a request's credentials were refused. Every variant answers 401; none carries the
/// token, so logging one never leaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header; send `Authorization: Bearer <token>`")]
    MissingHeader,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm than HS256.
    #[error("token algorithm not accepted; tokens are signed with HS256")]
    WrongAlgorithm,
    /// The signature does not match `JWT_SECRET`.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` is missing or does not name `JWT_AUDIENCE`.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim (`exp`, or `aud` when an audience is configured) is missing.
    #[error("token lacks the `{0}` claim")]
    MissingClaim(String),
    /// No `tenant` claim, or not a string.
    #[error("token has no string `tenant` claim")]
    NoTenant,
    /// A `tenant` claim that cannot be a tenant id (empty, NUL, too long).
    #[error("token's tenant is not a valid tenant id: {0}")]
    InvalidTenant(tenants_core::InvalidTenantId),
    /// Any other verification failure.
    #[error("invalid token")]
    Invalid,
}

/// The claims the service reads; `exp`, `nbf` and `aud` are checked by the validation.
#[derive(Debug, Deserialize)]
struct TenantClaim {
    #[serde(default)]
    tenant: Option<serde_json::Value>,
}

/// Claims of the tokens [`JwtAuth::issue`] makes.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    tenant: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Verifies bearer tokens (and issues the demo ones).
pub struct JwtAuth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Verifies HS256 tokens signed with `secret`; requires `aud` to contain `audience`
    /// when one is given. `exp` is required; the default leeway of 60 s applies.
    pub fn new(secret: &[u8], audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp"]);
            }
        }
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            audience: audience.map(str::to_string),
        }
    }

    /// The tenant of a valid `token`.
    pub fn verify(&self, token: &str) -> Result<tenants_core::Tenant, AuthError> {
        let data = jsonwebtoken::decode::<TenantClaim>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
                _ => AuthError::Invalid,
            })?;
        match data.claims.tenant {
            Some(serde_json::Value::String(tenant)) => {
                tenants_core::Tenant::new(tenant).map_err(AuthError::InvalidTenant)
            }
            _ => Err(AuthError::NoTenant),
        }
    }

    /// A token for `tenant`, valid for `ttl`, with this verifier's audience.
    pub fn issue(
        &self,
        tenant: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = IssuedClaims {
            sub: "todo-api demo",
            tenant,
            exp: (now + ttl).as_secs(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }
}

/// The tenant named by the request's bearer token: the counterpart of the original's
/// `Tenant_T`, and where [`crate::db::Db`] takes its tenant from.
///
/// Extracting it does no database work, so a request with bad credentials is answered 401
/// before any connection is checked out. It also records the tenant in the request's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub tenants_core::Tenant);

impl tenants_core::TenantId for Tenant {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.0.as_str())
    }
}

impl<S> FromRequestParts<S> for Tenant
where
    S: Send + Sync,
    Arc<JwtAuth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<JwtAuth>::from_ref(state);
        let result = bearer_token(parts).and_then(|token| auth.verify(token));
        match result {
            Ok(tenant) => {
                tracing::Span::current().record("tenant", tenant.as_str());
                Ok(Tenant(tenant))
            }
            Err(reason) => {
                tracing::debug!(%reason, "credentials refused");
                Err(ApiError::Unauthorized(reason))
            }
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingHeader)?;
    let value = header.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test-secret";

    fn sign(claims: serde_json::Value, secret: &[u8], algorithm: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn issued_tokens_verify() {
        let auth = JwtAuth::new(SECRET, None);
        let token = auth.issue("acme", Duration::from_secs(60)).expect("issue");
        assert_eq!(
            auth.verify(&token).map(|t| t.to_string()),
            Ok("acme".into())
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let auth = JwtAuth::new(SECRET, None);
        let exp = in_an_hour();
        let cases = [
            ("not-a-jwt".to_string(), AuthError::Malformed),
            (
                sign(
                    serde_json::json!({"tenant": "acme", "exp": exp}),
                    b"other",
                    Algorithm::HS256,
                ),
                AuthError::BadSignature,
            ),
            (
                sign(
                    serde_json::json!({"tenant": "acme", "exp": exp}),
                    SECRET,
                    Algorithm::HS512,
                ),
                AuthError::WrongAlgorithm,
            ),
            (
                sign(
                    serde_json::json!({"tenant": "acme", "exp": exp - 7200}),
                    SECRET,
                    Algorithm::HS256,
                ),
                AuthError::Expired,
            ),
            (
                sign(
                    serde_json::json!({"tenant": "acme"}),
                    SECRET,
                    Algorithm::HS256,
                ),
                AuthError::MissingClaim("exp".into()),
            ),
            (
                sign(serde_json::json!({"exp": exp}), SECRET, Algorithm::HS256),
                AuthError::NoTenant,
            ),
            (
                sign(
                    serde_json::json!({"tenant": 7, "exp": exp}),
                    SECRET,
                    Algorithm::HS256,
                ),
                AuthError::NoTenant,
            ),
            (
                sign(
                    serde_json::json!({"tenant": "", "exp": exp}),
                    SECRET,
                    Algorithm::HS256,
                ),
                AuthError::InvalidTenant(tenants_core::InvalidTenantId::Empty),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(auth.verify(&token), Err(expected));
        }
    }

    #[test]
    fn audience_is_checked_only_when_configured() {
        let exp = in_an_hour();
        let with_aud = sign(
            serde_json::json!({"tenant": "acme", "exp": exp, "aud": "todo"}),
            SECRET,
            Algorithm::HS256,
        );
        let without_aud = sign(
            serde_json::json!({"tenant": "acme", "exp": exp}),
            SECRET,
            Algorithm::HS256,
        );
        let open = JwtAuth::new(SECRET, None);
        assert!(open.verify(&with_aud).is_ok());
        assert!(open.verify(&without_aud).is_ok());

        let strict = JwtAuth::new(SECRET, Some("todo"));
        assert!(strict.verify(&with_aud).is_ok());
        assert_eq!(
            strict.verify(&without_aud),
            Err(AuthError::MissingClaim("aud".into()))
        );
        let other = JwtAuth::new(SECRET, Some("billing"));
        assert_eq!(other.verify(&with_aud), Err(AuthError::WrongAudience));
        let issued = strict
            .issue("acme", Duration::from_secs(60))
            .expect("issue");
        assert!(strict.verify(&issued).is_ok());
    }
}
