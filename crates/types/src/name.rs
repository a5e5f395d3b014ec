//! Validated names. A `VmName` is the only way a user-chosen name reaches a path, a
//! hostname or a command line, so the rule lives in exactly one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name breaks the `^[a-z][a-z0-9-]{0,62}$` rule.
    #[error("invalid name {0:?}: use 1-63 characters a-z, 0-9 and '-', starting with a letter")]
    Invalid(String),
}

/// A VM name: `^[a-z][a-z0-9-]{0,62}$`, which is also a valid hostname label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VmName(String);

impl VmName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if is_valid_name(&name) {
            Ok(Self(name))
        } else {
            Err(NameError::Invalid(name))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= 63
        && first.is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for VmName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<VmName> for String {
    fn from(n: VmName) -> String {
        n.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostname_like_names() {
        for ok in ["a", "bold-fox", "vm-1", &format!("a{}", "b".repeat(62))] {
            assert!(VmName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = format!("a{}", "b".repeat(63));
        for bad in [
            "", "1vm", "-a", "Bold", "a;b", "a b", "a/b", "a.b", "a_b", "é", &long,
        ] {
            assert_eq!(
                VmName::new(bad),
                Err(NameError::Invalid(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<VmName>("\"ok-name\"").is_ok());
        assert!(serde_json::from_str::<VmName>("\"../etc\"").is_err());
    }
}
