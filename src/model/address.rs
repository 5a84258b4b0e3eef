//! One inventory entry: validated and turned into a Prometheus target
//! address (`host:port`, IPv6 bracketed).

use core::net::{Ipv4Addr, Ipv6Addr};
use std::fmt::{self, Write as _};

/// A bracketed IPv6 address in its canonical text form, held inline so that
/// validating an entry allocates nothing.
#[derive(Clone, Copy)]
pub struct Bracketed {
    buf: [u8; 48],
    len: usize,
}

impl Bracketed {
    fn of(ip: Ipv6Addr) -> Result<Bracketed, &'static str> {
        let mut b = Bracketed {
            buf: [0; 48],
            len: 0,
        };
        write!(b, "[{ip}]").map_err(|_| "not a valid IPv6 address")?;
        Ok(b)
    }

    pub fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl fmt::Write for Bracketed {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The host part of a target: a name or IPv4 address as written, or a
/// normalised IPv6 address in brackets.
#[derive(Clone, Copy)]
pub enum Host<'a> {
    Written(&'a str),
    Ipv6(Bracketed),
}

/// A valid entry: what the target file will hold for it. Its host never
/// has a byte that a JSON string must escape.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    host: Host<'a>,
    port: u16,
    /// The host has an upper-case letter.
    upper: bool,
}

impl Target<'_> {
    pub fn host(&self) -> &str {
        match &self.host {
            Host::Written(h) => h,
            Host::Ipv6(b) => b.as_str(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host has an upper-case letter (noted while validating).
    pub fn has_upper(&self) -> bool {
        self.upper
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host(), self.port)
    }
}

/// Validates `entry` and returns its target address, or why it was refused.
pub fn target_address(entry: &str, default_port: u16) -> Result<String, &'static str> {
    parse(entry, default_port).map(|t| t.to_string())
}

/// Validates `entry` without allocating: the target it stands for, or why
/// it was refused.
#[inline]
pub fn parse(entry: &str, default_port: u16) -> Result<Target<'_>, &'static str> {
    match quick(entry, default_port) {
        Some(t) => Ok(t),
        None => parse_slow(entry, default_port),
    }
}

/// Byte kinds for [`quick`].
const Q_OTHER: u8 = 0;
const Q_NAME: u8 = 1;
const Q_DOT: u8 = 2;
const Q_COLON: u8 = 3;
const Q_UPPER: u8 = 4;
static QUICK: [u8; 256] = {
    let mut t = [Q_OTHER; 256];
    let mut i = 0;
    while i < 256 {
        if CLASS[i] & NAME != 0 {
            t[i] = if (i as u8).is_ascii_uppercase() {
                Q_UPPER
            } else {
                Q_NAME
            };
        }
        i += 1;
    }
    t[b'.' as usize] = Q_DOT;
    t[b':' as usize] = Q_COLON;
    t
};

/// The common valid entry, a host name that is not an IPv4 address, with
/// or without a port, checked in one pass over its bytes (looking closer
/// only at those that are not lower-case name bytes). `None` for
/// anything else, even valid: [`parse_slow`] decides it and names the fault.
#[inline]
fn quick(entry: &str, default_port: u16) -> Option<Target<'_>> {
    let bytes = entry.as_bytes();
    if short_special(bytes) != Some(0) {
        return quick_labels(entry, default_port);
    }
    // One label of lower-case name bytes: a name unless it starts with a
    // digit (maybe an address, left to `host`) or has `-` at an end.
    let (&first, &last) = (bytes.first()?, bytes.last()?);
    if first.is_ascii_digit() || first == b'-' || last == b'-' {
        return None;
    }
    Some(Target {
        host: Host::Written(entry),
        port: default_port,
        upper: false,
    })
}

