//! Go build information from `.go.buildinfo` (what `go version -m` prints): the toolchain
//! version for `process.runtime.version`, the main module path, and the module dependencies
//! with their versions (layouts of third-party structs are keyed by them, see `go_layouts`).
//! Format (Go 1.18+, "inline strings"): 14-byte magic, pointer size, flags, padding to 32,
//! then two varint-prefixed strings: the Go version and the module info.

const MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_INLINE_STRINGS: u8 = 2;

#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    /// e.g. `go1.26.8`.
    pub go_version: Option<String>,
    /// The main package path (`path` line), e.g. `github.com/acme/shop/cmd/api`.
    pub main_path: Option<String>,
    /// The main module path (`mod` line).
    pub main_module: Option<String>,
    /// Dependencies as (module path, version) (`dep` lines). A replaced module (`=>` line)
    /// gets the version `=> PATH VERSION` of its replacement, which matches no table entry.
    pub deps: Vec<(String, String)>,
}

pub fn parse(section: &[u8]) -> BuildInfo {
    let mut info = BuildInfo::default();
    if section.len() < 32 || !section.starts_with(MAGIC) || section[15] & FLAG_INLINE_STRINGS == 0 {
        return info;
    }
    let mut rest = &section[32..];
    let Some(version) = take_string(&mut rest) else { return info };
    info.go_version = Some(String::from_utf8_lossy(version).into_owned());
    if let Some(modinfo) = take_string(&mut rest) {
        // Module info is wrapped in 16-byte sentinels.
        let text = if modinfo.len() >= 33 { &modinfo[16..modinfo.len() - 16] } else { modinfo };
        for line in String::from_utf8_lossy(text).lines() {
            let mut cols = line.split('\t');
            match (cols.next(), cols.next()) {
                (Some("path"), Some(p)) => info.main_path = Some(p.to_string()),
                (Some("mod"), Some(m)) => info.main_module = Some(m.to_string()),
                (Some("dep"), Some(m)) => info.deps.push((m.to_string(), cols.next().unwrap_or("").to_string())),
                (Some("=>"), Some(m)) => {
                    if let Some(last) = info.deps.last_mut() {
                        last.1 = format!("=> {m} {}", cols.next().unwrap_or(""));
                    }
                }
                _ => {}
            }
        }
    }
    info
}

fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let mut used = 0;
    for (i, &b) in rest.iter().enumerate().take(10) {
        len |= ((b & 0x7f) as usize) << (7 * i);
        used = i + 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let s = rest.get(used..used.checked_add(len)?)?;
    *rest = &rest[used + len..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_and_module() {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&[8, 2]);
        s.resize(32, 0);
        s.push(8);
        s.extend_from_slice(b"go1.22.1");
        let mut m = vec![0u8; 16];
        m.extend_from_slice(b"path\tgotel.test/x\nmod\tgotel.test/x\t(devel)\t\n");
        m.extend_from_slice(b"dep\tgoogle.golang.org/grpc\tv1.64.0\th1:abc=\n");
        m.extend_from_slice(b"dep\texample.com/fork\tv1.0.0\n=>\t../fork\t(devel)\t\n");
        m.extend_from_slice(&[0u8; 16]);
        // Varint length (over 127 bytes: two bytes).
        let mut n = m.len();
        while n >= 0x80 {
            s.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        s.push(n as u8);
        s.extend_from_slice(&m);
        let b = parse(&s);
        assert_eq!(b.go_version.as_deref(), Some("go1.22.1"));
        assert_eq!(b.main_path.as_deref(), Some("gotel.test/x"));
        assert_eq!(b.main_module.as_deref(), Some("gotel.test/x"));
        assert_eq!(
            b.deps,
            [
                ("google.golang.org/grpc".to_string(), "v1.64.0".to_string()),
                ("example.com/fork".to_string(), "=> ../fork (devel)".to_string())
            ]
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(parse(b"nope").go_version.is_none());
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&[8, 2]);
        s.resize(32, 0);
        s.push(0xff);
        assert!(parse(&s).go_version.is_none());
    }
}
