//! The message of a failed HTTP round trip, as Go prints it: `dial tcp 127.0.0.1:1: connect:
//! connection refused`, not just the error's type `*net.OpError`.
//!
//! Most transport failures are a `*net.OpError` (`Op`, `Net`, `Source`, `Addr`, `Err`) whose
//! `Err` is a `*os.SyscallError` (`Syscall`, `Err` = `syscall.Errno`). Its `Error()` method
//! builds the text from those fields, which the kernel cannot run; so [`extend`] adds fetches
//! at the RETs of `roundTrip` that follow the returned error's data pointer to each of them
//! (offsets from the binary's DWARF, or for stripped binaries from `go_layouts.json`: the
//! fields are declared by `http.client`), and [`message`] puts the text together the way
//! `OpError.Error` does. The fetches run whatever the error's dynamic type (the kernel cannot
//! test it); their values are used only when the type is `*net.OpError`. A nil error stops
//! them at the first pointer.
//!
//! Errno texts come from the C library's `strerror`, first letter lowercased: Go's own table
//! (`syscall/zerrors_linux_amd64.go`) was generated that way.
use gotel_shared::{Root, ValueKind, MAX_FETCHES};
use opentelemetry::KeyValue;

use super::{take, ReturnRead};
use crate::{
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

/// The dynamic type whose fields [`message`] reads.
pub const OP_ERROR: &str = "*net.OpError";

/// Adds the fetches of an `*net.OpError`'s fields through the data word of the capture named
/// `err` (the `error` result). Leaves the plan as it is when the fields are unknown.
pub fn extend(plan: &mut AttributePlan, dwarf: &DwarfInfo, _: &FunctionInfo, limits: &Limits) -> Result<(), String> {
    let types = &dwarf.types;
    let field = |s: &str, f: &str| types.struct_field(s, f).map(|(off, _)| off);
    let (Some(op), Some(net), Some(source), Some(addr), Some(err), Some(ip), Some(port), Some(_syscall), Some(errno)) = (
        field("net.OpError", "Op"),
        field("net.OpError", "Net"),
        field("net.OpError", "Source"),
        field("net.OpError", "Addr"),
        field("net.OpError", "Err"),
        field("net.TCPAddr", "IP"),
        field("net.TCPAddr", "Port"),
        field("os.SyscallError", "Syscall").filter(|o| *o == 0),
        field("os.SyscallError", "Err"),
    ) else {
        return Ok(());
    };
    let Some(data_reg) = plan
        .fetches
        .iter()
        .find(|f| plan.slots.get(f.slot as usize).is_some_and(|s| s.key.as_str() == "err"))
        .filter(|f| f.root == Root::Registers as u8 && f.nregs == 2 && f.nhops == 0)
        .map(|f| f.regs[1])
    else {
        return Ok(());
    };
    let max = limits.max_string.min(gotel_shared::MAX_STR) as u16;
    // An interface is (type word, data word): a hop through `x + 8` follows its data pointer.
    let wanted: [(&str, ValueKind, &[u64], Decode); 9] = [
        ("e.op", ValueKind::String, &[op], Decode::String),
        ("e.net", ValueKind::String, &[net], Decode::String),
        ("e.addr", ValueKind::Interface, &[addr], Decode::Interface),
        ("e.addr.ip", ValueKind::String, &[addr + 8, ip], Decode::Hex),
        ("e.addr.port", ValueKind::Int, &[addr + 8, port], Decode::Int { size: 8 }),
        ("e.src.ip", ValueKind::String, &[source + 8, ip], Decode::Hex),
        ("e.src.port", ValueKind::Int, &[source + 8, port], Decode::Int { size: 8 }),
        // The inner error's type and its first string field (`Syscall`, or the message).
        ("e.err", ValueKind::Interface, &[err], Decode::TypeAndText),
        ("e.err.errno", ValueKind::Int, &[err + 8, errno + 8, 0], Decode::Uint { size: 8 }),
    ];
    let start = ReturnRead { root: Root::Registers, reg: data_reg, max_len: max };
    for (key, kind, hops, decode) in wanted {
        if plan.fetches.len() >= MAX_FETCHES {
            break;
        }
        start.push(plan, key, kind, hops, decode);
    }
    Ok(())
}

/// Error types without fields whose message is fixed.
const FIXED_MESSAGES: [(&str, &str); 2] = [
    ("*internal/poll.DeadlineExceededError", "i/o timeout"),
    ("context.deadlineExceededError", "context deadline exceeded"),
];

/// Takes the `e.*` captures out of `raw` and, when the error is an `*net.OpError`, returns its
/// `Error()` text; otherwise `error` (its message or type) unchanged.
pub fn message(raw: &mut Vec<KeyValue>, error: Option<String>) -> Option<String> {
    let mut get = |k: &str| take(raw, k).map(|v| v.as_str().into_owned());
    let [op, net, addr_ty, addr_ip, addr_port, src_ip, src_port, err, errno] =
        ["e.op", "e.net", "e.addr", "e.addr.ip", "e.addr.port", "e.src.ip", "e.src.port", "e.err", "e.err.errno"]
            .map(&mut get);
    if error.as_deref() != Some(OP_ERROR) {
        return error.map(|e| fixed_message(&e).map_or(e, str::to_string));
    }
    // OpError.Error: Op, " "+Net, " "+Source, ("->" or " ")+Addr, ": "+Err.Error().
    let mut out = op.unwrap_or_default();
    if let Some(net) = net.filter(|n| !n.is_empty()) {
        out.push(' ');
        out.push_str(&net);
    }
    let ip_addr = matches!(addr_ty.as_deref(), Some("*net.TCPAddr" | "*net.UDPAddr"));
    let src = src_ip.filter(|_| ip_addr).map(|ip| host_port(&ip, src_port.as_deref()));
    if let Some(src) = &src {
        out.push(' ');
        out.push_str(src);
    }
    if let Some(ip) = addr_ip.filter(|_| ip_addr) {
        out.push_str(if src.is_some() { "->" } else { " " });
        out.push_str(&host_port(&ip, addr_port.as_deref()));
    }
    out.push_str(": ");
    let (ty, first) = err.as_deref().and_then(|e| e.split_once('\0')).unwrap_or(("", ""));
    let errno = errno.and_then(|n| n.parse::<i32>().ok());
    match (ty, errno) {
        ("*os.SyscallError", Some(n)) => out.push_str(&format!("{first}: {}", errno_text(n))),
        _ if crate::values::MESSAGE_ERRORS.contains(&ty) => out.push_str(first),
        _ => out.push_str(fixed_message(ty).unwrap_or(ty)),
    }
    Some(out)
}

fn fixed_message(ty: &str) -> Option<&'static str> {
    FIXED_MESSAGES.iter().find(|(t, _)| *t == ty).map(|(_, m)| *m)
}

