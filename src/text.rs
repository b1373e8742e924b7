//! Text shapes we check and show: a sha256 as we write it, a JSON string
//! literal, network text made safe for a terminal, a library's multi-line
//! message folded into one.
//!
//! Small helpers every layer uses; they depend on nothing else of ours.
//! Hex itself is the `hex` crate's.

/// True for a sha256 as we write it: 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as compact JSON, written by `serde-json-core` into a buffer
/// grown until it fits; `None` past `max` bytes (or if `value` cannot be
/// serialized).
pub fn to_json<T: serde::Serialize>(value: &T, max: usize) -> Option<String> {
    let mut size = 4096.min(max);
    loop {
        let mut buf = vec![0u8; size];
        match serde_json_core::to_slice(value, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return String::from_utf8(buf).ok();
            }
            Err(serde_json_core::ser::Error::BufferFull) if size < max => {
                size = size.saturating_mul(2).min(max)
            }
            Err(_) => return None,
        }
    }
}

/// Text from the network (URLs, versions, names, error messages quoting
/// them) made safe to show on a terminal: control characters (C0, DEL, C1)
/// and bidirectional overrides become `?`, so a hostile record can neither
/// drive the terminal with escape sequences nor reorder what it shows.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// toml's messages span several lines with a source excerpt; keep them to one.
pub fn one_line(msg: &str) -> String {
    let mut parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_text_cannot_drive_the_terminal() {
        assert_eq!(printable("v1\x1b[2J\nboot"), "v1?[2J?boot");
        assert_eq!(printable("a\u{9b}31m\u{7f}"), "a?31m?");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil?gpj.exe");
        assert_eq!(printable("stable 1.0 · ünï"), "stable 1.0 · ünï");
    }

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn toml_messages_fold_into_one_line() {
        let msg = "TOML parse error at line 1, column 3\n  |\n1 | a =\n  |   ^\ninvalid string\n";
        assert_eq!(
            one_line(msg),
            "TOML parse error at line 1, column 3: 1 | a =: invalid string"
        );
    }

    #[test]
    fn json_is_written_whatever_its_size_up_to_the_limit() {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            name: &'a str,
            missing: Option<u64>,
            list: Vec<u32>,
        }
        let doc = Doc {
            name: "a\"b",
            missing: None,
            list: (0..5000).collect(),
        };
        let json = to_json(&doc, 1 << 20).unwrap();
        assert!(
            json.starts_with(r#"{"name":"a\"b","missing":null,"list":[0,1,2,"#),
            "{json}"
        );
        assert!(json.ends_with(",4999]}"));
        assert_eq!(to_json(&doc, 100), None);
    }

    #[test]
    fn sha256_hex_is_lower_case_and_checked() {
        let h = sha256_hex(b"");
        assert_eq!(
            h,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_hex(&h));
        assert!(!is_sha256_hex(&h.to_uppercase()));
        assert!(!is_sha256_hex(&h[1..]));
    }
}
