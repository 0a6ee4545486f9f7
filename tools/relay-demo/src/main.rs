//! relay-demo: creates topics, generates payment messages and reports what each inbox received.
#![forbid(unsafe_code)]
fn main() -> anyhow::Result<()> {
    relay_demo::main()
}
