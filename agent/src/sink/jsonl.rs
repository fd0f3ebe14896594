//! The JSON lines sink: one record per line to a file (appending) or stdout.

use std::io::Write;
use std::path::Path;

use super::SinkError;
use crate::record::Record;

/// Buffered JSON lines writer to a file (appending) or stdout.
pub struct Sink {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Sink, SinkError> {
        let out: Box<dyn Write + Send> = match path {
            None => Box::new(std::io::stdout()),
            Some(p) => {
                if let Some(dir) = p.parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|source| SinkError::Open {
                            path: p.display().to_string(),
                            source,
                        })?;
                    }
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|source| SinkError::Open {
                            path: p.display().to_string(),
                            source,
                        })?,
                )
            }
        };
        Ok(Sink {
            out: std::io::BufWriter::with_capacity(256 * 1024, out),
        })
    }

    pub fn from_writer(w: Box<dyn Write + Send>) -> Sink {
        Sink {
            out: std::io::BufWriter::new(w),
        }
    }

    pub fn write(&mut self, r: &Record) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Writes an already-serialized JSON line (e.g. an action record).
    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}
