//! `edgecloud init`: the edgecloud binary as PID 1 of a booted node image. It mounts
//! the kernel's file systems, loads the image's modules, brings the network up (DHCP,
//! or an address from the kernel command line), starts `edgecloud serve` as its child,
//! reaps every process that ends, starts the node again if it dies, and on SIGTERM,
//! SIGINT (Ctrl-Alt-Del) or SIGPWR stops the node and powers the machine off.
//!
//! Kernel command line (all optional):
//! - `edgecloud.serve="--site s1 --join 10.0.0.1:9420"`: more `serve` arguments;
//! - `edgecloud.env.NAME=VALUE`: an environment variable for the node;
//! - `edgecloud.ip=10.0.2.15/24` and `edgecloud.gateway=10.0.2.2`: no DHCP;
//! - `edgecloud.on_exit=poweroff`: power off when the node ends, instead of starting it
//!   again;
//! - `edgecloud.image=SHA256`: the image's hash (the boot server adds it), logged;
//! - `edgecloud.format=blank|never`: whether blank disks are formatted (see `disks`).
//!
//! Disks of the node's (`disks`) are mounted at `/disks/LABEL`; their `shards/` folders
//! are the node's `--disk`s and one of them keeps its data directory (`node/`). Without
//! one, the data directory is in memory.

use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::disks::{self, FormatPolicy};
use crate::{NetbootError, Result, dhcp, image, net};

/// Where the node keeps its data directory when it has no disk: memory only (see
/// docs/netboot.md).
pub const DATA: &str = "/run/edgecloud";
/// The node's secret files: on the initramfs's root, which is memory. The node derives
/// its key from the cluster secret and fetches the shared keys at every start, so no
/// secret is ever written to a disk (`serve --secrets-dir`).
const SECRETS: &str = "/run/edgecloud-secrets";

/// The disks mounted at boot, unmounted before power-off.
static MOUNTED: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();

/// What the kernel command line asks of the node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootParams {
    /// More `edgecloud serve` arguments.
    pub serve: Vec<String>,
    /// Environment for the node.
    pub env: Vec<(String, String)>,
    /// A fixed address instead of DHCP.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// The gateway with a fixed address.
    pub gateway: Option<Ipv4Addr>,
    /// Power off when the node ends.
    pub poweroff_on_exit: bool,
    /// The image's hash, as the boot server named it.
    pub image: Option<String>,
    /// Whether blank disks are formatted.
    pub format: FormatPolicy,
}

impl BootParams {
    /// Whether the node can take its secrets from the cluster at every start: it joins
    /// (`--join`) with the cluster secret from the boot configuration, or with a machine
    /// invitation (`ecmac2_`, or the older `ecmac1_`, asked with at every boot); not with a one-time invitation
    /// (a used one cannot be redeemed again after a reboot).
    pub fn secrets_from_cluster(&self) -> bool {
        let machine_invite = self
            .serve
            .iter()
            .chain(
                self.env
                    .iter()
                    .filter(|(k, _)| k == "EDGECLOUD_INVITE")
                    .map(|(_, v)| v),
            )
            // `ecmac` and a format number: the tokens `cluster invite --machines` prints.
            .any(|a| a.trim_start_matches("--invite=").starts_with("ecmac"));
        if machine_invite {
            return true;
        }
        let joins = self
            .serve
            .iter()
            .any(|a| a == "--join" || a.starts_with("--join="))
            || self.env.iter().any(|(k, _)| k == "EDGECLOUD_JOIN");
        let secret = self
            .env
            .iter()
            .any(|(k, _)| k == "EDGECLOUD_CLUSTER_SECRET")
            || self
                .serve
                .iter()
                .any(|a| a == "--secret-file" || a.starts_with("--secret-file="));
        joins && secret
    }
}

