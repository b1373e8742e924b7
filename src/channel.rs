//! Channels and architectures: the names a release is filed under.
//!
//! A provider serves `<channel>/<arch>` directories (`stable/arm64`), a
//! record is kept under `/phase/{channel}/{arch}/manifest`, a board asks for
//! one channel/arch. This module owns the pair ([`ChannelArch`]) and the
//! rules its names and the file names served below it follow. It depends on
//! nothing else of ours; record keys are `record`'s, directories `manifest`'s.

use std::fmt;

/// Longest channel or architecture name (`[a-z0-9][a-z0-9._-]{0,31}`).
pub const MAX_NAME: usize = 32;

/// A channel/arch pair, e.g. `stable/arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelArch {
    pub channel: String,
    pub arch: String,
}

impl fmt::Display for ChannelArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.channel, self.arch)
    }
}

/// A channel or architecture name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {name:?}: use 1-32 characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit")]
pub struct NameError {
    /// Which name it is (`channel`, `arch`), for the message.
    pub what: &'static str,
    /// The name as given.
    pub name: String,
}

/// Checks a channel or architecture name against
/// `[a-z0-9][a-z0-9._-]{0,31}`. `what` names it in the error.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let mut bytes = name.bytes();
    let ok = match bytes.next() {
        Some(first) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && name.len() <= MAX_NAME
                && bytes.all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_string(),
        })
    }
}

/// A file name we are willing to serve: no separators, no NUL, not `.`/`..`,
/// bounded length.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in [
            "stable",
            "arm64",
            "0",
            "a.b_c-d",
            "v1.2_rc-3",
            &"a".repeat(MAX_NAME),
        ] {
            assert!(check_name("channel", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Stable",
            "-x",
            ".x",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            &"a".repeat(MAX_NAME + 1),
        ] {
            let e = check_name("arch", bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid arch name"), "{e}");
        }
    }

    #[test]
    fn file_names_stay_in_their_directory() {
        assert!(is_safe_file_name("vmlinuz"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn pair_displays_as_a_path() {
        let ca = ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        };
        assert_eq!(ca.to_string(), "stable/arm64");
    }
}
