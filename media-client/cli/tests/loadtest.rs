//! `hush loadtest` as an operator runs it: a small, short load through the
//! real server, SFU and clients (and the raw UDP relay baseline). Asserts
//! that every frame decrypted and that every report figure is present;
//! never a timing.

use std::process::Command;

use serde_json::Value;

fn loadtest(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .arg("loadtest")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run hush loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hush loadtest {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report is written");
    (serde_json::from_str(&text).expect("valid JSON"), stdout)
}

fn number(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = at
            .get(key)
            .unwrap_or_else(|| panic!("report lacks {path} ({key}): {v:#}"));
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {at}"))
}

/// Every figure the issue asks for, in one step of the report.
fn assert_complete_step(step: &Value) {
    for path in [
        "forwarded_packets_per_sec",
        "forwarded_bits_per_sec",
        "loss_percent",
        "latency.p50_ms",
        "latency.p95_ms",
        "latency.p99_ms",
        "sfu_cpu_seconds",
        "forwarded_packets_per_cpu_second",
        "sfu_peak_memory_bytes",
        "sfu_memory_per_subscriber_bytes",
        "decryption_failures",
        "baseline.forwarded_packets_per_cpu_second",
        "baseline.loss_percent",
        "baseline.latency.p99_ms",
        "ratio_to_udp_relay",
    ] {
        let n = number(step, path);
        assert!(n.is_finite() && n >= 0.0, "{path} = {n}");
    }
    assert_eq!(number(step, "decryption_failures"), 0.0);
    // Something really crossed the SFU and was decrypted and checked.
    assert!(number(step, "forwarded_packets") > 0.0, "{step:#}");
    assert!(number(step, "delivery.received") > 0.0, "{step:#}");
    assert!(number(step, "sfu_cpu_seconds") > 0.0, "{step:#}");
    // The simulated participants' own process worked in the window too.
    assert!(
        number(step, "generator_cpu_percent_of_one_core") > 0.0,
        "{step:#}"
    );
    assert!(number(step, "ratio_to_udp_relay") > 0.0, "{step:#}");
    assert!(
        number(step, "delivery.received") <= number(step, "delivery.expected"),
        "no frame counted twice: {step:#}"
    );
}

#[test]
fn a_small_audio_load_decrypts_every_frame_and_reports_every_figure() {
    let (report, stdout) = loadtest(&[
        "--embedded",
        "--rooms",
        "2",
        "--publishers",
        "2",
        "--subscribers",
        "2",
        "--seconds",
        "2",
    ]);
    assert_complete_step(&report["result"]);
    assert_eq!(report["decryption_failures"], 0, "{report:#}");
    assert_eq!(report["unstamped_frames"], 0, "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["result"]["participants"], 8);
    // Paced joins are timed too: every subscriber, from its join to its first frame.
    let joins = &report["result"]["join_to_first_frame_ms"];
    assert_eq!(joins["count"], 4, "{report:#}");
    assert_eq!(joins["missing"], 0, "{report:#}");
    assert!(number(joins, "p50") > 0.0, "{report:#}");
    assert!(
        report["result"]["lost_to_key_change_during_ramp"].is_u64(),
        "{report:#}"
    );
    assert!(
        report["result"]["before_join_during_ramp"].is_u64(),
        "{report:#}"
    );
    // The default generator: sans-IO peers, every one a real ICE + DTLS +
    // SRTP connection to the SFU, many on one socket.
    assert!(
        report["config"]["clients"].get("sans-io").is_some(),
        "{report:#}"
    );
    assert!(stdout.contains("headline:"), "{stdout}");
}

#[test]
fn video_and_a_ramp_report_each_step_and_draw_a_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("ramp.svg");
    let svg_arg = svg.to_str().expect("utf-8 path");
    let (report, _) = loadtest(&[
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "1",
        "--seconds",
        "1",
        "--video",
        "--video-kbps",
        "300",
        "--ramp",
        "--ramp-step",
        "1",
        "--ramp-max",
        "2",
        "--plot",
        svg_arg,
    ]);
    let steps = report["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    for step in steps {
        assert_complete_step(step);
    }
    assert_eq!(report["decryption_failures"], 0, "{report:#}");
    assert!(report.get("largest_held_subscribers_per_room").is_some());
    let drawn = std::fs::read_to_string(&svg).expect("plot written");
    assert!(
        drawn.starts_with("<svg") && drawn.contains("<polyline"),
        "{drawn}"
    );
}

#[test]
fn a_join_storm_times_every_join_to_its_first_frame() {
    let (report, stdout) = loadtest(&[
        "--embedded",
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "6",
        "--storm-seconds",
        "2",
        "--seconds",
        "2",
        "--baseline",
        "none",
    ]);
    assert_eq!(report["config"]["storm_seconds"], 2.0, "{report:#}");
    assert_eq!(report["decryption_failures"], 0, "{report:#}");
    let step = &report["steps"][0];
    let joins = &step["join_to_first_frame_ms"];
    assert_eq!(
        joins["count"], 6,
        "every storm join heard its publisher: {report:#}"
    );
    assert_eq!(joins["missing"], 0, "{report:#}");
    let (p50, p99, max) = (
        number(joins, "p50"),
        number(joins, "p99"),
        number(joins, "max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{joins:#}");
    assert!(
        step["lost_to_key_change_during_ramp"].is_u64(),
        "{report:#}"
    );
    assert!(report["lost_to_key_change"].is_u64(), "{report:#}");
    assert!(report["before_join"].is_u64(), "{report:#}");
    assert!(stdout.contains("join to first frame"), "{stdout}");
}

#[test]
fn red_recovers_most_audio_lost_downlink_and_without_red_it_stays_lost() {
    let run = |red: &[&str]| {
        let mut args = vec![
            "--embedded",
            "--rooms",
            "1",
            "--publishers",
            "1",
            "--subscribers",
            "3",
            "--seconds",
            "3",
            "--baseline",
            "none",
            "--loss",
            "10",
        ];
        args.extend_from_slice(red);
        let (report, stdout) = loadtest(&args);
        assert_eq!(report["ok"], true, "{report:#}");
        assert_eq!(report["config"]["downlink_loss_percent"], 10.0);
        assert!(stdout.contains("recovered"), "{stdout}");
        report
    };
    let red = run(&[]);
    assert_eq!(red["config"]["audio_redundancy"], 2);
    let audio = &red["result"]["audio_delivery"];
    assert!(number(audio, "expected") > 0.0, "{red:#}");
    // About a tenth of the frames lose their own packet; the two copies
    // that follow it bring nearly all of them back.
    assert!(number(audio, "recovered") > 0.0, "{red:#}");
    assert!(number(audio, "loss_percent") < 3.0, "{red:#}");
    assert!(
        number(audio, "loss_before_recovery_percent") >= 5.0,
        "the loss really happened: {red:#}"
    );
    let plain = run(&["--no-red"]);
    assert_eq!(plain["config"]["audio_redundancy"], 0);
    let audio = &plain["result"]["audio_delivery"];
    assert_eq!(number(audio, "recovered"), 0.0, "{plain:#}");
    assert!(number(audio, "loss_percent") >= 5.0, "{plain:#}");
    assert_eq!(
        number(&plain["result"], "loss_percent"),
        number(audio, "loss_percent"),
        "audio alone: the step's loss is the audio's"
    );
    // RED's cost: each forwarded audio packet carries three sealed frames.
    let bytes = |r: &Value| number(&r["result"], "forwarded_audio_bytes_per_packet");
    assert!(bytes(&red) > 2.0 * bytes(&plain), "{red:#}\n{plain:#}");
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    for args in [
        vec!["loadtest", "--baseline", "tcp"],
        vec!["loadtest", "--plot", "x.svg"],
        vec!["loadtest", "--server", "ws://127.0.0.1:9"],
        vec!["loadtest", "--rooms", "0"],
        vec!["loadtest", "--subscribers", "100000"],
        vec!["loadtest", "--clients", "quic"],
        vec!["loadtest", "--storm-seconds", "0"],
        vec!["loadtest", "--storm-seconds", "601"],
        vec!["loadtest", "--storm-seconds", "2", "--subscribers", "0"],
        vec!["loadtest", "--loss", "51"],
        vec!["loadtest", "--loss", "-1"],
        vec!["loadtest", "--loss", "5", "--clients", "webrtc"],
        vec!["loadtest", "--audio-redundancy", "3"],
        vec!["loadtest", "--no-red", "--audio-redundancy", "1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(&args)
            .env_remove("HUSH_SECRET")
            .env_remove("HUSH_SECRET_FILE")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?} failed silently");
    }
}

#[test]
fn a_running_server_is_measured_through_its_metrics() {
    use std::io::BufRead as _;
    // A server started on its own (the load test's server command), then
    // driven with --server and its secret, as an operator would.
    let secret = "an-operator-secret-of-enough-length";
    let mut server = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["loadtest-server", "--max-seconds", "120"])
        .env("HUSH_LOADTEST_SECRET", secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("LISTEN line");
    let url = line
        .trim()
        .strip_prefix("LISTEN ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let run = |secret: &str| {
        Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(["loadtest", "--server", &url, "--subscribers", "2"])
            // The generator's webrtc-rs clients, as `hush call` connects.
            .args(["--clients", "webrtc"])
            .args(["--seconds", "1", "--baseline", "none", "--json"])
            .arg(&json)
            .env("HUSH_SECRET", secret)
            .env_remove("HUSH_SECRET_FILE")
            .output()
            .expect("run hush loadtest")
    };
    let wrong = run("not-the-operator-secret-at-all");
    assert!(
        !wrong.status.success(),
        "tokens under a wrong secret were accepted"
    );
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("token_forged"),
        "refused for another reason: {said}"
    );
    let out = run(secret);
    drop(server.stdin.take());
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert_eq!(report["config"]["server"], url.as_str());
    assert_eq!(report["config"]["clients"], "webrtc", "{report:#}");
    assert_eq!(report["decryption_failures"], 0);
    assert!(
        number(&report["result"], "forwarded_packets") > 0.0,
        "{report:#}"
    );
    assert!(
        number(&report["result"], "sfu_cpu_seconds") > 0.0,
        "{report:#}"
    );
    assert!(report["result"]["baseline"].is_null(), "--baseline none");
}
