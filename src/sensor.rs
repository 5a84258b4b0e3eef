//! One inventory entry: validated and turned into a Prometheus target
//! address (`host:port`, IPv6 bracketed).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Validates `entry` and returns its target address, or why it was refused.
pub fn target_address(entry: &str, default_port: u16) -> Result<String, &'static str> {
    if entry.is_empty() {
        return Err("empty name");
    }
    if !entry.is_ascii() {
        return Err("non-ASCII characters");
    }
    if entry.bytes().any(|b| b.is_ascii_control()) {
        return Err("control characters");
    }
    if entry.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err("whitespace");
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or("unclosed [")?;
        let ip = parse_ipv6(inner)?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':').ok_or("junk after ]")?)?,
        };
        return Ok(format!("[{ip}]:{port}"));
    }
    match entry.matches(':').count() {
        0 => host(entry).map(|h| format!("{h}:{default_port}")),
        1 => {
            let (h, p) = entry.split_once(':').ok_or("bad port")?;
            Ok(format!("{}:{}", host(h)?, parse_port(p)?))
        }
        // Bare IPv6 cannot carry a port: the last group would be ambiguous.
        _ => parse_ipv6(entry).map(|ip| format!("[{ip}]:{default_port}")),
    }
}

fn parse_ipv6(s: &str) -> Result<Ipv6Addr, &'static str> {
    if s.contains('%') {
        return Err("IPv6 zone identifiers are not supported");
    }
    s.parse::<Ipv6Addr>()
        .map_err(|_| "not a valid IPv6 address")
}

fn parse_port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err("port out of range 1-65535"),
    }
}

/// A host name or IPv4 address, returned as written.
fn host(h: &str) -> Result<&str, &'static str> {
    if h.is_empty() {
        return Err("empty host");
    }
    if h.len() > 253 {
        return Err("name longer than 253 characters");
    }
    let mut all_numeric = true;
    for label in h.split('.') {
        if label.is_empty() {
            return Err("empty label (leading, trailing or double dot)");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("characters other than letters, digits, '_', '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    // An all-numeric name is an IPv4 address or nothing: never a DNS name.
    if all_numeric && h.parse::<Ipv4Addr>().is_err() {
        return Err("not a valid IPv4 address");
    }
    Ok(h)
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
}
