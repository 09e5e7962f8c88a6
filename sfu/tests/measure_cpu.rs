//! Not a pass/fail test: measures the SFU's CPU per 1,000 forwarded
//! packets/s with the three-peer setup scaled up. The SFU (its control
//! task and every SFU-side peer connection) runs on its own runtime whose
//! threads are named `hush-sfu-rt`; only those threads' CPU time is counted.
//! Run: `cargo test --release -p hush-sfu --test measure_cpu -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hush_sfu::{Sfu, SfuConfig};

/// User+system CPU seconds of this process's threads named `hush-sfu-rt`.
fn sfu_cpu_seconds() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("hush-sfu-rt") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').unwrap_or(0) + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let (utime, stime): (f64, f64) =
            (f[11].parse().unwrap_or(0.0), f[12].parse().unwrap_or(0.0));
        total += (utime + stime) / ticks;
    }
    total
}

#[test]
#[ignore = "measurement, run by hand"]
fn cpu_per_thousand_forwarded_packets_per_second() {
    let sfu_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hush-sfu-rt")
        .enable_all()
        .build()
        .unwrap();
    let sfu = {
        let _guard = sfu_rt.enter();
        Sfu::new(SfuConfig::default()).unwrap()
    };
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    clients_rt.block_on(async {
        let a = Client::join(&sfu, "room", 1, AV, None).await;
        let b = Client::join(&sfu, "room", 2, AV, None).await;
        let c = Client::join(&sfu, "room", 3, AV, None).await;
        let clients = [(&a, 0u8, 0u8), (&b, 0, 1), (&c, 0, 2)];
        send_rounds(&clients, 0, 100, Duration::from_millis(10)).await;
        let out0 = sfu.metrics().packets_out();
        let cpu0 = sfu_cpu_seconds();
        let t0 = Instant::now();
        // 3 publishers x 2 tracks every 2 ms: 3,000 in, 6,000 out per second.
        send_rounds(&clients, 100, 2500, Duration::from_millis(2)).await;
        let secs = t0.elapsed().as_secs_f64();
        let out = (sfu.metrics().packets_out() - out0) as f64;
        let cpu = sfu_cpu_seconds() - cpu0;
        let pps = out / secs;
        eprintln!(
            "MEASURE forwarded {out} packets in {secs:.2} s = {pps:.0} packets/s out; SFU threads used {cpu:.2} CPU-s = {:.1}% of one core; {:.2}% of a core per 1,000 forwarded packets/s; drops not_negotiated={}",
            100.0 * cpu / secs,
            100.0 * cpu / secs / (pps / 1000.0),
            sfu.metrics().drops(hush_sfu::metrics::DropReason::NotNegotiated),
        );
        sfu.shutdown().await;
    });
    sfu_rt.shutdown_background();
}
