//! Example Rust worker: a minimal program with no dependencies. It reports the
//! sandbox environment (III_URL, III_WORKER_NAME, III_ISOLATION), then waits until
//! it is terminated. It does not talk to the engine: no
//! iii Rust SDK crate is reachable from this build environment (crates.io is not).

use std::env;

fn main() {
    let var = |key: &str| env::var(key).unwrap_or_else(|_| "(unset)".to_string());
    println!(
        "rust-worker: engine={} name={} isolation={}",
        var("III_URL"),
        var("III_WORKER_NAME"),
        var("III_ISOLATION")
    );
    // Block without spinning until stopped: SIGTERM ends the process (default action).
    loop {
        std::thread::park();
    }
}
