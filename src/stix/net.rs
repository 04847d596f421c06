//! IP addresses and CIDR blocks as they appear in `ipv4-addr` and
//! `ipv6-addr` values and in `ISSUBSET`/`ISSUPERSET` operands.

use std::net::IpAddr;

use ipnet::IpNet;

/// Reads an address (`198.51.100.7`, `2001:db8::1`) or a CIDR block
/// (`198.51.100.0/24`) into a network; a plain address is a full-length
/// prefix. Host bits after the prefix are cleared. Returns `None` for
/// anything else.
pub fn parse_ip_net(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        text.parse::<IpNet>().ok().map(|net| net.trunc())
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// True when `inner` lies wholly inside `outer` (equal networks included).
/// Networks of different families never contain each other.
pub fn net_contains(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        parse_ip_net(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    #[test]
    fn addresses_are_full_length_networks() {
        assert_eq!(net("198.51.100.7"), net("198.51.100.7/32"));
        assert_eq!(net("2001:db8::1"), net("2001:0db8:0000::0001/128"));
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(net("198.51.100.77/24"), net("198.51.100.0/24"));
    }

    #[test]
    fn containment() {
        assert!(net_contains(
            &net("198.51.100.0/24"),
            &net("198.51.100.0/27")
        ));
        assert!(net_contains(
            &net("198.51.100.0/24"),
            &net("198.51.100.0/24")
        ));
        assert!(!net_contains(
            &net("198.51.100.0/27"),
            &net("198.51.100.0/24")
        ));
        assert!(!net_contains(&net("::/0"), &net("198.51.100.1")));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "1.2.3", "1.2.3.4/33", "example.com", "1.2.3.4/", "::g"] {
            assert!(parse_ip_net(bad).is_none(), "{bad}");
        }
    }
}
