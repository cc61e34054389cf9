//! Checks on what a client sends: the text, the client id, and the word filter. Pure
//! functions, run before anything touches the rate limiter or the database.

use crate::ChatError;

/// Longest client id, in characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// A client id is 1–64 characters of `A-Z a-z 0-9 _ -` (a UUID fits).
pub(crate) fn client_id(id: &str) -> Result<(), ChatError> {
    let valid = (1..=MAX_CLIENT_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ChatError::InvalidClientId)
    }
}

/// The text is not blank, at most `max_len` characters, and free of control characters other
/// than tab, line feed and carriage return. It is stored as sent (not trimmed).
pub(crate) fn text(text: &str, max_len: usize) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::EmptyMessage);
    }
    // Counting stops one past the limit, so a huge text costs no more than a long one.
    if text.chars().take(max_len + 1).count() > max_len {
        return Err(ChatError::MessageTooLong { max: max_len });
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(ChatError::InvalidText);
    }
    Ok(())
}

/// Refuses texts that contain a blocked word or phrase, compared without case, on word
/// boundaries: a match must not have a letter, digit or `_` right before or after it, so
/// `"ass"` refuses "ASS!" but not "class" or "assess".
#[derive(Debug, Clone, Default)]
pub(crate) struct WordFilter {
    /// Lowercased, trimmed, non-empty, without repeats.
    words: Vec<String>,
}

impl WordFilter {
    pub(crate) fn new(words: &[String]) -> Self {
        let mut words: Vec<String> = words
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        words.sort();
        words.dedup();
        Self { words }
    }

    /// Whether `text` contains a blocked word.
    pub(crate) fn blocks(&self, text: &str) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let text = text.to_lowercase();
        self.words.iter().any(|word| {
            text.match_indices(word.as_str()).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + word.len()..].chars().next();
                !is_word_char(before) && !is_word_char(after)
            })
        })
    }
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        for ok in [
            "a",
            "A-z_09",
            &"x".repeat(64),
            "3f2b9c1e-5b1a-4c55-9e7e-0d6f3c2a1b00",
        ] {
            assert!(client_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a/b", "é", "a\0", "a.b"] {
            assert!(
                matches!(client_id(bad), Err(ChatError::InvalidClientId)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn texts() {
        assert!(text("hi", 4000).is_ok());
        assert!(text("line one\nline two\ttab\r\n", 4000).is_ok());
        assert!(
            text(&"é".repeat(4000), 4000).is_ok(),
            "characters, not bytes"
        );
        assert!(matches!(text("", 4000), Err(ChatError::EmptyMessage)));
        assert!(matches!(text(" \n\t ", 4000), Err(ChatError::EmptyMessage)));
        assert!(matches!(
            text(&"é".repeat(4001), 4000),
            Err(ChatError::MessageTooLong { max: 4000 })
        ));
        assert!(matches!(text("a\0b", 4000), Err(ChatError::InvalidText)));
        assert!(matches!(
            text("bell\u{7}", 4000),
            Err(ChatError::InvalidText)
        ));
    }

    #[test]
    fn word_filter_matches_whole_words_without_case() {
        let filter = WordFilter::new(&[
            " Darn ".into(),
            "ass".into(),
            "bad phrase".into(),
            "".into(),
        ]);
        for blocked in [
            "darn",
            "Darn it",
            "oh DARN!",
            "a darn-thing",
            "(ass)",
            "that is a Bad Phrase indeed",
            "ok\ndarn",
        ] {
            assert!(filter.blocks(blocked), "{blocked:?}");
        }
        for fine in [
            "darned",
            "undarn",
            "class",
            "assess",
            "pass_ass",
            "bad phrases",
            "",
            "nothing here",
        ] {
            assert!(!filter.blocks(fine), "{fine:?}");
        }
        assert!(!WordFilter::new(&[]).blocks("darn"));
        // Non-ASCII words and neighbours.
        let filter = WordFilter::new(&["Ärger".into()]);
        assert!(filter.blocks("so ein ÄRGER."));
        assert!(!filter.blocks("verärgert"));
    }
}
