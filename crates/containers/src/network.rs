//! A container's own network: a veth pair from the node into the container's network
//! namespace, a /30 of 10.89.0.0/16 each (the node's end `.1`, the container's `.2`),
//! routed by the node to the other containers' (which find one another by name in
//! their `/etc/hosts`, kept by the node), and
//! published ports (`-p HOST:CTR`) proxied by the node itself (no NAT rules, no proxy
//! process), so they work on loopback too.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use crate::{ContainerError, Result};

/// How many /30 networks 10.89.0.0/16 holds.
pub const SLOTS: u32 = 1 << 14;

/// The node's and the container's addresses of network slot `slot` (1-based).
pub fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 89, 0, 0)) + slot * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// Network slots whose node address is on an interface of this machine already: taken
/// by another node running on the same machine (several nodes of a test cluster).
pub fn slots_in_use_on_this_machine() -> Vec<u32> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    let base = u32::from(Ipv4Addr::new(10, 89, 0, 0));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split_once('/')?.0.parse::<Ipv4Addr>().ok())
        .filter_map(|a| u32::from(a).checked_sub(base))
        .filter(|off| *off < SLOTS * 4 && off % 4 == 1)
        .map(|off| off / 4)
        .collect()
}

/// One published port: where the node listens, and the container's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The node's address and port.
    pub host: SocketAddr,
    /// The port in the container.
    pub container: u16,
}

/// Parses `HOST:CTR` (all addresses), `IP:HOST:CTR`, as Docker's `-p` (TCP).
pub fn parse_publish(spec: &str) -> Result<Published> {
    let bad = || {
        ContainerError::Invalid(format!(
            "publish {spec:?}: use HOST_PORT:CONTAINER_PORT or IP:HOST_PORT:CONTAINER_PORT"
        ))
    };
    let spec_tcp = spec.strip_suffix("/tcp").unwrap_or(spec);
    let (host, ctr) = spec_tcp.rsplit_once(':').ok_or_else(bad)?;
    let container: u16 = ctr.parse().map_err(|_| bad())?;
    let host: SocketAddr = match host.rsplit_once(':') {
        Some((ip, port)) => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            SocketAddr::new(
                ip.parse().map_err(|_| bad())?,
                port.parse().map_err(|_| bad())?,
            )
        }
        None => SocketAddr::new(
            Ipv4Addr::UNSPECIFIED.into(),
            host.parse().map_err(|_| bad())?,
        ),
    };
    if container == 0 || host.port() == 0 {
        return Err(bad());
    }
    Ok(Published { host, container })
}

fn ip(args: &[&str], netns_of: Option<i32>) -> Result<()> {
    let mut cmd = match netns_of {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let out = cmd.args(args).output().map_err(|e| {
        ContainerError::Runtime(format!(
            "running `ip` (iproute2) for the container's network: {e}"
        ))
    })?;
    if !out.status.success() {
        return Err(ContainerError::Runtime(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Where Docker runs too, it sets the FORWARD policy to DROP: one rule lets the
/// containers' network through (added once; skipped where iptables is missing).
fn allow_forwarding_between_containers() {
    let rule = ["FORWARD", "-s", NETWORK, "-d", NETWORK, "-j", "ACCEPT"];
    let iptables = |op: &str| {
        Command::new("iptables")
            .arg(op)
            .args(rule)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !iptables("-C") && !iptables("-I") {
        tracing::debug!("no iptables rule for the containers' network (no iptables?)");
    }
}

/// The containers' network.
const NETWORK: &str = "10.89.0.0/16";

/// Brings up loopback in the network namespace of process `pid`, with the ioctl that
/// `ip link set lo up` makes, from a thread that joins that namespace (a thread's
/// network namespace is its own): no process to start, which took longer than the
/// rest of a container's start.
pub fn loopback_up(pid: i32) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let failed = |e: std::io::Error| {
        ContainerError::Runtime(format!("bringing up the container's loopback: {e}"))
    };
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(failed)?;
    let up = || -> std::io::Result<()> {
        let check = |rc: libc::c_int| match rc {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        };
        // SAFETY: setns with a namespace descriptor; it changes this thread only.
        check(unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) })?;
        // SAFETY: socket takes no pointers; the descriptor it returns is owned here.
        let socket =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(socket)?;
        // SAFETY: a descriptor just returned by socket and owned by nobody else.
        let socket = unsafe { OwnedFd::from_raw_fd(socket) };
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
            *to = *from as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq passed.
        check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) })?;
        // SAFETY: the flags member is the one SIOCGIFFLAGS wrote.
        unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) })
    };
    std::thread::scope(|s| s.spawn(up).join())
        .map_err(|_| {
            ContainerError::Runtime("bringing up the container's loopback panicked".into())
        })?
        .map_err(failed)
}