/// Splits a kernel command line into words, keeping "double-quoted" parts together.
pub(crate) fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads the `edgecloud.*` parameters of a kernel command line; others are the
/// kernel's. A malformed one is an error that names it.
pub fn parse_cmdline(line: &str) -> Result<BootParams> {
    let mut p = BootParams::default();
    let bad = |w: &str, why: &str| NetbootError::Boot(format!("kernel parameter {w}: {why}"));
    for w in words(line) {
        let Some(rest) = w.strip_prefix("edgecloud.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "serve" => p.serve.extend(value.split_whitespace().map(str::to_string)),
            "ip" => {
                let (ip, prefix) = value.split_once('/').unwrap_or((value, "24"));
                let ip = ip.parse().map_err(|_| bad(&w, "use ADDRESS/PREFIX"))?;
                let prefix: u8 = prefix.parse().map_err(|_| bad(&w, "use ADDRESS/PREFIX"))?;
                if prefix > 32 {
                    return Err(bad(&w, "the prefix is 0 to 32"));
                }
                p.ip = Some((ip, prefix));
            }
            "image" => p.image = Some(value.to_string()),
            // A machine invitation (or a one-time one): `serve --invite TOKEN`.
            "invite" => {
                p.serve.push("--invite".into());
                p.serve.push(value.to_string());
            }
            "sig" => {} // checked by `signing::verify`
            "format" => {
                p.format = FormatPolicy::parse(value).map_err(|e| bad(&w, &e.to_string()))?
            }
            "gateway" => p.gateway = Some(value.parse().map_err(|_| bad(&w, "an IPv4 address"))?),
            "on_exit" => match value {
                "poweroff" => p.poweroff_on_exit = true,
                "restart" => p.poweroff_on_exit = false,
                _ => return Err(bad(&w, "poweroff or restart")),
            },
            k => match k.strip_prefix("env.") {
                Some(name) if !name.is_empty() => p.env.push((name.to_string(), value.to_string())),
                _ => return Err(bad(&w, "unknown; see docs/netboot.md")),
            },
        }
    }
    Ok(p)
}

/// Init's console lines, also kept in memory for the node (named to it in
/// [`INIT_LOG_ENV`]), which shows them with its own to `edgecloud cluster logs`.
pub const INIT_LOG: &str = "/run/edgecloud-init.log";
/// The environment variable that names [`INIT_LOG`] to the node.
pub const INIT_LOG_ENV: &str = "EDGECLOUD_INIT_LOG";

/// A line on the console, where the machine's operator sees it, and in [`INIT_LOG`]
/// (once /run is mounted).
fn say(msg: &str) {
    let line = format!("edgecloud init: {msg}\n");
    let mut out = std::io::stdout();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(INIT_LOG) {
        let _ = f.write_all(line.as_bytes());
    }
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    std::fs::create_dir_all(target)?;
    let c = |s: &str| CString::new(s).map_err(|e| NetbootError::Boot(e.to_string()));
    let (s, t, f, d) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(NetbootError::Boot(format!(
                "mounting {fstype} on {target}: {e}"
            )));
        }
    }
    Ok(())
}

fn mount_kernel_file_systems() -> Result<()> {
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    mount("proc", "/proc", "proc", nosuid | nodev | noexec, "")?;
    mount("sysfs", "/sys", "sysfs", nosuid | nodev | noexec, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        nosuid | noexec,
        "gid=5,mode=0620,ptmxmode=0666",
    )?;
    mount("tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777")?;
    mount("tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755")?;
    std::fs::write(INIT_LOG, b"")?;
    mount("tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777")?;
    mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nosuid | nodev | noexec,
        "",
    )?;
    Ok(())
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out-parameter.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    u.release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

/// Loads the image's modules in their order; returns how many it loaded.
fn load_modules() -> Result<usize> {
    let base = format!("/lib/modules/{}", kernel_release());
    let order = match std::fs::read_to_string(format!("{base}/{}", image::LOAD_ORDER)) {
        Ok(o) => o,
        Err(_) => return Ok(0), // an image for another kernel, or without modules
    };
    let mut loaded = 0;
    for path in order.lines().filter(|l| !l.is_empty()) {
        let file = std::fs::File::open(format!("{base}/{path}"))?;
        let none = c"";
        // SAFETY: finit_module takes an open file, a NUL-terminated parameter string
        // and flags; both outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                none.as_ptr(),
                0,
            )
        };
        let e = std::io::Error::last_os_error();
        if r == 0 {
            loaded += 1;
        } else if e.raw_os_error() != Some(libc::EEXIST) {
            say(&format!("module {path}: {e}"));
        }
    }
    Ok(loaded)
}

