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
//! - gRPC (HTTP/2) multiplexes calls on one connection: its keys also carry the call's stream id
//!   ([`ConnKey::stream`], [`h2_stream`]), which both ends read (the client's loopy writer is
//!   given it with the HEADERS frame, the server reads it from that frame); HTTP/1 keys have 0.
//!
//! Through a virtual IP (a Kubernetes Service, which kube-proxy DNATs) the two ends disagree on
//! the server's address: the client's `raddr` is the Service's, the server's `laddr` the pod's.
//! DNAT rewrites only the destination, so what they still agree on is the client's own address
//! and port. The client therefore stores its context twice: under the full key and under the
//! client's address alone ([`ConnKey::to_client_key`], server fields zero: never a full key,
//! whose server port is never 0); the server tries the full key first and the client address
//! only when that misses ([`ConnContext::ambiguous`] decides whether it may join). Two guards
//! keep that second key from joining the wrong request:
//!
//! - Linux lets one local port carry connections to different destinations at once, so a client
//!   address is not always one connection. The client address's record keeps the destination
//!   the client dialled; a store for another destination while an earlier one is still unused
//!   (its server may yet come looking) makes the record ambiguous for [`AMBIGUITY_WINDOW_NS`]
//!   after that earlier store ([`other_ns`]): ambiguous records join nothing.
//! - Source NAT (kube-proxy masquerades a host-network client's or a pod's hairpin call to the
//!   node's or the bridge's address) makes the server see an address that a process on the host
//!   may itself be using as its own local address, for another connection. So only clients in a
//!   network namespace of their own (a pod, a container) store under their address alone
//!   ([`SameNodeConfig::client_key`], [`stores_client_key`]); nothing rewrites a source to a
//!   pod's address, and a client on the host joins by the full key only (masqueraded anyway
//!   when it calls a Service).
//!
//! What neither guard sees: a process that shares the client's network namespace and that gotel
//! does not trace (a service-mesh proxy in the pod) stores nothing, so a local port it is given
//! while a traced neighbour's context waits under the same port is not known to be ambiguous;
//! a traced server on this node receiving its request would join that context. Nothing in the
//! two processes' memory tells those connections apart; such nodes keep injection.

/// The entry of `net/http.(*persistConn).roundTrip` (`gotel_same_node_client`). An entry hook's
/// cookie has no RET offset, so bit 49 (in the offset's range) is free for it.
pub const COOKIE_SAME_NODE_CLIENT: u64 = 1 << 49;

/// How long a stored client context may wait for its server span (ns). The request is written
/// right after it is stored and a keep-alive server reads it at once; a second is plenty and
/// much shorter than the 60 s a closed connection's 4-tuple stays in TIME_WAIT.
pub const CONTEXT_MAX_AGE_NS: u64 = 1_000_000_000;

/// How long after an unused context of another destination was stored under a client address
/// a new one there stays ambiguous (ns): a server that starts reading its request up to this
/// late cannot join a later connection that reused its client port. Ten times the join window;
/// what it costs is no join through a virtual IP for a port that served two destinations
/// within it.
pub const AMBIGUITY_WINDOW_NS: u64 = 10 * CONTEXT_MAX_AGE_NS;

/// The inode of the kernel's initial network namespace (`PROC_NET_INIT_INO`, fixed since
/// Linux 3.8): the host's on a node that is not itself a container.
pub const INIT_NET_INO: u32 = 0xEFFF_FFF9;

/// Whether a target in network namespace `netns` (0: unknown) stores its requests under the
/// client address too ([`SameNodeConfig::client_key`]): only outside the host's namespace,
/// which is both the initial one and pid 1's (`host`, when readable; on a node that runs in a
/// container the two differ), whose addresses are what source NAT rewrites to.
pub fn stores_client_key(netns: u32, host: Option<u32>) -> bool {
    netns != 0 && netns != INIT_NET_INO && host != Some(netns)
}

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
    /// The HTTP/2 stream of a gRPC call ([`h2_stream`]), 0 for HTTP/1 (one request at a time
    /// per connection; a client-initiated stream id is odd, never 0, so the two never meet).
    pub stream: u32,
    /// Zero (the key's size a multiple of 8 for the scratch memory that holds one).
    pub _pad: u32,
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
    /// The server port the client dialled (for a virtual IP, the Service's).
    pub dest_port: u16,
    /// 1: also stored under the client address (the client's `client_key`).
    pub by_client: u16,
    /// The server address the client dialled, 16 bytes as in [`ConnKey`].
    pub dest_ip: [u8; 16],
    /// Under a client address only ([`ConnKey::to_client_key`]): when the latest unused context
    /// of another destination was stored there ([`other_ns`]), 0 if none.
    pub other_ns: u64,
}

