//! Zero-config discovery on a LAN: a provider with `--mdns` in one network
//! namespace, `phase-discover --mdns` with no bootstrap address in another,
//! the two joined by a veth pair. The namespaces are created by the test
//! and deleted when it ends, so mDNS multicast never touches the machine's
//! real interfaces. Needs root and iproute2 (tests/run installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Two network namespaces joined by a veth pair; deleted on drop.
struct Lan {
    a: String,
    b: String,
    subnet: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            a: format!("plasmd-a-{id}"),
            b: format!("plasmd-b-{id}"),
            subnet: format!("10.{}.{}", 200 + id % 50, id % 250),
        };
        let (va, vb) = (format!("pva{id}"), format!("pvb{id}"));
        ip(&["netns", "add", &lan.a]);
        ip(&["netns", "add", &lan.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &lan.a]);
        ip(&["link", "set", &vb, "netns", &lan.b]);
        for (ns, dev, host) in [(&lan.a, &va, 1), (&lan.b, &vb, 2)] {
            let addr = format!("{}.{host}/24", lan.subnet);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            // Multicast leaves through the veth, the namespace's only link.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        lan
    }

    /// Runs a binary inside namespace `ns`.
    fn spawn(&self, ns: &str, name: &str, bin: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", ns, bin];
        all.extend_from_slice(args);
        Proc::spawn(name, "ip", &all)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[ignore = "tier root: creates network namespaces; bash tests/run runs it as root"]
fn phase_discover_finds_a_provider_on_the_lan_with_mdns_and_no_bootstrap() {
    assert!(
        is_root(),
        "this test creates network namespaces and must run as root (CI does)"
    );
    let dir = TempDir::new("mdns");
    let root = artifacts(dir.path());
    let lan = Lan::new();
    let provider_ip = format!("{}.1", lan.subnet);
    let key = dir.path().join("provider.key");
    let http = format!("{provider_ip}:8080");
    let p2p = format!("/ip4/{provider_ip}/tcp/4001");
    let provider = lan.spawn(
        &lan.a,
        "provider",
        PLASMD,
        &[
            "serve",
            "--mdns",
            "--artifacts",
            root.to_str().unwrap(),
            "--http-listen",
            &http,
            "--p2p-listen",
            &p2p,
            "--identity",
            key.to_str().unwrap(),
        ],
    );
    provider.wait_stdout("HTTP listening on ", Duration::from_secs(10));

    let mut finder = lan.spawn(
        &lan.b,
        "phase-discover",
        DISCOVER,
        &[
            "--mdns",
            "--channel",
            "stable",
            "--arch",
            "arm64",
            "--timeout",
            "30",
        ],
    );
    let status = finder
        .wait_exit(Duration::from_secs(40))
        .expect("phase-discover exits");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        status.success(),
        "not found over mDNS: {}\nprovider log:\n{}",
        finder.stderr(),
        provider.stderr()
    );
    assert_eq!(
        finder.stdout().trim(),
        format!("http://{provider_ip}:8080/stable/arm64/manifest.json")
    );
}
