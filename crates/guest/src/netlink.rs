//! A minimal synchronous rtnetlink client for the requests boot and refresh need: set a
//! link up, give it an IPv4 address or take one away, set the default route.
//!
//! Why not a crate: `rtnetlink` needs an async runtime (the agent has none, to start
//! fast), and `neli` or `netlink-packet-route` bring many types for three fixed messages.
//! Why not `ip`: every fork and exec costs 10-50 ms under TCG, and the image then needs
//! iproute2. Each request asks for an acknowledgement, so a refusal comes back as errno.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;

/// How long to wait for the kernel's acknowledgement; it answers in microseconds.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// An rtnetlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("open rtnetlink socket")]
    Socket(#[source] Errno),
    /// Sending or receiving failed.
    #[error("{request}: no answer from the kernel")]
    Io {
        /// What was asked.
        request: String,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The kernel refused the request.
    #[error("{request}")]
    Rejected {
        /// What was asked.
        request: String,
        /// The kernel's errno.
        #[source]
        source: Errno,
    },
}

/// An open `NETLINK_ROUTE` socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket to the kernel in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(NetlinkError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::from(libc_timeval(ACK_TIMEOUT)),
        )
        .map_err(NetlinkError::Socket)?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sets link `index` administratively up.
    pub fn link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        self.ask(
            format!("set link {index} up"),
            link_up_request(seq, index),
            seq,
        )
    }

    /// Gives link `index` the address `address/prefix_len`, replacing an equal one.
    pub fn address_replace(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let request = address_request(seq, index, address, prefix_len);
        let what = format!("add address {address}/{prefix_len} to link {index}");
        self.ask(what, request, seq)
    }

    /// Takes the address `address/prefix_len` away from link `index`.
    pub fn address_delete(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let request = address_delete_request(seq, index, address, prefix_len);
        let what = format!("delete address {address}/{prefix_len} from link {index}");
        self.ask(what, request, seq)
    }

    /// Sets the main table's default route to `gateway` through link `index`.
    pub fn default_route_replace(
        &mut self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let request = default_route_request(seq, index, gateway);
        let what = format!("add default route via {gateway} on link {index}");
        self.ask(what, request, seq)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn ask(&mut self, what: String, request: Vec<u8>, seq: u32) -> Result<(), NetlinkError> {
        let io = |source| NetlinkError::Io {
            request: what.clone(),
            source,
        };
        send(self.fd.as_raw_fd(), &request, MsgFlags::empty()).map_err(io)?;
        let mut reply = vec![0u8; 8192];
        loop {
            let len = recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(io)?;
            match ack_status(&reply[..len], seq) {
                None => continue,
                Some(0) => return Ok(()),
                Some(code) => {
                    return Err(NetlinkError::Rejected {
                        request: what,
                        source: Errno::from_raw(-code),
                    })
                }
            }
        }
    }
}

fn libc_timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// `RTM_NEWLINK` setting `IFF_UP` on link `index`.
pub fn link_up_request(seq: u32, index: u32) -> Vec<u8> {
    let mut msg = Message::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    msg.push(&[libc::AF_UNSPEC as u8, 0]);
    msg.push(&0u16.to_ne_bytes()); // device type: unchanged
    msg.push(&index.to_ne_bytes());
    msg.push(&IFF_UP.to_ne_bytes()); // flags
    msg.push(&IFF_UP.to_ne_bytes()); // change mask: only IFF_UP
    msg.finish()
}

/// `RTM_NEWADDR` for `address/prefix_len` on link `index`.
pub fn address_request(seq: u32, index: u32, address: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    address_message(RTM_NEWADDR, flags, seq, index, address, prefix_len)
}

/// `RTM_DELADDR` for `address/prefix_len` on link `index`.
pub fn address_delete_request(seq: u32, index: u32, address: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    address_message(RTM_DELADDR, flags, seq, index, address, prefix_len)
}

fn address_message(
    kind: u16,
    flags: u16,
    seq: u32,
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Vec<u8> {
    let mut msg = Message::new(kind, flags, seq);
    msg.push(&[libc::AF_INET as u8, prefix_len, 0, RT_SCOPE_UNIVERSE]);
    msg.push(&index.to_ne_bytes());
    msg.attr(IFA_LOCAL, &address.octets());
    msg.attr(IFA_ADDRESS, &address.octets());
    msg.finish()
}

/// `RTM_NEWROUTE` for `default via gateway dev index` in the main table.
pub fn default_route_request(seq: u32, index: u32, gateway: Ipv4Addr) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let mut msg = Message::new(RTM_NEWROUTE, flags, seq);
    // family, dst_len, src_len, tos, table, protocol, scope, type
    msg.push(&[
        libc::AF_INET as u8,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ]);
    msg.push(&0u32.to_ne_bytes()); // rtm_flags
    msg.attr(RTA_GATEWAY, &gateway.octets());
    msg.attr(RTA_OIF, &index.to_ne_bytes());
    msg.finish()
}

