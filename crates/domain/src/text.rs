//! Text that crossed the edge: Unicode NFC, trimmed, free of control characters, and within a
//! limit counted in characters (not bytes), so Thai, Lao, Burmese or any other script gets the
//! same room as Latin.
//!
//! Every rule is also a JSON Schema (the OpenAPI document's request schemas): [`TEXT_PATTERN`]
//! with `minLength: 1` and `maxLength` = the limit. The rules are checked on the text as it was
//! received, so the schema a client validates against and the check here say the same thing;
//! the tests below hold the two to each other.

use crate::error::{Error, Result};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// The body of a regular-expression character class of Unicode's control characters (general
/// category Cc, Rust's [`char::is_control`]), the characters no text may contain.
macro_rules! control_class {
    () => {
        r"\u0000-\u001F\u007F-\u009F"
    };
}

/// The body of a character class of the white space that is not a control character: with
/// [`control_class!`], exactly Rust's [`char::is_whitespace`] (Unicode's `White_Space`), what
/// [`str::trim`] removes.
macro_rules! space_class {
    () => {
        r"\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
    };
}

pub(crate) use {control_class, space_class};

/// Free text as [`parse_text`] accepts it (with `minLength: 1` and `maxLength` = the limit): no
/// control character anywhere, and at least one character that is neither white space nor a
/// control (blank text is refused). An ECMA-262 pattern, as JSON Schema and OpenAPI use.
pub const TEXT_PATTERN: &str = concat!(
    "^[^",
    control_class!(),
    "]*[^",
    control_class!(),
    space_class!(),
    "][^",
    control_class!(),
    "]*$"
);

/// Checks `raw` as received — no control characters (NUL included), at most `max_chars`
/// characters, not blank — then trims surrounding white space and normalises it to NFC (which
/// must still fit: a few characters decompose under NFC). `field` names the field in errors.
pub fn parse_text(field: &str, raw: &str, max_chars: usize) -> Result<String> {
    if raw.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    let too_long =
        || Error::invalid_field(field, format!("must be at most {max_chars} characters"));
    // A string has at least as many bytes as characters: most text needs no count.
    if raw.len() > max_chars && raw.chars().count() > max_chars {
        return Err(too_long());
    }
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
    if normalized.len() > max_chars && normalized.chars().count() > max_chars {
        return Err(too_long());
    }
    Ok(normalized)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let parsed = parse_text("name", decomposed, 5).unwrap();
        assert_eq!(parsed, "Café");
        assert_eq!(parsed.chars().count(), 4);
        // The limit counts the characters as sent, as a JSON Schema `maxLength` does.
        assert!(parse_text("name", decomposed, 4).is_err());
    }

    #[test]
    fn surrounding_white_space_is_trimmed_but_counts_towards_the_limit() {
        assert_eq!(
            parse_text("name", "  Somchai \u{3000}", 20).unwrap(),
            "Somchai"
        );
        assert!(parse_text("name", "  Somchai", 7).is_err());
        // A control character is refused anywhere, at the ends too.
        assert!(parse_text("name", "Somchai\n", 20).is_err());
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

    /// The characters a class of the patterns admits, against the Rust rule it stands for, for
    /// every Unicode scalar value.
    #[test]
    fn the_pattern_classes_are_the_rust_rules() {
        let control = regex::Regex::new(concat!("^[", control_class!(), "]$")).unwrap();
        let blank =
            regex::Regex::new(concat!("^[", control_class!(), space_class!(), "]$")).unwrap();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let text = c.to_string();
            assert_eq!(control.is_match(&text), c.is_control(), "{c:?}");
            assert_eq!(
                blank.is_match(&text),
                c.is_control() || c.is_whitespace(),
                "{c:?}"
            );
        }
    }

    /// Text as an edge receives it: mostly letters, with white space, controls, marks and
    /// other scripts mixed in.
    pub(crate) fn edge_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ a-zA-Z0-9\t\n\r\u{0}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}\u{feff}@.+()_:-]{0,12}",
            "[ aeéกัีุ\u{301}\u{e31}\u{958}\u{3000}]{0,12}",
            "\\PC{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        /// `parse_text` accepts exactly what the document's schema allows: [`TEXT_PATTERN`]
        /// and the length in characters as sent, plus the one rule a pattern cannot say (the
        /// text must still fit after NFC, which lengthens a few characters).
        #[test]
        fn parse_text_is_its_schema(raw in edge_text(), max in 1usize..12) {
            let pattern = regex::Regex::new(TEXT_PATTERN).unwrap();
            let schema = pattern.is_match(&raw) && raw.chars().count() <= max;
            let fits_nfc = raw.trim().nfc().count() <= max;
            prop_assert_eq!(parse_text("f", &raw, max).is_ok(), schema && fits_nfc, "{:?}", raw);
        }

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
