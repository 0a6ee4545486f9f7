//! Writer-chosen text shown to an operator: keys, topics, reasons and errors come from
//! applications and brokers, and may hold terminal escape sequences (ESC, CSI, OSC), carriage
//! returns, bells or bidirectional overrides that would rewrite or hide what a terminal shows.
//! Every table or report an operator reads passes its text through [`printable`]; JSON output
//! passes through [`json_printable`]. One place, so every printer escapes the same way.
use std::{borrow::Cow, fmt::Write as _};

/// True for characters a terminal would act on or that reorder or hide text: C0 controls (NUL
/// to US, including TAB, LF and CR), DEL, C1 controls (U+0080–U+009F), bidirectional embeddings,
/// overrides, isolates and marks (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), zero-width
/// characters (U+200B–U+200D, U+2060, U+FEFF) and the line and paragraph separators
/// (U+2028/9).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `text` with every [`is_unsafe`] character written as an escape, and backslashes doubled so
/// an escape cannot be forged: ASCII ones as `\xNN` (ESC is `\x1b`, NUL `\x00`, DEL `\x7f`),
/// others as `\u{XXXX}` (RLO is `\u{202e}`, CSI `\u{9b}`). Borrowed when nothing needed escaping.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) && c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Serialised JSON with the [`is_unsafe`] characters serde leaves raw (DEL, C1 controls,
/// bidirectional and zero-width characters) written as `\uXXXX` escapes. Such characters can
/// only occur inside JSON strings, where the escape means the same character: the document
/// parses to the same value, and no raw control reaches the terminal. Line feeds are kept:
/// serde escapes those inside strings, so a raw one is the pretty printer's layout.
pub fn json_printable(json: String) -> String {
    let unsafe_in_json = |c: char| c != '\n' && is_unsafe(c);
    if !json.chars().any(unsafe_in_json) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            // Every such character is in the Basic Multilingual Plane: one \u escape each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\x1b[2J\x1b]0;pwn\x07b\u{202e}c\r\0\x7f\u{9b}\u{2066}d\te";

    #[test]
    fn escapes_terminal_controls_and_bidi_overrides_and_keeps_the_rest() {
        assert_eq!(
            printable(HOSTILE),
            "a\\x1b[2J\\x1b]0;pwn\\x07b\\u{202e}c\\x0d\\x00\\x7f\\u{9b}\\u{2066}d\\x09e"
        );
        assert!(matches!(printable("acct-42 é ✓ 日本"), Cow::Borrowed("acct-42 é ✓ 日本")));
        assert_eq!(printable("line\nnext"), "line\\x0anext");
    }

    #[test]
    fn a_literal_backslash_cannot_pass_for_an_escape() {
        assert_eq!(printable("\\x1b"), "\\\\x1b");
        assert_ne!(printable("\\x1b"), printable("\x1b"));
    }

    #[test]
    fn json_keeps_its_value_and_loses_every_raw_control() {
        let value = serde_json::json!({ "key": HOSTILE, "plain": "ok ✓" });
        for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
            let text = json_printable(text);
            assert!(!text.chars().any(|c| c != '\n' && is_unsafe(c)), "{text:?}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value);
        }
    }
}