/// [`quick`] for every entry [`short_special`] does not settle, one pass
/// over its bytes.
#[inline(never)]
fn quick_labels(entry: &str, default_port: u16) -> Option<Target<'_>> {
    let bytes = entry.as_bytes();
    let mut start = 0;
    let mut digit_led = true;
    let mut upper = false;
    for i in Specials::new(bytes) {
        let b = *bytes.get(i)?;
        match QUICK[usize::from(b)] {
            Q_NAME => {}
            Q_UPPER => upper = true,
            Q_DOT => {
                digit_led &= quick_label(bytes, start, i)?;
                start = i + 1;
            }
            Q_COLON => {
                digit_led &= quick_label(bytes, start, i)?;
                if digit_led || i > MAX_NAME_LEN {
                    return None;
                }
                let port = parse_port(entry.get(i + 1..)?).ok()?;
                return Some(Target {
                    host: Host::Written(entry.get(..i)?),
                    port,
                    upper,
                });
            }
            _ => return None,
        }
    }
    digit_led &= quick_label(bytes, start, bytes.len())?;
    // Names of digit-led labels only may be addresses: left to `host`.
    if digit_led || bytes.len() > MAX_NAME_LEN {
        return None;
    }
    Some(Target {
        host: Host::Written(entry),
        port: default_port,
        upper,
    })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is not a lower-case name byte
/// (`a-z`, `0-9`, `-`, `_`); exact for every byte.
fn special(w: u64) -> u64 {
    let low = w & !HIGH;
    // High bit set where a byte's low seven bits are >= c: no carries.
    let at_least = |c: u8| (low + ONES * u64::from(0x80 - c)) & HIGH;
    let equal = |c: u8| !((low ^ (ONES * u64::from(c))) + ONES * 0x7f) & HIGH;
    let lower = at_least(b'a') & !at_least(b'z' + 1);
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let name = (lower | digit | equal(b'-') | equal(b'_')) & !(w & HIGH);
    !name & HIGH
}

/// [`special`] over all of `bytes`, when it is 1 to 16 bytes long: in one
/// or two words (overlapping), short ones padded with a name byte.
#[inline]
fn short_special(bytes: &[u8]) -> Option<u64> {
    let word = |w: &[u8]| Some(u64::from_le_bytes(w.try_into().ok()?));
    let n = bytes.len();
    if n > 16 || n == 0 {
        return None;
    }
    if n >= 8 {
        return Some(special(word(bytes.get(..8)?)?) | special(word(bytes.get(n - 8..)?)?));
    }
    let mut padded = [b'a'; 8];
    padded.get_mut(..n)?.copy_from_slice(bytes);
    Some(special(u64::from_le_bytes(padded)))
}

/// The indexes of the bytes of `bytes` that are not lower-case name bytes,
/// in order, found eight bytes at a time (the last eight overlapping the
/// word before, for a length that is not a multiple of eight).
struct Specials<'a> {
    bytes: &'a [u8],
    /// Where the next word starts.
    at: usize,
    /// Flags of the current word not yet handed out, and where it starts.
    flags: u64,
    base: usize,
}

impl<'a> Specials<'a> {
    fn new(bytes: &'a [u8]) -> Specials<'a> {
        Specials {
            bytes,
            at: 0,
            flags: 0,
            base: 0,
        }
    }
}

impl Iterator for Specials<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            if self.flags != 0 {
                let i = self.base + (self.flags.trailing_zeros() / 8) as usize;
                self.flags &= self.flags - 1;
                return Some(i);
            }
            let len = self.bytes.len();
            if self.at >= len {
                return None;
            }
            let word = |at: usize| {
                let w = self.bytes.get(at..at.checked_add(8)?)?;
                Some(u64::from_le_bytes(w.try_into().ok()?))
            };
            if let Some(w) = word(self.at) {
                self.flags = special(w);
                self.base = self.at;
                self.at += 8;
            } else if let Some(w) = len.checked_sub(8).and_then(word) {
                // The last eight bytes; those already seen are masked off.
                let seen = self.at - (len - 8);
                self.flags = special(w) & (u64::MAX << (8 * seen));
                self.base = len - 8;
                self.at = len;
            } else {
                // Shorter than a word: a byte at a time.
                let i = self.at;
                self.at += 1;
                let b = *self.bytes.get(i)?;
                if QUICK[usize::from(b)] != Q_NAME {
                    return Some(i);
                }
            }
        }
    }
}

