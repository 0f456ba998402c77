//! Text that crossed the edge: Unicode NFC, trimmed, free of control characters, and within a
//! limit counted in characters (not bytes), so Thai, Lao, Burmese or any other script gets the
//! same room as Latin.

use crate::error::{Error, Result};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Normalises `raw` to NFC, trims surrounding white space and checks it is 1..=`max_chars`
/// characters with no control characters (NUL included). `field` names the field in errors.
pub fn parse_text(field: &str, raw: &str, max_chars: usize) -> Result<String> {
    let trimmed = raw.trim();
    // Most text (every id, most names) is already NFC — all ASCII is: a quick check spares the
    // decomposition and recomposition, which cost more than the rest of a cached read.
    let normalized: String =
        if trimmed.is_ascii() || is_nfc_quick(trimmed.chars()) == IsNormalized::Yes {
            trimmed.to_owned()
        } else {
            trimmed.nfc().collect()
        };
    if normalized.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if normalized.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    let chars = normalized.chars().count();
    if chars > max_chars {
        return Err(Error::invalid_field(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits_count_characters_not_bytes() {
        // 10 Thai characters are 30 bytes in UTF-8; a 10-character limit accepts them.
        let thai = "สวัสดีครับผ";
        assert_eq!(thai.chars().count(), 11);
        assert!(parse_text("name", &thai[..thai.len() - 3], 10).is_ok());
        assert!(parse_text("name", thai, 10).is_err());
    }

    #[test]
    fn decomposed_input_is_stored_composed() {
        let decomposed = "Cafe\u{301}";
        let parsed = parse_text("name", decomposed, 4).unwrap();
        assert_eq!(parsed, "Café");
        assert_eq!(parsed.chars().count(), 4);
    }

    #[test]
    fn nul_and_control_characters_are_rejected() {
        assert!(parse_text("name", "a\u{0}b", 10).is_err());
        assert!(parse_text("name", "a\u{7}b", 10).is_err());
        assert!(parse_text("name", "a\nb", 10).is_err());
    }

    #[test]
    fn blank_text_is_rejected() {
        assert!(parse_text("name", "", 10).is_err());
        assert!(parse_text("name", "   ", 10).is_err());
    }

    proptest! {
        #[test]
        fn accepted_text_is_nfc_and_within_the_limit(raw in "\\PC{1,40}") {
            if let Ok(text) = parse_text("name", &raw, 20) {
                prop_assert!(text.chars().count() <= 20);
                prop_assert_eq!(text.nfc().collect::<String>(), text.clone());
                prop_assert_eq!(parse_text("name", &text, 20).unwrap(), text);
            }
        }
    }
}
