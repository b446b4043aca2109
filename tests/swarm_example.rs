//! examples/swarm against examples/server over loopback UDP: 1,000 simulated
//! devices, each on its own socket, pull their image over CoAP Block2 and are
//! upgraded under observe-instance with no failure.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_thousand_swarm_devices_upgrade_against_the_example_server() {
    let devices = 1000;
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let image = std::env::temp_dir().join(format!("lwm2m-fota-swarm-{}.bin", std::process::id()));
    let written = Command::new(common::example_binary("swarm"))
        .args(["--write-image", image.to_str().unwrap(), "--image-size", "32768", "--image-version", "2.0.0"])
        .status()
        .unwrap();
    assert!(written.success());
    let server = Command::new(common::example_binary("server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--image", image.to_str().unwrap()])
        .args(["--target-version", "2.0.0", "--strategy", "observe-instance", "--timeout", "120", "--json"])
        .args(["--count", &devices.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let swarm = Command::new(common::example_binary("swarm"))
        .args(["--server", &format!("coap://127.0.0.1:{port}"), "--devices", &devices.to_string()])
        .args(["--install-s", "1", "--timeout", "120", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server's lines are read as they come (a full pipe would stall it).
    let server = server.wait_with_output().unwrap();
    let swarm = swarm.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&image);
    let summary: serde_json::Value = serde_json::from_slice(&swarm.stdout).expect("one JSON summary");
    assert_eq!(summary["devices"], devices);
    assert_eq!(summary["upgraded"], devices, "{summary}");
    assert_eq!(summary["failed"], 0);
    assert!(swarm.status.success());
    // The server reports every device, each succeeded.
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&server.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), devices);
    assert!(
        lines.iter().all(|l| l["outcome"] == "succeeded"),
        "{:?}",
        lines.iter().find(|l| l["outcome"] != "succeeded")
    );
    let names: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["endpoint"].as_str().unwrap()).collect();
    assert_eq!(names.len(), devices);
    assert!(names.contains("swarm-0") && names.contains("swarm-999"));
    assert!(server.status.success());
    eprintln!("{devices} devices in {:?}", started.elapsed());
}
