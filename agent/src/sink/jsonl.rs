//! The JSON lines sink: one record per line to a file (appending) or
//! stdout. Lines are written from a backlog: a line that could not be
//! written (disk full, I/O error) stays queued and is retried at the next
//! flush, the backlog bounded in bytes (the oldest lines are shed and
//! counted past it). A file output is rotated by size: `events.jsonl` →
//! `events.jsonl.1` … `.keep`.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::backlog::Backlog;
use super::format::Format;
use super::{Output, Sink, SinkError};

/// Unwritten bytes kept in memory while the output fails.
pub const BACKLOG_BYTES: usize = 16 << 20;
/// A flush is attempted once this much is queued.
const FLUSH_AT: usize = 256 * 1024;
/// Lines handed to one `writev`.
const BATCH_LINES: usize = 512;
/// Written lines' buffers kept for new lines, so a steady stream does not
/// allocate and free one per line: at most one batch, of ordinary lines.
/// A spare more than twice the size a line needs is dropped instead, so
/// the backlog's bound (counted in line bytes) stays near its memory.
const SPARE_LINES: usize = BATCH_LINES;
const SPARE_LINE_BYTES: usize = 4096;

/// Size rotation of a file output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file holds this many bytes; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` is the newest).
    pub keep: u32,
}

enum Target {
    Stream(Box<dyn Write + Send>),
    File {
        path: PathBuf,
        /// None after a failed reopen; retried at the next flush.
        file: Option<File>,
        size: u64,
        rotation: Rotation,
    },
}

/// Counters for status and metrics.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct JsonlStats {
    /// Lines dropped from the backlog to keep it within its bound.
    pub shed_lines: u64,
    pub rotations: u64,
}

