//! Joining a trace across a connection whose two ends gotel traces on the same node, without
//! writing anything into the request (`join.same_node`): the client side stores its CLIENT span's
//! context under the connection, the server side looks the connection up when the request
//! brought no `traceparent`.
//!
//! The connection is named the same way from both ends by what Go keeps in memory: each end's
//! `net.netFD` has `laddr` and `raddr` (`*net.TCPAddr`); the client's local address is the
//! server's remote one and the other way round. The rules here turn those into one key
//! ([`ConnKey`]) and decide whether a stored context is still valid ([`fresh`]); the kernel
//! (`sidecar-ebpf/src/propagation/same_node.rs`) and the host tests call the same code.
//!
//! - Addresses are normalised to 16 bytes (an IPv4 address as `::ffff:a.b.c.d`): a client that
//!   dialled `127.0.0.1` holds a 4-byte `IP`, while a server listening on `:8080` (dual stack)
//!   sees the same peer as a 16-byte v4-mapped address.
//! - Loopback addresses are the same in every network namespace (every pod has its own
//!   `127.0.0.1`), so a loopback key also carries the network namespace of the process that
//!   made it (user space knows it, `/proc/PID/ns/net`); other addresses are unique on the node
//!   and keep `netns` 0, so a client and a server in two pods still meet.
//! - A context is used once (the server removes it) and only while [`fresh`]: a port that a new,
//!   untraced client reuses later cannot join an old trace.

/// The entry of `net/http.(*persistConn).roundTrip` (`gotel_same_node_client`). An entry hook's
/// cookie has no RET offset, so bit 49 (in the offset's range) is free for it.
pub const COOKIE_SAME_NODE_CLIENT: u64 = 1 << 49;

/// How long a stored client context may wait for its server span (ns). The request is written
/// right after it is stored and a keep-alive server reads it at once; a second is plenty and
/// much shorter than the 60 s a closed connection's 4-tuple stays in TIME_WAIT.
pub const CONTEXT_MAX_AGE_NS: u64 = 1_000_000_000;

/// `AF_INET`, `AF_INET6`, `SOCK_STREAM` as `net.netFD` keeps them.
pub const AF_INET: u64 = 2;
pub const AF_INET6: u64 = 10;
pub const SOCK_STREAM: u64 = 1;

/// A TCP connection as both of its ends see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    /// Network namespace inode for loopback connections, else 0.
    pub netns: u32,
}

/// The client span a connection's next request belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnContext {
    pub trace_id: [u8; 16],
    /// The CLIENT span: the server span's parent.
    pub span_id: u64,
    /// `bpf_ktime_get_ns` when the client stored it.
    pub stored_ns: u64,
    /// 1 = sampled.
    pub sampled: u32,
    pub _pad: u32,
}

/// Field offsets of one target (`SAME_NODE_CONFIG`[0]), from DWARF or the layout table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SameNodeConfig {
    /// 1 once filled.
    pub enabled: u32,
    /// The probe id of the HTTP client span (`Transport.roundTrip`), whose frame is innermost
    /// when `persistConn.roundTrip` is entered; `u32::MAX` when the binary has no client spans.
    pub client_probe: u32,
    /// The target's network namespace inode (for loopback keys).
    pub netns: u32,
    /// `net/http.persistConn.conn` (a `net.Conn` interface).
    pub pconn_conn: u32,
    /// `net/http.response.conn` and `net/http.conn.rwc` (a `net.Conn` interface).
    pub response_conn: u32,
    pub conn_rwc: u32,
    /// `net.TCPConn.conn` + `net.conn.fd`: where the `*netFD` is in a `*net.TCPConn`.
    pub tcpconn_fd: u32,
    /// `net.netFD.family`, `.sotype`, `.laddr`, `.raddr` (interfaces).
    pub fd_family: u32,
    pub fd_sotype: u32,
    pub fd_laddr: u32,
    pub fd_raddr: u32,
    /// `net.TCPAddr.IP` (a slice) and `.Port`.
    pub addr_ip: u32,
    pub addr_port: u32,
    /// `crypto/tls.Conn.conn` (the `net.Conn` under TLS), or [`NO_OFFSET`] (a binary without TLS).
    pub tls_conn: u32,
}

/// An offset the binary does not have.
pub const NO_OFFSET: u32 = u32::MAX;

/// An IP address as Go's `net.IP` holds it (`len` 4 or 16 bytes of `raw`), as 16 bytes.
#[inline(always)]
pub fn ip16(raw: &[u8; 16], len: u64) -> Option<[u8; 16]> {
    let mut ip = *raw;
    widen_ip(&mut ip, len).then_some(ip)
}

/// [`ip16`] in place (the kernel builds keys in scratch memory, not on its small stack): `ip`
/// holds Go's `len` bytes at its start and becomes the 16-byte form (IPv4 as v4-mapped IPv6).
/// False for a length that is no IP (a nil `net.IP`).
#[inline(always)]
pub fn widen_ip(ip: &mut [u8; 16], len: u64) -> bool {
    match len {
        16 => true,
        4 => {
            let (a, b, c, d) = (ip[0], ip[1], ip[2], ip[3]);
            *ip = [0; 16];
            ip[10] = 0xff;
            ip[11] = 0xff;
            ip[12] = a;
            ip[13] = b;
            ip[14] = c;
            ip[15] = d;
            true
        }
        _ => false,
    }
}