/// The status of the acknowledgement for `seq` in `reply`: 0 for success, a negative errno
/// for a refusal, `None` if `reply` holds no acknowledgement for `seq`.
pub fn ack_status(reply: &[u8], seq: u32) -> Option<i32> {
    let mut rest = reply;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        if len < HEADER_LEN || len > rest.len() {
            return None;
        }
        if kind == NLMSG_ERROR && msg_seq == seq && len >= HEADER_LEN + 4 {
            return Some(i32::from_ne_bytes(rest[16..20].try_into().ok()?));
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    None
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A netlink message under construction: header, fixed part, attributes.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend(0u32.to_ne_bytes()); // length, set by finish
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(flags.to_ne_bytes());
        bytes.extend(seq.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
        Message { bytes }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.bytes.extend((len as u16).to_ne_bytes());
        self.bytes.extend(kind.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.bytes.resize(align(self.bytes.len()), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(msg: &[u8]) -> (u32, u16, u16, u32) {
        let u16_at = |i: usize| u16::from_ne_bytes([msg[i], msg[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().unwrap());
        (u32_at(0), u16_at(4), u16_at(6), u32_at(8))
    }

    #[test]
    fn requests_have_exact_lengths_and_ask_for_an_ack() {
        let link = link_up_request(1, 2);
        assert_eq!(
            header(&link),
            (32, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1)
        );

        let addr = address_request(2, 2, Ipv4Addr::new(10, 0, 0, 2), 30);
        assert_eq!(addr.len(), 16 + 8 + 8 + 8);
        assert_eq!(header(&addr).0 as usize, addr.len());
        assert_eq!(&addr[16..20], &[libc::AF_INET as u8, 30, 0, 0]);
        assert_eq!(&addr[28..32], &[10, 0, 0, 2]);

        let delete = address_delete_request(4, 2, Ipv4Addr::new(10, 0, 0, 2), 30);
        assert_eq!(
            header(&delete),
            (40, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 4)
        );
        assert_eq!(
            &delete[16..],
            &addr[16..],
            "the same address body as the add"
        );

        let route = default_route_request(3, 2, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(route.len(), 16 + 12 + 8 + 8);
        assert_eq!(header(&route).2 & NLM_F_CREATE, NLM_F_CREATE);
        assert_eq!(&route[32..36], &[10, 0, 0, 1]);
    }

    fn error_message(seq: u32, code: i32) -> Vec<u8> {
        let mut msg = Message::new(NLMSG_ERROR, 0, seq);
        msg.push(&code.to_ne_bytes());
        msg.push(&[0; 16]); // the echoed request header
        msg.finish()
    }

    #[test]
    fn ack_status_finds_its_sequence_number() {
        let mut reply = error_message(6, -libc::EEXIST);
        reply.extend(error_message(7, 0));
        assert_eq!(ack_status(&reply, 7), Some(0));
        assert_eq!(ack_status(&reply, 6), Some(-libc::EEXIST));
        assert_eq!(ack_status(&reply, 8), None);
        assert_eq!(ack_status(&reply[..10], 6), None);
    }

    /// Runs `f` on a thread in a fresh network namespace, where it may change links and
    /// routes freely; `None` where this process may not create one (not root).
    fn in_private_netns<T: Send + 'static>(f: fn() -> T) -> Option<T> {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .ok()
                .map(|()| f())
        })
        .join()
        .unwrap()
    }

    fn thread_routes() -> String {
        std::fs::read_to_string("/proc/thread-self/net/route").unwrap()
    }

    #[test]
    fn kernel_accepts_link_address_and_route_in_a_private_namespace() {
        // Documentation-only addresses (RFC 5737) on the namespace's own loopback.
        let routes = in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            nl.link_up(1).unwrap();
            nl.address_replace(1, Ipv4Addr::new(192, 0, 2, 2), 30)
                .unwrap();
            nl.address_replace(1, Ipv4Addr::new(192, 0, 2, 2), 30)
                .unwrap();
            nl.default_route_replace(1, Ipv4Addr::new(192, 0, 2, 1))
                .unwrap();
            thread_routes()
        });
        let Some(routes) = routes else {
            eprintln!("skipped: cannot create a network namespace here");
            return;
        };
        // /proc/net/route: Iface Destination Gateway ..., addresses in little-endian hex.
        // The kernel takes the route only with the link up and the gateway on-link, that
        // is, after the first two requests worked.
        assert!(routes.contains("lo\t00000000\t010200C0"), "{routes}");
    }

    #[test]
    fn kernel_refusal_is_an_errno_naming_the_request() {
        let error = in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            nl.default_route_replace(1, Ipv4Addr::new(198, 51, 100, 1))
                .unwrap_err()
        });
        let Some(error) = error else {
            eprintln!("skipped: cannot create a network namespace here");
            return;
        };
        assert_eq!(
            error.to_string(),
            "add default route via 198.51.100.1 on link 1"
        );
        assert!(matches!(error, NetlinkError::Rejected { .. }));
    }
}