/// `host:port` as `net.JoinHostPort(ip.String(), port)` prints it; `ip_hex` is the IP's bytes.
fn host_port(ip_hex: &str, port: Option<&str>) -> String {
    let bytes: Vec<u8> =
        (0..ip_hex.len() / 2).filter_map(|i| u8::from_str_radix(ip_hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    let ip = match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(&bytes[..]).unwrap_or_default())),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..]).unwrap_or_default());
            Some(v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4))
        }
        _ => None,
    };
    let port = port.unwrap_or("0");
    match ip {
        Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(v4) => format!("{v4}:{port}"),
        None => format!(":{port}"),
    }
}

/// `syscall.Errno(n).Error()` on Linux.
fn errno_text(n: i32) -> String {
    let text = std::io::Error::from_raw_os_error(n).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut c = text.chars();
    match c.next() {
        Some(first) if !text.starts_with("Unknown error") => first.to_lowercase().chain(c).collect(),
        _ => format!("errno {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kv: &[(&str, &str)]) -> Vec<KeyValue> {
        kv.iter().map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_refused_dial_reads_as_go_prints_it() {
        let mut r = raw(&[
            ("e.op", "dial"),
            ("e.net", "tcp"),
            ("e.addr", "*net.TCPAddr"),
            ("e.addr.ip", "00000000000000000000ffff7f000001"),
            ("e.addr.port", "1"),
            ("e.err", "*os.SyscallError\0connect"),
            ("e.err.errno", "111"),
            ("m", "GET"),
        ]);
        let msg = message(&mut r, Some(OP_ERROR.into()));
        assert_eq!(msg.as_deref(), Some("dial tcp 127.0.0.1:1: connect: connection refused"));
        assert_eq!(r.len(), 1, "the e.* captures are taken out: {r:?}");
    }

    #[test]
    fn a_read_error_names_both_ends_and_other_errors_keep_their_text() {
        let mut r = raw(&[
            ("e.op", "read"),
            ("e.net", "tcp"),
            ("e.addr", "*net.TCPAddr"),
            ("e.addr.ip", "00000000000000000000000000000001"),
            ("e.addr.port", "80"),
            ("e.src.ip", "7f000001"),
            ("e.src.port", "5555"),
            ("e.err", "*internal/poll.DeadlineExceededError\0"),
        ]);
        assert_eq!(
            message(&mut r, Some(OP_ERROR.into())).as_deref(),
            Some("read tcp 127.0.0.1:5555->[::1]:80: i/o timeout")
        );
        // Not an OpError: the text from the error capture, the fetches (garbage then) unused.
        let mut r = raw(&[("e.op", "\u{1}x"), ("e.err", "x\0y")]);
        assert_eq!(message(&mut r, Some("EOF".into())).as_deref(), Some("EOF"));
        assert!(r.is_empty());
        assert_eq!(message(&mut vec![], None), None);
        let mut r = raw(&[("e.op", "dial"), ("e.net", "tcp"), ("e.err", "*errors.errorString\0no such host")]);
        assert_eq!(message(&mut r, Some(OP_ERROR.into())).as_deref(), Some("dial tcp: no such host"));
    }

    #[test]
    fn errno_texts_are_go_s() {
        assert_eq!(errno_text(111), "connection refused");
        assert_eq!(errno_text(104), "connection reset by peer");
        assert_eq!(errno_text(113), "no route to host");
        assert_eq!(errno_text(9999), "errno 9999");
    }
}