pub struct JsonLines {
    target: Target,
    label: String,
    backlog: Backlog<Vec<u8>>,
    /// Buffers of written lines, for reuse.
    spare: Vec<Vec<u8>>,
    /// Bytes of the backlog's first line already written.
    head_written: usize,
    rotations: u64,
    format: Format,
    /// Records the format has no mapping for, not written.
    unmapped: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

impl JsonLines {
    /// `None` writes to stdout.
    pub fn open(path: Option<&Path>, rotation: Rotation) -> Result<JsonLines, SinkError> {
        let Some(p) = path else {
            let mut s = JsonLines::from_writer(Box::new(std::io::stdout()));
            s.label = "stdout".into();
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
        let file = open_append(p).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        let mut s = JsonLines::with_target(Target::File {
            path: p.to_path_buf(),
            file: Some(file),
            size,
            rotation,
        });
        s.label = p.display().to_string();
        // A line torn by a crash mid-write is ended, so it stays one bad
        // line instead of corrupting the first new one.
        if size > 0 && !ends_with_newline(p, size) {
            s.backlog.push(b"\n".to_vec(), false);
        }
        Ok(s)
    }

    pub fn from_writer(w: Box<dyn Write + Send>) -> JsonLines {
        JsonLines::with_target(Target::Stream(w))
    }

    fn with_target(target: Target) -> JsonLines {
        JsonLines {
            target,
            label: String::new(),
            backlog: Backlog::new(BACKLOG_BYTES, Vec::len),
            spare: Vec::new(),
            head_written: 0,
            rotations: 0,
            format: Format::Native,
            unmapped: 0,
        }
    }

    /// Writes `format` instead of native records.
    pub fn with_format(mut self, format: Format) -> JsonLines {
        self.format = format;
        self
    }

    /// Changes the backlog's bound (tests use a small one).
    pub fn with_backlog_bytes(mut self, max_bytes: usize) -> JsonLines {
        self.backlog = Backlog::new(max_bytes, Vec::len);
        self
    }

    pub fn stats(&self) -> JsonlStats {
        JsonlStats {
            shed_lines: self.backlog.shed,
            rotations: self.rotations,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.backlog.bytes() - self.head_written
    }

    /// Renames `path` → `path.1` → … → `path.keep` (the oldest goes) and
    /// starts a new file.
    fn rotate(&mut self) -> std::io::Result<()> {
        let Target::File {
            path,
            file,
            size,
            rotation,
        } = &mut self.target
        else {
            return Ok(());
        };
        let numbered = |n: u32| {
            let mut s = path.as_os_str().to_owned();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        if rotation.keep == 0 {
            ignore_missing(std::fs::remove_file(&*path))?;
        } else {
            for n in (1..rotation.keep).rev() {
                ignore_missing(std::fs::rename(numbered(n), numbered(n + 1)))?;
            }
            ignore_missing(std::fs::rename(&*path, numbered(1)))?;
        }
        *file = None;
        *size = 0;
        self.rotations += 1;
        *file = Some(open_append(path)?);
        Ok(())
    }

    /// Writes what it can of the backlog; the rest stays for next time.
    fn drain(&mut self) -> std::io::Result<()> {
        while !self.backlog.is_empty() {
            let mut room = usize::MAX;
            let mut rotate = false;
            if let Target::File {
                path,
                file,
                size,
                rotation,
            } = &mut self.target
            {
                if file.is_none() {
                    let f = open_append(path)?;
                    *size = f.metadata()?.len();
                    *file = Some(f);
                }
                // Rotate before a line that would not fit, so a file stays
                // within max_bytes unless one line alone is larger.
                if rotation.max_bytes > 0 && self.head_written == 0 {
                    let next = self.backlog.front().map_or(0, |l| l.len() as u64);
                    rotate = *size > 0 && size.saturating_add(next) > rotation.max_bytes;
                    room = rotation.max_bytes.saturating_sub(*size) as usize;
                }
            }
            if rotate {
                self.rotate()?;
                continue;
            }
            // Whole lines that fit before the rotation point (at least one).
            let mut slices = Vec::with_capacity(BATCH_LINES.min(self.backlog.len()));
            let mut total = 0usize;
            for (i, line) in self.backlog.iter().enumerate() {
                let part = if i == 0 {
                    &line[self.head_written..]
                } else {
                    &line[..]
                };
                if i > 0 && (total + part.len() > room || slices.len() == BATCH_LINES) {
                    break;
                }
                total += part.len();
                slices.push(IoSlice::new(part));
            }
            let n = match &mut self.target {
                Target::Stream(w) => w.write_vectored(&slices),
                Target::File { file, .. } => match file.as_mut() {
                    Some(f) => f.write_vectored(&slices),
                    None => Ok(0),
                },
            };
            let n = match n {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Target::File { size, .. } = &mut self.target {
                *size += n as u64;
            }
            self.consume(n);
        }
        if let Target::Stream(w) = &mut self.target {
            w.flush()?;
        }
        Ok(())
    }

    /// Drops `n` written bytes off the front of the backlog.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.backlog.front() else {
                return;
            };
            let left = front.len() - self.head_written;
            if n >= left {
                n -= left;
                self.head_written = 0;
                if let Some(line) = self.backlog.pop_front() {
                    if self.spare.len() < SPARE_LINES && line.capacity() <= SPARE_LINE_BYTES {
                        self.spare.push(line);
                    }
                }
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn ends_with_newline(path: &Path, size: u64) -> bool {
    let mut last = [0u8; 1];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut last, size - 1))
        .map(|_| last[0] == b'\n')
        .unwrap_or(true)
}

impl Sink for JsonLines {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, out: &Output<'_>, line: &str) -> Result<(), SinkError> {
        let rendered;
        let line = match self.format {
            Format::Native => line,
            f => match f.render(out, line) {
                Some(l) => {
                    rendered = l;
                    &rendered
                }
                None => {
                    self.unmapped += 1;
                    return Ok(());
                }
            },
        };
        let need = line.len() + 1;
        let mut buf = match self.spare.pop() {
            Some(b) if b.capacity() <= 2 * need => b,
            _ => Vec::new(),
        };
        buf.clear();
        buf.reserve_exact(need);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.backlog.push(buf, self.head_written > 0);
        if self.backlog.bytes() >= FLUSH_AT {
            self.drain()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.drain()?;
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        let size = match &self.target {
            Target::File { size, .. } => Some(*size),
            Target::Stream(_) => None,
        };
        serde_json::json!({
            "path": self.label,
            "format": self.format.as_str(),
            "unmapped": self.unmapped,
            "bytes": size,
            "pending_bytes": self.pending_bytes(),
            "pending_lines": self.backlog.len(),
            "shed_lines": self.backlog.shed,
            "rotations": self.rotations,
        })
    }

    fn observe(&self, m: &crate::service::metrics::Metrics) {
        super::observe_backlog(m, "jsonl", self.backlog.shed, self.pending_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Takes bytes until its allowance runs out, then fails like a full disk.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<Mutex<Vec<u8>>>,
        /// Bytes it still accepts; None is unlimited.
        room: Arc<Mutex<Option<usize>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().expect("lock");
            let n = match *room {
                None => buf.len(),
                Some(0) => return Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
                Some(r) => r.min(buf.len()),
            };
            if let Some(r) = room.as_mut() {
                *r -= n;
            }
            self.data.lock().expect("lock").extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Command record `n`, its detail `detail` bytes long.
    fn command(n: usize, detail: usize) -> crate::sink::CommandRecord {
        crate::sink::CommandRecord {
            kind: "command",
            id: format!("c{n}"),
            ts: "t".into(),
            host: "h".into(),
            topic: "x".into(),
            partition: 0,
            offset: n as i64,
            message_id: String::new(),
            result: "refused",
            detail: "d".repeat(detail),
        }
    }

    fn emit(s: &mut JsonLines, n: usize) -> Result<(), SinkError> {
        let rec = command(n, 40);
        let out = Output::Command(&rec);
        let line = out.to_json().expect("json");
        s.write(&out, &line)
    }

    fn offsets(bytes: &[u8]) -> Vec<i64> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole lines only");
                v["offset"].as_i64().unwrap_or(-1)
            })
            .collect()
    }

    #[test]
    fn a_formatted_output_writes_that_format_and_counts_what_it_leaves_out() {
        for format in [Format::Ocsf, Format::Ecs] {
            let disk = Disk::default();
            let mut s = JsonLines::from_writer(Box::new(disk.clone())).with_format(format);
            let samples = crate::sink::format::samples::samples();
            let outs = samples.outputs();
            for (_, out) in &outs {
                let native = out.to_json().expect("json");
                s.write(out, &native).expect("write");
            }
            emit(&mut s, 1).expect("a command has no mapping");
            s.flush().expect("flush");
            let text = String::from_utf8(disk.data.lock().expect("lock").clone()).expect("utf8");
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect();
            assert_eq!(lines.len(), outs.len(), "{format:?}");
            for v in &lines {
                match format {
                    Format::Ocsf => assert!(v["class_uid"].is_u64(), "{v}"),
                    _ => assert_eq!(v["ecs"]["version"], "8.11.0", "{v}"),
                }
            }
            assert_eq!(s.status()["unmapped"], 1);
            assert_eq!(s.status()["format"], format.as_str());
        }
    }

    #[test]
    fn lines_that_fail_to_write_are_kept_and_written_whole_when_space_returns() {
        let disk = Disk::default();
        let mut s = JsonLines::from_writer(Box::new(disk.clone()));
        emit(&mut s, 0).expect("buffered");
        s.flush().expect("written");
        // The disk fills 30 bytes into the next line.
        *disk.room.lock().expect("lock") = Some(30);
        for n in 1..50 {
            emit(&mut s, n).expect("buffered");
        }
        assert!(s.flush().is_err());
        assert!(s.flush().is_err(), "still full");
        assert!(s.pending_bytes() > 0);
        assert_eq!(s.status()["pending_lines"], 49);
        *disk.room.lock().expect("lock") = None;
        s.flush().expect("space is back");
        assert_eq!(s.pending_bytes(), 0);
        assert_eq!(
            offsets(&disk.data.lock().expect("lock")),
            (0..50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_long_outage_sheds_the_oldest_lines_and_counts_them() {
        let disk = Disk::default();
        *disk.room.lock().expect("lock") = Some(0);
        let mut s = JsonLines::from_writer(Box::new(disk.clone())).with_backlog_bytes(2000);
        for n in 0..100 {
            let _ = emit(&mut s, n);
        }
        let _ = s.flush();
        let shed = s.stats().shed_lines;
        assert!(shed > 80, "{shed}");
        assert!(s.pending_bytes() <= 2000);
        *disk.room.lock().expect("lock") = None;
        s.flush().expect("written");
        let got = offsets(&disk.data.lock().expect("lock"));
        // The newest survive, in order.
        assert_eq!(got.len() as u64, 100 - shed);
        assert_eq!(got.last(), Some(&99));
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn written_lines_buffers_are_reused_but_never_much_larger_than_their_new_line() {
        let disk = Disk::default();
        let mut s = JsonLines::from_writer(Box::new(disk.clone()));
        let long = |n: usize| command(n, 3000);
        for n in 0..600 {
            let rec = long(n);
            let out = Output::Command(&rec);
            s.write(&out, &out.to_json().expect("json")).expect("write");
        }
        s.flush().expect("flush");
        let spares = s.spare.len();
        assert!(spares > 0, "written lines are kept for reuse");
        let rec = long(600);
        let out = Output::Command(&rec);
        s.write(&out, &out.to_json().expect("json")).expect("write");
        assert_eq!(s.spare.len(), spares - 1, "a line of that size reuses one");
        s.flush().expect("flush");
        // The disk fills: short lines queue in reused buffers or new ones.
        *disk.room.lock().expect("lock") = Some(0);
        for n in 0..1000 {
            emit(&mut s, n).expect("buffered");
        }
        assert_eq!(s.backlog.len(), 1000);
        for line in s.backlog.iter() {
            assert!(
                line.capacity() <= 2 * line.len(),
                "a {}-byte line holds {} bytes",
                line.len(),
                line.capacity()
            );
        }
        *disk.room.lock().expect("lock") = None;
        s.flush().expect("written");
        let got = offsets(&disk.data.lock().expect("lock"));
        assert_eq!(got.len(), 1601);
        assert_eq!(&got[601..], (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_file_output_rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("vigil-jsonl-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        let mut s = JsonLines::open(Some(&path), rotation).expect("open");
        for n in 0..100 {
            emit(&mut s, n).expect("write");
            s.flush().expect("flush");
        }
        let name = |n: u32| dir.join(format!("events.jsonl.{n}"));
        assert!(name(1).exists() && name(2).exists());
        assert!(!name(3).exists(), "more rotated files than output_keep");
        let mut all = Vec::new();
        for p in [name(2), name(1), path.clone()] {
            let bytes = std::fs::read(&p).expect("read");
            assert!(
                bytes.len() <= 1000,
                "{} has {} bytes",
                p.display(),
                bytes.len()
            );
            all.extend(offsets(&bytes));
        }
        assert_eq!(all.last(), Some(&99));
        assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "{all:?}");
        assert!(s.stats().rotations >= 10);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_is_ended_before_new_lines() {
        let dir = std::env::temp_dir().join(format!("vigil-jsonl-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("events.jsonl");
        std::fs::write(&path, b"{\"offset\":0}\n{\"offs").expect("torn");
        let mut s = JsonLines::open(
            Some(&path),
            Rotation {
                max_bytes: 0,
                keep: 0,
            },
        )
        .expect("open");
        emit(&mut s, 1).expect("write");
        s.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "{\"offs");
        assert!(serde_json::from_str::<serde_json::Value>(lines[2]).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
