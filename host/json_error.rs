//! The error of a JSON value that does not fit a WIT type (apart from `json.rs`, so that
//! `error.rs` can name it without depending on the conversion).

/// A JSON value that does not fit a WIT type: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The path of the bad part inside the value given, e.g. `.points[2].x` (empty for the
    /// value itself): `.name` for a field, a named parameter or a variant case, `[i]` for
    /// an item of an array, `["key"]` for an entry of a map.
    pub path: String,
    /// What is wrong, e.g. `expected s32, got "a"`.
    pub message: String,
}

impl JsonError {
    pub(crate) fn new(message: impl Into<String>) -> JsonError {
        JsonError {
            path: String::new(),
            message: message.into(),
        }
    }

    /// The error of a part found at `segment` inside the current value.
    pub(crate) fn inside(mut self, segment: &str) -> JsonError {
        self.path.insert_str(0, segment);
        self
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for JsonError {}
