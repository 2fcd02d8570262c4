//! Collecting every violation of a request, so the caller gets them all at once.

use passerelle_domain::Invalid;

/// One refused field: its path in the request (`person.nir`), the rule it broke, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub rule: String,
    pub description: String,
}

#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, rule: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation { field: field.into(), rule: rule.into(), description: description.into() });
    }

    /// Records the outcome of a parse; returns the value when valid.
    pub fn check<T>(&mut self, field: &str, outcome: Result<T, Invalid>) -> Option<T> {
        match outcome {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.push(field, invalid.rule, invalid.message);
                None
            }
        }
    }

    /// Parses a field that may be left empty.
    pub fn optional<T>(&mut self, field: &str, raw: &str, parse: impl FnOnce(&str) -> Result<T, Invalid>) -> Option<T> {
        if raw.trim().is_empty() {
            return None;
        }
        self.check(field, parse(raw))
    }

    /// Parses a field that must be given.
    pub fn required<T>(&mut self, field: &str, raw: &str, parse: impl FnOnce(&str) -> Result<T, Invalid>) -> Option<T> {
        if raw.trim().is_empty() {
            self.push(field, "required", "this field is required");
            return None;
        }
        self.check(field, parse(raw))
    }

    /// Checks a free-text field: bounded, printable.
    pub fn text(&mut self, field: &str, raw: &str, max: usize) -> Option<String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return None;
        }
        if trimmed.chars().count() > max {
            self.push(field, "text.length", format!("at most {max} characters"));
            return None;
        }
        if trimmed.chars().any(|c| c.is_control() && c != '\n') {
            self.push(field, "text.characters", "control characters are not allowed");
            return None;
        }
        Some(trimmed.to_owned())
    }

    /// A free-text field that must be given: bounded, printable; `what` says what it holds.
    pub fn required_text(&mut self, field: &str, raw: &str, max: usize, what: &str) -> Option<String> {
        if raw.trim().is_empty() {
            self.push(field, "required", what);
            return None;
        }
        self.text(field, raw, max)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}
