//! The one error of both key file formats: the tick keys' `ID HEX` lines (`tick_auth`) and
//! chrony's `ID TYPE KEY` lines (`symmetric`). Errors name the line where there is one.

use core::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileError {
    /// 1-based; None for what concerns the whole file ("no keys") or a key given alone.
    pub line: Option<usize>,
    pub message: String,
}

impl KeyFileError {
    pub fn at(line: usize, message: String) -> KeyFileError {
        KeyFileError {
            line: Some(line),
            message,
        }
    }

    pub fn whole(message: impl Into<String>) -> KeyFileError {
        KeyFileError {
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for KeyFileError {}
