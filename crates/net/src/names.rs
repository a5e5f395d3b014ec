//! Validated names of kernel network objects, so nothing unchecked reaches `ip`.

use std::fmt;

/// A name that is not a valid interface or namespace name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} name {name:?}")]
pub struct NameError {
    /// Interface or namespace.
    pub kind: &'static str,
    /// The rejected name.
    pub name: String,
}

/// A network interface name: 1-15 characters of `[A-Za-z0-9_.-]`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

/// A network namespace name: 1-64 characters of `[A-Za-z0-9_.-]`, not starting with `-`
/// or `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetnsName(String);

fn valid(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl IfName {
    /// Validates an interface name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if valid(&name, 15) {
            Ok(Self(name))
        } else {
            Err(NameError {
                kind: "interface",
                name,
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NetnsName {
    /// Validates a namespace name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if valid(&name, 64) {
            Ok(Self(name))
        } else {
            Err(NameError {
                kind: "namespace",
                name,
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_limit() {
        assert!(IfName::new("bc-tap0").is_ok());
        assert!(IfName::new("a".repeat(15)).is_ok());
        for bad in [
            "",
            "a".repeat(16).as_str(),
            "-x",
            "a b",
            "a/b",
            "a;b",
            "tap\n",
        ] {
            assert!(IfName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespace_names_cannot_escape_run_netns() {
        assert!(NetnsName::new("bc-test-1").is_ok());
        for bad in ["..", ".hidden", "a/b", "", "x y"] {
            assert!(NetnsName::new(bad).is_err(), "{bad:?}");
        }
    }
}
