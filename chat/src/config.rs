//! The chat service's settings.

/// Settings of the chat service. `Clone`, so one configuration serves many services in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Longest message, in characters (Unicode scalar values). Default 4000.
    pub max_len: usize,
    /// Messages (and edits) per second per user, sustained. Default 5; 0 counts as 1.
    pub rate_per_sec: u32,
    /// Messages a user may send at once after a quiet spell. Default 10; 0 counts as 1.
    pub burst: u32,
    /// Words and phrases refused in messages, matched without case on word boundaries
    /// (`"darn"` refuses "Darn!" but not "darned"). Default none.
    pub blocked_words: Vec<String>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_len: 4000,
            rate_per_sec: 5,
            burst: 10,
            blocked_words: Vec::new(),
        }
    }
}
