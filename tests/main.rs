//! callwatch's integration tests, one binary for all: each module starts real servers (the
//! built `callwatch` binary or the library) on loopback and talks to them as users would.

mod common;

mod auth;
mod bad_input;
mod ballista;
mod breakers;
mod cluster;
mod crash_recovery;
mod dashboard;
mod demo;
mod grafana;
mod graph;
mod isolation;
mod map;
mod object_storage;
mod otlp_exporters;
mod parquet_readers;
mod postgres;
mod security;
mod sql_api;
mod traces;
