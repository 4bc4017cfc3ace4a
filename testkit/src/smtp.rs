//! [`SmtpSink`]: a real SMTP server on loopback that keeps every message it accepts, for tests
//! of code that sends e-mail.
//!
//! It speaks enough plain ESMTP (no TLS, no AUTH) for lettre's client: greeting `220`,
//! `EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA` (dot-unstuffed, ending at `CRLF.CRLF`), `RSET`,
//! `NOOP`, `VRFY` and `QUIT`. `EHLO` advertises `8BITMIME` and `SMTPUTF8`.
//!
//! Fault modes:
//! - [`SmtpSink::set_down`]: every open connection is dropped and new ones are answered
//!   `421` and closed, as a server that is shutting down or overloaded does. Each refusal is
//!   counted ([`SmtpSink::refused`]), so a test can wait until the client has tried again.
//! - [`SmtpSink::reject_recipient`]: `RCPT TO` of that address is answered `550` (a permanent
//!   rejection).
//!
//! [`ReceivedMail`] decodes what arrived: headers unfolded with RFC 2047 encoded words
//! decoded ([`ReceivedMail::header`]), and the plain-text body with its transfer encoding
//! (quoted-printable or base64) undone ([`ReceivedMail::text_body`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest command or data line accepted (RFC 5321 asks for 1000; be generous).
const MAX_LINE: usize = 64 * 1024;
/// Largest message accepted.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The `MAIL FROM` address (without the angle brackets).
    pub from: String,
    /// The `RCPT TO` addresses, in order.
    pub recipients: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

/// A running SMTP sink; stops when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    messages: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    down: AtomicBool,
    refused: AtomicU64,
    /// How long the answer to a message's final `.` is held back, in milliseconds.
    reply_delay_ms: AtomicU64,
    rejected: Mutex<HashSet<String>>,
    /// Cancelled by `set_down(true)` to drop every live connection; replaced by a fresh token.
    connections: Mutex<CancellationToken>,
    stop: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide what was collected.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SmtpSink {
    /// Starts a sink on a free loopback port (`127.0.0.1:0`).
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the SMTP sink")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            down: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            reply_delay_ms: AtomicU64::new(0),
            rejected: Mutex::new(HashSet::new()),
            connections: Mutex::new(CancellationToken::new()),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port, as a string for config overrides (`("SMTP__PORT", &sink.port())`).
    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Every message accepted so far, in order of arrival.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.messages).clone()
    }

    /// Waits until at least `count` messages have arrived and returns them all; fails after
    /// `timeout`, saying how many did arrive.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so an arrival in between is not missed.
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let messages = lock(&self.shared.messages);
                if messages.len() >= count {
                    return Ok(messages.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = lock(&self.shared.messages).len();
                anyhow::bail!(
                    "SMTP sink: expected {count} message(s) within {timeout:?}, got {got}"
                );
            }
        }
    }

    /// `true`: drop every open connection and answer new ones `421` then close them.
    /// `false`: serve normally again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            let mut token = lock(&self.shared.connections);
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// Holds back the answer to each message's final `.` (the server "thinking") for `delay`
    /// from now on; the message counts as received when the answer goes out.
    pub fn set_reply_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.reply_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many connections were refused with `421` while down.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Answers `RCPT TO:<address>` with a permanent `550` from now on (case-insensitive).
    pub fn reject_recipient(&self, address: &str) {
        lock(&self.shared.rejected).insert(address.to_ascii_lowercase());
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if shared.down.load(Ordering::SeqCst) {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream
                    .write_all(b"421 4.3.2 dropline-sink is down, try again later\r\n")
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            let cut = lock(&shared.connections).child_token();
            let stop = shared.stop.clone();
            tokio::select! {
                () = cut.cancelled() => {}
                () = stop.cancelled() => {}
                _ = session(stream, &shared) => {}
            }
        });
    }
}

/// Reads one line (up to and including `\n`); `None` at end of stream.
async fn read_line(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    anyhow::ensure!(line.ends_with(b"\n"), "line too long or truncated");
    Ok(Some(line))
}

/// The address inside `<...>` after `FROM:` / `TO:`, parameters ignored.
fn path_argument(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_owned())
    } else {
        rest.split_whitespace().next().map(str::to_owned)
    }
}

