//! The synthetic indicator feed the benchmarks share: deterministic
//! randomness, and indicator `i` as a pure function of `i` (about 40%
//! exact IP addresses, 10% IP networks, 30% domains, 10% URLs, 9% file
//! hashes and 1% `LIKE`, `MATCHES`, two-property and `FOLLOWEDBY`
//! patterns). Each benchmark adds the events that carry its values.

#![allow(dead_code)]

use sightline::matcher::{Catalog, IndicatorRecord};

/// One step of splitmix64: a good 64-bit mix of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small xorshift64* generator for event streams.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// An octet in `low..=high`.
    pub fn octet(&mut self, low: u8, high: u8) -> u8 {
        self.between(u64::from(low), u64::from(high)) as u8
    }

    /// One element of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `digits` lowercase hex digits derived from `seed` (at most 64).
pub fn hex(seed: u64, digits: usize) -> String {
    let text: String = (0..4).map(|k| format!("{:016x}", mix(seed ^ k))).collect();
    text[..digits].to_string()
}

/// What an indicator looks for.
#[derive(Clone, Debug)]
pub enum Spec {
    Ipv4([u8; 4]),
    Ipv6(u64),
    Subnet24([u8; 3]),
    Subnet16([u8; 2]),
    Domain(String),
    Url(String),
    Sha256(String),
    LikeZone(u64),
    RegexUrl(u64),
    FileNameSize(u64),
    FollowedBy(String, [u8; 4]),
}

/// The indicators of a feed, with their IPv4 addresses taken from first
/// octets `first_octet..=100` (each benchmark keeps its event addresses
/// out of that space).
#[derive(Clone, Copy, Debug)]
pub struct Feed {
    pub first_octet: u8,
}

/// A domain name in the indicator zone `.example`.
pub fn domain(label: u64) -> String {
    format!("d{:012x}.example", label & 0xffff_ffff_ffff)
}

/// A URL in the indicator zone `.example`.
pub fn url(host: u64, path: u64) -> String {
    format!(
        "http://w{:012x}.example/path/{:08x}",
        host & 0xffff_ffff_ffff,
        path as u32
    )
}

/// The text of an IPv6 address in the indicator space `2001:db8::/64`.
pub fn ipv6(suffix: u64) -> String {
    let g = |k: u32| (suffix >> (48 - 16 * k)) & 0xffff;
    format!("2001:db8::{:x}:{:x}:{:x}:{:x}", g(0), g(1), g(2), g(3))
}

pub fn dotted([a, b, c, d]: [u8; 4]) -> String {
    format!("{a}.{b}.{c}.{d}")
}

impl Feed {
    /// An IPv4 address in the indicator space.
    fn ipv4(self, h: u64) -> [u8; 4] {
        let [_, _, _, _, a, b, c, d] = h.to_be_bytes();
        let low = self.first_octet;
        [low + a % (101 - low), b, c, d]
    }

    /// The indicator with index `i`.
    ///
    /// The numbers in the `LIKE` and `MATCHES` literals make them the
    /// longest literal runs of their patterns (`.evil` is padded to seven
    /// digits), so the matcher anchors them there rather than on
    /// `.example`, which every event domain and URL contains.
    pub fn spec(self, i: u64) -> Spec {
        let h = mix(i);
        let ip = self.ipv4(mix(h));
        match h % 100 {
            0..20 => Spec::Ipv4(ip),
            20..40 => Spec::Ipv6(mix(h)),
            40..45 => Spec::Subnet24([ip[0], ip[1], ip[2]]),
            45..50 => Spec::Subnet16([ip[0], ip[1]]),
            50..80 => Spec::Domain(domain(mix(h))),
            80..90 => Spec::Url(url(mix(h), h)),
            90..99 => Spec::Sha256(hex(h, 64)),
            _ => match (h >> 32) % 4 {
                0 => Spec::LikeZone(i),
                1 => Spec::RegexUrl(i),
                2 => Spec::FileNameSize(i),
                _ => Spec::FollowedBy(domain(mix(h)), ip),
            },
        }
    }

    /// Records of the indicators `0..n`.
    pub fn records(self, n: u64) -> impl Iterator<Item = IndicatorRecord> {
        (0..n).map(move |i| IndicatorRecord::new(&indicator_id(i), &self.spec(i).pattern()))
    }

    /// A catalog loaded with the indicators `0..n`, in one `Catalog::load`.
    pub fn catalog(self, n: u64) -> Catalog {
        let mut catalog = Catalog::new();
        let errors = catalog.load(self.records(n));
        assert!(
            errors.is_empty(),
            "generated patterns must compile: {errors:?}"
        );
        catalog
    }
}

impl Spec {
    /// The STIX pattern of the indicator.
    pub fn pattern(&self) -> String {
        match self {
            Spec::Ipv4(ip) => format!("[ipv4-addr:value = '{}']", dotted(*ip)),
            Spec::Ipv6(suffix) => format!("[ipv6-addr:value = '{}']", ipv6(*suffix)),
            Spec::Subnet24([a, b, c]) => {
                format!("[ipv4-addr:value ISSUBSET '{a}.{b}.{c}.0/24']")
            }
            Spec::Subnet16([a, b]) => format!("[ipv4-addr:value = '{a}.{b}.0.0/16']"),
            Spec::Domain(name) => format!("[domain-name:value = '{name}']"),
            Spec::Url(u) => format!("[url:value = '{u}']"),
            Spec::Sha256(digest) => format!("[file:hashes.'SHA-256' = '{digest}']"),
            Spec::LikeZone(i) => format!("[domain-name:value LIKE '%.badzone{i}%.example']"),
            Spec::RegexUrl(i) => {
                format!(r"[url:value MATCHES '^https?://[a-z]+\\.evil{i:07}[0-9]+\\.example/']")
            }
            Spec::FileNameSize(i) => format!("[file:name = 'x{i}.exe' AND file:size > 1000]"),
            Spec::FollowedBy(name, ip) => format!(
                "([domain-name:value = '{name}'] FOLLOWEDBY [ipv4-addr:value = '{}']) \
                 WITHIN 600 SECONDS",
                dotted(*ip)
            ),
        }
    }

    /// True when a single observation can match the indicator.
    pub fn is_single(&self) -> bool {
        !matches!(self, Spec::FollowedBy(..))
    }
}

/// A STIX-like id made from a counter.
pub fn indicator_id(i: u64) -> String {
    format!(
        "indicator--{:08x}-0000-4000-8000-{:012x}",
        i >> 48,
        i & 0xffff_ffff_ffff
    )
}