/// `::1` or `::ffff:127.x.y.z`.
#[inline(always)]
pub fn is_loopback(ip: &[u8; 16]) -> bool {
    let mut zero_to_10 = true;
    let mut i = 0;
    while i < 10 {
        zero_to_10 &= ip[i] == 0;
        i += 1;
    }
    let v6_one = zero_to_10 && ip[10] == 0 && ip[11] == 0 && ip[12] == 0 && ip[13] == 0 && ip[14] == 0 && ip[15] == 1;
    let v4_127 = zero_to_10 && ip[10] == 0xff && ip[11] == 0xff && ip[12] == 127;
    v6_one || v4_127
}

/// A Go `int` port as a TCP port (0 and out-of-range values are no port).
#[inline(always)]
pub fn port(go_int: u64) -> Option<u16> {
    if go_int == 0 || go_int > 0xffff {
        None
    } else {
        Some(go_int as u16)
    }
}

/// Whether the netFD fields read look like a TCP socket's (else the interface held something
/// other than a `*net.TCPConn`, e.g. a `*tls.Conn`, and the addresses are not read).
#[inline(always)]
pub fn is_tcp(family: u64, sotype: u64) -> bool {
    (family == AF_INET || family == AF_INET6) && sotype == SOCK_STREAM
}

impl ConnKey {
    /// The key of the connection from `client` to `server` (normalised addresses and ports),
    /// made in network namespace `netns`.
    #[inline(always)]
    pub fn new(client: ([u8; 16], u16), server: ([u8; 16], u16), netns: u32) -> ConnKey {
        let mut key = ConnKey {
            client_ip: client.0,
            server_ip: server.0,
            client_port: client.1,
            server_port: server.1,
            netns: 0,
        };
        key.set_netns(netns);
        key
    }

    /// The namespace part, once both ends are in place: `netns` for a loopback connection
    /// (every pod has its own 127.0.0.1), else 0 (a pod address is unique on the node).
    #[inline(always)]
    pub fn set_netns(&mut self, netns: u32) {
        let loopback = is_loopback(&self.client_ip) || is_loopback(&self.server_ip);
        self.netns = if loopback { netns } else { 0 };
    }
}

/// Whether a context stored at `stored_ns` may still be joined at `now_ns`.
#[inline(always)]
pub fn fresh(stored_ns: u64, now_ns: u64) -> bool {
    now_ns >= stored_ns && now_ns - stored_ns <= CONTEXT_MAX_AGE_NS
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnContext {}
    unsafe impl aya::Pod for super::SameNodeConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        ip16(&[a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 4).unwrap()
    }

    #[test]
    fn both_ends_build_the_same_key() {
        // The client dialled 127.0.0.1:8080 (4-byte IPs); a dual-stack server sees v4-mapped
        // 16-byte addresses.
        let client_side = ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 1]), 8080), 7);
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        let server_side = ConnKey::new((ip16(&mapped, 16).unwrap(), 40000), (ip16(&mapped, 16).unwrap(), 8080), 7);
        assert_eq!(client_side, server_side);
        // Another port, another connection.
        assert_ne!(client_side, ConnKey::new((v4([127, 0, 0, 1]), 40001), (v4([127, 0, 0, 1]), 8080), 7));
    }

    #[test]
    fn loopback_keys_are_per_network_namespace_others_are_not() {
        let lo = ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 1]), 8080), 7);
        assert_ne!(lo, ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 1]), 8080), 8), "two pods");
        let mut one = [0u8; 16];
        one[15] = 1;
        assert!(is_loopback(&one));
        assert_eq!(ConnKey::new((one, 1), (one, 2), 9).netns, 9);
        // Pod addresses are unique on the node: two pods' namespaces meet.
        let a = ConnKey::new((v4([10, 0, 0, 5]), 40000), (v4([10, 0, 0, 6]), 8080), 7);
        assert_eq!(a, ConnKey::new((v4([10, 0, 0, 5]), 40000), (v4([10, 0, 0, 6]), 8080), 8));
        assert_eq!(a.netns, 0);
        assert!(!is_loopback(&v4([128, 0, 0, 1])));
    }

    #[test]
    fn only_go_ip_lengths_ports_and_tcp_sockets_are_read() {
        assert_eq!(ip16(&[0; 16], 0), None, "a nil IP");
        assert_eq!(ip16(&[0; 16], 8), None);
        assert_eq!((port(0), port(65536), port(8080)), (None, None, Some(8080)));
        assert!(is_tcp(AF_INET, SOCK_STREAM) && is_tcp(AF_INET6, SOCK_STREAM));
        assert!(!is_tcp(1, SOCK_STREAM) && !is_tcp(AF_INET, 2), "unix sockets, UDP");
    }

    #[test]
    fn a_context_is_valid_for_a_second_only() {
        assert!(fresh(100, 100));
        assert!(fresh(100, 100 + CONTEXT_MAX_AGE_NS));
        assert!(!fresh(100, 101 + CONTEXT_MAX_AGE_NS));
        assert!(!fresh(100, 99), "a clock that went backwards: not trusted");
    }
}
