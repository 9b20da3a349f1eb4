//! apt's acquire-method protocol: RFC 822-like messages on stdin/stdout.
//!
//! A message is a status line `CODE Info`, then `Name: value` lines, then a
//! blank line. apt sends 6xx codes to the method; the method answers with
//! 1xx (informational), 2xx (progress/success) and 4xx (failure) codes. See
//! `testdata/apt/recorded/` for real exchanges with apt 2.6.
//!
//! Reading follows apt's own parser where it matters: field names are matched
//! case-insensitively, values have leading and trailing ASCII whitespace
//! stripped (so ` a ` arrives as `a`), `\r\n` line ends are accepted, and
//! blank lines between messages are skipped. It is stricter than apt about
//! everything else (no control characters, a size cap, a field cap), since the
//! method's input is apt but a buggy or hostile peer must not make us panic
//! or allocate without bound.
//!
//! Writing never breaks framing: CR, LF and NUL in the info, a field name or
//! a value are written as the two characters `\r`, `\n` and `\0`, as
//! apt-transport-in-toto did for its messages, and a `:` in a field name as
//! `-`. This escaping is one-way (apt shows the text to the user and never
//! unescapes it); callers should not put such characters into URIs or file
//! names, which apt would need verbatim.

use std::io::{BufRead, Read};

/// Method → apt: the method's capabilities (first message a method sends).
pub const CAPABILITIES: u16 = 100;
/// Method → apt: a log line (shown with `Debug::Acquire::<method>`).
pub const LOG: u16 = 101;
/// Method → apt: progress text for a URI.
pub const STATUS: u16 = 102;
/// Method → apt: the URI moved (apt re-queues it, possibly to another method).
pub const REDIRECT: u16 = 103;
/// Method → apt: a warning shown to the user.
pub const WARNING: u16 = 104;
/// Method → apt: the transfer of a URI started (Size, Last-Modified).
pub const URI_START: u16 = 200;
/// Method → apt: a URI was fetched to `Filename`, with its hashes.
pub const URI_DONE: u16 = 201;
/// Method → apt: ask apt to fetch an auxiliary file (apt ≥ 1.5).
pub const AUX_REQUEST: u16 = 351;
/// Method → apt: a URI could not be fetched (or was refused).
pub const URI_FAILURE: u16 = 400;
/// Method → apt: the method failed as a whole; apt gives up on it.
pub const GENERAL_FAILURE: u16 = 401;
/// Method → apt: credentials needed (answered by 602).
pub const AUTHORIZATION_REQUIRED: u16 = 402;
/// Method → apt: a media change is needed (answered by 603).
pub const MEDIA_FAILURE: u16 = 403;
/// apt → method: fetch `URI` into `Filename`.
pub const URI_ACQUIRE: u16 = 600;
/// apt → method: the whole configuration tree as `Config-Item` fields.
pub const CONFIGURATION: u16 = 601;
/// apt → method: answer to 402.
pub const AUTHORIZATION_CREDENTIALS: u16 = 602;
/// apt → method: answer to 403.
pub const MEDIA_CHANGED: u16 = 603;

/// Largest message `read_message` accepts, status line and fields included.
/// A 601 Configuration from a stock apt 2.6 is about 8 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most fields `read_message` accepts in one message (the 601 of a stock apt
/// 2.6 has about 90).
pub const MAX_FIELDS: usize = 4096;

/// The protocol version our capabilities announce (apt 2.6's http sends 1.2).
pub const METHOD_VERSION: &str = "1.2";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("reading a method message: {0}")]
    Io(String),
    #[error("bad status line {line:?}: {reason}")]
    BadStatusLine { line: String, reason: &'static str },
    #[error("bad field line {line:?} in a {code} message: {reason}")]
    BadField {
        code: u16,
        line: String,
        reason: &'static str,
    },
    #[error("method message is not UTF-8")]
    NotUtf8,
    #[error("method message has a control character (byte {byte:#04x})")]
    ControlCharacter { byte: u8 },
    #[error("method message exceeds {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("method message has more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("input ended in the middle of a method message")]
    Truncated,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub code: u16,
    pub info: String,
    pub fields: Vec<(String, String)>,
}

impl Message {
    pub fn new(code: u16, info: impl Into<String>) -> Message {
        Message {
            code,
            info: info.into(),
            fields: Vec::new(),
        }
    }

