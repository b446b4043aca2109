//! The Package URI checks a device makes before it starts a pull download.

use crate::model::{Protocol, ProtocolSet};

/// Why a Package URI cannot be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriProblem {
    /// Not an absolute `scheme://authority…` URI (Update Result 7).
    Malformed,
    /// A scheme the device does not list in `/5/0/8` (Update Result 9).
    UnsupportedScheme,
}

/// Checks `uri` as RFC 3986 requires of what a download needs: a scheme, `//`,
/// a non-empty host, and no characters a URI cannot hold; then that the scheme
/// names one of `supported`.
pub(crate) fn check(uri: &str, supported: ProtocolSet) -> Result<Protocol, UriProblem> {
    let (scheme, rest) = uri.split_once(':').ok_or(UriProblem::Malformed)?;
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(UriProblem::Malformed);
    }
    let rest = rest.strip_prefix("//").ok_or(UriProblem::Malformed)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // host, then "" or ":port"
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').ok_or(UriProblem::Malformed)?,
        None => match host_port.find(':') {
            Some(i) => (&host_port[..i], &host_port[i..]),
            None => (host_port, ""),
        },
    };
    if host.is_empty() {
        return Err(UriProblem::Malformed);
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':').ok_or(UriProblem::Malformed)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UriProblem::Malformed);
        }
    }
    let allowed = |c: char| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`');
    if !uri.chars().all(allowed) {
        return Err(UriProblem::Malformed);
    }
    let protocol = Protocol::from_scheme(scheme).ok_or(UriProblem::UnsupportedScheme)?;
    if supported.contains(protocol) { Ok(protocol) } else { Err(UriProblem::UnsupportedScheme) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> ProtocolSet {
        Protocol::ALL.into_iter().collect()
    }

    #[test]
    fn accepts_download_uris() {
        for uri in [
            "coap://[2001:db8::1]:5683/fw/v2.bin",
            "coap://127.0.0.1:5685/fw/anjay-fw.bin",
            "http://example.com/fw?x=1",
            "https://user@host:8443/a",
            "coaps+tcp://h/",
            "COAP://h",
        ] {
            assert!(check(uri, all()).is_ok(), "{uri}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for uri in [
            "fw.bin",
            "coap:/h/x",
            "://h",
            "1coap://h",
            "coap://",
            "coap:///x",
            "coap://h/a b",
            "coap://[::1/x",
            "coap://h:80x/",
        ] {
            assert_eq!(check(uri, all()), Err(UriProblem::Malformed), "{uri}");
        }
    }

    #[test]
    fn rejects_unlisted_schemes() {
        assert_eq!(check("ftp://h/x", all()), Err(UriProblem::UnsupportedScheme));
        assert_eq!(check("http://h/x", ProtocolSet::EMPTY.with(Protocol::Coap)), Err(UriProblem::UnsupportedScheme));
        assert_eq!(check("coap://h/x", ProtocolSet::EMPTY.with(Protocol::Coap)), Ok(Protocol::Coap));
    }
}
