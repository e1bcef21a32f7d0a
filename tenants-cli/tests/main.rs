//! End-to-end tests of the `tenants` binary on fixture crates and fresh databases.

mod audit;
mod citus;
mod connect_errors;
mod cycle;
mod errors;
mod example;
mod fixture;
mod grants;
mod invariant;
mod lifecycle;
mod portable;
mod print_schema;
mod scale;
