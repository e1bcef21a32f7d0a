//! Names and specs: what the layers above talk about (a table, who receives our roles, a
//! policy's definition). The bottom layer of the contract, beside the registry: it uses no
//! other module of the crate but the registry and the quoting of `tenant`.

use std::fmt;

use diesel::QueryableByName;
use diesel::sql_types::{Array, Nullable, Text};

use crate::registry::{RlsTable, TenantSqlType};
use crate::tenant::quote_ident;

/// A schema-qualified name, rendered quoted: `"public"."todo_item"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// The schema.
    pub schema: String,
    /// The object's name within the schema.
    pub name: String,
}

impl QualifiedName {
    /// `schema.name`.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

/// A marked table as the renderer needs it: where it is, its tenant column, and the
/// sequences it owns (serial and identity columns), which tenants need to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// The table.
    pub table: QualifiedName,
    /// SQL name of the tenant column.
    pub tenant_column: String,
    /// SQL type of the tenant column.
    pub sql_type: TenantSqlType,
    /// Sequences owned by the table's columns.
    pub sequences: Vec<QualifiedName>,
}

impl TableSpec {
    /// The spec of a registry entry, with the sequences the live catalog says it owns.
    pub fn from_registry(table: &RlsTable, sequences: Vec<QualifiedName>) -> Self {
        Self {
            table: QualifiedName::new(table.schema, table.name),
            tenant_column: table.tenant_column.to_string(),
            sql_type: table.sql_type,
            sequences,
        }
    }
}

/// Who receives our roles, so that it may `SET ROLE` to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    /// A named login role.
    Role(String),
    /// `CURRENT_USER`: whoever runs the migration, for applications that migrate with the
    /// role they serve with.
    CurrentUser,
}

impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grantee::Role(name) => f.write_str(&quote_ident(name)),
            Grantee::CurrentUser => f.write_str("CURRENT_USER"),
        }
    }
}

/// What a policy does: everything `CREATE POLICY` takes besides its name and table.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PolicyDef {
    /// `PERMISSIVE` or `RESTRICTIVE`.
    #[diesel(sql_type = Text)]
    pub permissive: String,
    /// `ALL`, `SELECT`, ...
    #[diesel(sql_type = Text)]
    pub cmd: String,
    /// Roles the policy applies to (`public` for all).
    #[diesel(sql_type = Array<Text>)]
    pub roles: Vec<String>,
    /// The `USING` expression, as the server deparses it.
    #[diesel(sql_type = Nullable<Text>)]
    pub using: Option<String>,
    /// The `WITH CHECK` expression, as the server deparses it.
    #[diesel(sql_type = Nullable<Text>)]
    pub check: Option<String>,
}

impl fmt::Display for PolicyDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AS {} FOR {} TO {}",
            self.permissive,
            self.cmd,
            self.roles.join(", ")
        )?;
        if let Some(using) = &self.using {
            write!(f, " USING ({using})")?;
        }
        if let Some(check) = &self.check {
            write!(f, " WITH CHECK ({check})")?;
        }
        Ok(())
    }
}

/// A foreign key between two marked tables that does not pair their tenant columns, and
/// what makes it tenant-consistent: the tenant columns prepended on both sides, its
/// actions kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantForeignKey {
    /// The referencing (child) table.
    pub table: QualifiedName,
    /// The constraint's name (kept by the replacement).
    pub name: String,
    /// The child's tenant column.
    pub tenant_column: String,
    /// The referencing columns, in order.
    pub columns: Vec<String>,
    /// The referenced (parent) table.
    pub parent: QualifiedName,
    /// The parent's tenant column.
    pub parent_tenant_column: String,
    /// The referenced columns, in order.
    pub parent_columns: Vec<String>,
    /// What follows the referenced columns in the new definition: `MATCH`, `ON UPDATE`,
    /// `ON DELETE` (a `SET NULL`/`SET DEFAULT` limited to the original columns, so that the
    /// tenant column is never cleared), `DEFERRABLE`, `NOT VALID`; empty for the defaults.
    pub actions: String,
    /// The original key's actions, rendered the same way: what `down` restores.
    pub original_actions: String,
    /// Whether the parent already has a unique key on its tenant column and the referenced
    /// columns, which the composite key needs.
    pub parent_has_unique: bool,
}
