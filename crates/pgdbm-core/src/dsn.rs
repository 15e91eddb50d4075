//! Connection strings: parsing `postgres://` URLs and libpq `key=value` strings into a
//! [`Config`], percent-encoding, and [`mask_dsn`], which hides the password of any of these forms.
//!
//! The grammar follows libpq's (see "Connection Strings" in the PostgreSQL manual), with two
//! deliberate leniencies in URLs so that hand-written DSNs with unencoded special characters in the
//! password still parse (and, more importantly, still get masked):
//!
//! * the user info ends at the **last** `@` before the query string, so a raw `@`, `:` or `/` in
//!   the password is kept in the password;
//! * a raw `?` is taken to be part of the password when an `@` follows it and the text between
//!   them is not a query string of known parameters (so `?application_name=a@b` stays a query).
//!
//! Percent-encoding the user, password and database (as [`Config::dsn`] does) is always the safe
//! choice.

use std::time::Duration;

use crate::config::{duration_from_secs, Config};
use crate::error::{Error, Result};

/// The text put in place of a password by [`mask_dsn`], [`Config::dsn_masked`] and `Debug`.
pub const MASK: &str = "***";

/// Parameter names understood in URL query strings and `key=value` strings.
const KNOWN_PARAMS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "application_name",
    "options",
    "connect_timeout",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
    "require_auth",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "hostaddr",
    "target_session_attrs",
    "load_balance_hosts",
    "statement_mode",
];

// ---------------------------------------------------------------------------------------------
// Percent-encoding
// ---------------------------------------------------------------------------------------------

/// `s` with every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`) written as `%XX`.
///
/// The one percent-encoder of the workspace (connection URLs built by [`Config::dsn`], the
/// testkit's URLs, the CLI); safe for every part of a `postgresql://` URL.
///
/// ```
/// assert_eq!(pgdbm_core::percent_encode("a b@c:/%"), "a%20b%40c%3A%2F%25");
/// ```
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` sequences of `s`; an invalid sequence or non-UTF-8 result is an
/// [`Error::Configuration`] for `field` naming the part and the character position of the bad
/// sequence within it, never any of the text (which may be a password).
fn percent_decode(field: &str, s: &str) -> Result<String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    return Err(Error::config(
                        field,
                        format!(
                            "invalid percent-encoding in the {field} part of the connection URL \
                             at character {} of that part: `%` must be followed by two hex \
                             digits; write a literal `%` as `%25`",
                            char_pos(s, i)
                        ),
                    ))
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        Error::config(
            field,
            format!(
                "the percent-decoded {field} part of the connection URL is not valid UTF-8; \
                 percent-encode the UTF-8 bytes of each character"
            ),
        )
    })
}

/// 1-based character position of byte offset `at` in `s` (for error messages that must not quote
/// the text).
pub(crate) fn char_pos(s: &str, at: usize) -> usize {
    s.get(..at).map_or(at, |h| h.chars().count()) + 1
}

// ---------------------------------------------------------------------------------------------
// URL splitting (shared by parsing and masking, so both agree on where the password is)
// ---------------------------------------------------------------------------------------------

/// Byte ranges of a URL after its `scheme://`.
struct UrlParts<'a> {
    /// `user[:password]`, without the `@`.
    userinfo: Option<&'a str>,
    /// `host[:port][,host[:port]...]`.
    hostspec: &'a str,
    /// Database name (still percent-encoded), without the leading `/`.
    path: Option<&'a str>,
    /// Query string without the `?`.
    query: Option<&'a str>,
}

/// Scheme prefix length when `s` starts with `postgres://` or `postgresql://` (any case).
fn url_scheme_len(s: &str) -> Option<usize> {
    ["postgresql://", "postgres://"].iter().find_map(|p| {
        s.get(..p.len())
            .filter(|head| head.eq_ignore_ascii_case(p))
            .map(|_| p.len())
    })
}

fn split_url(rest: &str) -> UrlParts<'_> {
    let at = userinfo_end(rest);
    let (userinfo, after) = match at {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (before_query, query) = match after.find('?') {
        Some(q) => (&after[..q], Some(&after[q + 1..])),
        None => (after, None),
    };
    let (hostspec, path) = match before_query.find('/') {
        Some(p) => (&before_query[..p], Some(&before_query[p + 1..])),
        None => (before_query, None),
    };
    UrlParts {
        userinfo,
        hostspec,
        path,
        query,
    }
}

/// Index of the `@` that ends the user info of `rest` (URL text after `scheme://`), if any.
///
/// Normally the last `@` before the query string. But a raw `?` may be part of a password, so
/// the last `@` of the whole text is taken unless the text between the first `?` and that `@`
/// is a well-formed query string of known parameters (then the `@` is inside a query value,
/// as in `?application_name=a@b`).
fn userinfo_end(rest: &str) -> Option<usize> {
    let last = rest.rfind('@')?;
    match rest[..last].find('?') {
        None => Some(last),
        Some(q) if !is_known_query(&rest[q + 1..last]) => Some(last),
        Some(q) => rest[..q].rfind('@'),
    }
}

/// True when `s` is `key=value(&key=value)*` with known parameter names.
fn is_known_query(s: &str) -> bool {
    !s.is_empty()
        && s.split('&').all(|pair| {
            pair.split_once('=').is_some_and(|(k, _)| {
                let key = percent_decode("connection_string", k).unwrap_or_else(|_| k.to_string());
                KNOWN_PARAMS.contains(&key.as_str())
            })
        })
}

// ---------------------------------------------------------------------------------------------
// Masking
// ---------------------------------------------------------------------------------------------

/// `s` with its password replaced by `***`, whatever the form of `s`:
///
/// * URL user info: `postgres://u:pw@h/db` -> `postgres://u:***@h/db`, also when the password is
///   percent-encoded or contains raw `@`, `:` or `/` (the user info ends at the last `@` before the
///   host part);
/// * `password=` in libpq `key=value` strings, quoted (`password='a b\'c'`) or not;
/// * `password=` query parameters (`?password=...`, `&password=...`).
///
/// Parameter names are matched case-insensitively. Text without a password is returned unchanged.
/// This never fails: input it cannot make sense of is masked as far as it can be.
///
/// ```
/// use pgdbm_core::mask_dsn;
/// assert_eq!(mask_dsn("postgres://app:s3cr@t@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(mask_dsn("host=db password='a b' user=app"), "host=db password=*** user=app");
/// assert_eq!(mask_dsn("postgresql://db/x?password=pw&sslmode=require"),
///            "postgresql://db/x?password=***&sslmode=require");
/// ```
pub fn mask_dsn(s: &str) -> String {
    let body = s.trim_start();
    let lead = &s[..s.len() - body.len()];
    match url_scheme_len(body) {
        Some(n) => format!("{lead}{}", mask_url(&body[..n], &body[n..])),
        None => mask_query_params(&mask_keyword_values(s)),
    }
}

