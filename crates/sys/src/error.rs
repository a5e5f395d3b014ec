//! Printing an error with its causes, the way every Boxcutter message and log line
//! shows them.

/// An error and its sources joined with `: `, skipping a source whose text its parent
/// already ends with.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("clone disk")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("read: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn joins_causes_without_repeating_them() {
        let err = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&err), "clone disk: disk full");
        let err = Repeating(std::io::Error::other("eof"));
        assert_eq!(error_chain(&err), "read: eof");
    }
}
