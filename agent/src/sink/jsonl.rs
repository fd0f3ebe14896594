//! The JSON lines sink: one record per line to a file (appending) or stdout.

use std::io::Write;
use std::path::Path;

use super::{Output, Sink, SinkError};

/// Buffered JSON lines writer to a file (appending) or stdout.
pub struct JsonLines {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    target: String,
}

impl JsonLines {
    /// `None` writes to stdout.
    pub fn open(path: Option<&Path>) -> Result<JsonLines, SinkError> {
        let Some(p) = path else {
            let mut s = JsonLines::from_writer(Box::new(std::io::stdout()));
            s.target = "stdout".into();
            return Ok(s);
        };
        let open_err = |source| SinkError::Open {
            path: p.display().to_string(),
            source,
        };
        if let Some(dir) = p.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(open_err)?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(open_err)?;
        let mut s = JsonLines::from_writer(Box::new(file));
        s.target = p.display().to_string();
        Ok(s)
    }

    pub fn from_writer(w: Box<dyn Write + Send>) -> JsonLines {
        JsonLines {
            out: std::io::BufWriter::with_capacity(256 * 1024, w),
            target: String::new(),
        }
    }
}

impl Sink for JsonLines {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, _out: &Output<'_>, line: &str) -> Result<(), SinkError> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.target })
    }
}