fn mask_url(scheme: &str, rest: &str) -> String {
    let parts = split_url(rest);
    let mut out = String::with_capacity(scheme.len() + rest.len());
    out.push_str(scheme);
    let mut tail = rest;
    if let Some(userinfo) = parts.userinfo {
        match userinfo.find(':') {
            Some(c) => {
                out.push_str(&userinfo[..c + 1]);
                out.push_str(MASK);
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
        tail = &rest[userinfo.len() + 1..];
    } else if !hostspec_is_plausible(parts.hostspec) {
        // No `@` but a host part that is not `host[:port],...`: most likely `user:password`
        // with the `@host` missing. Mask everything after the scheme.
        out.push_str(MASK);
        return out;
    }
    out.push_str(&mask_query_params(tail));
    out
}

/// True when every host of `spec` is `[ipv6][:digits]` or `name[:digits]` with `name` made of
/// URL-unreserved characters and `%` escapes.
fn hostspec_is_plausible(spec: &str) -> bool {
    split_hostspec(spec).iter().all(|h| {
        let port = if let Some(inner) = h.strip_prefix('[') {
            match inner.find(']') {
                Some(c) => match &inner[c + 1..] {
                    "" => "",
                    after => match after.strip_prefix(':') {
                        Some(p) => p,
                        None => return false,
                    },
                },
                None => return false,
            }
        } else {
            let name = h.find(':').map_or(&h[..], |c| &h[..c]);
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'%' | b'-'))
            {
                return false;
            }
            h.find(':').map_or("", |c| &h[c + 1..])
        };
        port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// True when `s` starts with a known parameter name (case-insensitive, `%`-decoded when
/// `encoded`), optional blanks (when not `encoded`) and `=`: the start of the next parameter.
fn starts_known_param(s: &str, encoded: bool) -> bool {
    let end = s
        .find(|c: char| c == '=' || c == '&' || c.is_whitespace())
        .unwrap_or(s.len());
    let raw = &s[..end];
    let key = if encoded {
        percent_decode("connection_string", raw).unwrap_or_else(|_| raw.to_string())
    } else {
        raw.to_string()
    };
    let rest = &s[end..];
    let rest = if encoded { rest } else { rest.trim_start() };
    rest.starts_with('=') && KNOWN_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(&key))
}

/// Masks the values of `password=` after `?` or `&`. The value runs to the next `&` that starts
/// a known parameter (`&sslmode=`...), or to the end: a raw `&` in a password is masked too.
fn mask_query_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let c = bytes[i];
        if (c == b'?' || c == b'&') && key_at(s, i + 1, false).is_some() {
            // Safe: key_at returned Some, so the key and '=' are in bounds.
            let value_start = key_at(s, i + 1, false).unwrap_or(i + 1);
            out.push_str(&s[i..value_start]);
            out.push_str(MASK);
            let end = s[value_start..]
                .match_indices('&')
                .map(|(e, _)| value_start + e)
                .find(|&e| starts_known_param(&s[e + 1..], true))
                .unwrap_or(s.len());
            i = end;
        } else {
            let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&s[i..i + ch_len]);
            i += ch_len;
        }
    }
    out
}

/// When `s[at..]` starts with the keyword `password` (case-insensitive, possibly
/// percent-encoded in query strings), optional blanks (if `blanks`), `=` and optional blanks
/// (if `blanks`): the index where the value starts.
fn key_at(s: &str, at: usize, blanks: bool) -> Option<usize> {
    let rest = s.get(at..)?;
    // Read the key up to '=' (or whitespace when blanks are allowed).
    let key_end = rest
        .find(|c: char| c == '=' || c == '&' || (blanks && c.is_whitespace()))
        .unwrap_or(rest.len());
    let raw_key = &rest[..key_end];
    let key = if blanks {
        raw_key.to_string()
    } else {
        percent_decode("password", raw_key).unwrap_or_else(|_| raw_key.to_string())
    };
    if !key.eq_ignore_ascii_case("password") {
        return None;
    }
    let mut j = at + key_end;
    if blanks {
        j += count_ws(&s[j..]);
    }
    if s[j..].starts_with('=') {
        j += 1;
        if blanks {
            j += count_ws(&s[j..]);
        }
        Some(j)
    } else {
        None
    }
}

fn count_ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

