//! The systemd integration: the unit file verifies, and the agent speaks the notify protocol
//! (READY, WATCHDOG fed from the pipeline, STOPPING) on a real notify socket.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sightline_tests::*;

#[test]
fn the_unit_file_verifies_cleanly() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/sightline-edge-agent.service"))
            .unwrap();
    // verify checks that ExecStart's binary exists: point it at the one this test run built
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sightline-edge-agent.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/edge-agent", &binary("edge-agent").display().to_string()))
        .unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (Debian systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// Receives notify datagrams until one contains `want`.
fn expect(sock: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want} within {timeout:?}; got {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return;
                }
            }
            Err(e) => panic!("no {want} within {timeout:?} ({e}); got {seen:?}"),
        }
    }
}

#[test]
fn the_agent_notifies_ready_feeds_the_watchdog_and_says_stopping() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let camera =
        format!("[[camera]]\nid = \"stage\"\nfile = \"{}\"\nloop = true\n", media("short_hamilton_clip.mp4").display());
    let mut agent = Agent::start_with_env(
        &agent_config(broker.port, &camera),
        &[("NOTIFY_SOCKET", &socket.display().to_string()), ("WATCHDOG_USEC", "1500000")],
    )
    .unwrap();
    let mut seen = Vec::new();
    expect(&sock, "READY=1", Duration::from_secs(60), &mut seen);
    // pinged every WatchdogSec/3 while the analysis worker beats
    expect(&sock, "WATCHDOG=1", Duration::from_secs(3), &mut seen);
    expect(&sock, "WATCHDOG=1", Duration::from_secs(3), &mut seen);
    let pid = agent.proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    expect(&sock, "STOPPING=1", Duration::from_secs(20), &mut seen);
    assert!(agent.wait_exit(Duration::from_secs(30)).unwrap().success(), "{}", agent.log());
}