    /// Appends a field (kept in order; names may repeat, as `Config-Item` does).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the fields called `name` (ASCII case-insensitive), in order.
    pub fn fields_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The wire form: `CODE Info\nName: value\n...\n\n` (see the module docs
    /// for how CR, LF and NUL are escaped).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.fields.len() * 32);
        out.push_str(&format!("{:03} ", self.code));
        escape_into(&mut out, &self.info, false);
        out.push('\n');
        for (name, value) in &self.fields {
            escape_into(&mut out, name, true);
            out.push_str(": ");
            escape_into(&mut out, value, false);
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }
}

fn escape_into(out: &mut String, s: &str, is_name: bool) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            ':' if is_name => out.push('-'),
            _ => out.push(c),
        }
    }
}

/// Reads the next message. `Ok(None)` at end of input between messages
/// (blank lines before the end are fine); an end of input inside a message is
/// [`ProtocolError::Truncated`].
pub fn read_message(r: &mut impl BufRead) -> Result<Option<Message>, ProtocolError> {
    let mut message: Option<Message> = None;
    let mut used = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let budget = MAX_MESSAGE_BYTES.saturating_sub(used);
        let mut limited = Read::take(&mut *r, budget as u64 + 1);
        let n = limited
            .read_until(b'\n', &mut line)
            .map_err(|e| ProtocolError::Io(e.to_string()))?;
        if n == 0 {
            return match message {
                None => Ok(None),
                Some(_) => Err(ProtocolError::Truncated),
            };
        }
        if n > budget {
            return Err(ProtocolError::TooLarge);
        }
        if line.last() != Some(&b'\n') {
            // End of input without a line end: an unfinished message, or
            // trailing junk after the last one.
            return Err(ProtocolError::Truncated);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            match message {
                None => continue, // blank lines between messages
                Some(m) => return Ok(Some(m)),
            }
        }
        used += n;
        if let Some(&byte) = line
            .iter()
            .find(|&&b| b != b'\t' && (b < 0x20 || b == 0x7f))
        {
            return Err(ProtocolError::ControlCharacter { byte });
        }
        let text = std::str::from_utf8(&line).map_err(|_| ProtocolError::NotUtf8)?;
        match message.as_mut() {
            None => message = Some(parse_status_line(text)?),
            Some(m) => {
                if m.fields.len() >= MAX_FIELDS {
                    return Err(ProtocolError::TooManyFields);
                }
                m.fields.push(parse_field_line(m.code, text)?);
            }
        }
    }
}

fn parse_status_line(text: &str) -> Result<Message, ProtocolError> {
    let bad = |reason| ProtocolError::BadStatusLine {
        line: text.to_string(),
        reason,
    };
    let digits = text.get(..3).ok_or_else(|| bad("no three-digit code"))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("no three-digit code"));
    }
    let code: u16 = digits.parse().map_err(|_| bad("no three-digit code"))?;
    let rest = &text[3..];
    if !rest.starts_with([' ', '\t']) {
        return Err(bad("code not followed by a space and an info text"));
    }
    let info = rest.trim_matches([' ', '\t']);
    if info.is_empty() {
        return Err(bad("no info text after the code"));
    }
    Ok(Message::new(code, info))
}