/// One SMTP session; returns when the client quits or the connection breaks.
async fn session(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 dropline-sink ESMTP ready\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    while let Some(line) = read_line(&mut reader).await? {
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                from = None;
                recipients.clear();
                format!("250-dropline-sink greets {rest}\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            }
            "HELO" => {
                from = None;
                recipients.clear();
                format!("250 dropline-sink greets {rest}\r\n")
            }
            "MAIL" => match rest
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("FROM:"))
                .and_then(|_| path_argument(&rest[5..]))
            {
                Some(address) => {
                    from = Some(address);
                    recipients.clear();
                    "250 2.1.0 sender ok\r\n".into()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => {
                let address = rest
                    .get(..3)
                    .filter(|p| p.eq_ignore_ascii_case("TO:"))
                    .and_then(|_| path_argument(&rest[3..]));
                match address {
                    _ if from.is_none() => "503 5.5.1 need MAIL first\r\n".into(),
                    None => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
                    Some(a) if lock(&shared.rejected).contains(&a.to_ascii_lowercase()) => {
                        "550 5.1.1 mailbox unavailable\r\n".into()
                    }
                    Some(a) => {
                        recipients.push(a);
                        "250 2.1.5 recipient ok\r\n".into()
                    }
                }
            }
            "DATA" => {
                if from.is_none() || recipients.is_empty() {
                    "503 5.5.1 need MAIL and RCPT first\r\n".into()
                } else {
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut reader).await?;
                    let delay = shared.reply_delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let mail = ReceivedMail {
                        from: from.take().unwrap_or_default(),
                        recipients: std::mem::take(&mut recipients),
                        data,
                    };
                    let number = {
                        let mut messages = lock(&shared.messages);
                        messages.push(mail);
                        messages.len()
                    };
                    shared.arrived.notify_waiters();
                    format!("250 2.0.0 queued as {number}\r\n")
                }
            }
            "RSET" => {
                from = None;
                recipients.clear();
                "250 2.0.0 reset\r\n".into()
            }
            "NOOP" => "250 2.0.0 ok\r\n".into(),
            "VRFY" => "252 2.1.5 cannot verify\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                let _ = write.shutdown().await;
                return Ok(());
            }
            _ => "500 5.5.2 command not recognised\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// Reads the message after `354` up to the `.` line, undoing dot-stuffing.
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line = read_line(reader)
            .await?
            .context("connection closed inside DATA")?;
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
        anyhow::ensure!(data.len() <= MAX_MESSAGE, "message too large");
    }
}

impl ReceivedMail {
    /// The header block and the body, split at the first empty line.
    fn split(&self) -> (&[u8], &[u8]) {
        let data = self.data.as_slice();
        if let Some(at) = find(data, b"\r\n\r\n") {
            (&data[..at + 2], &data[at + 4..])
        } else if let Some(at) = find(data, b"\n\n") {
            (&data[..at + 1], &data[at + 2..])
        } else {
            (data, &[])
        }
    }

    /// Every header as `(name, unfolded raw value)`, in order.
    pub fn raw_headers(&self) -> Vec<(String, String)> {
        let (head, _) = self.split();
        let head = String::from_utf8_lossy(head);
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split('\n') {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Folded continuation: unfolding removes only the line break.
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
            }
        }
        headers
    }

    /// The first header called `name` (case-insensitive), unfolded, with RFC 2047 encoded
    /// words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_encoded_words(v.trim()))
    }

    /// The plain-text body, its `Content-Transfer-Encoding` (7bit, 8bit, quoted-printable,
    /// base64) undone, read as UTF-8, with line ends turned into `\n`. Fails on a multipart
    /// or non-text message, an unknown encoding, or a body that is not UTF-8.
    pub fn text_body(&self) -> anyhow::Result<String> {
        if let Some(content_type) = self.header("Content-Type") {
            let lower = content_type.to_ascii_lowercase();
            anyhow::ensure!(
                lower.starts_with("text/plain"),
                "not a single text/plain part: Content-Type {content_type}"
            );
            if let Some(charset) = lower
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("charset="))
                .next()
            {
                let charset = charset.trim_matches('"');
                anyhow::ensure!(
                    matches!(charset, "utf-8" | "utf8" | "us-ascii"),
                    "charset {charset} is not UTF-8"
                );
            }
        }
        let (_, body) = self.split();
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_else(|| "7bit".into())
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "7bit" | "8bit" | "binary" => body.to_vec(),
            "quoted-printable" => decode_quoted_printable(body),
            "base64" => decode_base64(body).context("body is not valid base64")?,
            other => anyhow::bail!("unknown Content-Transfer-Encoding {other}"),
        };
        let text = String::from_utf8(bytes).context("body is not UTF-8")?;
        Ok(text.replace("\r\n", "\n"))
    }

    /// The first run of exactly `digits` ASCII digits in the text body (a verification code
    /// such as `123456`), if any.
    pub fn digit_code(&self, digits: usize) -> Option<String> {
        digit_run(&self.text_body().ok()?, digits)
    }
}

