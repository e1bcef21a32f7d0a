//! Tenant ids and the one security-critical function of the crate: turning an id into a
//! SQL string literal.

use std::borrow::Cow;
use std::fmt;

use crate::registry::TenantSqlType;

/// The longest tenant id accepted, in bytes. Ids are keys, not documents: the bound keeps
/// every begin statement small and rejects absurd input before it reaches the server.
pub const MAX_TENANT_ID_BYTES: usize = 1024;

/// Why a tenant id was rejected. Nothing is sent to the database for a rejected id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenantId {
    /// The empty string means "no tenant" to the policies, so it is never a tenant.
    #[error("tenant id is empty")]
    Empty,
    /// PostgreSQL text cannot hold NUL.
    #[error("tenant id contains a NUL byte at byte {position}")]
    ContainsNul {
        /// Byte offset of the first NUL.
        position: usize,
    },
    /// Longer than [`MAX_TENANT_ID_BYTES`].
    #[error("tenant id is {len} bytes long; the limit is {MAX_TENANT_ID_BYTES} bytes")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
    },
    /// Not a value of the tenant columns' type ([`crate::Config::tenant_type`]: the one the
    /// marked tables share, or the one set): the policy's cast would fail inside the
    /// transaction instead.
    #[error("tenant id is not a valid {}", .expected.pg_name())]
    WrongType {
        /// The tenant columns' type.
        expected: TenantSqlType,
    },
}

/// A value that identifies a tenant: `&str`, `String`, `i32`, `i64` or `uuid::Uuid`.
///
/// The value is stored in the tenant setting as text and cast by the policy to the tenant
/// column's type.
pub trait TenantId {
    /// The id as the text stored in the tenant setting.
    fn tenant_text(&self) -> Cow<'_, str>;
}

impl TenantId for str {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
impl TenantId for String {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
impl TenantId for i32 {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}
impl TenantId for i64 {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}
impl TenantId for uuid::Uuid {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.hyphenated().to_string())
    }
}
impl TenantId for Tenant {
    fn tenant_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.0)
    }
}
impl<T: TenantId + ?Sized> TenantId for &T {
    fn tenant_text(&self) -> Cow<'_, str> {
        (**self).tenant_text()
    }
}

/// A validated tenant id: non-empty, NUL-free, at most [`MAX_TENANT_ID_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(String);

impl Tenant {
    /// Validates `id`.
    ///
    /// ```
    /// use tenants_core::{InvalidTenantId, Tenant};
    /// assert_eq!(Tenant::new("acme")?.as_str(), "acme");
    /// assert_eq!(Tenant::new(42_i64)?.as_str(), "42");
    /// assert_eq!(Tenant::new(""), Err(InvalidTenantId::Empty));
    /// # Ok::<(), InvalidTenantId>(())
    /// ```
    pub fn new(id: impl TenantId) -> Result<Self, InvalidTenantId> {
        let text = id.tenant_text();
        if text.is_empty() {
            return Err(InvalidTenantId::Empty);
        }
        if let Some(position) = text.find('\0') {
            return Err(InvalidTenantId::ContainsNul { position });
        }
        if text.len() > MAX_TENANT_ID_BYTES {
            return Err(InvalidTenantId::TooLong { len: text.len() });
        }
        Ok(Self(text.into_owned()))
    }

    /// Validates `id` as a value of `sql_type` and stores it in the form PostgreSQL's
    /// cast accepts (an integer without sign or spaces, a hyphenated lower-case UUID).
    ///
    /// ```
    /// use tenants_core::registry::TenantSqlType;
    /// use tenants_core::{InvalidTenantId, Tenant};
    /// let id = Tenant::of_type("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", TenantSqlType::Uuid)?;
    /// assert_eq!(id.as_str(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    /// assert_eq!(
    ///     Tenant::of_type("2147483648", TenantSqlType::Int4),
    ///     Err(InvalidTenantId::WrongType { expected: TenantSqlType::Int4 })
    /// );
    /// # Ok::<(), InvalidTenantId>(())
    /// ```
    pub fn of_type(id: impl TenantId, sql_type: TenantSqlType) -> Result<Self, InvalidTenantId> {
        let tenant = Self::new(id)?;
        let wrong = InvalidTenantId::WrongType { expected: sql_type };
        let canonical = match sql_type {
            TenantSqlType::Text | TenantSqlType::VarChar => return Ok(tenant),
            TenantSqlType::Int4 => tenant.0.parse::<i32>().map_err(|_| wrong)?.to_string(),
            TenantSqlType::Int8 => tenant.0.parse::<i64>().map_err(|_| wrong)?.to_string(),
            TenantSqlType::Uuid => uuid::Uuid::try_parse(&tenant.0)
                .map_err(|_| wrong)?
                .hyphenated()
                .to_string(),
        };
        Ok(Self(canonical))
    }