impl ConnContext {
    /// Whether this record, found under a client address, must not be joined: another
    /// destination's unused context was stored there within [`AMBIGUITY_WINDOW_NS`] before it,
    /// so the server asking may be that other connection's.
    #[inline(always)]
    pub fn ambiguous(&self) -> bool {
        // A clock that went backwards (other_ns after stored_ns) is ambiguous too.
        self.other_ns != 0 && (self.stored_ns < self.other_ns || self.stored_ns - self.other_ns <= AMBIGUITY_WINDOW_NS)
    }
}

/// [`ConnContext::other_ns`] of a new store under a client address for the destination
/// `dest_ip`:`dest_port`, given the record found there (`prev`, still unused since a server
/// removes what it joins). The same destination is the same connection (a 4-tuple is one
/// connection at a time): its earlier request's server is done, since HTTP/1 sends the next
/// request only after the response (and an HTTP/2 stream id, part of a gRPC key, is used once
/// per connection: the same one again is a later connection with the same 4-tuple), and what it
/// knew is kept. Another destination is another
/// connection whose server may still come: its store time.
#[inline(always)]
pub fn other_ns(prev: Option<&ConnContext>, dest_ip: &[u8; 16], dest_port: u16) -> u64 {
    match prev {
        None => 0,
        Some(p) if p.dest_port == dest_port && same_ip(&p.dest_ip, dest_ip) => p.other_ns,
        Some(p) => p.stored_ns,
    }
}

/// What the server span does with a record found for its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Continue it (and remove it: used once).
    Join,
    /// Too old: removed, not joined.
    Expired,
    /// Under a client address and [`ConnContext::ambiguous`]: left in place (another
    /// connection's server may still ask), not joined.
    Ambiguous,
}

/// The server's decision at `now_ns` on `found`, which it found under the full key
/// (`by_client_key` false) or, that missing, under the client address alone.
#[inline(always)]
pub fn verdict(found: &ConnContext, by_client_key: bool, now_ns: u64) -> Verdict {
    if by_client_key && found.ambiguous() {
        Verdict::Ambiguous
    } else if fresh(found.stored_ns, now_ns) {
        Verdict::Join
    } else {
        Verdict::Expired
    }
}

/// Byte-wise equality without `memcmp` (the kernel has none).
#[inline(always)]
fn same_ip(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    let mut i = 0;
    while i < 16 {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
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
    /// 1: the target's client requests are also stored under their client address
    /// ([`ConnKey::to_client_key`]): it runs in a network namespace other than the host's.
    pub client_key: u32,
    /// 1: gRPC client calls are stored at `(*loopyWriter).writeHeader` (the unit
    /// `join.same_node.grpc_client` is attached, injection is off).
    pub grpc_client: u32,
    /// 1: gRPC server streams without `traceparent` look their call up at
    /// `(*http2Server).operateHeaders` (the offsets below are known).
    pub grpc_server: u32,
    /// grpc-go's `transport.loopyWriter.conn` and `transport.http2Server.conn` (`net.Conn`).
    pub loopy_conn: u32,
    pub h2server_conn: u32,
    /// x/net's `http2.MetaHeadersFrame.HeadersFrame` (a `*HeadersFrame`), and where the stream
    /// id is in a `HeadersFrame` (`.FrameHeader` + `FrameHeader.StreamID`).
    pub meta_headers: u32,
    pub frame_stream: u32,
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
            stream: 0,
            _pad: 0,
        };
        key.set_netns(netns);
        key
    }

    /// This connection's client address alone (in place: the kernel builds keys in scratch
    /// memory), the key both ends agree on when a DNAT rewrote the server's address: server
    /// fields zero (a full key's server port is never 0, so the two kinds never meet), `netns`
    /// again by the rule of [`ConnKey::set_netns`].
    #[inline(always)]
    pub fn to_client_key(&mut self, netns: u32) {
        self.server_ip = [0; 16];
        self.server_port = 0;
        self.set_netns(netns);
    }

    /// A client key's full key again, from the server address the client dialled (the
    /// record's [`ConnContext::dest_ip`], [`ConnContext::dest_port`]): the server that joined by
    /// the client address removes what the client stored under the full key too.
    #[inline(always)]
    pub fn to_full_key(&mut self, dest_ip: [u8; 16], dest_port: u16, netns: u32) {
        self.server_ip = dest_ip;
        self.server_port = dest_port;
        self.set_netns(netns);
    }

    /// The namespace part, once both ends are in place: `netns` for a loopback connection
    /// (every pod has its own 127.0.0.1), else 0 (a pod address is unique on the node).
    #[inline(always)]
    pub fn set_netns(&mut self, netns: u32) {
        let loopback = is_loopback(&self.client_ip) || is_loopback(&self.server_ip);
        self.netns = if loopback { netns } else { 0 };
    }
}

