//! Values rendered as ZooKeeper's Java code renders them: doubles, socket addresses, absent sizes.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// A proposal size as ZooKeeper's `BufferStats` holds it: -1 for none yet.
pub(super) fn size(bytes: Option<u32>) -> i64 {
    bytes.map_or(-1, i64::from)
}

/// Rounds half up to 4 decimals, as `AvgMinMaxCounter.getAvg` does with `BigDecimal`.
pub(super) fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Java's `Double.toString`: always a fraction digit (`0.0`, `12.0`), scientific outside `[1e-3, 1e7)`
/// (`1.0E7`, `1.0E-4`).
pub(super) struct JavaDouble(pub(super) f64);

impl fmt::Display for JavaDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("NaN");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        }
        let plain = v == 0.0 || (1e-3..1e7).contains(&v.abs());
        let text = if plain { v.to_string() } else { format!("{v:e}") };
        let (mantissa, exponent) = match text.split_once('e') {
            Some((m, e)) => (m, Some(e)),
            None => (text.as_str(), None),
        };
        f.write_str(mantissa)?;
        if !mantissa.contains('.') {
            f.write_str(".0")?;
        }
        match exponent {
            Some(e) => write!(f, "E{e}"),
            None => Ok(()),
        }
    }
}

/// Java's `InetSocketAddress.toString` for an accepted socket (no host name): `/127.0.0.1:53422`, and IPv6 in
/// `Inet6Address`'s uncompressed form, unbracketed as the Java 11 that ZooKeeper 3.8 runs on prints it
/// (`/0:0:0:0:0:0:0:1:53422`). An IPv4-mapped address prints as the IPv4 address Java makes of it.
pub(super) struct JavaAddr(pub(super) SocketAddr);

impl fmt::Display for JavaAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "/{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => {
                if let Some(v4) = a.ip().to_ipv4_mapped() {
                    return write!(f, "/{v4}:{}", a.port());
                }
                f.write_char('/')?;
                for (i, segment) in a.ip().segments().iter().enumerate() {
                    let sep = if i == 0 { "" } else { ":" };
                    write!(f, "{sep}{segment:x}")?;
                }
                if a.scope_id() != 0 {
                    write!(f, "%{}", a.scope_id())?;
                }
                write!(f, ":{}", a.port())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

    use super::{round4, JavaAddr, JavaDouble};

    #[test]
    fn java_double_rendering() {
        let cases = [(0.0, "0.0"), (4.25, "4.25"), (12.0, "12.0"), (0.001, "0.001"), (9_999_999.5, "9999999.5")];
        for (v, want) in cases {
            assert_eq!(JavaDouble(v).to_string(), want);
        }
        assert_eq!(JavaDouble(1e7).to_string(), "1.0E7");
        assert_eq!(JavaDouble(1.5e-4).to_string(), "1.5E-4");
        assert_eq!(JavaDouble(round4(2.0 / 3.0)).to_string(), "0.6667");
        assert_eq!(JavaDouble(round4(0.00004)).to_string(), "0.0");
    }

    #[test]
    fn java_addresses() {
        let mapped = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(192, 168, 1, 2).to_ipv6_mapped(), 7, 0, 0));
        assert_eq!(JavaAddr(mapped).to_string(), "/192.168.1.2:7");
        let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, 0xabcd), 9, 0, 2));
        assert_eq!(JavaAddr(scoped).to_string(), "/fe80:0:0:0:0:0:1:abcd%2:9");
    }
}