/// Brings up loopback and the first Ethernet interface that gets an address; returns
/// the address.
fn network(p: &BootParams) -> Result<Ipv4Addr> {
    net::up("lo")?;
    net::address("lo", Ipv4Addr::LOCALHOST, 8)?;
    // Drivers register their interfaces as modules load; give them a moment.
    let mut interfaces = Vec::new();
    for _ in 0..50 {
        interfaces = net::ethernet_interfaces();
        if !interfaces.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut last =
        NetbootError::Network("no Ethernet interface (is its driver in the image?)".into());
    for iface in interfaces {
        net::up(&iface)?;
        let lease = match p.ip {
            Some((ip, prefix)) => Ok(dhcp::Lease {
                address: ip,
                prefix,
                router: p.gateway,
                dns: Vec::new(),
                server: Ipv4Addr::UNSPECIFIED,
            }),
            None => dhcp::lease(&iface, net::mac(&iface)?, Duration::from_secs(15)),
        };
        match lease {
            Ok(l) => {
                net::address(&iface, l.address, l.prefix)?;
                if let Some(gw) = l.router {
                    net::default_route(gw)?;
                }
                if !l.dns.is_empty() {
                    let body: String = l.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
                    let _ = std::fs::write("/etc/resolv.conf", body);
                }
                say(&format!(
                    "{iface}: {}/{} via {}",
                    l.address,
                    l.prefix,
                    l.router.map_or("no router".into(), |r| r.to_string())
                ));
                return Ok(l.address);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset and sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Where the node keeps its data, and its disks' shard folders.
struct Storage {
    data: std::path::PathBuf,
    shards: Vec<std::path::PathBuf>,
}

/// Waits for the block devices to settle (virtio and NVMe disks appear a moment after
/// their drivers load), then prepares the disks (`disks::prepare`) and says what it
/// found.
fn storage(p: &BootParams) -> Storage {
    let places = disks::Places::default();
    let (mut seen, mut stable_since) = (Vec::new(), std::time::Instant::now());
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let now = disks::block_devices(&places.sys_block);
        if now != seen {
            (seen, stable_since) = (now, std::time::Instant::now());
        } else if stable_since.elapsed() >= Duration::from_millis(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mount_ext4 = |device: &std::path::Path, at: &std::path::Path| {
        let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
        mount(&text(device), &text(at), "ext4", libc::MS_NOATIME, "")
    };
    let (found, said) = disks::prepare(p.format, &places, &mount_ext4);
    for line in said {
        say(&line);
    }
    for d in &found {
        let how = if d.formatted { "formatted" } else { "found" };
        say(&format!("disk {}: {how} {}", d.name, d.label));
    }
    let _ = MOUNTED.set(found.iter().map(|d| d.mountpoint.clone()).collect());
    let data = match disks::data_disk(&found) {
        Some(d) => {
            say(&format!("the node's data is on {}", d.label));
            d.mountpoint.join(disks::NODE_DIR)
        }
        None => {
            say("no disk of ours: the node's data is in memory");
            DATA.into()
        }
    };
    Storage {
        data,
        shards: found
            .iter()
            .map(|d| d.mountpoint.join(disks::SHARDS_DIR))
            .collect(),
    }
}

fn start_node(address: Ipv4Addr, p: &BootParams, storage: &Storage) -> Result<u32> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("edgecloud")
        .arg("serve")
        .arg("--data")
        .arg(&storage.data)
        .arg("--bind")
        .arg(address.to_string());
    if p.secrets_from_cluster() {
        say(
            "secrets: in memory only (the node key derived, the shared keys fetched from the cluster)",
        );
        cmd.arg("--secrets-dir").arg(SECRETS);
    } else {
        say("secrets: on the data disk (no --join and cluster secret to fetch them with)");
    }
    for shards in &storage.shards {
        cmd.arg("--disk").arg(shards);
    }
    cmd.args(&p.serve).envs(p.env.iter().map(|(k, v)| (k, v)));
    if let Some(image) = &p.image {
        cmd.env("EDGECLOUD_BOOTED_IMAGE", image);
    }
    cmd.env(INIT_LOG_ENV, INIT_LOG);
    // SAFETY: sigprocmask is async-signal-safe: the node gets the signals init blocks.
    unsafe {
        cmd.pre_exec(|| {
            let empty = signal_set(&[]);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| NetbootError::Boot(format!("starting edgecloud serve: {e}")))?;
    say(&format!("node started (pid {})", child.id()));
    Ok(child.id())
}

fn power_off(node: Option<u32>) -> ! {
    if let Some(pid) = node {
        say("stopping the node");
        // SAFETY: kill sends a signal; the pid is our child's.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        for _ in 0..200 {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on our child.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r == pid as libc::pid_t || r < 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    for at in MOUNTED.get().into_iter().flatten() {
        if let Ok(c) = CString::new(at.as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path alive for the call.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                say(&format!(
                    "unmounting {}: {}",
                    at.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    say("powering off");
    // SAFETY: sync and reboot take no pointers; PID 1 may power the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Runs as PID 1; never returns (the machine powers off).
pub fn run() -> ! {
    say("starting");
    if let Err(e) = mount_kernel_file_systems() {
        say(&format!("{e}"));
    }
    match load_modules() {
        Ok(n) => say(&format!("{n} kernel modules loaded")),
        Err(e) => say(&format!("loading modules: {e}")),
    }
    // Ctrl-Alt-Del comes to init as SIGINT instead of rebooting at once.
    // SAFETY: reboot with CAD_OFF only changes what Ctrl-Alt-Del does.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = match parse_cmdline(&cmdline) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("{e}; booting with defaults"));
            BootParams::default()
        }
    };
    if let Some(image) = &params.image {
        say(&format!("booted image sha256 {image}"));
    }
    // An image with a boot key starts a node only for a configuration signed with it.
    let refused = match std::fs::read_to_string(format!("/{}", crate::signing::PUBLIC_KEY_PATH)) {
        Ok(key) => match crate::signing::verify(&key, &cmdline) {
            Ok(()) => {
                say("the boot configuration is signed with the image's key");
                false
            }
            Err(e) => {
                say(&format!(
                    "{e}; the node does not start (boot with a configuration from the cluster's boot server, or signed with `edgecloud node-image sign`)"
                ));
                true
            }
        },
        Err(_) => false,
    };
    let address = loop {
        match network(&params) {
            Ok(a) => break a,
            Err(e) => {
                say(&format!("{e}; trying again in 5 s"));
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    let watched = [
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGPWR,
        libc::SIGUSR2,
    ];
    let set = signal_set(&watched);
    // SAFETY: blocking signals to take them with sigtimedwait below.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // Nothing of a refused configuration is acted on: no disk is touched.
    let storage = match refused {
        true => Storage {
            data: DATA.into(),
            shards: Vec::new(),
        },
        false => storage(&params),
    };
    let mut node = match refused {
        true => None,
        false => start_node(address, &params, &storage).ok(),
    };
    let mut restart_at: Option<std::time::Instant> = None;
    loop {
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: set and timeout are valid; the info out-parameter may be null.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR | libc::SIGUSR2 => power_off(node),
            libc::SIGCHLD => loop {
                let mut status = 0;
                // SAFETY: reaping any ended child of PID 1 (orphans come here too).
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if Some(pid as u32) == node {
                    say(&format!("the node ended (status {status})"));
                    node = None;
                    if params.poweroff_on_exit {
                        power_off(None);
                    }
                    restart_at = Some(std::time::Instant::now() + Duration::from_secs(2));
                }
            },
            _ => {}
        }
        if !refused && node.is_none() && restart_at.is_some_and(|t| std::time::Instant::now() >= t)
        {
            restart_at = None;
            node = start_node(address, &params, &storage).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_gives_the_nodes_settings() {
        let p = parse_cmdline(
            "BOOT_IMAGE=vmlinuz console=ttyS0 quiet edgecloud.serve=\"--site s2 --join 10.0.2.2:9420\" \
             edgecloud.env.EDGECLOUD_ACCESS_KEY=AK edgecloud.ip=10.0.2.15/24 \
             edgecloud.gateway=10.0.2.2 edgecloud.on_exit=poweroff edgecloud.format=never\n",
        )
        .unwrap();
        assert_eq!(p.serve, ["--site", "s2", "--join", "10.0.2.2:9420"]);
        // Joining, but the secret from no boot parameter: secrets stay on the disk.
        assert!(!p.secrets_from_cluster());
        assert_eq!(
            p.env,
            [("EDGECLOUD_ACCESS_KEY".to_string(), "AK".to_string())]
        );
        assert_eq!(p.ip, Some((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert_eq!(p.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(p.poweroff_on_exit);
        let with_secret = parse_cmdline(
            "edgecloud.serve=\"--join 10.0.2.2:9420\" edgecloud.env.EDGECLOUD_CLUSTER_SECRET=0123456789abcdef\n",
        )
        .unwrap();
        assert!(
            with_secret.secrets_from_cluster(),
            "joins, with the secret: in memory"
        );
        let machine =
            parse_cmdline("edgecloud.serve=\"--site s2\" edgecloud.invite=ecmac2_AAAA").unwrap();
        assert_eq!(machine.serve, ["--site", "s2", "--invite", "ecmac2_AAAA"]);
        assert!(
            machine.secrets_from_cluster(),
            "a machine invitation: in memory"
        );
        let once = parse_cmdline("edgecloud.serve=\"--invite ecinv1_AAAA\"").unwrap();
        assert!(
            !once.secrets_from_cluster(),
            "a one-time invitation: on the disk"
        );
        assert_eq!(p.format, FormatPolicy::Never);
        assert_eq!(
            parse_cmdline("console=ttyS0").unwrap(),
            BootParams::default()
        );
        for bad in [
            "edgecloud.ip=10.0.2/24",
            "edgecloud.ip=10.0.2.1/33",
            "edgecloud.colour=red",
            "edgecloud.format=sometimes",
        ] {
            let e = parse_cmdline(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
    }
}
