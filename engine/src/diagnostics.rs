//! Problems found in a definition, reported as `FILE:LINE:COLUMN: CODE message` with an
//! optional `hint:` line, the format `ciclo validate` prints and the API returns.

use std::fmt;

use serde::Serialize;

/// One problem in a process file. `code` is stable (`CICLO-E0101`); docs/errors.md lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} {}",
            self.file, self.line, self.col, self.code, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}
