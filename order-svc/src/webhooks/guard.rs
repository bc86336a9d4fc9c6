//! Webhook URLs must not reach into the network order-svc runs in (SSRF): loopback, private,
//! link-local, shared (CGNAT), unspecified, broadcast, multicast and documentation addresses, and
//! their IPv4-mapped/compatible IPv6 forms, are refused unless `--webhook-allow-private`. The
//! check applies to the addresses actually connected to, not only to the URL as registered: the
//! delivery client (`client.rs`) resolves names through a resolver that drops refused addresses
//! (a name that resolves only to them fails the attempt), and an IP literal in a URL is checked
//! before the request. Redirects are not followed.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Whether an address is one a webhook may not reach (without `--webhook-allow-private`).
pub fn refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| compatible_v4(v6)) {
            Some(v4) => refused_v4(v4),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                    || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                    || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                    || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 well-known
            }
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved
}

/// `::a.b.c.d` (the deprecated IPv4-compatible form), except `::` and `::1`.
fn compatible_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1)).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// Whether `raw` has the shape the API documents (`^https?://[A-Za-z0-9._~:\[\]-]+(/[!-"$-~]*)?$`:
/// an ASCII host, then a path of printable ASCII without `#`; at most `MAX_URL_LEN`): anything
/// else is a 400; a URL of that shape that is still refused (a host that does not parse, a
/// refused address) is a 422.
pub fn has_documented_shape(raw: &str) -> bool {
    let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    raw.len() <= crate::domain::MAX_URL_LEN
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:[]-".contains(&b))
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// The URL of a hook, or why it cannot be one (as far as the URL itself says: a name is
/// checked when it is resolved).
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > crate::domain::MAX_URL_LEN {
        return Err(format!(
            "url is longer than {} characters.",
            crate::domain::MAX_URL_LEN
        ));
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not a URL: {e}."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be http:// or https://.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials; verify the signature instead.".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a fragment.".into());
    }
    match literal_ip(&url) {
        Some(ip) if !allow_private && refused(ip) => Err(format!(
            "url names {ip}, a loopback, private, link-local or reserved address."
        )),
        _ if url.host_str().is_none_or(str::is_empty) => Err("url must name a host.".into()),
        _ => Ok(url),
    }
}

/// The IP a URL names literally, if it does.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_refused_public_ones_not() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            assert!(refused(bad.parse().unwrap()), "{bad} is refused");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!refused(good.parse().unwrap()), "{good} is allowed");
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials_or_private_literal() {
        assert!(check_url("https://hooks.example.com/in?x=1", false).is_ok());
        // An internationalised name in its ASCII (punycode) form: IDNA's Unicode tables are not
        // built in (idna_adapter is pinned to its ASCII-only version), such names still parse.
        let idn = check_url("https://xn--bcher-kva.example/in", false).expect("punycode host");
        assert_eq!(idn.host_str(), Some("xn--bcher-kva.example"));
        for bad in [
            "ftp://example.com/",
            "not a url",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "http://127.0.0.1:8080/",
            "http://[::ffff:192.168.0.1]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} is refused");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        for (raw, shaped) in [
            ("https://hooks.example.com/in?x=1", true),
            ("http://10.0.0.1", true),
            ("http://a?x", false),
            ("ftp://a/", false),
            ("https://u@a/", false),
            ("https://a/#f", false),
            ("https:///x", false),
            ("https://-\u{85}/x", false),
            ("https://[::1]:8443/a?b=c", true),
        ] {
            assert_eq!(has_documented_shape(raw), shaped, "{raw}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000)), false).is_err());
    }
}