/// Masks `password = value` in a libpq `key=value` string (quoted or unquoted values).
fn mask_keyword_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut at_token_start = true;
    while i < bytes.len() {
        if at_token_start {
            if let Some(v) = key_at(s, i, true) {
                out.push_str(&s[i..v]);
                out.push_str(MASK);
                i = v + value_len(&s[v..]);
                at_token_start = false;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        at_token_start = ch.is_whitespace();
        i += ch.len_utf8();
    }
    out
}

/// Length in bytes of the libpq password value at the start of `s`, as far as masking goes.
///
/// A quoted value runs to its closing quote (`\` escapes), an unterminated one to the end. An
/// unquoted value runs past whitespace up to the next known `parameter=` (or the end), so that
/// a malformed unquoted password with spaces (`password=correct horse battery`) is masked
/// whole.
fn value_len(s: &str) -> usize {
    if s.starts_with('\'') {
        let mut chars = s.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
        return s.len();
    }
    let mut escaped = false;
    let mut prev_ws = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c.is_whitespace() {
            prev_ws = true;
            continue;
        } else if prev_ws && starts_known_param(&s[i..], false) {
            return s[..i].trim_end().len();
        }
        prev_ws = false;
    }
    s.trim_end().len()
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Collects connection parameters (libpq names) and applies them to a [`Config`].
///
/// Error messages name the parameter and what is wrong with its value, never the value itself:
/// in a malformed string, what looks like a value may be part of a password.
pub(crate) struct ParamSink {
    config: Config,
    hosts: Option<Vec<String>>,
    ports: Option<Vec<Option<u16>>>,
    /// `hostaddr` entries (`None` = an empty entry: resolve that host's name).
    hostaddrs: Option<Vec<Option<std::net::IpAddr>>>,
    /// Where the values come from, for error messages ("connection URL", "environment").
    source: &'static str,
}

impl ParamSink {
    /// A sink that applies parameters on top of `base`.
    pub(crate) fn new(source: &'static str, base: Config) -> Self {
        ParamSink {
            config: base,
            hosts: None,
            ports: None,
            hostaddrs: None,
            source,
        }
    }

    /// Applies libpq parameter `key` = `value`.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let source = self.source;
        let c = &mut self.config;
        match key {
            "host" => self.hosts = Some(value.split(',').map(|h| h.trim().to_string()).collect()),
            "port" => {
                let ports = value
                    .split(',')
                    .map(|p| parse_port(p.trim()))
                    .collect::<Result<Vec<_>>>()?;
                self.ports = Some(ports);
            }
            "hostaddr" => {
                let addrs = value
                    .split(',')
                    .enumerate()
                    .map(|(i, a)| parse_hostaddr(source, i, a.trim()))
                    .collect::<Result<Vec<_>>>()?;
                self.hostaddrs = Some(addrs);
            }
            "target_session_attrs" => {
                c.target_session_attrs = value.parse().map_err(|_| {
                    Error::config(
                        "target_session_attrs",
                        format!(
                            "the {source} has a target_session_attrs that is not one of any, \
                             read-write, read-only, primary, standby, prefer-standby"
                        ),
                    )
                })?
            }
            "load_balance_hosts" => {
                c.load_balance_hosts = value.parse().map_err(|_| {
                    Error::config(
                        "load_balance_hosts",
                        format!(
                            "the {source} has a load_balance_hosts that is not disable or random"
                        ),
                    )
                })?
            }
            "dbname" => c.database = value.to_string(),
            "user" => c.user = value.to_string(),
            "password" => c.password = Some(value.to_string()),
            "sslmode" => {
                c.ssl_mode = value.parse().map_err(|_| {
                    Error::config(
                        "ssl_mode",
                        format!(
                            "the {source} has an sslmode that is not one of disable, allow, \
                             prefer, require, verify-ca, verify-full"
                        ),
                    )
                })?
            }
            "application_name" => c.application_name = Some(value.to_string()),
            "options" => {
                for (k, v) in parse_options(value)? {
                    c.server_settings.insert(k, v);
                }
            }
            "connect_timeout" => {
                let secs: f64 = value.trim().parse().map_err(|_| {
                    Error::config(
                        "connect_timeout",
                        format!(
                            "the {source} has a connect_timeout that is not a number of seconds; \
                             use e.g. `connect_timeout=10`"
                        ),
                    )
                })?;
                let d = duration_from_secs("connect_timeout", secs)?;
                if d == Duration::ZERO {
                    return Err(Error::config(
                        "connect_timeout",
                        "0 (libpq's \"wait forever\") is not supported: pgdbm always bounds \
                         connecting; use a positive number of seconds",
                    ));
                }
                c.connect_timeout = d;
            }
            "statement_mode" => c.statement_mode = value.parse()?,
            "sslrootcert" => c.ssl_root_cert = Some(value.into()),
            "sslcert" => c.ssl_cert = Some(value.into()),
            "sslkey" => c.ssl_key = Some(value.into()),
            "channel_binding" => {
                c.channel_binding = value.parse().map_err(|_| {
                    Error::config(
                        "channel_binding",
                        format!(
                            "the {source} has a channel_binding that is not one of disable, \
                             prefer, require"
                        ),
                    )
                })?
            }
            "require_auth" => {
                c.require_auth = Some(value.parse().map_err(|_| {
                    Error::config(
                        "require_auth",
                        format!(
                            "the {source} has a require_auth that is not a valid list; use \
                             comma-separated methods among password, md5, gss, sspi, \
                             scram-sha-256, none, either all plain or all prefixed with `!`, \
                             each once"
                        ),
                    )
                })?)
            }
            "keepalives" => {
                c.keepalives = match value.trim() {
                    "1" => true,
                    "0" => false,
                    _ => {
                        return Err(Error::config(
                            "keepalives",
                            format!("the {source} has a keepalives value that is not 0 or 1; use keepalives=1 (on) or keepalives=0 (off)"),
                        ))
                    }
                }
            }
            "keepalives_idle" | "keepalives_interval" => {
                let secs = Self::whole_number(source, key, value, "seconds")?;
                let d = Duration::from_secs(secs);
                if key == "keepalives_idle" {
                    c.keepalives_idle = d;
                } else {
                    c.keepalives_interval = d;
                }
            }
            "keepalives_count" => {
                let n = Self::whole_number(source, key, value, "probes")?;
                c.keepalives_count = u32::try_from(n).unwrap_or(u32::MAX);
            }
            "tcp_user_timeout" => {
                // libpq: milliseconds, 0 = the OS default.
                let ms = Self::whole_number(source, key, value, "milliseconds")?;
                c.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            _ => {
                // The name is not echoed: in a malformed string it may be part of a password.
                return Err(Error::config(
                    "connection_string",
                    format!(
                        "unknown connection parameter in the {source}; supported: {}",
                        KNOWN_PARAMS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A non-negative whole number for parameter `key`; the error never echoes the value.
    fn whole_number(source: &str, key: &str, value: &str, unit: &str) -> Result<u64> {
        value.trim().parse::<u64>().map_err(|_| {
            Error::config(
                key,
                format!(
                    "the {source} has a {key} that is not a whole number of {unit}; use e.g. `{key}=10`"
                ),
            )
        })
    }

    /// Combines hosts, ports and addresses as libpq does and returns the config. Without
    /// `host`, `hostaddr` and `port` parameters the base config's hosts are kept; `hostaddr`
    /// without `host` makes the addresses the host names too; `host` without `hostaddr`
    /// clears the base config's addresses (they belonged to its hosts).
    pub(crate) fn finish(mut self) -> Result<Config> {
        if self.hosts.is_none() && self.ports.is_none() && self.hostaddrs.is_none() {
            return Ok(self.config);
        }
        let default_port = Config::default().port;
        if self.hosts.is_none() {
            if let Some(addrs) = &self.hostaddrs {
                let names = addrs
                    .iter()
                    .map(|a| a.map(|a| a.to_string()).unwrap_or_default())
                    .collect();
                self.hosts = Some(names);
            }
        }
        match (&self.hosts, self.hostaddrs.take()) {
            (Some(hosts), Some(addrs)) if addrs.len() != hosts.len() => {
                return Err(Error::config(
                    "hostaddr",
                    format!(
                        "the {} has {} hostaddr entries for {} hosts; give one address per host \
                         (an empty entry resolves that host's name)",
                        self.source,
                        addrs.len(),
                        hosts.len()
                    ),
                ))
            }
            (_, Some(addrs)) => self.config.hostaddr = addrs,
            (Some(_), None) => self.config.hostaddr.clear(),
            (None, None) => {}
        }
        if self.hosts.is_none() && self.ports.is_none() {
            return Ok(self.config);
        }
        let keep_fallbacks = self.hosts.is_none();
        let hosts = self.hosts.unwrap_or_else(|| vec![self.config.host.clone()]);
        let ports = self.ports.unwrap_or_default();
        let port_for = |i: usize| -> Result<u16> {
            let p = match ports.len() {
                0 => None,
                1 => ports[0],
                n if n == hosts.len() => ports[i],
                n => {
                    return Err(Error::config(
                        "port",
                        format!(
                        "{n} ports given for {} hosts; give one port for all hosts or one per host",
                        hosts.len()
                    ),
                    ))
                }
            };
            Ok(p.unwrap_or(default_port))
        };
        let mut list = Vec::with_capacity(hosts.len());
        for (i, h) in hosts.iter().enumerate() {
            let host = if h.is_empty() {
                Config::default().host
            } else {
                h.clone()
            };
            list.push((host, port_for(i)?));
        }
        let mut iter = list.into_iter();
        if let Some((h, p)) = iter.next() {
            self.config.host = h;
            self.config.port = p;
        }
        if !keep_fallbacks {
            self.config.fallback_hosts = iter.collect();
        }
        Ok(self.config)
    }
}

/// Parses entry `index` (0-based) of `hostaddr`: empty (resolve the host name) or a numeric
/// IPv4 / IPv6 address. The error names the entry, not its text.
fn parse_hostaddr(source: &str, index: usize, a: &str) -> Result<Option<std::net::IpAddr>> {
    if a.is_empty() {
        return Ok(None);
    }
    a.parse().map(Some).map_err(|_| {
        Error::config(
            "hostaddr",
            format!(
                "entry {} of hostaddr in the {source} is not a numeric IP address; hostaddr \
                 takes addresses such as 10.0.0.5 or ::1 (names go in host)",
                index + 1
            ),
        )
    })
}

/// Parses a port; an empty string means "default". The error never echoes the text.
fn parse_port(p: &str) -> Result<Option<u16>> {
    if p.is_empty() {
        return Ok(None);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::config(
            "port",
            "a port is not a number from 1 to 65535; write ports as digits (default 5432)",
        )),
        Ok(n) => Ok(Some(n)),
    }
}

/// Parses libpq `options` (`-c key=value`, `-ckey=value`, `--key=value`, separated by
/// whitespace; `\` escapes the next character) into server settings. Errors name the word's
/// position, not its text.
pub(crate) fn parse_options(s: &str) -> Result<Vec<(String, String)>> {
    // Split on unescaped whitespace.
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter().enumerate();
    while let Some((n, w)) = iter.next() {
        let setting = if w == "-c" {
            iter.next().map(|(_, s)| s).ok_or_else(|| {
                Error::config(
                    "server_settings",
                    "`-c` at the end of `options` has no `key=value` after it",
                )
            })?
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(Error::config(
                "server_settings",
                format!(
                    "word {} of `options` is not understood; write settings as `-c key=value`",
                    n + 1
                ),
            ));
        };
        let (k, v) = setting.split_once('=').ok_or_else(|| {
            Error::config(
                "server_settings",
                format!(
                    "the setting at word {} of `options` has no `=`; write settings as \
                     `-c key=value`",
                    n + 1
                ),
            )
        })?;
        // PostgreSQL treats `-` in setting names given on the command line as `_`.
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

/// Parses a `postgres://` / `postgresql://` URL or a libpq `key=value` string into a config
/// based on [`Config::default`].
pub(crate) fn parse(s: &str) -> Result<Config> {
    parse_onto(Config::default(), s)
}

/// Parses `s` (URL or `key=value` string) on top of `base`: every parameter `s` gives overwrites
/// the field it sets, the other fields keep `base`'s values. The string is not kept.
pub(crate) fn parse_onto(base: Config, s: &str) -> Result<Config> {
    let trimmed = s.trim();
    if let Some(n) = url_scheme_len(trimmed) {
        parse_url(base, &trimmed[n..])
    } else if trimmed.find("://").is_some_and(|i| {
        trimmed[..i]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    }) {
        Err(Error::config(
            "connection_string",
            "unsupported URL scheme (the text before `://`); use `postgresql://` or `postgres://`",
        ))
    } else if trimmed.is_empty() || trimmed.contains('=') {
        parse_keyword_value(base, trimmed)
    } else {
        Err(Error::config(
            "connection_string",
            "not a connection string: expected a `postgresql://user:password@host:port/db` URL \
             or libpq `key=value` pairs such as `host=localhost dbname=app`",
        ))
    }
}

fn parse_url(base: Config, rest: &str) -> Result<Config> {
    let parts = split_url(rest);
    let mut sink = ParamSink::new("connection URL", base);
    if let Some(ui) = parts.userinfo {
        let (user, password) = match ui.find(':') {
            Some(c) => (&ui[..c], Some(&ui[c + 1..])),
            None => (ui, None),
        };
        if !user.is_empty() {
            sink.config.user = percent_decode("user", user)?;
        }
        if let Some(pw) = password {
            sink.config.password = Some(percent_decode("password", pw)?);
        }
    }
    if !parts.hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for (i, spec) in split_hostspec(parts.hostspec).into_iter().enumerate() {
            let (h, p) = split_host_port(i, spec)?;
            hosts.push(percent_decode("host", h)?);
            ports.push(parse_port(&percent_decode("port", p.unwrap_or(""))?)?);
        }
        sink.hosts = Some(hosts);
        sink.ports = Some(ports);
    }
    if let Some(path) = parts.path.filter(|p| !p.is_empty()) {
        sink.config.database = percent_decode("database", path)?;
    }
    if let Some(q) = parts.query.filter(|q| !q.is_empty()) {
        for (i, pair) in q.split('&').filter(|p| !p.is_empty()).enumerate() {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Error::config(
                    "connection_string",
                    format!(
                        "query parameter {} of the connection URL has no `=`; write `name=value`",
                        i + 1
                    ),
                )
            })?;
            let key = percent_decode("connection_string", k)?;
            let value = percent_decode(&param_field(&key), v)?;
            sink.set(&key, &value).map_err(|e| match e {
                Error::Configuration { field, message } => Error::Configuration {
                    field,
                    message: format!("{message} (query parameter {})", i + 1),
                },
                other => other,
            })?;
        }
    }
    sink.finish()
}

/// The [`Config`] field a libpq parameter sets (for error messages).
fn param_field(key: &str) -> String {
    match key {
        "dbname" => "database",
        "sslmode" => "ssl_mode",
        "sslrootcert" => "ssl_root_cert",
        "sslcert" => "ssl_cert",
        "sslkey" => "ssl_key",
        "options" => "server_settings",
        k if KNOWN_PARAMS.contains(&k) => k,
        _ => "connection_string",
    }
    .to_string()
}

/// Splits `h1:p1,[::1]:p2` at commas outside brackets.
fn split_hostspec(spec: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&spec[start..]);
    out
}

/// Host and port of host spec number `index` (0-based); errors name the number, not the text.
fn split_host_port(index: usize, spec: &str) -> Result<(&str, Option<&str>)> {
    if let Some(inner) = spec.strip_prefix('[') {
        let close = inner.find(']').ok_or_else(|| {
            Error::config(
                "host",
                format!(
                    "host {} of the connection URL: IPv6 address has no closing `]`; write e.g. \
                     `[::1]:5432`",
                    index + 1
                ),
            )
        })?;
        let host = &inner[..close];
        let after = &inner[close + 1..];
        if after.is_empty() {
            Ok((host, None))
        } else if let Some(p) = after.strip_prefix(':') {
            Ok((host, Some(p)))
        } else {
            Err(Error::config(
                "host",
                format!(
                    "host {} of the connection URL: unexpected text after `]`; write e.g. \
                     `[::1]:5432`",
                    index + 1
                ),
            ))
        }
    } else {
        // As libpq: the host name ends at the first `:`; everything after it is the port.
        match spec.find(':') {
            Some(c) => Ok((&spec[..c], Some(&spec[c + 1..]))),
            None => Ok((spec, None)),
        }
    }
}

fn parse_keyword_value(base: Config, s: &str) -> Result<Config> {
    let mut sink = ParamSink::new("key=value connection string", base);
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key_end = s.len();
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                key_end = i;
                break;
            }
            chars.next();
        }
        let key = &s[start..key_end];
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Neither the word nor its neighbours are quoted: this is where an unquoted
            // password with spaces ends up.
            return Err(Error::config(
                "connection_string",
                format!(
                    "key=value connection string: the word starting at character {} has no `=` \
                     after it; write `key=value` pairs and quote values containing spaces \
                     (`password='a b'`)",
                    char_pos(s, start)
                ),
            ));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if let Some((quote_at, _)) = chars.next_if(|(_, c)| *c == '\'') {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::config(
                    param_field(key),
                    format!(
                        "key=value connection string: the quoted value starting at character {} \
                         is not terminated; close it with `'` and write a literal quote as `\\'`",
                        char_pos(s, quote_at)
                    ),
                ));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        sink.set(key, &value).map_err(|e| match e {
            Error::Configuration { field, message } => Error::Configuration {
                field,
                message: format!("{message} (parameter at character {})", char_pos(s, start)),
            },
            other => other,
        })?;
    }
    sink.finish()
}

/// Builds a config from environment lookups (see [`Config::from_env_with`]).
pub(crate) fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    if let Some(url) = env("DATABASE_URL").filter(|u| !u.trim().is_empty()) {
        return parse(&url).map_err(|e| match e {
            Error::Configuration { field, message } => Error::Configuration {
                field,
                message: format!("{message} (from environment variable DATABASE_URL)"),
            },
            other => other,
        });
    }
    const VARS: &[(&str, &str)] = &[
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGDATABASE", "dbname"),
        ("PGUSER", "user"),
        ("PGPASSWORD", "password"),
        ("PGSSLMODE", "sslmode"),
        ("PGAPPNAME", "application_name"),
        ("PGCONNECT_TIMEOUT", "connect_timeout"),
        ("PGSSLROOTCERT", "sslrootcert"),
        ("PGSSLCERT", "sslcert"),
        ("PGSSLKEY", "sslkey"),
        ("PGCHANNELBINDING", "channel_binding"),
        ("PGREQUIREAUTH", "require_auth"),
        ("PGOPTIONS", "options"),
        ("PGHOSTADDR", "hostaddr"),
        ("PGTARGETSESSIONATTRS", "target_session_attrs"),
        ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
    ];
    let mut sink = ParamSink::new("environment", Config::default());
    for (var, key) in VARS {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            sink.set(key, &v).map_err(|e| match e {
                Error::Configuration { field, message } => Error::Configuration {
                    field,
                    message: format!("{message} (from environment variable {var})"),
                },
                other => other,
            })?;
        }
    }
    if sink.config.password.is_none() {
        sink.config.password = env("DB_PASSWORD").filter(|v| !v.is_empty());
    }
    sink.finish()
}

