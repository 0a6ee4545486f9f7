//! relay-bench: throughput, latency and memory beside the machine's ceilings. See `relay_bench`.
#![forbid(unsafe_code)]
fn main() -> anyhow::Result<()> {
    relay_bench::main()
}
