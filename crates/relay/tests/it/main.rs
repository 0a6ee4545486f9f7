//! Relay's integration tests: real PostgreSQL, a real Kafka-protocol broker, the real binaries.
//! One test binary; every test makes its own databases and topics, so they run in parallel.
#![forbid(unsafe_code)]
mod harness;
mod verify;

mod admin;
mod chaos;
mod cloudevents;
mod cloudevents_hostile;
mod config;
mod crashes;
mod delivery;
mod deploy;
mod deploy_files;
mod escaping;
mod failover;
mod faults;
mod health;
mod hostile;
mod http_timeouts;
mod isolation;
mod kafka_security;
mod leadership;
mod limits;
mod ordering;
mod pgbouncer;
mod poison;
mod processing;
mod processing_ops;
mod processing_reconcile;
mod processing_roles;
mod reconcile;
mod replay;
mod retention;
mod roles;
mod schema;
mod schema_script;
mod signing;
mod telemetry;
mod telemetry_https;
mod tls;
mod tls_client_certs;
mod trace;
mod unreadable;
