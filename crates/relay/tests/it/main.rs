//! Relay's integration tests: real PostgreSQL, a real Kafka-protocol broker, the real binaries.
//! One test binary; every test makes its own databases and topics, so they run in parallel.
mod harness;
mod verify;

mod chaos;
mod config;
mod crashes;
mod delivery;
mod faults;
mod ordering;
mod poison;
mod reconcile;
mod schema;
