//! Splits the command line an SSH user sent into words.
//!
//! sshd hands the user's command to the ForceCommand as one string
//! (`SSH_ORIGINAL_COMMAND`). No shell ever sees it: this splitter is its only
//! interpretation. It honours a POSIX shell's quoting (single quotes, double quotes,
//! backslashes) so that `describe vm 'two words'` means what it says, and has none of a
//! shell's other powers: `;`, `|`, `&`, `$`, `*`, `#` and backticks are ordinary
//! characters inside a word.

/// A command line whose quoting does not close.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WordsError {
    /// A `'` or `"` is never closed.
    #[error("unterminated {0} quote in the command")]
    UnterminatedQuote(&'static str),
    /// The line ends with a backslash that escapes nothing.
    #[error("the command ends with a lone backslash")]
    TrailingBackslash,
}

/// Splits `line` into words with POSIX shell quoting and nothing else.
pub fn split_words(line: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    // `Some` once a word has begun, so that `''` yields an empty word.
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => single_quoted(&mut chars, word.get_or_insert_with(String::new))?,
            '"' => double_quoted(&mut chars, word.get_or_insert_with(String::new))?,
            '\\' => match chars.next() {
                // A backslash-newline joins lines, as in a shell.
                Some('\n') => {}
                Some(next) => word.get_or_insert_with(String::new).push(next),
                None => return Err(WordsError::TrailingBackslash),
            },
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Everything up to the closing `'` is literal.
fn single_quoted(chars: &mut std::str::Chars, word: &mut String) -> Result<(), WordsError> {
    for c in chars.by_ref() {
        if c == '\'' {
            return Ok(());
        }
        word.push(c);
    }
    Err(WordsError::UnterminatedQuote("single"))
}

/// Up to the closing `"`; a backslash escapes only `"`, `\`, `$`, `` ` `` and newline.
fn double_quoted(chars: &mut std::str::Chars, word: &mut String) -> Result<(), WordsError> {
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(next @ ('"' | '\\' | '$' | '`')) => word.push(next),
                Some(other) => {
                    word.push('\\');
                    word.push(other);
                }
                None => break,
            },
            _ => word.push(c),
        }
    }
    Err(WordsError::UnterminatedQuote("double"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<String> {
        split_words(line).unwrap()
    }

    #[test]
    fn splits_on_runs_of_blanks() {
        assert_eq!(split("  new \t --vcpu   4\n"), ["new", "--vcpu", "4"]);
        assert!(split("").is_empty());
        assert!(split(" \t\n ").is_empty());
    }

    #[test]
    fn honours_quotes_and_escapes() {
        let cases: &[(&str, &[&str])] = &[
            ("describe vm 'two words'", &["describe", "vm", "two words"]),
            (
                r#"describe vm "it's here""#,
                &["describe", "vm", "it's here"],
            ),
            (r#"a "x\"y" 'p\q'"#, &["a", "x\"y", r"p\q"]),
            (r#""a\b" "\\" "\$""#, &[r"a\b", r"\", "$"]),
            (r"a\ b c\\d", &["a b", r"c\d"]),
            ("pre'mid'\"dle\"post", &["premiddlepost"]),
            ("'' x \"\"", &["", "x", ""]),
            ("a\\\nb", &["ab"]),
        ];
        for (line, want) in cases {
            assert_eq!(split(line), *want, "{line:?}");
        }
    }

    #[test]
    fn shell_operators_are_plain_characters() {
        assert_eq!(
            split("new --name 'a;b' x;y $HOME `id` *|& #c"),
            ["new", "--name", "a;b", "x;y", "$HOME", "`id`", "*|&", "#c"]
        );
    }

    #[test]
    fn unclosed_quoting_is_an_error() {
        assert_eq!(
            split_words("new --desc 'oops"),
            Err(WordsError::UnterminatedQuote("single"))
        );
        assert_eq!(
            split_words("new --desc \"oops\\\""),
            Err(WordsError::UnterminatedQuote("double"))
        );
        assert_eq!(split_words("new \\"), Err(WordsError::TrailingBackslash));
    }
}
