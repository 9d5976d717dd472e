//! A DHCP client for the booting node (RFC 2131): DISCOVER, OFFER, REQUEST, ACK over a
//! UDP socket bound to the interface, with the broadcast flag set so that replies come
//! back before the interface has an address. Only what a node needs: its address,
//! netmask, router and DNS servers. (dhcproto would parse the messages, but it pulls in
//! a DNS library for the domain-name options; the four options here are a few lines.)

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::{NetbootError, Result};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What the DHCP server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// This node's address.
    pub address: Ipv4Addr,
    /// Its network's prefix length.
    pub prefix: u8,
    /// The default route, if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server that gave it.
    pub server: Ipv4Addr,
}

/// A client message: `kind` (DISCOVER or REQUEST) from `mac` with transaction `xid`.
pub fn message(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6; // hardware address length
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast: answer before this interface has an address
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&[53, 1, kind]);
    if let Some(ip) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server {
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&ip.octets());
    }
    m.extend_from_slice(&[55, 3, 1, 3, 6]); // asks for: netmask, router, DNS
    m.push(255);
    m.resize(300, 0); // BOOTP's minimum
    m
}

/// A server reply to transaction `xid`: its message type and the lease it carries.
pub fn parse(buf: &[u8], xid: u32) -> Option<(u8, Lease)> {
    if buf.len() < 240 || buf[0] != 2 || buf[4..8] != xid.to_be_bytes() || buf[236..240] != MAGIC {
        return None;
    }
    let address = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
    let (mut kind, mut mask, mut router, mut dns, mut server) = (0, None, None, Vec::new(), None);
    let mut at = 240;
    while at < buf.len() {
        let code = buf[at];
        if code == 255 {
            break;
        }
        if code == 0 {
            at += 1;
            continue;
        }
        let len = *buf.get(at + 1)? as usize;
        let v = buf.get(at + 2..at + 2 + len)?;
        let ip = |i: usize| -> Option<Ipv4Addr> {
            let b = v.get(i..i + 4)?;
            Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        match code {
            53 => kind = *v.first()?,
            1 => mask = ip(0),
            3 => router = ip(0),
            6 => dns = (0..len / 4).filter_map(|i| ip(i * 4)).collect(),
            54 => server = ip(0),
            _ => {}
        }
        at += 2 + len;
    }
    let prefix = mask.map_or(24, |m| u32::from(m).leading_ones() as u8);
    Some((
        kind,
        Lease {
            address,
            prefix,
            router,
            dns,
            server: server?,
        },
    ))
}

/// Asks for a lease on interface `iface` (up, without an address) whose hardware
/// address is `mac`, trying for `timeout`.
pub fn lease(iface: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))?;
    socket.set_broadcast(true)?;
    crate::net::bind_to_device(&socket, iface)?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let deadline = Instant::now() + timeout;
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw).map_err(|e| NetbootError::Network(e.to_string()))?;
    let xid = u32::from_be_bytes(raw);
    let mut buf = [0u8; 1500];
    let mut offered: Option<Lease> = None;
    while Instant::now() < deadline {
        let asking = match &offered {
            None => message(DISCOVER, xid, mac, None, None),
            Some(o) => message(REQUEST, xid, mac, Some(o.address), Some(o.server)),
        };
        socket.send_to(&asking, broadcast)?;
        let wait_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < wait_until {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            match (parse(&buf[..n], xid), &offered) {
                (Some((OFFER, l)), None) => {
                    offered = Some(l);
                    break;
                }
                (Some((ACK, l)), Some(_)) => return Ok(l),
                (Some((NAK, _)), Some(_)) => {
                    offered = None; // start over
                    break;
                }
                _ => {}
            }
        }
    }
    Err(NetbootError::Network(format!(
        "no DHCP lease on {iface} within {} s",
        timeout.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's reply as a DHCP server writes one.
    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = 2;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 54, 4, 10, 0, 2, 2, 255]);
        m
    }

    #[test]
    fn requests_are_well_formed_and_replies_give_the_lease() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let m = message(REQUEST, 7, mac, Some(Ipv4Addr::new(10, 0, 2, 15)), None);
        assert_eq!(m.len(), 300);
        assert_eq!((m[0], m[10], &m[28..34]), (1, 0x80, &mac[..]));
        assert_eq!(&m[236..243], &[99, 130, 83, 99, 53, 1, REQUEST]);
        assert_eq!(&m[243..249], &[50, 4, 10, 0, 2, 15]);
        let (kind, lease) = parse(&reply(ACK, 7), 7).unwrap();
        assert_eq!(kind, ACK);
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
                server: Ipv4Addr::new(10, 0, 2, 2),
            }
        );
        assert!(parse(&reply(ACK, 7), 8).is_none(), "another transaction");
        let mut cut = reply(ACK, 7);
        cut.truncate(250);
        assert!(parse(&cut, 7).is_none(), "an option cut short is no lease");
        assert!(parse(&[2; 100], 7).is_none());
    }
}