    /// The id as stored in the tenant setting.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a value of the tenant column's Rust type (`uuid::Uuid`, `i32`, `i64`):
    /// a tenant checked against that type (see [`crate::Config::tenant_type`]) always
    /// parses.
    ///
    /// ```
    /// use tenants_core::registry::TenantSqlType;
    /// use tenants_core::Tenant;
    /// let tenant = Tenant::of_type("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", TenantSqlType::Uuid)?;
    /// let id: uuid::Uuid = tenant.parse().expect("checked as a uuid");
    /// assert_eq!(id.to_string(), tenant.as_str());
    /// # Ok::<(), tenants_core::InvalidTenantId>(())
    /// ```
    pub fn parse<V: std::str::FromStr>(&self) -> Result<V, V::Err> {
        self.0.parse()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders `value` as an escape-string literal `E'...'` made of printable ASCII only.
///
/// The `E` form means the same whatever `standard_conforming_strings` says: backslash is
/// always the escape character. Quotes are doubled (never `\'`, which `backslash_quote`
/// may refuse), backslashes doubled, and every other character outside printable ASCII is
/// written as a Unicode escape (`\u00e9`, `\U0001f600`), so the literal is the same bytes
/// in every client encoding: no multibyte character of SJIS, BIG5, GBK or GB18030 can
/// swallow a backslash or a quote of it. (PostgreSQL accepts Unicode escapes above U+007F
/// only in a UTF-8 database; elsewhere the server refuses such an id, never misreads it.)
/// The value must be NUL-free (a [`Tenant`] always is); PostgreSQL text cannot hold NUL.
pub(crate) fn escape_literal(value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('\'');
    out
}

/// Renders `name` as a quoted identifier `"..."`.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Renders `value` as a standard string literal `'...'` (quotes doubled), for names in
/// generated migration SQL, which runs with `standard_conforming_strings` on.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_and_backslashes() {
        assert_eq!(escape_literal("acme"), "E'acme'");
        assert_eq!(escape_literal(r"a'b\c"), r"E'a''b\\c'");
        assert_eq!(escape_literal("';--"), "E''';--'");
        assert_eq!(
            escape_literal("\t\u{7f}é\u{1F600}"),
            r"E'\u0009\u007f\u00e9\U0001f600'"
        );
        // The SJIS attack of issue 15: every byte ASCII, the quote doubled.
        let sjis = escape_literal("\u{c1}\\'; SET LOCAL x = $$acme$$; --");
        assert_eq!(sjis, r"E'\u00c1\\''; SET LOCAL x = $$acme$$; --'");
        assert!(sjis.is_ascii());
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }

    #[test]
    fn rejects_bad_ids_with_typed_errors() {
        assert_eq!(Tenant::new(""), Err(InvalidTenantId::Empty));
        assert_eq!(
            Tenant::new("ab\0c"),
            Err(InvalidTenantId::ContainsNul { position: 2 })
        );
        let long = "x".repeat(MAX_TENANT_ID_BYTES + 1);
        assert_eq!(
            Tenant::new(long.as_str()),
            Err(InvalidTenantId::TooLong {
                len: MAX_TENANT_ID_BYTES + 1
            })
        );
        assert!(Tenant::new("x".repeat(MAX_TENANT_ID_BYTES)).is_ok());
    }

    #[test]
    fn typed_ids_are_checked_and_made_canonical() {
        use TenantSqlType::*;
        let ok = |id: &str, ty| Tenant::of_type(id, ty).map(|t| t.0);
        let wrong = |expected| Err(InvalidTenantId::WrongType { expected });
        assert_eq!(ok("+42", Int4), Ok("42".to_string()));
        assert_eq!(ok("-2147483648", Int4), Ok("-2147483648".to_string()));
        assert_eq!(ok("2147483648", Int4), wrong(Int4));
        assert_eq!(ok(" 1", Int4), wrong(Int4));
        assert_eq!(ok("1; DROP TABLE x", Int8), wrong(Int8));
        assert_eq!(
            ok("9223372036854775807", Int8),
            Ok("9223372036854775807".to_string())
        );
        assert_eq!(ok("not-a-uuid", Uuid), wrong(Uuid));
        assert_eq!(
            ok("A0EEBC999C0B4EF8BB6D6BB9BD380A11", Uuid),
            Ok("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_string())
        );
        assert_eq!(
            ok("anything ' at all", Text),
            Ok("anything ' at all".to_string())
        );
        assert_eq!(ok("", VarChar), Err(InvalidTenantId::Empty));
    }

    #[test]
    fn renders_every_id_type() {
        let id = uuid::Uuid::from_u128(0x1234);
        assert_eq!(
            Tenant::new(id).map(|t| t.0),
            Ok("00000000-0000-0000-0000-000000001234".to_string())
        );
        assert_eq!(Tenant::new(-7_i32).map(|t| t.0), Ok("-7".to_string()));
        assert_eq!(
            Tenant::new(String::from("acme")).map(|t| t.0),
            Ok("acme".to_string())
        );
    }
}
