//! Network interfaces as PID 1 sets them up, with the kernel's ioctls (no `ip` binary
//! in the image): up, an IPv4 address, a default route.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::{NetbootError, Result};

fn ifreq(name: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= r.ifr_name.len() {
        return Err(NetbootError::Network(format!("no interface name {name:?}")));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it by family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(request: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: arg points to the struct this request takes, alive for the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), request, arg) } != 0 {
        return Err(NetbootError::Network(format!(
            "{what}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Brings interface `name` up.
pub fn up(name: &str) -> Result<()> {
    let mut r = ifreq(name)?;
    let read = &mut r as *mut libc::ifreq as *mut libc::c_void;
    ioctl(
        libc::SIOCGIFFLAGS,
        read,
        &format!("reading the flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    let write = &mut r as *mut libc::ifreq as *mut libc::c_void;
    ioctl(libc::SIOCSIFFLAGS, write, &format!("bringing {name} up"))
}

/// Gives interface `name` the address `ip`/`prefix`.
pub fn address(name: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr(ip);
    let p = &mut r as *mut libc::ifreq as *mut libc::c_void;
    ioctl(
        libc::SIOCSIFADDR,
        p,
        &format!("giving {name} the address {ip}"),
    )?;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    let p = &mut r as *mut libc::ifreq as *mut libc::c_void;
    ioctl(
        libc::SIOCSIFNETMASK,
        p,
        &format!("setting the netmask of {name}"),
    )
}

/// Routes everything not local through `gateway`.
pub fn default_route(gateway: Ipv4Addr) -> Result<()> {
    // SAFETY: rtentry is plain data; all zeroes is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    let p = &mut rt as *mut libc::rtentry as *mut libc::c_void;
    ioctl(libc::SIOCADDRT, p, &format!("routing through {gateway}"))
}

/// Sends and receives on `socket` through interface `name` only.
pub fn bind_to_device(socket: &UdpSocket, name: &str) -> Result<()> {
    // SAFETY: name's bytes outlive the call; the length is theirs.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr() as *const libc::c_void,
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(NetbootError::Network(format!(
            "binding the DHCP socket to {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The hardware address of interface `name`.
pub fn mac(name: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(NetbootError::Network(format!(
            "{name} has no Ethernet address"
        )));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| NetbootError::Network(format!("{name}: address {}", text.trim())))?;
    }
    Ok(mac)
}

/// The machine's Ethernet interfaces (not loopback), by name.
pub fn ethernet_interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .filter(|n| {
                    std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                        .is_ok_and(|t| t.trim() == "1")
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
