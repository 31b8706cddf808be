//! Hostnames are data: they are checked once, here, before they reach a
//! bucket key, a subject or an SSH connection.

/// Why a string is not a usable hostname.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostnameError {
    #[error("hostname is empty")]
    Empty,
    #[error("hostname `{0}` is longer than 253 characters")]
    TooLong(String),
    #[error("hostname `{name}` has an invalid character {ch:?} at position {position}")]
    BadChar {
        name: String,
        ch: char,
        position: usize,
    },
    #[error("hostname `{0}` has an empty label, or a label that starts or ends with `-`")]
    BadLabel(String),
    #[error("hostname `{0}` has a label longer than 63 characters")]
    LabelTooLong(String),
}

/// Checks a hostname (RFC 1123 labels) and returns it lower-cased.
///
/// ```
/// use fleetroll_bus::hostname::validate;
/// assert_eq!(validate("Host-1.Example.com").unwrap(), "host-1.example.com");
/// assert!(validate("host;rm -rf /").is_err());
/// ```
pub fn validate(raw: &str) -> Result<String, HostnameError> {
    if raw.is_empty() {
        return Err(HostnameError::Empty);
    }
    if raw.len() > 253 {
        return Err(HostnameError::TooLong(
            raw.chars().take(40).collect::<String>() + "…",
        ));
    }
    if let Some((position, ch)) = raw
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(HostnameError::BadChar {
            name: raw.to_string(),
            ch,
            position: position + 1,
        });
    }
    for label in raw.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::BadLabel(raw.to_string()));
        }
        if label.len() > 63 {
            return Err(HostnameError::LabelTooLong(raw.to_string()));
        }
    }
    Ok(raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_hostname() {
        for bad in ["", "a..b", "-a.b", "a-.b", "a b", "a/b", "$(reboot)", "ä.b"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            validate("x y").unwrap_err().to_string(),
            "hostname `x y` has an invalid character ' ' at position 2"
        );
    }
}