/// The first run of exactly `digits` ASCII digits in `text` (a verification code in a mail).
pub fn digit_run(text: &str, digits: usize) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == digits {
                return Some(chars[start..i].iter().collect());
            }
        } else {
            i += 1;
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes base64 (standard alphabet), ignoring whitespace and line breaks.
pub fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let symbols: Vec<u8> = input
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let unpadded = symbols
        .iter()
        .rposition(|&c| c != b'=')
        .map_or(0, |p| p + 1);
    if symbols.len() - unpadded > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &c in &symbols[..unpadded] {
        buffer = (buffer << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes quoted-printable (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
/// A malformed escape is kept as it is.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'=' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if let [h, l, ..] = rest
            && let (Some(h), Some(l)) = (hex_value(*h), hex_value(*l))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// Decodes one RFC 2047 encoded word's text, or `None` when it is not one.
fn decode_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let charset = parts.next()?.to_ascii_lowercase();
    let encoding = parts.next()?.to_ascii_lowercase();
    let text = parts.next()?;
    let bytes = match encoding.as_str() {
        "b" => decode_base64(text.as_bytes())?,
        "q" => decode_quoted_printable(text.replace('_', " ").as_bytes()),
        _ => return None,
    };
    // Charsets other than UTF-8 / ASCII are not expected from Dropline; decode lossily.
    let _ = charset;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Decodes every RFC 2047 encoded word in a header value; whitespace between two adjacent
/// encoded words is dropped, as the RFC says.
pub fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut pending_space = String::new();
    let mut previous_was_word = false;
    let mut rest = value;
    while !rest.is_empty() {
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if token_end == 0 {
            let space_end = rest
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(rest.len());
            pending_space.push_str(&rest[..space_end]);
            rest = &rest[space_end..];
            continue;
        }
        let token = &rest[..token_end];
        rest = &rest[token_end..];
        match decode_word(token) {
            Some(decoded) => {
                if !previous_was_word {
                    out.push_str(&pending_space);
                }
                out.push_str(&decoded);
                previous_was_word = true;
            }
            None => {
                out.push_str(&pending_space);
                out.push_str(token);
                previous_was_word = false;
            }
        }
        pending_space.clear();
    }
    out.push_str(&pending_space);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_quoted_printable_decode() {
        assert_eq!(
            decode_base64(b"7JWI64WV\r\n7ZWY7IS47JqU").as_deref(),
            Some("안녕하세요".as_bytes())
        );
        assert_eq!(decode_base64(b"YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64(b"!!").as_deref(), None);
        assert_eq!(
            decode_quoted_printable(b"caf=C3=A9 =\r\nna=3Dve"),
            "café na=ve".as_bytes()
        );
    }

    #[test]
    fn encoded_words_decode_and_join() {
        assert_eq!(
            decode_encoded_words("=?utf-8?b?7JWI64WV?=\r\n =?utf-8?b?7ZWY7IS47JqU?= world"),
            "안녕하세요 world"
        );
        assert_eq!(
            decode_encoded_words("=?UTF-8?Q?caf=C3=A9_au_lait?="),
            "café au lait"
        );
        assert_eq!(decode_encoded_words("plain  text"), "plain  text");
    }

    #[test]
    fn headers_unfold_and_body_decodes() -> anyhow::Result<()> {
        let mail = ReceivedMail {
            from: "a@b.c".into(),
            recipients: vec!["d@e.f".into()],
            data: b"Subject: =?utf-8?b?7JWI64WV?=\r\n =?utf-8?b?7ZWY7IS47JqU?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n7L2U65OcIDEyMzQ1Ng==\r\n".to_vec(),
        };
        assert_eq!(mail.header("subject").as_deref(), Some("안녕하세요"));
        assert_eq!(mail.text_body()?, "코드 123456");
        assert_eq!(mail.digit_code(6).as_deref(), Some("123456"));
        Ok(())
    }
}
