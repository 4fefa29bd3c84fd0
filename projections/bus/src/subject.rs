//! Subject rules and matching, shared by both implementations.
//!
//! A subject is a non-empty sequence of non-empty tokens separated by `.`,
//! without whitespace or control characters, at most [`SUBJECT_BYTES_MAX`]
//! bytes long. A subscription *pattern* may also use the NATS wildcards as
//! whole tokens: `*` matches exactly one token, `>` matches one or more
//! tokens and may only be the last token. A subject that is published to
//! (or requested, or replied to) must be *literal*: no wildcards.
//!
//! Every bus call validates here before it reaches either implementation, so
//! a subject is accepted or refused identically in embedded and cluster mode
//! (the NATS server alone would accept more, e.g. `a*` as a literal token).

use crate::error::{Error, Result};

/// The longest subject, in bytes. Far below the NATS server's control line
/// limit (4 KiB), so a subject never breaks a protocol line.
pub const SUBJECT_BYTES_MAX: usize = 256;

/// The longest queue group name, in bytes.
pub const QUEUE_GROUP_BYTES_MAX: usize = 64;

/// How much of a rejected subject or group an error carries, so that a
/// megabyte of garbage input does not end up in every log line.
const ERROR_ECHO_BYTES_MAX: usize = SUBJECT_BYTES_MAX + 16;

/// Checks a subject that is published, requested or replied to.
///
/// # Errors
/// [`Error::InvalidSubject`] naming the first rule it breaks.
pub fn validate_literal(subject: &str) -> Result<()> {
    validate(subject, Kind::Literal)
}

/// Checks a subscription pattern: a subject that may contain `*` and a final `>`.
///
/// # Errors
/// [`Error::InvalidSubject`] naming the first rule it breaks.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    validate(pattern, Kind::Pattern)
}

/// Checks a queue group name: non-empty, no whitespace or control
/// characters, at most [`QUEUE_GROUP_BYTES_MAX`] bytes.
///
/// # Errors
/// [`Error::InvalidQueueGroup`] naming the rule it breaks.
pub fn validate_queue_group(group: &str) -> Result<()> {
    let reason = if group.is_empty() {
        "empty"
    } else if group.len() > QUEUE_GROUP_BYTES_MAX {
        "longer than 64 bytes"
    } else if group.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidQueueGroup { group: echo(group), reason })
}

/// Whether a literal `subject` matches a subscription `pattern`. Both are
/// assumed valid; an invalid pair gives an unspecified answer, never a panic.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// Whether a valid pattern contains a wildcard token.
pub(crate) fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Literal,
    Pattern,
}

fn validate(subject: &str, kind: Kind) -> Result<()> {
    match first_violation(subject, kind) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidSubject { subject: echo(subject), reason }),
    }
}

fn first_violation(subject: &str, kind: Kind) -> Option<&'static str> {
    if subject.is_empty() {
        return Some("empty");
    }
    if subject.len() > SUBJECT_BYTES_MAX {
        return Some("longer than 256 bytes");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or a control character");
    }
    let token_count = subject.split('.').count();
    for (i, token) in subject.split('.').enumerate() {
        if token.is_empty() {
            return Some("empty token (leading, trailing or double `.`)");
        }
        let is_wildcard = token == "*" || token == ">";
        if !is_wildcard && token.contains(['*', '>']) {
            return Some("a wildcard must be a whole token");
        }
        if is_wildcard && kind == Kind::Literal {
            return Some("wildcards are only allowed when subscribing");
        }
        if token == ">" && i + 1 != token_count {
            return Some("`>` must be the last token");
        }
    }
    None
}

fn echo(input: &str) -> String {
    if input.len() <= ERROR_ECHO_BYTES_MAX {
        return input.to_owned();
    }
    let mut end = ERROR_ECHO_BYTES_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &input[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_rules() {
        for ok in ["a", "a.b", "chat.123.seq", "_INBOX.abc.1", "ünï.cödé", "a-b_c.d~e"] {
            assert!(validate_literal(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\nb", "a.*", "a.>", "*", ">", "a*", "a.b>"] {
            assert!(validate_literal(bad).is_err(), "{bad:?}");
        }
        assert!(validate_literal(&"a".repeat(SUBJECT_BYTES_MAX)).is_ok());
        assert!(validate_literal(&"a".repeat(SUBJECT_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn pattern_rules() {
        for ok in ["a", "*", ">", "a.*", "a.>", "*.b.>", "*.*"] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.>.b", ">.a", "a*", "a.*b", "a..*", "a. *"] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.c"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(!matches("a.*", "a"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches("*.b.>", "x.b.y.z"));
        assert!(!matches("*.b.>", "x.c.y"));
    }

    #[test]
    fn long_input_is_not_echoed_whole() {
        let huge = "é".repeat(10_000);
        let Err(Error::InvalidSubject { subject, .. }) = validate_literal(&huge) else {
            panic!("accepted");
        };
        assert!(subject.len() < ERROR_ECHO_BYTES_MAX + 8);
    }

    #[test]
    fn queue_groups() {
        assert!(validate_queue_group("workers").is_ok());
        assert!(validate_queue_group("edge.workers").is_ok());
        assert!(validate_queue_group("").is_err());
        assert!(validate_queue_group("a b").is_err());
        assert!(validate_queue_group(&"g".repeat(QUEUE_GROUP_BYTES_MAX + 1)).is_err());
    }
}