/// The label `start..end` of `bytes`, all name bytes: whether it starts
/// with a digit when [`Label::check`] passes it, else `None`.
fn quick_label(bytes: &[u8], start: usize, end: usize) -> Option<bool> {
    let label = bytes.get(start..end)?;
    let (&first, &last) = (label.first()?, label.last()?);
    if label.len() > 63 || first == b'-' || last == b'-' {
        return None;
    }
    Some(first.is_ascii_digit())
}

/// As [`parse`], without the quick path for common names.
#[doc(hidden)]
pub fn parse_slow<'a>(entry: &'a str, default_port: u16) -> Result<Target<'a>, &'static str> {
    let bytes = entry.as_bytes();
    let first = *bytes.first().ok_or("empty name")?;
    // One pass for the checks that apply to the whole entry.
    let (mut non_ascii, mut control, mut space, mut colons) = (false, false, false, 0usize);
    for &b in bytes {
        non_ascii |= !b.is_ascii();
        control |= b.is_ascii_control();
        space |= b.is_ascii_whitespace();
        colons += usize::from(b == b':');
    }
    if non_ascii {
        return Err("non-ASCII characters");
    }
    if control {
        return Err("control characters");
    }
    if space {
        return Err("whitespace");
    }
    // Canonical IPv6 text is lower case.
    let v6 = |ip: Ipv6Addr, port: u16| {
        Ok(Target {
            host: Host::Ipv6(Bracketed::of(ip)?),
            port,
            upper: false,
        })
    };
    let written = |h: &'a str, port: u16| Target {
        host: Host::Written(h),
        port,
        upper: h.bytes().any(|b| b.is_ascii_uppercase()),
    };
    if first == b'[' {
        let rest = entry.get(1..).unwrap_or_default();
        let (inner, after) = rest.split_once(']').ok_or("unclosed [")?;
        let ip = parse_ipv6(inner)?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':').ok_or("junk after ]")?)?,
        };
        return v6(ip, port);
    }
    match colons {
        0 => Ok(written(host(entry)?, default_port)),
        1 => {
            let (h, p) = entry.split_once(':').ok_or("bad port")?;
            let h = host(h)?;
            Ok(written(h, parse_port(p)?))
        }
        // Bare IPv6 cannot carry a port: the last group would be ambiguous.
        _ => v6(parse_ipv6(entry)?, default_port),
    }
}

fn parse_ipv6(s: &str) -> Result<Ipv6Addr, &'static str> {
    if s.contains('%') {
        return Err("IPv6 zone identifiers are not supported");
    }
    let ip = s
        .parse::<Ipv6Addr>()
        .map_err(|_| "not a valid IPv6 address")?;
    if ip.is_unspecified() {
        return Err(UNSPECIFIED);
    }
    // ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
    match ip.to_ipv4_mapped() {
        Some(v4) => never_a_target(v4).map(|()| ip),
        None => Ok(ip),
    }
}

const UNSPECIFIED: &str = "unspecified address (0.0.0.0 or ::), not a scrape target";
const BROADCAST: &str = "broadcast address 255.255.255.255, not a scrape target";
const NON_CANONICAL: &str =
    "IPv4 address in a non-canonical form (hex, octal, leading zeros or fewer than 4 parts)";

/// Addresses nothing can be scraped at.
fn never_a_target(ip: Ipv4Addr) -> Result<(), &'static str> {
    if ip.is_unspecified() {
        Err(UNSPECIFIED)
    } else if ip.is_broadcast() {
        Err(BROADCAST)
    } else {
        Ok(())
    }
}

/// A port number as written after a host: 1 to 5 digits, 1-65535.
pub fn parse_port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => u16::try_from(n).map_err(|_| "port out of range 1-65535"),
        _ => Err("port out of range 1-65535"),
    }
}

