//! IP addresses and CIDR blocks as they appear in `ipv4-addr` and
//! `ipv6-addr` values and in `ISSUBSET`/`ISSUPERSET` operands.

use std::net::IpAddr;

use ipnet::IpNet;

/// Reads an address (`198.51.100.7`, `2001:db8::1`) or a CIDR block
/// (`198.51.100.0/24`) into a network; a plain address is a full-length
/// prefix. Host bits after the prefix are cleared. Returns `None` for
/// anything else.
pub fn parse_ip_net(text: &str) -> Option<IpNet> {
    if let Some(v4) = parse_dotted_quad(text) {
        return Some(IpNet::from(IpAddr::V4(v4)));
    }
    if text.contains('/') {
        text.parse::<IpNet>().ok().map(|net| net.trunc())
    } else if text.contains(':') {
        // Only IPv6 has colons: skip the IPv4 attempt of `IpAddr`.
        parse_ipv6(text).map(|a| IpNet::from(IpAddr::V6(a)))
    } else {
        None
    }
}

/// Reads a plain dotted-quad IPv4 address, the most common value on the
/// matching path, without the general parser. Accepts exactly what the
/// standard library accepts (no leading zeros, each part at most 255).
fn parse_dotted_quad(text: &str) -> Option<std::net::Ipv4Addr> {
    let bytes = text.as_bytes();
    if bytes.len() < 7 || bytes.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut part = 0;
    let mut value: u32 = 0;
    let mut digits = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return None; // leading zero
                }
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && part < 3 => {
                octets[part] = value as u8;
                part += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
        if i == bytes.len() - 1 {
            if digits == 0 || part != 3 {
                return None;
            }
            octets[3] = value as u8;
        }
    }
    Some(std::net::Ipv4Addr::from(octets))
}

/// Reads an IPv6 address. Hex groups are read here; an address that ends
/// in a dotted quad (`::ffff:192.0.2.1`) goes to the standard library.
/// Accepts exactly what the standard library accepts.
fn parse_ipv6(text: &str) -> Option<std::net::Ipv6Addr> {
    if text.contains('.') {
        return text.parse().ok();
    }
    parse_hex_groups(text.as_bytes()).map(std::net::Ipv6Addr::from)
}

/// Reads eight groups of one to four hex digits separated by colons, or
/// fewer with one `::` standing for the missing zero groups.
fn parse_hex_groups(bytes: &[u8]) -> Option<[u16; 8]> {
    // The groups before the `::` (or all of them), then those after it.
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (mut heads, mut tails) = (0, 0);
    let mut gap = false;
    let mut i = 0;
    if bytes.starts_with(b"::") {
        gap = true;
        i = 2;
    }
    while i < bytes.len() {
        let mut group: u16 = 0;
        let start = i;
        while let Some(digit) = bytes.get(i).and_then(|&b| char::from(b).to_digit(16)) {
            if i - start == 4 {
                return None;
            }
            group = group << 4 | digit as u16;
            i += 1;
        }
        if i == start {
            return None;
        }
        if gap {
            *tail.get_mut(tails)? = group;
            tails += 1;
        } else {
            *head.get_mut(heads)? = group;
            heads += 1;
        }
        // After a group: the end, `::` (once), or `:` and another group.
        match (bytes.get(i), bytes.get(i + 1)) {
            (None, _) => break,
            (Some(b':'), Some(b':')) if !gap => {
                gap = true;
                i += 2;
            }
            (Some(b':'), Some(_)) => i += 1,
            _ => return None,
        }
    }
    let groups = heads + tails;
    if (gap && groups > 7) || (!gap && groups != 8) {
        return None;
    }
    let mut out = [0u16; 8];
    out[..heads].copy_from_slice(&head[..heads]);
    out[8 - tails..].copy_from_slice(&tail[..tails]);
    Some(out)
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
    fn dotted_quads_parse_like_the_standard_library() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "10.0.0.10",
            "1.2.3.04",
            "100.200.30.4",
        ] {
            assert_parses_like_std(parse_dotted_quad, text);
        }
    }

    /// Checks that `parse` reads `text` as the standard library does.
    fn assert_parses_like_std<T>(parse: fn(&str) -> Option<T>, text: &str)
    where
        T: std::str::FromStr + PartialEq + std::fmt::Debug,
    {
        assert_eq!(parse(text), text.parse::<T>().ok(), "{text}");
    }

    #[test]
    fn ipv6_addresses_parse_like_the_standard_library() {
        for text in [
            "::",
            "::1",
            "1::",
            ":::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "1::2::3",
            "2001:db8::1",
            "2001:0DB8:0000::0001",
            "2001:db8:::1",
            "12345::",
            ":1::",
            "1::2:",
            "1:",
            ":",
            "g::",
            "::ffff:192.0.2.1",
            "2001:db8::1%eth0",
        ] {
            assert_parses_like_std(parse_ipv6, text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x1b6),
            ..Default::default()
        })]

        #[test]
        fn ipv6_text_parses_like_the_standard_library(text in "[0-9a-fA-F:]{0,41}") {
            proptest::prop_assert_eq!(parse_ipv6(&text), text.parse().ok());
        }

        #[test]
        fn written_ipv6_addresses_parse_like_the_standard_library(
            groups in proptest::array::uniform8(proptest::prelude::any::<u16>()),
            zero_run in (0..8usize, 0..=8usize),
            padded in proptest::prelude::any::<bool>(),
            upper in proptest::prelude::any::<bool>(),
        ) {
            // A run of zero groups, written as `::` when it is not empty.
            let (start, len) = zero_run;
            let end = (start + len).min(8);
            let mut groups = groups;
            groups[start..end].fill(0);
            let write = |groups: &[u16]| {
                let texts: Vec<String> = groups
                    .iter()
                    .map(|g| if padded { format!("{g:04x}") } else { format!("{g:x}") })
                    .collect();
                let text = texts.join(":");
                if upper { text.to_uppercase() } else { text }
            };
            let text = if end > start {
                format!("{}::{}", write(&groups[..start]), write(&groups[end..]))
            } else {
                write(&groups)
            };
            let parsed = parse_ipv6(&text);
            proptest::prop_assert_eq!(parsed, text.parse().ok(), "{}", text);
            proptest::prop_assert_eq!(parsed, Some(std::net::Ipv6Addr::from(groups)), "{}", text);
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "1.2.3", "1.2.3.4/33", "example.com", "1.2.3.4/", "::g"] {
            assert!(parse_ip_net(bad).is_none(), "{bad}");
        }
    }
}
