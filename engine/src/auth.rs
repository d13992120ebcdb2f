//! API token secrets and account names: how a secret is made and hashed, and which user and
//! group names are accepted. Pure functions; the `Engine` methods that store users and tokens
//! (in `runtime`) call them, and the web server calls `hash_secret` to look tokens up.

use std::fmt::Write as _;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Every secret starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "ciclo_";

/// Random bytes in a secret: 256 bits, beyond guessing, and beyond brute-forcing the stored
/// hash, which is why a fast unsalted hash is enough here.
const SECRET_BYTES: usize = 32;

/// The longest user or group name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Serializes the engine's changes to users and tokens, so that a user deleted with their
/// tokens cannot race a new token being created for them. Account changes are rare and
/// quick, so one lock for the whole process costs nothing.
pub(crate) static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The lowercase hex SHA-256 of a secret: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A new secret: `ciclo_` and 32 bytes from the operating system's random source, in hex.
pub(crate) fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", hex(&bytes)))
}

/// A new lease token for an external job: 16 bytes from the operating system, in hex.
pub(crate) fn new_lease_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// 32 bytes from the operating system's random source, in lowercase hex: web session ids and
/// their CSRF secrets.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Checks a user or group name (`what` says which, for the message): not empty, at most
/// `MAX_NAME_CHARS` characters, no whitespace or control characters. Names appear in URLs,
/// task candidate lists and logs, where such characters would be ambiguous or invisible.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {what} cannot be empty"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "a {what} has at most {MAX_NAME_CHARS} characters; {:?}... has {chars}",
            name.chars().take(20).collect::<String>()
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("the {what} {name:?} contains whitespace"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("the {what} {name:?} contains a control character"));
    }
    // Bidirectional overrides make a name read differently from what it is.
    if name
        .chars()
        .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}'))
    {
        return Err(format!(
            "the {what} {name:?} contains a bidirectional control character"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        // The FIPS 180-2 test vector for "abc".
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_are_prefixed_hex_and_differ() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        let random = a.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(random.len(), 64);
        assert!(
            random
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
    }

    #[test]
    fn names() {
        assert_eq!(check_name("user name", "anna.müller"), Ok(()));
        assert_eq!(check_name("user name", &"a".repeat(100)), Ok(()));
        let refused = |name: &str| check_name("user name", name).unwrap_err();
        assert_eq!(refused(""), "a user name cannot be empty");
        assert!(refused(&"é".repeat(101)).contains("at most 100 characters"));
        assert!(refused(&"é".repeat(101)).contains("has 101"));
        assert_eq!(
            refused("anna rossi"),
            "the user name \"anna rossi\" contains whitespace"
        );
        assert_eq!(
            refused("anna\u{7}"),
            "the user name \"anna\\u{7}\" contains a control character"
        );
    }
}
