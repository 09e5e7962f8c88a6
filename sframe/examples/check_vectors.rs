//! Checks a JSON file in the layout of RFC 9605's published test vectors
//! (any subset of its sections) against hush-sframe, both ways.
//!
//! `cargo run -q --release -p hush-sframe --example check_vectors -- FILE.json`
//! prints one line per failing entry and, last, `N passed, M failed`; it
//! exits 1 if anything failed or the file is malformed.

#[path = "../tests/support/vectors.rs"]
#[allow(unreachable_pub)]
mod vectors;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: check_vectors FILE.json");
        return ExitCode::FAILURE;
    };
    let json = match std::fs::read_to_string(path) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match vectors::check_json(&json) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for failure in &report.failures {
        println!("FAIL {failure}");
    }
    println!("{} passed, {} failed", report.passed, report.failures.len());
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