/// A host name or IPv4 address, returned as written.
fn host(h: &str) -> Result<&str, &'static str> {
    if h.is_empty() {
        return Err("empty host");
    }
    if h.len() > MAX_NAME_LEN {
        return Err("name longer than 253 characters");
    }
    // Every label all digits; every label starting with a digit.
    let (mut numeric, mut digit_led) = (true, true);
    for part in h.as_bytes().split(|&b| b == b'.') {
        // One table lookup per byte: the classes all bytes share.
        let shared = part
            .iter()
            .fold(NAME | DIGIT, |acc, &b| acc & CLASS[usize::from(b)]);
        let label = Label {
            len: part.len(),
            first: part.first().copied().unwrap_or(0),
            last: part.last().copied().unwrap_or(0),
            bad: shared & NAME == 0,
            digits: shared & DIGIT != 0,
        };
        label.check()?;
        numeric &= label.digits;
        digit_led &= label.first.is_ascii_digit();
    }
    // Only names made of digit-led labels can be addresses.
    if digit_led {
        if let Ok(ip) = h.parse::<Ipv4Addr>() {
            never_a_target(ip)?;
            return Ok(h);
        }
        // What the C resolver reads as an address never reaches DNS: `127.1`,
        // `0x7f.1` or `2130706433` would be scraped at 127.0.0.1.
        if inet_aton(h).is_some() {
            return Err(NON_CANONICAL);
        }
    }
    // An all-numeric name is an IPv4 address or nothing: never a DNS name.
    if numeric {
        return Err("not a valid IPv4 address");
    }
    Ok(h)
}

/// Byte classes of host names: letters, digits, `_` and `-` are NAME.
const NAME: u8 = 1;
const DIGIT: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            t[i] |= NAME;
        }
        if b.is_ascii_digit() {
            t[i] |= DIGIT;
        }
        i += 1;
    }
    t
};

/// One label of a host name.
struct Label {
    len: usize,
    first: u8,
    last: u8,
    bad: bool,
    digits: bool,
}

impl Label {
    fn check(&self) -> Result<(), &'static str> {
        if self.len == 0 {
            return Err("empty label (leading, trailing or double dot)");
        }
        if self.len > 63 {
            return Err("label longer than 63 characters");
        }
        if self.bad {
            return Err("characters other than letters, digits, '_', '-' and '.'");
        }
        if self.first == b'-' || self.last == b'-' {
            return Err("label starts or ends with '-'");
        }
        Ok(())
    }
}

/// Longest host name, in characters.
const MAX_NAME_LEN: usize = 253;

/// The IPv4 address glibc's `inet_aton` reads in `s`, if any: one to four
/// dot-separated numbers, each decimal, octal (leading `0`) or hex (`0x`);
/// all but the last are one byte, the last fills the remaining bytes.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let mut value: u32 = 0;
    let mut parts = s.split('.').peekable();
    let mut count = 0u32;
    while let Some(part) = parts.next() {
        count += 1;
        let n = aton_number(part)?;
        if parts.peek().is_some() {
            if count >= 4 || n > 0xff {
                return None;
            }
            value |= n << (8 * (4 - count));
        } else {
            // The last part fills the bytes the others left.
            let bits = 8 * (5 - count);
            if bits < 32 && n >> bits != 0 {
                return None;
            }
            value |= n;
        }
    }
    Some(Ipv4Addr::from(value))
}

