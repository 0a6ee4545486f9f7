//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads the
//! migration folders at compile time, and cargo does not know to look at them otherwise.
#![forbid(unsafe_code)]
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
