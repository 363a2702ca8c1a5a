//! [`Network`]: one network namespace per node on a bridge of its own, and partitions cut with iproute2 alone.
//!
//! ```text
//!   root namespace (the test process, 10.A.B.254)
//!        |
//!     bridge nmb<pid>-<tag>
//!     |          |          |
//!   nmv..-0    nmv..-1    nmv..-2      veth pairs; the other end is `eth0` in each namespace
//!   ns n0      ns n1      ns n2        10.A.B.1, .2, .3 (node i has .i+1)
//! ```
//!
//! Cutting node `a` from node `b` adds `ip route add blackhole <b>/32` inside `a`'s namespace and the reverse in
//! `b`'s: both directions drop, while every node stays reachable from the test process (its clients and
//! four-letter words), as Jepsen's partitions leave clients with their servers. Names carry the suite's prefix,
//! the test process's id and a per-test tag, so tests run in parallel and [`remove_stale`] can delete what a
//! killed run left. Dropping the [`Network`] deletes its namespaces (their veth ends go with them) and bridge.
//! The subnet is `10.(160 + pid % 64).<tag>.0/24`: distinct per test in a process, and between test processes
//! run at once unless their pids agree modulo 64 (the machine's own networks must stay clear of 10.160/10).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

/// Every namespace and link this suite makes starts with one of these, then the owning process's id.
const NETNS_PREFIX: &str = "ensnem-";
const BRIDGE_PREFIX: &str = "nmb";
const VETH_PREFIX: &str = "nmv";

/// Namespaces, veth pairs and a bridge for `n` nodes; removed on drop.
#[derive(Debug)]
pub struct Network {
    namespaces: Vec<String>,
    bridge: String,
    ips: Vec<Ipv4Addr>,
    /// The (from, to) node pairs whose traffic is blackholed now.
    cut: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Builds the network for `n` nodes. `tag` must be unique among the tests of this process (it names the
    /// links and picks the subnet); panics with iproute2's message if a step fails, after undoing what was made.
    pub fn create(tag: u8, n: usize) -> Network {
        assert!(n < 250, "a /24 holds the nodes and the bridge's address");
        let pid = std::process::id();
        let subnet = [10, 160 + u8::try_from(pid % 64).expect("below 64"), tag];
        let mut net = Network {
            namespaces: (0..n).map(|i| format!("{NETNS_PREFIX}{pid}-{tag}-n{i}")).collect(),
            bridge: format!("{BRIDGE_PREFIX}{pid}-{tag}"),
            ips: (0..n).map(|i| ip4(subnet, u8::try_from(i + 1).expect("below 250"))).collect(),
            cut: BTreeSet::new(),
        };
        let host = ip4(subnet, 254);
        run(&["link", "add", &net.bridge, "type", "bridge"]);
        run(&["addr", "add", &format!("{host}/24"), "dev", &net.bridge]);
        run(&["link", "set", &net.bridge, "up"]);
        for i in 0..n {
            net.add_node(pid, tag, i);
        }
        net
    }

    fn add_node(&mut self, pid: u32, tag: u8, i: usize) {
        let (ns, veth) = (self.namespaces[i].clone(), format!("{VETH_PREFIX}{pid}-{tag}-{i}"));
        let inner = format!("{veth}p");
        run(&["netns", "add", &ns]);
        run(&["link", "add", &veth, "type", "veth", "peer", "name", &inner]);
        run(&["link", "set", &inner, "netns", &ns]);
        run(&["link", "set", &veth, "master", &self.bridge]);
        run(&["link", "set", &veth, "up"]);
        run(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
        run(&["-n", &ns, "addr", "add", &format!("{}/24", self.ips[i]), "dev", "eth0"]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// Node `i`'s address, reachable from the test process and from the other nodes unless cut.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.ips[i]
    }

    /// Node `i`'s namespace (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Cuts every pair in `pairs` in both directions (pairs already cut stay cut).
    pub fn cut(&mut self, pairs: &[(usize, usize)]) {
        for &(a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                if self.cut.insert((from, to)) {
                    run(&["-n", &self.namespaces[from], "route", "add", "blackhole", &format!("{}/32", self.ips[to])]);
                }
            }
        }
    }

    /// Removes every cut: all nodes reach each other again.
    pub fn heal(&mut self) {
        for (from, to) in std::mem::take(&mut self.cut) {
            run(&["-n", &self.namespaces[from], "route", "del", "blackhole", &format!("{}/32", self.ips[to])]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Best effort and silent: a failing test must still show its own message, not a cleanup's.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// Deletes the namespaces and links of this suite whose owning process no longer runs (a run killed before
/// its drops ran). Namespaces of live processes, this one included, are left alone.
pub fn remove_stale() {
    let dead = |name: &str, prefix: &str| {
        let pid = name.strip_prefix(prefix).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let netns = output(&["netns", "list"]);
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if dead(name, NETNS_PREFIX) {
            eprintln!("nemesis: removing stale namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
    let links = output(&["-o", "link", "show"]);
    for name in links.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().split('@').next().unwrap_or("")) {
        if dead(name, BRIDGE_PREFIX) || dead(name, VETH_PREFIX) {
            eprintln!("nemesis: removing stale link {name}");
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

fn ip4(subnet: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(subnet[0], subnet[1], subnet[2], host)
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

fn output(args: &[&str]) -> String {
    Command::new("ip").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (as the integration tests do): makes a network, cuts and heals a pair, and drops it.
    #[test]
    fn a_network_is_made_cut_healed_and_removed() {
        // A one-digit tag, as t90's: interface names (`nmv<pid>-<tag>-<i>p`) must fit Linux's 15 characters
        // with a 7-digit pid.
        let mut net = Network::create(9, 2);
        let ns = net.namespace(0).to_string();
        net.cut(&[(0, 1)]);
        let routes = output(&["-n", &ns, "route", "show"]);
        assert!(routes.contains(&format!("blackhole {}", net.ip(1))), "{routes}");
        net.heal();
        assert!(!output(&["-n", &ns, "route", "show"]).contains("blackhole"));
        drop(net);
        assert!(!output(&["netns", "list"]).contains(&ns));
    }
}