/// One number of `inet_aton`'s syntax (what C's `strtoul(s, _, 0)` reads,
/// starting with a digit), at most 32 bits.
fn aton_number(part: &str) -> Option<u32> {
    if !part.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (part.get(1..)?, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(entry: &str) -> String {
        target_address(entry, 9100).unwrap_or_else(|e| panic!("{entry:?} refused: {e}"))
    }

    #[test]
    fn valid_entries() {
        assert_eq!(ok("sensor_0"), "sensor_0:9100");
        assert_eq!(ok("Sensor-1.site.example"), "Sensor-1.site.example:9100");
        assert_eq!(ok("sensor_0:9200"), "sensor_0:9200");
        assert_eq!(ok("a"), "a:9100");
        assert_eq!(ok("10.0.0.1"), "10.0.0.1:9100");
        assert_eq!(ok("10.0.0.1:65535"), "10.0.0.1:65535");
        assert_eq!(ok("2001:db8::1"), "[2001:db8::1]:9100");
        assert_eq!(ok("[2001:db8::1]"), "[2001:db8::1]:9100");
        assert_eq!(ok("[2001:DB8:0:0::1]:1"), "[2001:db8::1]:1");
        assert_eq!(ok("::1"), "[::1]:9100");
        assert_eq!(ok("::ffff:10.0.0.1"), "[::ffff:10.0.0.1]:9100");
        assert_eq!(ok("_srv"), "_srv:9100");
        assert_eq!(ok("1a.example"), "1a.example:9100");
        assert_eq!(ok(&"a".repeat(63)), format!("{}:9100", "a".repeat(63)));
        let max = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(max.len(), 253);
        assert_eq!(ok(&max), format!("{max}:9100"));
        assert_eq!(target_address("h", 1).unwrap(), "h:1");
        // Canonical dotted quads, and names that only look numeric.
        for good in [
            "0.0.0.1",
            "255.255.255.254",
            "127.0.0.1",
            "1.2.3.4",
            "0x",
            "0x7g",
            "0x7f.example",
            "1e100.net",
            "08.example",
            "0x1.0x2.0x3.0x4.0x5",
        ] {
            assert_eq!(ok(good), format!("{good}:9100"));
        }
        let longest = "[1111:2222:3333:4444:5555:6666:7777:8888]";
        assert_eq!(ok(longest), format!("{longest}:9100"));
    }

    #[test]
    fn invalid_entries() {
        let too_long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        for bad in [
            "",
            " ",
            "sensor 0",
            " sensor",
            "sensor\n",
            "sen\0sor",
            "\u{1b}[31mred",
            "sensor/0",
            "http://sensor",
            "\"sensor\"",
            "'s'",
            "sénsor",
            "sensor_０",
            &"a".repeat(64),
            &too_long,
            "-sensor",
            "sensor-",
            "a.-b",
            ".sensor",
            "sensor.",
            "a..b",
            "sensor:",
            "sensor:0",
            "sensor:65536",
            "sensor:99999999",
            "sensor:+80",
            "sensor:8a",
            ":9100",
            "a:b:c",
            "256.1.1.1",
            "1.2.3",
            "01.2.3.4",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[sensor]",
            "[10.0.0.1]",
            "fe80::1%eth0",
            "2001:db8::1:9100:zz",
            "[::1]:0",
            "sensor;rm",
            "a@b",
            "a,b",
        ] {
            assert!(target_address(bad, 9100).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_that_are_never_targets() {
        for (bad, why) in [
            ("0.0.0.0", UNSPECIFIED),
            ("0.0.0.0:80", UNSPECIFIED),
            ("255.255.255.255", BROADCAST),
            ("255.255.255.255:80", BROADCAST),
            ("::", UNSPECIFIED),
            ("[::]", UNSPECIFIED),
            ("[::]:80", UNSPECIFIED),
            ("0:0:0:0:0:0:0:0", UNSPECIFIED),
            ("::ffff:0.0.0.0", UNSPECIFIED),
            ("[::ffff:255.255.255.255]:80", BROADCAST),
            ("0x7f.1", NON_CANONICAL),
            ("0x7f.1:80", NON_CANONICAL),
            ("0X7F.0.0.1", NON_CANONICAL),
            ("0177.0.0.1", NON_CANONICAL),
            ("0177.0.0.1:80", NON_CANONICAL),
            ("127.1", NON_CANONICAL),
            ("127.1:80", NON_CANONICAL),
            ("127.0.1", NON_CANONICAL),
            ("0x7f000001", NON_CANONICAL),
            ("0x7f000001:80", NON_CANONICAL),
            ("2130706433", NON_CANONICAL),
            ("2130706433:80", NON_CANONICAL),
            ("1.2.3.04", NON_CANONICAL),
            ("01.2.3.4", NON_CANONICAL),
            ("0", NON_CANONICAL),
            ("0xffffffff", NON_CANONICAL),
            ("256.1.1.1", "not a valid IPv4 address"),
            ("1.2.3.4.5", "not a valid IPv4 address"),
            ("1.2.3.256", "not a valid IPv4 address"),
            ("4294967296", "not a valid IPv4 address"),
            ("09.1.1.1", "not a valid IPv4 address"),
        ] {
            assert_eq!(target_address(bad, 9100), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn upper_case_is_noted_on_both_paths() {
        for (entry, upper) in [
            ("web-a", false),
            ("Web-a", true),
            ("web-A:9100", true),
            ("sensor_1.EXAMPLE.com", true),
            ("10.0.0.1", false),
            ("10.0.0.1:80", false),
            ("[::1]:80", false),
            ("[FE80::1]", false),
            ("FE80::1", false),
            // Digit-led labels only: decided by the slow path.
            ("1A.2b", true),
            ("1a.2b:81", false),
            ("1a.2B:81", true),
        ] {
            let t = parse(entry, 9100).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(t.has_upper(), upper, "{entry}");
            let slow = parse_slow(entry, 9100).unwrap();
            assert_eq!(slow.has_upper(), upper, "{entry} (slow)");
            let host = t.host().as_bytes();
            assert_eq!(host.iter().any(u8::is_ascii_uppercase), upper, "{entry}");
            assert!(
                !host.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\'),
                "{entry}"
            );
        }
    }

    #[test]
    fn specials_are_the_bytes_that_are_not_lower_case_name_bytes() {
        let naive = |b: &[u8]| -> Vec<usize> {
            (0..b.len())
                .filter(|&i| QUICK[usize::from(b[i])] != Q_NAME)
                .collect()
        };
        // Every byte value at every place, in texts of 0 to 20 bytes.
        for len in 0..20usize {
            for at in 0..len.max(1) {
                for byte in 0..=255u8 {
                    let b: Vec<u8> = (0..len)
                        .map(|i| if i == at { byte } else { b"az09-_"[i % 6] })
                        .collect();
                    assert_eq!(Specials::new(&b).collect::<Vec<_>>(), naive(&b), "{b:?}");
                }
            }
        }
        // Many specials, in every word and in the overlapping last one.
        for len in 0..40usize {
            let b: Vec<u8> = (0..len)
                .map(|i| b"a.B:z\x80-9_\x00Z`{/@["[i % 15])
                .collect();
            assert_eq!(Specials::new(&b).collect::<Vec<_>>(), naive(&b), "{b:?}");
        }
    }

    /// The one-pass check and the general path agree at every edge the
    /// pass decides alone, as the same target or the same reason.
    #[test]
    fn quick_check_edges() {
        let name = |labels: &[usize]| {
            labels
                .iter()
                .map(|&n| "a".repeat(n))
                .collect::<Vec<_>>()
                .join(".")
        };
        let at_limit = name(&[63, 63, 63, 61]);
        let past_limit = name(&[63, 63, 63, 62]);
        assert_eq!((at_limit.len(), past_limit.len()), (253, 254));
        let with_port = |h: &str| format!("{h}:80");
        let cases: Vec<(String, Result<&str, &str>)> = vec![
            (name(&[63]), Ok("")),
            (name(&[64]), Err("label longer than 63 characters")),
            (name(&[1, 63, 1]), Ok("")),
            (name(&[1, 64, 1]), Err("label longer than 63 characters")),
            (
                with_port(&name(&[64])),
                Err("label longer than 63 characters"),
            ),
            (at_limit.clone(), Ok("")),
            (past_limit.clone(), Err("name longer than 253 characters")),
            (with_port(&at_limit), Ok("")),
            (
                with_port(&past_limit),
                Err("name longer than 253 characters"),
            ),
            ("-a".into(), Err("label starts or ends with '-'")),
            ("a-".into(), Err("label starts or ends with '-'")),
            ("a.-b.c".into(), Err("label starts or ends with '-'")),
            ("a.b-.c".into(), Err("label starts or ends with '-'")),
            ("a-:80".into(), Err("label starts or ends with '-'")),
            ("a-b.c-d".into(), Ok("")),
            ("_a_._".into(), Ok("")),
            (
                "a..b".into(),
                Err("empty label (leading, trailing or double dot)"),
            ),
            (
                ".a".into(),
                Err("empty label (leading, trailing or double dot)"),
            ),
            (
                "a.".into(),
                Err("empty label (leading, trailing or double dot)"),
            ),
            (
                "a.:80".into(),
                Err("empty label (leading, trailing or double dot)"),
            ),
            (":80".into(), Err("empty host")),
            ("1a".into(), Ok("")),
            ("1a.2b".into(), Ok("")),
            ("1a.b".into(), Ok("")),
            ("a.1".into(), Ok("")),
            ("1.a".into(), Ok("")),
            ("1a.2b:80".into(), Ok("")),
            ("0x7f.1a".into(), Ok("")),
            ("123".into(), Err(NON_CANONICAL)),
            ("1.2.3.4".into(), Ok("")),
            ("1.2.3.4:80".into(), Ok("")),
            ("1.2.3.4.5".into(), Err("not a valid IPv4 address")),
            ("127.1:80".into(), Err(NON_CANONICAL)),
            ("a\x7f".into(), Err("control characters")),
            ("a\x7f:80".into(), Err("control characters")),
            ("a:8\x7f".into(), Err("control characters")),
            ("a:".into(), Err("port is not a number")),
            ("a:0".into(), Err("port out of range 1-65535")),
            ("a:65535".into(), Ok("")),
            ("a:65536".into(), Err("port out of range 1-65535")),
            ("a:123456".into(), Err("port is not a number")),
            ("a:00080".into(), Ok("")),
            ("a:8 0".into(), Err("whitespace")),
            ("a b:80".into(), Err("whitespace")),
            ("a:80:1".into(), Err("not a valid IPv6 address")),
            ("ab::1".into(), Ok("")),
            (
                "a/b".into(),
                Err("characters other than letters, digits, '_', '-' and '.'"),
            ),
            (
                "-a/b".into(),
                Err("characters other than letters, digits, '_', '-' and '.'"),
            ),
            ("-a.b/".into(), Err("label starts or ends with '-'")),
            (
                "a..b/".into(),
                Err("empty label (leading, trailing or double dot)"),
            ),
            ("a..b\u{e9}".into(), Err("non-ASCII characters")),
            ("[a]".into(), Err("not a valid IPv6 address")),
        ];
        for (entry, want) in cases {
            let quick = parse(&entry, 9100).map(|t| t.to_string());
            let slow = parse_slow(&entry, 9100).map(|t| t.to_string());
            assert_eq!(quick, slow, "{entry:?}");
            match want {
                Ok(_) => assert!(quick.is_ok(), "{entry:?}: {quick:?}"),
                Err(why) => assert_eq!(quick, Err(why), "{entry:?}"),
            }
        }
        assert_eq!(ok("a-b:00080"), "a-b:80");
        assert_eq!(ok("ab::1"), "[ab::1]:9100");
        assert_eq!(target_address("h.example", 0).unwrap(), "h.example:0");
    }

    /// Names of 1 to 17 bytes with one other byte at every place: the one
    /// or two words of the short check, and what it leaves to the loop.
    #[test]
    fn short_names_with_any_byte_anywhere_agree_with_the_general_check() {
        for n in 1..=17 {
            for at in 0..n {
                for c in [
                    '.', 'A', 'z', '0', '-', '_', ':', '/', ' ', '\u{7f}', '\u{e9}',
                ] {
                    let entry: String = (0..n).map(|i| if i == at { c } else { 'a' }).collect();
                    let got = parse(&entry, 80).map(|t| (t.to_string(), t.has_upper()));
                    let want = parse_slow(&entry, 80).map(|t| (t.to_string(), t.has_upper()));
                    assert_eq!(got, want, "{entry:?}");
                }
            }
        }
    }

    #[test]
    fn inet_aton_reads_what_glibc_reads() {
        let ip = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(ip("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("127.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("0177.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("0x7f000001").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("1.2.65535").as_deref(), Some("1.2.255.255"));
        assert_eq!(ip("1.16777215").as_deref(), Some("1.255.255.255"));
        assert_eq!(ip("00").as_deref(), Some("0.0.0.0"));
        for none in [
            "",
            "0x",
            "0x.1",
            "08",
            "1.2.65536",
            "1.16777216",
            "256.1",
            "1.2.3.4.5",
            "1..2",
            "+1",
            "0x+1",
            "a",
            "1.2.3.4x",
            "4294967296",
        ] {
            assert_eq!(ip(none), None, "{none:?}");
        }
    }
}