/// Connects the network namespace of process `pid` (the container's init, created but
/// not started) to the node: a veth pair, addresses of `slot`, the node as its route.
pub fn connect(id: &str, pid: i32, slot: u32) -> Result<()> {
    let (node_ip, ctr_ip) = addresses(slot);
    // Containers reach one another through the node, which routes between their /30s
    // (as Docker's bridge does, it turns forwarding on; there is still no NAT out).
    let forward = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(forward).is_ok_and(|v| v.trim() != "1") {
        std::fs::write(forward, "1").map_err(|e| {
            ContainerError::Runtime(format!(
                "turning on IPv4 forwarding for container networks: {e}"
            ))
        })?;
    }
    allow_forwarding_between_containers();
    let host_end = format!("ec{}h", &id[..8]);
    let ctr_end = format!("ec{}c", &id[..8]);
    // A previous run's pair (a restart) went with its namespace; a stale host end
    // (a crash mid-setup) goes now.
    let _ = ip(&["link", "del", &host_end], None);
    ip(
        &[
            "link", "add", &host_end, "type", "veth", "peer", "name", &ctr_end,
        ],
        None,
    )?;
    ip(&["link", "set", &ctr_end, "netns", &pid.to_string()], None)?;
    ip(
        &["addr", "add", &format!("{node_ip}/30"), "dev", &host_end],
        None,
    )?;
    ip(&["link", "set", &host_end, "up"], None)?;
    let inside = Some(pid);
    ip(&["link", "set", &ctr_end, "name", "eth0"], inside)?;
    ip(
        &["addr", "add", &format!("{ctr_ip}/30"), "dev", "eth0"],
        inside,
    )?;
    ip(&["link", "set", "eth0", "up"], inside)?;
    loopback_up(pid)?;
    ip(
        &["route", "add", "default", "via", &node_ip.to_string()],
        inside,
    )?;
    Ok(())
}

/// Binds `p.host` now (so a port in use fails the request that asked for it) and
/// proxies every TCP connection to the container's port, until the task is aborted.
pub fn proxy(
    handle: &tokio::runtime::Handle,
    p: Published,
    to: Ipv4Addr,
) -> Result<tokio::task::JoinHandle<()>> {
    let refused = |e: std::io::Error| {
        ContainerError::Conflict(format!(
            "cannot listen on {} for the container: {e}",
            p.host
        ))
    };
    let listener = std::net::TcpListener::bind(p.host).map_err(refused)?;
    listener.set_nonblocking(true).map_err(refused)?;
    let target = SocketAddr::new(to.into(), p.container);
    Ok(handle.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_read_as_docker_reads_them() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host.to_string(), p.container),
            ("0.0.0.0:8080".into(), 80)
        );
        let p = parse_publish("127.0.0.1:18080:8080/tcp").unwrap();
        assert_eq!(
            (p.host.to_string(), p.container),
            ("127.0.0.1:18080".into(), 8080)
        );
        for bad in ["80", "x:80", "8080:0", "1.2.3:80:80", "8080:80/udp"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        assert_eq!(
            addresses(1),
            (Ipv4Addr::new(10, 89, 0, 5), Ipv4Addr::new(10, 89, 0, 6))
        );
        assert_eq!(addresses(SLOTS - 1).1, Ipv4Addr::new(10, 89, 255, 254));
    }
}
