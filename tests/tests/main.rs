//! Integration tests: one binary, one module per concern, a fresh database per test.

mod actix_layer;
mod axum_layer;
mod citus;
mod common;
mod connect;
mod escaping;
mod faults;
mod isolation;
mod kit;
mod lifecycle;
mod pgbouncer;
mod pool_hygiene;
mod pool_kind;
mod registry;
mod round_trips;
mod scoped;
mod soak;
mod sync_pool;
mod threats;
mod tracing_spans;
mod transaction_end;
mod verify;