fn parse_field_line(code: u16, text: &str) -> Result<(String, String), ProtocolError> {
    let bad = |reason| ProtocolError::BadField {
        code,
        line: text.to_string(),
        reason,
    };
    let (name, value) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
    if name.is_empty() {
        return Err(bad("empty field name"));
    }
    if name.bytes().any(|b| b == b' ' || b == b'\t') {
        return Err(bad(
            "whitespace in the field name (folded lines are not supported)",
        ));
    }
    Ok((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// Our `100 Capabilities`, the same set apt 2.6's http method announces
/// (`Send-URI-Encoded: true` makes apt send percent-encoded URIs, e.g.
/// `toto-b_2:1.5%7erc1-1_amd64.deb`; a method that relays to the http method
/// must announce it too, since that is what http expects).
pub fn capabilities() -> Message {
    Message::new(CAPABILITIES, "Capabilities")
        .with("Version", METHOD_VERSION)
        .with("Pipeline", "true")
        .with("Send-Config", "true")
        .with("Send-URI-Encoded", "true")
}

/// `101 Log`.
pub fn log(message: &str) -> Message {
    Message::new(LOG, "Log").with("Message", message)
}

/// `102 Status` for a URI.
pub fn status(uri: &str, message: &str) -> Message {
    Message::new(STATUS, "Status")
        .with("URI", uri)
        .with("Message", message)
}

/// `200 URI Start`.
pub fn uri_start(uri: &str, size: Option<u64>, last_modified: Option<&str>) -> Message {
    let mut m = Message::new(URI_START, "URI Start").with("URI", uri);
    if let Some(size) = size {
        m = m.with("Size", size.to_string());
    }
    if let Some(lm) = last_modified {
        m = m.with("Last-Modified", lm);
    }
    m
}

/// What a `201 URI Done` reports about a fetched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriDone {
    pub uri: String,
    /// Where the file was written (apt's `Filename` from the 600).
    pub filename: String,
    pub size: u64,
    /// An RFC 1123 date, as http's `Last-Modified`.
    pub last_modified: Option<String>,
    /// Lowercase hex.
    pub sha256: String,
    /// Lowercase hex.
    pub sha512: Option<String>,
}

/// `201 URI Done`. apt compares the strongest hash type present both here and
/// in its expectations (`Expected-SHA256` from the Packages index), so SHA256
/// is required; `Checksum-FileSize-Hash` lets it compare the size too.
pub fn uri_done(done: &UriDone) -> Message {
    let mut m = Message::new(URI_DONE, "URI Done")
        .with("URI", &done.uri)
        .with("Filename", &done.filename)
        .with("Size", done.size.to_string());
    if let Some(lm) = &done.last_modified {
        m = m.with("Last-Modified", lm);
    }
    m = m
        .with("Checksum-FileSize-Hash", done.size.to_string())
        .with("SHA256-Hash", &done.sha256);
    if let Some(h) = &done.sha512 {
        m = m.with("SHA512-Hash", h);
    }
    m
}

/// `400 URI Failure`. `fail_reason` is apt's machine-readable reason (http
/// sends e.g. `HttpError404`, `Timeout`); `transient` sets
/// `Transient-Failure: true`, which lets apt retry (`Acquire::Retries`) —
/// never set it for a verification refusal.
pub fn uri_failure(
    uri: &str,
    message: &str,
    fail_reason: Option<&str>,
    transient: bool,
) -> Message {
    let mut m = Message::new(URI_FAILURE, "URI Failure")
        .with("URI", uri)
        .with("Message", message);
    if let Some(reason) = fail_reason {
        m = m.with("FailReason", reason);
    }
    if transient {
        m = m.with("Transient-Failure", "true");
    }
    m
}

/// `401 General Failure`: the method cannot go on at all.
pub fn general_failure(message: &str) -> Message {
    Message::new(GENERAL_FAILURE, "General Failure").with("Message", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;

    use crate::apt::recorded;

    fn read_all(bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut r = Cursor::new(bytes);
        let mut out = Vec::new();
        while let Some(m) = read_message(&mut r)? {
            out.push(m);
        }
        Ok(out)
    }

    fn one(bytes: &[u8]) -> Result<Option<Message>, ProtocolError> {
        read_message(&mut Cursor::new(bytes))
    }

    fn recorded_streams() -> Vec<String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/apt/recorded");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".in") || n.ends_with(".out"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_recorded_stream_parses_and_round_trips() {
        let names = recorded_streams();
        assert!(names.len() >= 20, "{names:?}");
        for name in names {
            let bytes = recorded(&name);
            let msgs = read_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Streams from apt start with 601; streams from the method with 100.
            if let Some(first) = msgs.first() {
                let want = if name.ends_with(".in") {
                    CONFIGURATION
                } else {
                    CAPABILITIES
                };
                assert_eq!(first.code, want, "{name}");
            }
            let mut again = Vec::new();
            for m in &msgs {
                again.extend(m.to_bytes());
            }
            assert_eq!(read_all(&again).unwrap(), msgs, "{name}");
            // The recordings are byte-for-byte what to_bytes writes.
            assert_eq!(again, bytes, "{name}");
        }
    }

    #[test]
    fn recorded_capabilities_of_apt_2_6_http() {
        let msgs = read_all(&recorded("update.1.intoto.out")).unwrap();
        let caps = &msgs[0];
        assert_eq!((caps.code, caps.info.as_str()), (100, "Capabilities"));
        assert_eq!(caps.field("version"), Some("1.2"));
        assert_eq!(caps.field("Pipeline"), Some("true"));
        assert_eq!(caps.field("Send-Config"), Some("true"));
        assert_eq!(caps.field("Send-URI-Encoded"), Some("true"));
        let ours = capabilities();
        for (name, value) in &caps.fields {
            assert_eq!(ours.field(name), Some(value.as_str()), "{name}");
        }
        // apt starts the method once only to read its capabilities.
        assert!(recorded("update.0.intoto.in").is_empty());
        let probe = read_all(&recorded("update.0.intoto.out")).unwrap();
        assert_eq!(probe, vec![caps.clone()]);
    }

    #[test]
    fn recorded_update_exchange() {
        let from_apt = read_all(&recorded("update.1.intoto.in")).unwrap();
        let config = &from_apt[0];
        assert_eq!(config.code, CONFIGURATION);
        assert_eq!(config.info, "Configuration");
        let items: Vec<&str> = config.fields_named("config-item").collect();
        assert!(items.len() > 50);
        assert_eq!(items.len(), config.fields.len());
        assert!(items.contains(&"APT::Intoto::Rebuilders::=http://127.0.0.1:1/rebuilder-a"));
        let acquires: Vec<&Message> = from_apt.iter().filter(|m| m.code == URI_ACQUIRE).collect();
        let uris: Vec<&str> = acquires.iter().filter_map(|m| m.field("URI")).collect();
        assert_eq!(uris.len(), 4);
        for (uri, tail) in uris
            .iter()
            .zip(["InRelease", "Release", "Release.gpg", "Packages.gz"])
        {
            assert!(uri.starts_with("intoto://127.0.0.1:"), "{uri}");
            assert!(uri.ends_with(&format!("/./{tail}")), "{uri}");
        }
        for m in &acquires {
            assert_eq!(m.info, "URI Acquire");
            assert!(m
                .field("Filename")
                .unwrap()
                .contains("/var/lib/apt/lists/partial/"));
            assert!(m.field("Target-Site").unwrap().starts_with("intoto://"));
        }
        assert_eq!(acquires[3].field("Index-File"), Some("true"));

        let from_method = read_all(&recorded("update.1.intoto.out")).unwrap();
        let failures: Vec<&Message> = from_method
            .iter()
            .filter(|m| m.code == URI_FAILURE)
            .collect();
        assert_eq!(failures.len(), 2); // InRelease and Release.gpg: 404
        assert_eq!(failures[0].field("FailReason"), Some("HttpError404"));
        let done: Vec<&Message> = from_method.iter().filter(|m| m.code == URI_DONE).collect();
        assert_eq!(done.len(), 2);
        for d in &done {
            for f in ["URI", "Filename", "Size", "Last-Modified", "SHA256-Hash"] {
                assert!(d.field(f).is_some(), "{f} in {d:?}");
            }
        }
        // http sends every hash type for a file apt has no expectations for
        // (Release), but only the expected types (Expected-SHA256 and
        // Expected-Checksum-FileSize, from Release) for Packages.gz.
        assert!(done[0].field("URI").unwrap().ends_with("/Release"));
        for f in ["SHA512-Hash", "SHA1-Hash", "MD5Sum-Hash", "MD5-Hash"] {
            assert!(done[0].field(f).is_some(), "{f}");
            assert!(done[1].field(f).is_none(), "{f}");
        }
        assert_eq!(
            done[1].field("SHA256-Hash"),
            acquires[3].field("Expected-SHA256")
        );
        assert_eq!(
            done[1].field("Checksum-FileSize-Hash"),
            acquires[3].field("Expected-Checksum-FileSize")
        );
    }

    #[test]
    fn recorded_install_uses_encoded_uris() {
        let from_apt = read_all(&recorded("install-v2.1.intoto.in")).unwrap();
        let debs: Vec<&Message> = from_apt.iter().filter(|m| m.code == URI_ACQUIRE).collect();
        assert_eq!(debs.len(), 2);
        let b = debs[1];
        // '~' percent-encoded in the URI (Send-URI-Encoded), ':' as %3a in
        // the local file name (apt's archive naming), ':' verbatim in the URI.
        assert!(b
            .field("URI")
            .unwrap()
            .ends_with("/./toto-b_2:1.5%7erc1-1_amd64.deb"));
        assert!(b
            .field("Filename")
            .unwrap()
            .ends_with("/var/cache/apt/archives/partial/toto-b_2%3a1.5~rc1-1_amd64.deb"));
        assert_eq!(b.field("Expected-SHA256").map(str::len), Some(64));
        assert!(b.field("Index-File").is_none());

        let from_method = read_all(&recorded("install-v2.1.intoto.out")).unwrap();
        let done: Vec<&Message> = from_method.iter().filter(|m| m.code == URI_DONE).collect();
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].field("URI"), b.field("URI"));
        assert_eq!(done[1].field("Filename"), b.field("Filename"));
        assert_eq!(done[1].field("SHA256-Hash"), b.field("Expected-SHA256"));
    }

    #[test]
    fn recorded_refusal() {
        let msgs = read_all(&recorded("install-fail.1.failintoto.out")).unwrap();
        let failures: Vec<&Message> = msgs.iter().filter(|m| m.code == URI_FAILURE).collect();
        assert_eq!(failures.len(), 2);
        assert!(failures[0].field("URI").unwrap().ends_with(".deb"));
        assert_eq!(
            failures[0].field("Message"),
            Some("in-toto verification failed (test)")
        );
        assert!(msgs.iter().all(|m| m.code != URI_DONE));
    }

    #[test]
    fn builders_and_wire_form() {
        let m = Message::new(URI_FAILURE, "URI Failure")
            .with("URI", "intoto://h/p.deb")
            .with("Message", "line one\nline two\r\0");
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            "400 URI Failure\nURI: intoto://h/p.deb\nMessage: line one\\nline two\\r\\0\n\n"
        );
        let back = one(&m.to_bytes()).unwrap().unwrap();
        assert_eq!(back.field("message"), Some("line one\\nline two\\r\\0"));
        assert_eq!(back.fields.len(), 2);

        let weird = Message::new(101, "L\nog").with("Na:me\n", "v");
        let back = one(&weird.to_bytes()).unwrap().unwrap();
        assert_eq!(back.info, "L\\nog");
        assert_eq!(back.fields, vec![("Na-me\\n".to_string(), "v".to_string())]);

        let done = uri_done(&UriDone {
            uri: "intoto://h/a.deb".into(),
            filename: "/var/cache/apt/archives/partial/a.deb".into(),
            size: 12,
            last_modified: Some("Wed, 25 Nov 2026 12:08:59 +0000".into()),
            sha256: "ab".repeat(32),
            sha512: Some("cd".repeat(64)),
        });
        assert_eq!(done.code, URI_DONE);
        assert_eq!(done.field("size"), Some("12"));
        assert_eq!(done.field("Checksum-FileSize-Hash"), Some("12"));
        assert_eq!(done.field("SHA512-Hash").map(str::len), Some(128));
        assert_eq!(one(&done.to_bytes()).unwrap().unwrap(), done);

        let f = uri_failure("u", "refused", Some("IntotoRefused"), false);
        assert_eq!(f.field("FailReason"), Some("IntotoRefused"));
        assert!(f.field("Transient-Failure").is_none());
        let f = uri_failure("u", "timeout", None, true);
        assert_eq!(f.field("transient-failure"), Some("true"));
        assert_eq!(uri_start("u", Some(3), None).field("Size"), Some("3"));
        assert_eq!(status("u", "hi").code, STATUS);
        assert_eq!(log("hi").field("Message"), Some("hi"));
        assert_eq!(general_failure("x").code, GENERAL_FAILURE);
    }

    #[test]
    fn fields_named_keeps_order_and_ignores_case() {
        let m = Message::new(601, "Configuration")
            .with("Config-Item", "a=1")
            .with("CONFIG-ITEM", "b=2")
            .with("Other", "x")
            .with("config-item", "c=3");
        assert_eq!(
            m.fields_named("Config-Item").collect::<Vec<_>>(),
            ["a=1", "b=2", "c=3"]
        );
        assert_eq!(m.field("other"), Some("x"));
        assert_eq!(m.field("missing"), None);
    }

    #[test]
    fn tolerates_blank_lines_crlf_and_whitespace() {
        let msgs =
            read_all(b"\n\r\n201 URI Done\r\nURI:  a b \r\nSize:1\n\r\n\n\n102  Status \nX:\n\n\n")
                .unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].fields[0], ("URI".into(), "a b".into()));
        assert_eq!(msgs[0].field("size"), Some("1"));
        assert_eq!(msgs[1].info, "Status");
        assert_eq!(msgs[1].field("X"), Some(""));
        assert_eq!(one(b"").unwrap(), None);
        assert_eq!(one(b"\n\n\r\n").unwrap(), None);
        // A value may contain ':' (URIs do).
        let m = one(b"600 URI Acquire\nURI: http://h:80/x\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(m.field("uri"), Some("http://h:80/x"));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let bad_status: &[&[u8]] = &[
            b"abc URI Done\n\n",
            b"20 URI Done\n\n",
            b"2010 URI Done\n\n",
            b"201\n\n",
            b"201 \n\n",
            b"201URI Done\n\n",
            b"-01 x\n\n",
            b"Capabilities\n\n",
            "\u{664}01 x\n\n".as_bytes(),
        ];
        for input in bad_status {
            assert!(
                matches!(one(input), Err(ProtocolError::BadStatusLine { .. })),
                "{:?}: {:?}",
                String::from_utf8_lossy(input),
                one(input)
            );
        }
        for input in [
            &b"201 URI Done\nno colon here\n\n"[..],
            b"201 URI Done\n: empty name\n\n",
            b"201 URI Done\n folded: line\n\n",
            b"201 URI Done\nURI: a\n continuation\n\n",
        ] {
            assert!(
                matches!(one(input), Err(ProtocolError::BadField { code: 201, .. })),
                "{:?}",
                one(input)
            );
        }
        for input in [
            &b"201 URI Done\nURI: a\n"[..],
            b"201 URI Done",
            b"201 URI Done\nURI: a",
            b"201 URI Done\n\n100 Cap",
        ] {
            let mut r = Cursor::new(input);
            let first = read_message(&mut r);
            let err = match first {
                Ok(Some(_)) => read_message(&mut r),
                other => other,
            };
            assert_eq!(err, Err(ProtocolError::Truncated), "{input:?}");
        }
        assert_eq!(
            one(b"201 URI Done\nURI: a\0b\n\n"),
            Err(ProtocolError::ControlCharacter { byte: 0 })
        );
        assert_eq!(
            one(b"201 URI\rDone\n\n"),
            Err(ProtocolError::ControlCharacter { byte: b'\r' })
        );
        assert_eq!(
            one(b"201 URI Done\nURI: \xff\xfe\n\n"),
            Err(ProtocolError::NotUtf8)
        );
        assert_eq!(one(b"\xc3\n\n"), Err(ProtocolError::NotUtf8));
    }

    #[test]
    fn size_and_field_caps() {
        let mut big = b"201 URI Done\nURI: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_BYTES));
        big.extend(b"\n\n");
        assert_eq!(one(&big), Err(ProtocolError::TooLarge));
        // A single endless line is cut off at the cap, not buffered whole.
        let endless = vec![b'1'; MAX_MESSAGE_BYTES * 2];
        assert_eq!(one(&endless), Err(ProtocolError::TooLarge));
        // Many small lines add up to the cap too.
        let mut many = b"601 Configuration\n".to_vec();
        for _ in 0..MAX_FIELDS {
            many.extend(b"Config-Item: ");
            many.extend(std::iter::repeat_n(b'x', 300));
            many.push(b'\n');
        }
        many.push(b'\n');
        assert_eq!(one(&many), Err(ProtocolError::TooLarge));

        let mut fields = b"601 Configuration\n".to_vec();
        for _ in 0..=MAX_FIELDS {
            fields.extend(b"C: x\n");
        }
        fields.push(b'\n');
        assert_eq!(one(&fields), Err(ProtocolError::TooManyFields));
        let mut ok = b"601 Configuration\n".to_vec();
        for _ in 0..MAX_FIELDS {
            ok.extend(b"C: x\n");
        }
        ok.push(b'\n');
        assert_eq!(one(&ok).unwrap().unwrap().fields.len(), MAX_FIELDS);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of a recording, and bytes
        // flipped through it, give messages or errors.
        let base = recorded("install-v2.1.intoto.out");
        for cut in (0..base.len()).step_by(7) {
            let _ = read_all(&base[..cut]);
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut v = base.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % v.len();
                v[i] = (x >> 3) as u8;
            }
            let _ = read_all(&v);
        }
    }
}
