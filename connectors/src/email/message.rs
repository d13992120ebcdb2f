//! Building one MIME message from rendered templates, with lettre's builder, so that headers
//! are encoded (RFC 2047) and folded by lettre and never by string concatenation: a value from a
//! process variable cannot start a header of its own.

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};

use super::templates::Rendered;

/// Who e-mails come from, from the configuration.
#[derive(Clone, Debug)]
pub struct Sender {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl Sender {
    /// Parses the configured addresses (`Ciclo <ciclo@example.com>` or a bare address).
    pub fn parse(from: &str, reply_to: Option<&str>) -> Result<Sender, String> {
        Ok(Sender {
            from: parse_mailbox(from).map_err(|e| format!("the From address: {e}"))?,
            reply_to: reply_to
                .map(parse_mailbox)
                .transpose()
                .map_err(|e| format!("the Reply-To address: {e}"))?,
        })
    }
}

/// Parses one mailbox: `Name <user@host>` or `user@host`.
///
/// The display name is taken whole, up to the last `<`, so `Müller, José <jose@example.com>`
/// is one mailbox (a general address-list parser would split it at the comma into two). Line
/// breaks are refused rather than cleaned: an address with one is not an address.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    if text.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{:?} contains a line break or control character",
            text
        ));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err("the address is empty".into());
    }
    let (name, address) = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(without_close)) => {
            let name = text[..open].trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or(name)
                .trim();
            (
                (!name.is_empty()).then(|| name.to_string()),
                without_close[open + 1..].trim(),
            )
        }
        _ => (None, text),
    };
    let address: Address = address
        .parse()
        .map_err(|e| format!("{address:?} is not an e-mail address ({e})"))?;
    Ok(Mailbox::new(name, address))
}

/// A subject on one line. lettre encodes header values, but a line break in a subject is never
/// what the template meant, so it becomes a space before lettre sees it.
pub fn one_line(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.trim().to_string()
}

/// The `Message-ID` of a job: derived from its idempotency key, so every attempt of the same
/// job sends the same id and a receiver can recognise a retried send as a duplicate.
pub fn message_id(key: &str, from: &Mailbox) -> String {
    let local: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("<{local}@{}>", from.email.domain())
}

/// `X-Ciclo-Idempotency-Key`: the job's key, for receivers that de-duplicate by header.
#[derive(Clone, Debug)]
struct IdempotencyKey(String);

impl Header for IdempotencyKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Ciclo-Idempotency-Key")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(IdempotencyKey(text.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), one_line(&self.0))
    }
}

/// The whole message: From, Reply-To, To, Subject, Message-ID, the key header, and a
/// multipart/alternative body (text first, HTML last, as mail readers prefer the last part).
pub fn build(
    sender: &Sender,
    to: Mailbox,
    key: &str,
    rendered: &Rendered,
) -> Result<(Message, String), String> {
    let id = message_id(key, &sender.from);
    let mut builder = Message::builder()
        .from(sender.from.clone())
        .to(to)
        .subject(one_line(&rendered.subject))
        .message_id(Some(id.clone()))
        .header(IdempotencyKey(key.to_string()));
    if let Some(reply_to) = &sender.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| format!("cannot build the e-mail: {e}"))?;
    Ok((message, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_name_with_a_comma_is_one_mailbox() {
        let m = parse_mailbox("Müller, José <jose@example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Müller, José"));
        assert_eq!(m.email.to_string(), "jose@example.com");
        let m = parse_mailbox("\"Doe, Jane\" <jane@example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Doe, Jane"));
        let m = parse_mailbox(" ann@example.com ").unwrap();
        assert_eq!(m.name, None);
    }

    #[test]
    fn refuses_line_breaks_and_non_addresses() {
        assert!(parse_mailbox("a@example.com\r\nBcc: x@example.net").is_err());
        assert!(parse_mailbox("not an address").is_err());
        assert!(parse_mailbox("").is_err());
        assert!(parse_mailbox("Name <>").is_err());
    }

    #[test]
    fn subjects_lose_line_breaks() {
        assert_eq!(
            one_line("ACME\r\nBcc: someone@example.net"),
            "ACME  Bcc: someone@example.net"
        );
    }

    #[test]
    fn the_message_id_comes_from_the_key() {
        let from = parse_mailbox("Ciclo <ciclo@acme.example>").unwrap();
        assert_eq!(message_id("abc-7", &from), "<abc-7@acme.example>");
        assert_eq!(message_id("a b<c>", &from), "<a_b_c_@acme.example>");
    }
}