/// A gRPC call's HTTP/2 stream id as both ends read it (the client's loopy writer is given it
/// for the call's HEADERS frame, the server reads it from that frame), for [`ConnKey::stream`]:
/// only a client-initiated id (odd, below 2^31) is one; anything else read is no stream.
#[inline(always)]
pub fn h2_stream(raw: u64) -> Option<u32> {
    let id = raw & 0xffff_ffff;
    (id & 1 == 1 && id < 1 << 31).then_some(id as u32)
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

    /// A Service's virtual IP, DNATed to a pod: the full keys differ, the client keys meet.
    #[test]
    fn through_a_dnat_both_ends_meet_on_the_client_address_only() {
        let client = (v4([10, 244, 0, 5]), 40000);
        let client_side = ConnKey::new(client, (v4([10, 96, 0, 10]), 80), 7);
        let server_side = ConnKey::new(client, (v4([10, 244, 0, 7]), 8080), 9);
        assert_ne!(client_side, server_side);
        let (mut c, mut s) = (client_side, server_side);
        c.to_client_key(7);
        s.to_client_key(9);
        assert_eq!(c, s, "pod addresses: no namespace in the key");
        assert_eq!((c.server_ip, c.server_port, c.netns), ([0; 16], 0, 0));
        // Another client port, another connection.
        let mut other = ConnKey::new((v4([10, 244, 0, 5]), 40001), (v4([10, 96, 0, 10]), 80), 7);
        other.to_client_key(7);
        assert_ne!(c, other);
        // A loopback client's address is per namespace, as its full key is.
        let mut lo = ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 2]), 80), 7);
        lo.to_client_key(7);
        assert_eq!(lo.netns, 7);
        let mut lo8 = ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 1]), 8080), 8);
        lo8.to_client_key(8);
        assert_ne!(lo, lo8, "two pods' 127.0.0.1:40000");
        // A client key is never a full key: a full key's server port is never 0.
        assert!(port(0).is_none());
        // The server that joined by the client key finds the client's full key again.
        let mut back = s;
        back.to_full_key(client_side.server_ip, client_side.server_port, 9);
        assert_eq!(back, client_side);
        lo.to_full_key(v4([127, 0, 0, 2]), 80, 7);
        assert_eq!(lo, ConnKey::new((v4([127, 0, 0, 1]), 40000), (v4([127, 0, 0, 2]), 80), 7));
    }

    fn stored(dest: ([u8; 16], u16), at: u64, prev: Option<&ConnContext>) -> ConnContext {
        ConnContext {
            span_id: at,
            stored_ns: at,
            dest_ip: dest.0,
            dest_port: dest.1,
            other_ns: other_ns(prev, &dest.0, dest.1),
            ..Default::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_client_address_serving_two_destinations_is_ambiguous_for_a_while() {
        let (vip, other_vip) = ((v4([10, 96, 0, 10]), 80), (v4([10, 96, 0, 11]), 80));
        let now = 100 * S;
        // The first store, and the same connection's next requests: one connection, joinable.
        let first = stored(vip, now, None);
        assert_eq!(verdict(&first, true, now), Verdict::Join);
        let again = stored(vip, now + S / 2, Some(&first));
        assert_eq!(verdict(&again, true, now + S / 2), Verdict::Join);
        // The port reused towards another destination while the first is unused: neither server
        // may take it (the first's might be the one asking).
        let second = stored(other_vip, now + S, Some(&again));
        assert_eq!(second.other_ns, now + S / 2);
        assert_eq!(verdict(&second, true, now + S), Verdict::Ambiguous);
        // It stays so on that second connection's next requests within the window...
        let later = stored(other_vip, now + 5 * S, Some(&second));
        assert_eq!(verdict(&later, true, now + 5 * S), Verdict::Ambiguous);
        // ...and clears once the other destination's last store is older than the window.
        let cleared = stored(other_vip, now + S / 2 + AMBIGUITY_WINDOW_NS + 1, Some(&later));
        assert_eq!(verdict(&cleared, true, cleared.stored_ns), Verdict::Join);
        // A store after the window for a new destination: the old record is no longer a threat.
        let late = stored(vip, now + 30 * S, None);
        let third = stored(other_vip, late.stored_ns + AMBIGUITY_WINDOW_NS + 1, Some(&late));
        assert_eq!(verdict(&third, true, third.stored_ns), Verdict::Join);
        // Same address, other port: another destination.
        let port_only = stored((vip.0, 81), now + S, Some(&first));
        assert!(port_only.ambiguous());
        // A clock that went backwards: ambiguous, not trusted.
        let backwards = stored(other_vip, now - S, Some(&first));
        assert!(backwards.ambiguous());
    }

    #[test]
    fn the_full_key_ignores_ambiguity_and_both_expire() {
        let vip = (v4([10, 96, 0, 10]), 80);
        let ambiguous = stored(vip, 50 * S, Some(&stored((v4([10, 0, 0, 1]), 80), 49 * S, None)));
        assert!(ambiguous.ambiguous());
        // Under its full key a record is one connection's: ambiguity is a client-address matter.
        assert_eq!(verdict(&ambiguous, false, 50 * S), Verdict::Join);
        let plain = stored(vip, 50 * S, None);
        assert_eq!(verdict(&plain, false, 51 * S + 1), Verdict::Expired);
        assert_eq!(verdict(&plain, true, 51 * S + 1), Verdict::Expired);
        assert_eq!(verdict(&plain, true, 51 * S), Verdict::Join);
    }

    #[test]
    fn only_clients_outside_the_hosts_namespace_store_their_address_alone() {
        assert!(stores_client_key(4026532200, Some(INIT_NET_INO)), "a pod");
        assert!(stores_client_key(4026532200, None), "pid 1's namespace unreadable: a pod still");
        assert!(!stores_client_key(INIT_NET_INO, None), "a process on the host, hostNetwork");
        assert!(!stores_client_key(4026532300, Some(4026532300)), "the host of a node in a container");
        assert!(!stores_client_key(0, Some(INIT_NET_INO)), "namespace unknown");
    }

    #[test]
    fn grpc_keys_are_per_stream_and_never_meet_http1_keys() {
        let conn =
            |stream| ConnKey { stream, ..ConnKey::new((v4([10, 244, 0, 5]), 40000), (v4([10, 244, 0, 7]), 50051), 7) };
        let (one, three) = (conn(h2_stream(1).unwrap()), conn(h2_stream(3).unwrap()));
        assert_ne!(one, three, "two calls on one connection");
        assert_ne!(one, conn(0), "an HTTP/1 key of the same connection");
        // Through a DNAT: the client address's key keeps the stream, and so does the way back.
        let mut c = one;
        c.to_client_key(7);
        assert_eq!(c.stream, 1);
        let mut other = three;
        other.to_client_key(7);
        assert_ne!(c, other);
        c.to_full_key(one.server_ip, one.server_port, 7);
        assert_eq!(c, one);
        // Only client-initiated ids: odd, 31 bits (the upper word of a read register ignored).
        assert_eq!((h2_stream(0), h2_stream(2), h2_stream(1 << 31)), (None, None, None));
        assert_eq!((h2_stream(0x7fff_ffff), h2_stream(0xdead_0000_0005)), (Some(0x7fff_ffff), Some(5)));
    }

    #[test]
    fn a_context_is_valid_for_a_second_only() {
        assert!(fresh(100, 100));
        assert!(fresh(100, 100 + CONTEXT_MAX_AGE_NS));
        assert!(!fresh(100, 101 + CONTEXT_MAX_AGE_NS));
        assert!(!fresh(100, 99), "a clock that went backwards: not trusted");
    }
}