/// Writes `host` for a URL: IPv6 addresses in brackets, anything else percent-encoded.
pub(crate) fn url_host(host: &str) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        percent_encode(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SslMode;
    use proptest::prelude::*;

    fn cfg_err(r: Result<Config>) -> (String, String) {
        match r {
            Err(Error::Configuration { field, message }) => (field, message),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn url_basic_and_scheme_variants() {
        for scheme in ["postgres", "postgresql", "PostgreSQL"] {
            let s = format!("{scheme}://app:pw@db.example.com:6432/shop");
            let c = Config::from_url(&s).unwrap();
            assert_eq!(c.user, "app");
            assert_eq!(c.password.as_deref(), Some("pw"));
            assert_eq!(c.host, "db.example.com");
            assert_eq!(c.port, 6432);
            assert_eq!(c.database, "shop");
            assert!(c.fallback_hosts.is_empty());
        }
    }

    #[test]
    fn url_defaults_when_parts_missing() {
        let c = Config::from_url("postgresql://").unwrap();
        let d = Config::default();
        assert_eq!(
            (c.host, c.port, c.user, c.database),
            (d.host, d.port, d.user, d.database)
        );
        assert_eq!(c.password, None);
        let c = Config::from_url("postgres://h/").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.database.as_str()),
            ("h", 5432, "postgres")
        );
        let c = Config::from_url("postgres://u@h").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_deref()), ("u", None));
    }

    #[test]
    fn url_percent_decoding() {
        let c = Config::from_url("postgres://us%40er:p%40ss%3Aw%2Frd%25@h%2Dx/my%20db").unwrap();
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password.as_deref(), Some("p@ss:w/rd%"));
        assert_eq!(c.host, "h-x");
        assert_eq!(c.database, "my db");
        let c = Config::from_url("postgres://%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(c.host, "/var/run/postgresql");
        let c = Config::from_url("postgres://u:%C3%A9t%C3%A9@h/%E6%97%A5").unwrap();
        assert_eq!(c.password.as_deref(), Some("été"));
        assert_eq!(c.database, "日");
    }

    #[test]
    fn url_raw_special_characters_in_password() {
        let c = Config::from_url("postgres://u:p@ss:w/rd@host:5433/db").unwrap();
        assert_eq!(c.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(
            (c.host.as_str(), c.port, c.database.as_str()),
            ("host", 5433, "db")
        );
        let c = Config::from_url("postgres://u:ab?cd@host/db?sslmode=require").unwrap();
        assert_eq!(c.password.as_deref(), Some("ab?cd"));
        assert_eq!(c.host, "host");
        assert_eq!(c.ssl_mode, SslMode::Require);
        // '@' in a query value is not user info
        let c = Config::from_url("postgres://h:5433?application_name=a@b").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("h", 5433));
        assert_eq!(c.application_name.as_deref(), Some("a@b"));
    }

    #[test]
    fn url_bad_percent_encoding_does_not_show_password() {
        let (field, msg) = cfg_err(Config::from_url("postgres://u:sec%zzret@h/db"));
        assert_eq!(field, "password");
        assert!(!msg.contains("sec"), "{msg}");
        let (field, _) = cfg_err(Config::from_url("postgres://u@h/d%4"));
        assert_eq!(field, "database");
        let (field, _) = cfg_err(Config::from_url("postgres://u@h/%FF"));
        assert_eq!(field, "database");
    }

    #[test]
    fn url_multiple_hosts_and_ipv6() {
        let c = Config::from_url("postgres://u@host1:5432,host2:5433,host3/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("host1", 5432));
        assert_eq!(
            c.fallback_hosts,
            vec![("host2".to_string(), 5433), ("host3".to_string(), 5432)]
        );
        assert_eq!(c.hosts().len(), 3);
        let c = Config::from_url("postgresql://[::1]:5433,[fe80::1]/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5433));
        assert_eq!(c.fallback_hosts, vec![("fe80::1".to_string(), 5432)]);
        let c = Config::from_url("postgresql://[2001:db8::1]/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("2001:db8::1", 5432));
        let (f, _) = cfg_err(Config::from_url("postgresql://[::1/db"));
        assert_eq!(f, "host");
    }

    #[test]
    fn url_query_parameters() {
        let c = Config::from_url(
            "postgres://u@h/db?sslmode=verify-full&application_name=my%20app\
             &connect_timeout=7&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/k.pem\
             &options=-c%20search_path%3Dx%20-cstatement_timeout%3D5s%20--lock-timeout%3D1s",
        )
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.application_name.as_deref(), Some("my app"));
        assert_eq!(c.connect_timeout, Duration::from_secs(7));
        assert_eq!(
            c.ssl_root_cert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(c.ssl_cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(c.ssl_key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(c.server_settings["search_path"], "x");
        assert_eq!(c.server_settings["statement_timeout"], "5s");
        assert_eq!(c.server_settings["lock_timeout"], "1s");

        let c = Config::from_url("postgres:///?host=a,b&port=1,2&user=us&password=p%26w&dbname=d")
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("a", 1));
        assert_eq!(c.fallback_hosts, vec![("b".to_string(), 2)]);
        assert_eq!(c.user, "us");
        assert_eq!(c.password.as_deref(), Some("p&w"));
        assert_eq!(c.database, "d");
        let c = Config::from_url("postgres://x,y/db?port=7").unwrap();
        assert_eq!(c.hosts(), vec![("x".to_string(), 7), ("y".to_string(), 7)]);
        let c = Config::from_url("postgres://h/db?sslmode=allow").unwrap();
        assert_eq!(c.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn url_bad_parameters_name_the_field() {
        let cases = [
            ("postgres://h/db?sslmode=bogus", "ssl_mode"),
            ("postgres://h/db?connect_timeout=-1", "connect_timeout"),
            ("postgres://h/db?connect_timeout=abc", "connect_timeout"),
            ("postgres://h/db?connect_timeout=NaN", "connect_timeout"),
            ("postgres://h/db?connect_timeout=inf", "connect_timeout"),
            ("postgres://h/db?connect_timeout=0", "connect_timeout"),
            ("postgres://h:0/db", "port"),
            ("postgres://h:99999/db", "port"),
            ("postgres://h:abc/db", "port"),
            ("postgres://a,b,c/db?port=1,2", "port"),
            ("postgres://h/db?frobnicate=1", "connection_string"),
            ("postgres://h/db?options=-x", "server_settings"),
            ("postgres://h/db?options=-c", "server_settings"),
            ("postgres://h/db?options=-cfoo", "server_settings"),
            ("postgres://h/db?sslmode", "connection_string"),
            ("mysql://h/db", "connection_string"),
            ("just some text", "connection_string"),
        ];
        for (url, want) in cases {
            let (field, msg) = cfg_err(Config::from_url(url));
            assert_eq!(field, want, "{url}: {msg}");
            assert!(!msg.is_empty());
        }
        let (_, msg) = cfg_err(Config::from_url("postgres://h/db?frobnicate=1"));
        assert!(
            !msg.contains("frobnicate")
                && msg.contains("sslmode")
                && msg.contains("query parameter 1"),
            "{msg}"
        );
    }

    #[test]
    fn keyword_value_strings() {
        let c = Config::from_url(
            r"host=db port=6543 dbname='my db' user=app password='a b\'c\\d' sslmode=require",
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("db", 6543));
        assert_eq!(c.database, "my db");
        assert_eq!(c.user, "app");
        assert_eq!(c.password.as_deref(), Some(r"a b'c\d"));
        assert_eq!(c.ssl_mode, SslMode::Require);
        let c = Config::from_url(r"  host = h1,h2   port=1,2 password=x\ y options='-c jit=on'")
            .unwrap();
        assert_eq!(c.hosts(), vec![("h1".into(), 1), ("h2".into(), 2)]);
        assert_eq!(c.password.as_deref(), Some("x y"));
        assert_eq!(c.server_settings["jit"], "on");
        let c = Config::from_url("password=''").unwrap();
        assert_eq!(c.password.as_deref(), Some(""));
        let c: Config = "dbname=x".parse().unwrap();
        assert_eq!(c.database, "x");
    }

    #[test]
    fn multi_host_parameters_follow_libpq() {
        use crate::config::{LoadBalanceHosts, TargetSessionAttrs};
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // One port per host, one port for all, empty entries are the defaults.
        let c = Config::from_url("host=a,b port=5432,5433").unwrap();
        assert_eq!(c.hosts(), vec![("a".into(), 5432), ("b".into(), 5433)]);
        let c = Config::from_url("host=a,b,c port=6000").unwrap();
        assert_eq!(
            c.hosts(),
            vec![("a".into(), 6000), ("b".into(), 6000), ("c".into(), 6000)]
        );
        let c = Config::from_url("host=a,,c port=1,,3").unwrap();
        assert_eq!(
            c.hosts(),
            vec![("a".into(), 1), ("localhost".into(), 5432), ("c".into(), 3)]
        );
        let (f, _) = cfg_err(Config::from_url("host=a,b,c port=1,2"));
        assert_eq!(f, "port");
        // hostaddr pairs with host by position; an empty entry resolves that host's name.
        let c = Config::from_url("host=db1,db2 hostaddr=10.0.0.1, port=5432").unwrap();
        assert_eq!(c.hostaddr, vec![Some(ip("10.0.0.1")), None]);
        assert_eq!(c.host_specs()[0].host, "db1");
        assert_eq!(c.host_specs()[0].hostaddr, Some(ip("10.0.0.1")));
        assert_eq!(c.host_specs()[1].hostaddr, None);
        // hostaddr alone: the addresses are the names too.
        let c = Config::from_url("hostaddr=127.0.0.1,::1 port=1,2").unwrap();
        assert_eq!(c.hosts(), vec![("127.0.0.1".into(), 1), ("::1".into(), 2)]);
        assert_eq!(c.hostaddr, vec![Some(ip("127.0.0.1")), Some(ip("::1"))]);
        let c = Config::from_url("postgresql://u@h1,h2/db?hostaddr=10.0.0.1,10.0.0.2").unwrap();
        assert_eq!(c.hostaddr.len(), 2);
        let (f, m) = cfg_err(Config::from_url("host=a,b hostaddr=10.0.0.1"));
        assert_eq!(f, "hostaddr");
        assert!(m.contains("1 hostaddr entries for 2 hosts"), "{m}");
        let (f, m) = cfg_err(Config::from_url("host=a hostaddr=db.example.com"));
        assert_eq!(f, "hostaddr");
        assert!(m.contains("entry 1") && !m.contains("example"), "{m}");
        // Hosts given again without hostaddr drop the old addresses (they were for old hosts).
        let mut c = Config::from_url("host=a hostaddr=10.0.0.1").unwrap();
        c.apply_url("host=b,c").unwrap();
        assert!(c.hostaddr.is_empty());
        // A port alone keeps the hosts and their addresses.
        c.apply_url("host=a hostaddr=10.0.0.1").unwrap();
        c.apply_url("port=7").unwrap();
        assert_eq!((c.port, c.hostaddr.len()), (7, 1));

        let c = Config::from_url(
            "postgresql://u@a:1,b:2/db?target_session_attrs=read-write&load_balance_hosts=random",
        )
        .unwrap();
        assert_eq!(c.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(c.load_balance_hosts, LoadBalanceHosts::Random);
        for attrs in [
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ] {
            let c = Config::from_url(&format!("host=a target_session_attrs={attrs}")).unwrap();
            assert_eq!(c.target_session_attrs.as_str(), attrs);
        }
        let (f, _) = cfg_err(Config::from_url("host=a target_session_attrs=master"));
        assert_eq!(f, "target_session_attrs");
        let (f, _) = cfg_err(Config::from_url("postgres://a/db?load_balance_hosts=rr"));
        assert_eq!(f, "load_balance_hosts");
    }

    #[test]
    fn multi_host_settings_survive_the_dsn() {
        use crate::config::{LoadBalanceHosts, TargetSessionAttrs};
        let mut c = Config::from_url("host=db1,db2,::1 port=5432,5433,5434 hostaddr=10.0.0.1,,::1")
            .unwrap();
        c.password = Some("pw".into());
        c.target_session_attrs = TargetSessionAttrs::PreferStandby;
        c.load_balance_hosts = LoadBalanceHosts::Random;
        let dsn = c.dsn_with(|_| None).unwrap();
        assert!(
            dsn.contains("target_session_attrs=prefer-standby")
                && dsn.contains("load_balance_hosts=random"),
            "{dsn}"
        );
        let back = Config::from_url(&dsn).unwrap();
        assert_eq!(back.host_specs(), c.host_specs());
        assert_eq!(back.target_session_attrs, c.target_session_attrs);
        assert_eq!(back.load_balance_hosts, c.load_balance_hosts);
        // Defaults add nothing to the URL.
        assert!(!Config::default().dsn_masked_with(|_| None).contains('?'));
        let shown = c.to_string();
        assert!(
            shown.contains("target_session_attrs=prefer-standby"),
            "{shown}"
        );
        assert!(!shown.contains("pw"), "{shown}");
    }

    #[test]
    fn keyword_value_errors() {
        let (f, m) = cfg_err(Config::from_url("host=h password='sekrit"));
        assert_eq!(f, "password");
        assert!(!m.contains("sekrit"), "{m}");
        let (f, m) = cfg_err(Config::from_url("host=h bogus=1"));
        assert_eq!(f, "connection_string");
        assert!(!m.contains("bogus") && m.contains("character 8"), "{m}");
        let (f, _) = cfg_err(Config::from_url("host=h dbname"));
        assert_eq!(f, "connection_string");
        let (f, _) = cfg_err(Config::from_url("host=h sslmode=nope"));
        assert_eq!(f, "ssl_mode");
    }

    #[test]
    fn options_forms() {
        let got = parse_options(r"-c a=1 -cb=2 --c-d=3 -c e=x\ y").unwrap();
        let want = [("a", "1"), ("b", "2"), ("c_d", "3"), ("e", "x y")];
        assert_eq!(
            got,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(parse_options("").unwrap().is_empty());
    }

    #[test]
    fn env_reading() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::from_env_with(vars(&[
            ("PGHOST", "pg1,pg2"),
            ("PGPORT", "6000"),
            ("PGDATABASE", "app"),
            ("PGUSER", "me"),
            ("PGPASSWORD", "pw"),
            ("DB_PASSWORD", "other"),
            ("PGSSLMODE", "verify-ca"),
            ("PGAPPNAME", "svc"),
            ("PGCONNECT_TIMEOUT", "3"),
            ("PGSSLROOTCERT", "/ca"),
            ("PGSSLCERT", "/cert"),
            ("PGSSLKEY", "/key"),
            ("PGOPTIONS", "-c work_mem=64MB"),
            ("PGHOSTADDR", "10.0.0.1,10.0.0.2"),
            ("PGTARGETSESSIONATTRS", "read-only"),
            ("PGLOADBALANCEHOSTS", "random"),
        ]))
        .unwrap();
        assert_eq!(c.hostaddr.len(), 2);
        assert_eq!(
            c.target_session_attrs,
            crate::config::TargetSessionAttrs::ReadOnly
        );
        assert_eq!(
            c.load_balance_hosts,
            crate::config::LoadBalanceHosts::Random
        );
        assert_eq!(c.hosts(), vec![("pg1".into(), 6000), ("pg2".into(), 6000)]);
        assert_eq!((c.database.as_str(), c.user.as_str()), ("app", "me"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.ssl_mode, SslMode::VerifyCa);
        assert_eq!(c.application_name.as_deref(), Some("svc"));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.ssl_root_cert, Some("/ca".into()));
        assert_eq!(c.ssl_cert, Some("/cert".into()));
        assert_eq!(c.ssl_key, Some("/key".into()));
        assert_eq!(c.server_settings["work_mem"], "64MB");

        let c = Config::from_env_with(vars(&[("DB_PASSWORD", "fallback")])).unwrap();
        assert_eq!(c.password.as_deref(), Some("fallback"));
        assert_eq!(c.host, "localhost");

        let c = Config::from_env_with(vars(&[
            ("DATABASE_URL", "postgres://u:x@h:1/d"),
            ("PGHOST", "ignored"),
        ]))
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.password.as_deref()),
            ("h", 1, Some("x"))
        );

        let c = Config::from_env_with(|_| None).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn statement_mode_parameter() {
        let c = Config::from_url("postgresql://u:pw@h:6432/db?statement_mode=unnamed").unwrap();
        assert_eq!(c.statement_mode, crate::StatementMode::Unnamed);
        assert!(!c.dsn().unwrap().contains("statement_mode"));
        let c = Config::from_url("host=h statement_mode=cached").unwrap();
        assert_eq!(c.statement_mode, crate::StatementMode::Cached);
        let e = Config::from_url("postgresql://h/db?statement_mode=named").unwrap_err();
        assert!(e.to_string().contains("statement_mode"), "{e}");
    }

    #[test]
    fn channel_binding_and_require_auth_parameters() {
        use crate::{AuthMethod, ChannelBinding};
        let c = Config::from_url(
            "postgresql://u@h/db?channel_binding=require&require_auth=%21password,%21md5",
        )
        .unwrap();
        assert_eq!(c.channel_binding, ChannelBinding::Require);
        let r = c.require_auth.unwrap();
        assert!(!r.allows(AuthMethod::Password) && r.allows(AuthMethod::ScramSha256));
        let c =
            Config::from_url("host=h channel_binding=disable require_auth=scram-sha-256").unwrap();
        assert_eq!(c.channel_binding, ChannelBinding::Disable);
        assert_eq!(c.require_auth.unwrap().to_string(), "scram-sha-256");
        for (url, field) in [
            ("postgres://h/db?channel_binding=maybe", "channel_binding"),
            ("postgres://h/db?require_auth=password,!md5", "require_auth"),
            ("host=h require_auth=secretpw", "require_auth"),
        ] {
            let (f, msg) = cfg_err(Config::from_url(url));
            assert_eq!(f, field, "{url}");
            assert!(!msg.contains("secretpw") && !msg.contains("maybe"), "{msg}");
        }
        let env = |k: &str| match k {
            "PGCHANNELBINDING" => Some("require".to_string()),
            "PGREQUIREAUTH" => Some("scram-sha-256,none".to_string()),
            _ => None,
        };
        let c = Config::from_env_with(env).unwrap();
        assert_eq!(c.channel_binding, ChannelBinding::Require);
        assert!(c.require_auth.unwrap().allows(AuthMethod::None));
    }

    #[test]
    fn env_errors_name_field_and_variable() {
        let cases: [(&str, &str, &str); 7] = [
            ("PGPORT", "nope", "port"),
            ("PGSSLMODE", "bogus", "ssl_mode"),
            ("PGCONNECT_TIMEOUT", "-1", "connect_timeout"),
            ("PGTARGETSESSIONATTRS", "master", "target_session_attrs"),
            ("PGLOADBALANCEHOSTS", "yes", "load_balance_hosts"),
            ("PGHOSTADDR", "db", "hostaddr"),
            (
                "DATABASE_URL",
                "postgres://h/db?xyzzy=1",
                "connection_string",
            ),
        ];
        for (var, val, want) in cases {
            let (field, msg) = cfg_err(Config::from_env_with(|k| (k == var).then(|| val.into())));
            assert_eq!(field, want, "{var}={val}: {msg}");
            if var != "DATABASE_URL" {
                assert!(msg.contains(var), "{msg}");
            }
        }
    }

    #[test]
    fn mask_url_forms() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("postgresql://u:p%40w@h:1/db", "postgresql://u:***@h:1/db"),
            ("postgres://u:p@s:s/w@h/db", "postgres://u:***@h/db"),
            ("postgres://u:ab?cd@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=x&sslmode=disable",
                "postgres://h/db?password=***&sslmode=disable",
            ),
            (
                "postgres://u:a@h/db?sslmode=disable&PASSWORD=x",
                "postgres://u:***@h/db?sslmode=disable&PASSWORD=***",
            ),
            (
                "postgres://h/db?pass%77ord=x",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "postgres://h:5433?application_name=a@b",
                "postgres://h:5433?application_name=a@b",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(mask_dsn(input), want, "{input}");
        }
    }

    #[test]
    fn mask_keyword_value_forms() {
        let cases = [
            (
                "host=h password=secret user=u",
                "host=h password=*** user=u",
            ),
            (
                r"host=h password='se cr\'et' user=u",
                "host=h password=*** user=u",
            ),
            ("password = 'x y'", "password = ***"),
            (r"password=a\ b c=d", "password=***"),
            (r"password=a\ b dbname=d", "password=*** dbname=d"),
            // Malformed: an unquoted password with spaces is masked to the next parameter.
            (
                "host=h password=correct horse battery staple",
                "host=h password=***",
            ),
            (
                "password=correct horse battery staple user=u",
                "password=*** user=u",
            ),
            ("password='unterminated and more", "password=***"),
            ("user=password host=h", "user=password host=h"),
            ("PASSWORD=x", "PASSWORD=***"),
            ("no secrets here", "no secrets here"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(mask_dsn(input), want, "{input}");
        }
    }

    #[test]
    fn percent_encode_roundtrip_examples() {
        for s in ["", "abc", "a b@c:d/e?f#g%h&i", "日本", "~-._"] {
            assert_eq!(percent_decode("x", &percent_encode(s)).unwrap(), s);
        }
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("/tmp/s"), "%2Ftmp%2Fs");
    }

    fn text() -> impl Strategy<Value = String> {
        // Arbitrary non-empty text, biased towards URL/keyword delimiters and unicode.
        proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(vec![
                    '@', ':', '/', '?', '#', '%', '&', '=', '\'', '\\', ' ', ',', '[', ']', '+'
                ]),
                3 => proptest::char::range('a', 'z'),
                1 => proptest::char::range('0', '9'),
                1 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            ],
            1..16,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            any::<[u16; 8]>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
            Just("::1".to_string()),
            "/[a-z ]{1,8}(/[a-z:]{1,8}){0,2}",
        ]
    }

    fn password() -> impl Strategy<Value = String> {
        text().prop_filter("at least 4 chars", |p| p.chars().count() >= 4)
    }

    /// Passwords for the fragment test: characters that error texts and masks do not use
    /// themselves (upper case, non-ASCII, some punctuation, spaces; no `*`, the mask), so that any 4-byte window
    /// found in an output really came from the input. No `=`, `'`, `\`, `@`, `/`, `?`, `&`, `#`, `,`:
    /// with those a malformed string is a different well-formed one (`password=a host=b`).
    fn fragment_password() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                6 => proptest::char::range('A', 'Z'),
                2 => Just(' '),
                1 => proptest::sample::select(vec!['!', '$', '(', ')', '~', '%', ':', '+']),
                1 => proptest::sample::select(vec!['é', 'ü', 'ß', '🔑', 'Ж', '中']),
            ],
            4..24,
        )
        .prop_map(|v| v.into_iter().collect::<String>())
        .prop_filter("a non-blank window", |p| p.trim().len() >= 4)
    }

    /// Every substring of `pw` of at least 4 bytes that starts and ends on a character boundary
    /// and is as short as possible (4 bytes, or one longer character), skipping windows that are
    /// only blanks.
    fn fragments(pw: &str) -> Vec<&str> {
        let bounds: Vec<usize> = pw
            .char_indices()
            .map(|(i, _)| i)
            .chain([pw.len()])
            .collect();
        let mut out = Vec::new();
        for (n, &a) in bounds.iter().enumerate() {
            if let Some(&b) = bounds[n..].iter().find(|&&b| b >= a + 4) {
                let w = &pw[a..b];
                if !w.trim().is_empty() {
                    out.push(w);
                }
            }
        }
        out
    }

    #[test]
    fn issue_10_leaking_inputs() {
        let pw = "correct horse battery staple";
        let input = format!("host=h password={pw}");
        let (_, msg) = cfg_err(Config::from_url(&input));
        assert!(msg.contains("character 25"), "{msg}");
        for out in [msg, mask_dsn(&input)] {
            for word in ["correct", "horse", "battery", "staple"] {
                assert!(!out.contains(word), "{word} in {out}");
            }
        }
        assert_eq!(mask_dsn(&input), "host=h password=***");
        // `@host` missing: the port parser would have seen the password.
        let (_, msg) = cfg_err(Config::from_url("postgresql://u:hunter2/db"));
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(mask_dsn("postgresql://u:hunter2/db"), "postgresql://***");
        // A raw `&` in a query password.
        assert_eq!(
            mask_dsn("postgresql://h/db?password=ab&cd&sslmode=require"),
            "postgresql://h/db?password=***&sslmode=require"
        );
    }

    /// Every way the password could show up in text.
    fn forms(pw: &str) -> Vec<String> {
        let mut v = vec![pw.to_string(), percent_encode(pw)];
        // libpq-escaped form as written inside quotes
        v.push(pw.replace('\\', "\\\\").replace('\'', "\\'"));
        v
    }

    /// Every text `Config`, its DSNs and `mask_dsn` produce for a config with password `pw`
    /// (each form also parsed back, checking the password survives parsing).
    fn masked_outputs(pw: &str, user: &str, host: &str) -> Vec<String> {
        let pw = pw.to_string();
        let user = user.to_string();
        let host = host.to_string();
        let c = Config {
            user: user.clone(),
            password: Some(pw.clone()),
            host: host.clone(),
            ..Config::default()
        };
        let url = c.dsn_with(|_| None).unwrap();
        let quoted = format!(
            "host=h user={user} password='{}' dbname=d",
            pw.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let query = format!(
            "postgresql://{user}@h/db?sslmode=prefer&password={}&application_name=x",
            percent_encode(&pw)
        );
        let query_first = format!("postgresql://h/db?password={}", percent_encode(&pw));
        let mut outputs = vec![
            c.dsn_masked_with(|_| None),
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{c}"),
            mask_dsn(&url),
            mask_dsn(&quoted),
            mask_dsn(&query),
            mask_dsn(&query_first),
        ];
        // Raw (unencoded) URL userinfo, as people write by hand.
        outputs.push(mask_dsn(&format!("postgres://{user}:{pw}@h:5432/db")));
        // Configs parsed from each form keep masking in Debug/Display too.
        for s in [&url, &quoted, &query] {
            let parsed = Config::from_url(s).unwrap();
            assert_eq!(parsed.password.as_deref(), Some(pw.as_str()));
            outputs.push(format!("{parsed:?}"));
            outputs.push(format!("{parsed}"));
            outputs.push(parsed.dsn_masked_with(|_| None));
        }
        outputs
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn dsn_round_trip(user in text(), pw in text(), db in text(), host in host(),
                          port in 1u16..) {
            let c = Config {
                user: user.clone(),
                password: Some(pw.clone()),
                database: db.clone(),
                host: host.clone(),
                port,
                ..Config::default()
            };
            let dsn = c.dsn_with(|_| None).unwrap();
            let back = Config::from_url(&dsn).unwrap();
            prop_assert_eq!(back.user, user);
            prop_assert_eq!(back.password, Some(pw));
            prop_assert_eq!(back.database, db);
            prop_assert_eq!(back.host, host);
            prop_assert_eq!(back.port, port);
            prop_assert!(back.fallback_hosts.is_empty());
        }

        #[test]
        fn dsn_round_trip_with_fallback_hosts(hosts in proptest::collection::vec((host(), 1u16..), 1..4)) {
            let c = Config {
                password: Some("x".into()),
                host: hosts[0].0.clone(),
                port: hosts[0].1,
                fallback_hosts: hosts[1..].to_vec(),
                ..Config::default()
            };
            let back = Config::from_url(&c.dsn_with(|_| None).unwrap()).unwrap();
            prop_assert_eq!(back.hosts(), hosts);
        }

        #[test]
        fn masking_never_leaks(pw in password(), user in "[a-z]{1,8}", host in host()) {
            let outputs = masked_outputs(&pw, &user, &host);
            // What the same texts contain with another password (`min_connections: 10`
            // contains "s: 1"): not a leak, so such passwords are not judged.
            let baseline = masked_outputs("Qz7-baseline-Qz7", &user, &host);
            for form in forms(&pw) {
                prop_assume!(!baseline.iter().any(|b| b.contains(&form)));
            }
            let c = Config {
                user: user.clone(),
                password: Some(pw.clone()),
                host: host.clone(),
                ..Config::default()
            };
            let url = c.dsn_with(|_| None).unwrap();
            for out in &outputs {
                for form in forms(&pw) {
                    prop_assert!(!out.contains(&form), "{:?} leaked in {:?}", form, out);
                }
            }
            // The masked URL still parses and keeps the non-secret parts.
            let masked = Config::from_url(&mask_dsn(&url)).unwrap();
            prop_assert_eq!(masked.host, host);
            prop_assert_eq!(masked.user, user);
        }

        /// Issue 10: no error and no masked string ever contains a 4-byte substring of the
        /// password, for URL and key=value forms, well-formed and malformed.
        #[test]
        fn no_password_fragment_in_errors_or_masks(pw in fragment_password()) {
            let enc = percent_encode(&pw);
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            let inputs = [
                // Well-formed.
                format!("postgresql://u:{enc}@h:5432/db"),
                format!("postgresql://h/db?sslmode=prefer&password={enc}&application_name=x"),
                format!("host=h password='{quoted}' dbname=d"),
                // Malformed: raw text in the URL user info and query, the `@host` missing, an
                // unquoted value with spaces, an unterminated quote, a bad port.
                format!("postgresql://u:{pw}@h:5432/db"),
                format!("postgresql://u:{pw}/db"),
                format!("postgresql://u:{pw}"),
                format!("postgresql://h/db?password={pw}&sslmode=prefer"),
                format!("postgresql://h/db?password={pw}"),
                format!("host=h password={pw} dbname=d"),
                format!("host=h password={pw}"),
                format!("password={pw} user=u"),
                format!("host=h password='{pw}"),
                format!("host=h password = '{quoted}"),
            ];
            for input in &inputs {
                let mut outputs = vec![mask_dsn(input)];
                match Config::from_url(input) {
                    Ok(c) => {
                        outputs.push(format!("{c:?}"));
                        outputs.push(c.to_string());
                        outputs.push(c.dsn_masked_with(|_| None));
                    }
                    Err(e) => {
                        outputs.push(e.to_string());
                        outputs.push(format!("{e:?}"));
                    }
                }
                let env = |k: &str| (k == "DATABASE_URL").then(|| input.clone());
                if let Err(e) = Config::from_env_with(env) {
                    outputs.push(e.to_string());
                }
                for out in &outputs {
                    // Upper-case words of pgdbm's own messages are not from the input.
                    let out = ["DATABASE_URL", "URL", "UTF-8", "NUL"]
                        .iter()
                        .fold(out.clone(), |o, w| o.replace(w, "§"));
                    for frag in fragments(&pw) {
                        prop_assert!(!out.contains(frag), "{:?} of {:?} leaked in {:?} (input {:?})", frag, pw, out, input);
                    }
                }
            }
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,60}") {
            let _ = Config::from_url(&s);
            let _ = mask_dsn(&s);
        }
    }
}
