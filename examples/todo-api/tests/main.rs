//! HTTP tests of the real `todo-api` binary, and the kit's isolation check of its
//! migrations: one binary, one module per concern, a fresh database per test. Each HTTP
//! test starts the service on an ephemeral port and talks to it with reqwest; PostgreSQL
//! must be reachable at `DATABASE_URL` (default
//! `postgres://postgres@localhost:5432/postgres`), else the tests fail saying how to start it.

mod auth;
mod availability;
mod common;
mod isolation;
mod kit;
mod lifecycle;
mod request_spans;
mod validation;
