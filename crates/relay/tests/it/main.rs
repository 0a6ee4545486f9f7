//! Relay's integration tests: real PostgreSQL, a real Kafka-protocol broker, the real binaries.
//! One test binary; every test makes its own databases and topics, so they run in parallel.
mod harness;
mod verify;

mod admin;
mod chaos;
mod config;
mod crashes;
mod delivery;
mod deploy;
mod deploy_files;
mod failover;
mod faults;
mod health;
mod isolation;
mod kafka_security;
mod limits;
mod ordering;
mod poison;
mod reconcile;
mod retention;
mod roles;
mod schema;
mod signing;
mod telemetry;
mod tls;
mod unreadable;
