//! A fleet of hosts on one kernel: network namespaces `h1..hN` and a few
//! others (a C2 server, say) on one bridge in a `core` namespace, which
//! also holds the Kafka broker, and a link from the test's own namespace
//! onto the same bridge so the test and fusion reach the broker. All of it
//! goes with the namespaces on drop.

use crate::{delete_netns, run};

pub struct FleetNet {
    pub core: String,
    pub hosts: Vec<String>,
    pub others: Vec<String>,
    pub s: u8,
}

impl FleetNet {
    /// `hosts` host namespaces at 10.S.0.1.., `others` at 10.S.0.100..,
    /// the core bridge at 10.S.0.254 and the test's namespace at 10.S.0.253.
    pub fn new(tag: &str, s: u8, hosts: usize, others: &[&str]) -> FleetNet {
        let f = FleetNet {
            core: format!("vf-{tag}-core"),
            hosts: (1..=hosts).map(|i| format!("vf-{tag}-h{i}")).collect(),
            others: others.iter().map(|o| format!("vf-{tag}-{o}")).collect(),
            s,
        };
        f.cleanup();
        let core = f.core.as_str();
        run("ip", &["netns", "add", core]);
        run("ip", &["-n", core, "link", "set", "lo", "up"]);
        run("ip", &["-n", core, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", core, "link", "set", "br0", "up"]);
        run(
            "ip",
            &[
                "-n",
                core,
                "addr",
                "add",
                &format!("{}/24", f.core_ip()),
                "dev",
                "br0",
            ],
        );
        // The test's own namespace on the bridge.
        let (root, root_peer) = (format!("vf{s}r"), format!("vf{s}rc"));
        run(
            "ip",
            &[
                "link", "add", &root, "type", "veth", "peer", "name", &root_peer,
            ],
        );
        run("ip", &["link", "set", &root_peer, "netns", core]);
        run(
            "ip",
            &["-n", core, "link", "set", &root_peer, "master", "br0"],
        );
        run("ip", &["-n", core, "link", "set", &root_peer, "up"]);
        run(
            "ip",
            &["addr", "add", &format!("10.{s}.0.253/24"), "dev", &root],
        );
        run("ip", &["link", "set", &root, "up"]);
        let members: Vec<(String, String)> = f
            .hosts
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), format!("10.{s}.0.{}", i + 1)))
            .chain(
                f.others
                    .iter()
                    .enumerate()
                    .map(|(i, ns)| (ns.clone(), format!("10.{s}.0.{}", 100 + i))),
            )
            .collect();
        for (i, (ns, ip)) in members.iter().enumerate() {
            let (dev, port) = (format!("vf{s}m{i}"), format!("vf{s}p{i}"));
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &["link", "add", &dev, "type", "veth", "peer", "name", &port],
            );
            run("ip", &["link", "set", &dev, "netns", ns]);
            run("ip", &["-n", ns, "link", "set", &dev, "name", "eth0"]);
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            );
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run("ip", &["link", "set", &port, "netns", core]);
            run("ip", &["-n", core, "link", "set", &port, "master", "br0"]);
            run("ip", &["-n", core, "link", "set", &port, "up"]);
        }
        f
    }

    pub fn core_ip(&self) -> String {
        format!("10.{}.0.254", self.s)
    }

    /// Host `n` (1-based).
    pub fn host_ip(&self, n: usize) -> String {
        format!("10.{}.0.{n}", self.s)
    }

    /// The `i`-th other namespace (0-based).
    pub fn other_ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.s, 100 + i)
    }

    fn cleanup(&self) {
        for ns in std::iter::once(&self.core)
            .chain(&self.hosts)
            .chain(&self.others)
        {
            delete_netns(ns);
        }
        // The test's end of the bridge link goes with the core namespace;
        // a leftover from a killed run is removed here.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("vf{}r", self.s)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for FleetNet {
    fn drop(&mut self) {
        self.cleanup();
    }
}
