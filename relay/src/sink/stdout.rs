//! JSON lines: one envelope per line on standard output, or appended to a file (flushed before
//! the batch counts as delivered).

use std::io::Write;

use super::{Message, SinkError};

pub struct Stdout {
    path: Option<String>,
    file: Option<std::fs::File>,
    open: bool,
}

impl Stdout {
    pub fn new(path: Option<String>) -> Self {
        Stdout {
            path,
            file: None,
            open: false,
        }
    }

    pub fn connected(&self) -> bool {
        self.open
    }

    pub fn connect(&mut self) -> Result<(), SinkError> {
        if let Some(path) = &self.path {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| SinkError::Connect(format!("{path}: {e}")))?;
            self.file = Some(f);
        }
        self.open = true;
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.file = None;
        self.open = false;
    }

    pub fn deliver(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let mut text = String::with_capacity(batch.iter().map(|m| m.body.len() + 1).sum());
        for m in batch {
            text.push_str(&m.body);
            text.push('\n');
        }
        match &mut self.file {
            Some(f) => {
                f.write_all(text.as_bytes())?;
                f.flush()?;
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
        }
        Ok(())
    }
}
