//! PostgreSQL Row-Level Security multi-tenancy for Diesel, sync and async.
//!
//! Mark tables with [`with_rls`], put them under the SQL contract with the migration the
//! [`policy`] module renders (or the `tenants` CLI writes), then run queries inside tenant
//! transactions: a query that forgets `WHERE tenant = ...` still cannot read or write
//! another tenant's rows, because PostgreSQL refuses it.
//!
//! - async (feature `async`, the default): [`TenantPool`] (bb8) hands out
//!   [`TenantConnection`]s inside a tenant or admin transaction;
//!   [`AsyncTenantTransactionExt`] adds `tenant_transaction` to `AsyncPgConnection`;
//! - sync: [`SyncTenantPool`] (feature `sync`, r2d2) hands out [`SyncTenantConnection`]s
//!   the same way; [`TenantTransactionExt`] adds `tenant_transaction` to
//!   `diesel::PgConnection` in every build;
//! - [`registry::tables`] lists every marked table linked into the binary;
//! - [`TenantPool::verify`] and [`SyncTenantPool::verify`] compare the live database with
//!   them.
//!
//! A build with `default-features = false, features = ["sync"]` compiles no tokio, bb8 or
//! diesel-async. The features `axum` ([`axum`]), `actix` ([`actix`]) and `testing`
//! ([`testing`]) imply `async`.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod catalog;
#[cfg(any(feature = "async", feature = "sync"))]
mod checkout;
mod config;
#[cfg(feature = "async")]
mod connect;
mod error;
mod footprint;
#[cfg(test)]
mod layers;
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod lifecycle;
pub mod plan;
pub mod policy;
#[cfg(feature = "async")]
mod pool;
pub mod registry;
#[cfg(any(feature = "axum", feature = "actix"))]
mod request;
mod scope;
pub mod scoped;
mod spec;
mod sync;
#[cfg(feature = "sync")]
mod sync_pool;
mod tenant;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod trace;
mod transaction;
pub mod verify;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use config::{Config, ConfigError, MAX_NAME_BYTES, Purpose};
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use connect::{describe_target, establish};
pub use error::Error;
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use pool::{AsyncTenantTransactionExt, ScopedFn, TenantConnection, TenantPool};
pub use scope::Scope;
pub use scoped::ScopedDsl;
pub use sync::TenantTransactionExt;
#[cfg(feature = "sync")]
#[cfg_attr(docsrs, doc(cfg(feature = "sync")))]
pub use sync_pool::{SyncConnectionManager, SyncTenantConnection, SyncTenantPool};
pub use tenant::{InvalidTenantId, MAX_TENANT_ID_BYTES, Tenant, TenantId};
pub use tenants_derive::{shared, with_rls};
pub use verify::{Finding, Severity, VerifyReport};

/// The README's code blocks, compiled (and run where they need no database) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
