//! The durable spool: an append-only log of records not yet acknowledged by
//! Kafka, in segment files under `<state_dir>/spool/`. Each record carries a
//! CRC32 over its class, sequence number and payload, so a torn write at the
//! tail (a crash mid-append) is detected and cut off, never replayed.
//! An append that fails midway (a full disk) is cut back to the last whole
//! record before the next append, so a failed write never leaves a record
//! fragment in front of good ones. Alerts and actions are synced before the
//! append returns; telemetry is not (losing the last telemetry on a crash
//! is accepted, losing an alert is not). Records up to the acknowledged
//! watermark (`acked`, an atomic state file) are dropped segment by segment.
//!
//! Record layout (little endian): magic `VS` (2), class (1), reserved (1),
//! payload length (4), sequence (8), crc32 (4), payload.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::statefile;

const MAGIC: [u8; 2] = *b"VS";
const HEADER: usize = 20;
/// Longest payload accepted: a record is one JSON line.
pub const MAX_PAYLOAD: usize = 1 << 20;
const ACKED_FILE: &str = "acked";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool record of {0} bytes is larger than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Class {
    Telemetry = 0,
    Alert = 1,
    Action = 2,
}

impl Class {
    fn from_u8(v: u8) -> Option<Class> {
        match v {
            0 => Some(Class::Telemetry),
            1 => Some(Class::Alert),
            2 => Some(Class::Action),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Telemetry => "telemetry",
            Class::Alert => "alert",
            Class::Action => "action",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SpoolConfig {
    /// Bytes on disk, all segments together.
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Telemetry is refused once the spool holds this fraction of
    /// `max_bytes`, keeping the rest for alerts and actions.
    pub telemetry_share: f64,
}

/// What the spool shed or skipped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub shed_telemetry: u64,
    pub shed_alerts_actions: u64,
    /// Torn records cut from the tail at open (a crash mid-append).
    pub torn_skipped: u64,
    /// Bytes of damaged segments skipped (checksum mismatch before the tail).
    pub corrupt_bytes_skipped: u64,
    /// Failed appends whose partial bytes were cut off before the next one.
    pub partial_writes_cut: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Last sequence in the segment (first_seq - 1 when empty).
    last_seq: u64,
    path: PathBuf,
    len: u64,
}

pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    next_seq: u64,
    acked: u64,
    acked_saved: u64,
    /// When the watermark was last saved.
    acked_saved_at: Instant,
    /// An append failed midway: the active segment may hold a fragment
    /// after its last whole record (`Segment::len`).
    dirty_tail: bool,
    /// Test hook: the next append writes this many bytes, then fails.
    #[cfg(test)]
    pub(crate) fail_after: Option<usize>,
    pub stats: SpoolStats,
    /// Read position cache: (sequence it points at, segment first_seq, byte offset).
    cursor: Option<(u64, u64, u64)>,
}

fn crc(class: u8, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[class]);
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode(class: Class, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.push(class as u8);
    buf.push(0);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&crc(class as u8, seq, payload).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// One decoded record, or why the bytes at this offset are not one.
enum Decoded {
    Record {
        class: Class,
        seq: u64,
        payload: Vec<u8>,
        len: usize,
    },
    /// Not enough bytes: a torn tail.
    Short,
    Bad,
}

fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER {
        return Decoded::Short;
    }
    if buf[..2] != MAGIC {
        return Decoded::Bad;
    }
    let Some(class) = Class::from_u8(buf[2]) else {
        return Decoded::Bad;
    };
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Bad;
    }
    let mut seq_b = [0u8; 8];
    seq_b.copy_from_slice(&buf[8..16]);
    let seq = u64::from_le_bytes(seq_b);
    let want = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if buf.len() < HEADER + len {
        return Decoded::Short;
    }
    let payload = &buf[HEADER..HEADER + len];
    if crc(class as u8, seq, payload) != want {
        return Decoded::Bad;
    }
    Decoded::Record {
        class,
        seq,
        payload: payload.to_vec(),
        len: HEADER + len,
    }
}

impl Spool {
    fn io<'a>(&self, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
        move |source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Opens (or creates) the spool, validating every segment: a torn tail
    /// is truncated, a damaged middle is skipped, acknowledged segments go.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // A corrupt watermark is moved aside: everything spooled is then
        // produced again (duplicates, never loss).
        let acked = statefile::load(&dir.join(ACKED_FILE), |b| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| "not a sequence number".to_string())
        })
        .found()
        .unwrap_or(0);
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let stem = p.file_name()?.to_str()?.strip_suffix(".seg")?;
                Some((stem.parse().ok()?, p))
            })
            .collect();
        names.sort();
        let mut sp = Spool {
            dir: dir.to_path_buf(),
            cfg,
            segments: VecDeque::new(),
            writer: None,
            next_seq: acked + 1,
            acked,
            acked_saved: acked,
            acked_saved_at: Instant::now(),
            dirty_tail: false,
            #[cfg(test)]
            fail_after: None,
            stats: SpoolStats::default(),
            cursor: None,
        };
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let seg = sp.validate(first_seq, path, last)?;
            sp.next_seq = sp.next_seq.max(seg.last_seq + 1);
            sp.segments.push_back(seg);
        }
        // Segments are deleted as soon as they are acknowledged, the
        // watermark is saved at most once a second: after a crash it can
        // trail the first record still here. What is gone was acknowledged;
        // left behind, the producer would wait for it forever and the spool
        // would never drain again.
        if let Some(front) = sp.segments.front() {
            if front.first_seq > sp.acked + 1 {
                sp.acked = front.first_seq - 1;
            }
        }
        sp.drop_acked()?;
        Ok(sp)
    }

    fn validate(
        &mut self,
        first_seq: u64,
        path: PathBuf,
        last: bool,
    ) -> Result<Segment, SpoolError> {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(self.io(&path))?;
        let mut off = 0usize;
        let mut last_seq = first_seq.saturating_sub(1);
        loop {
            match decode(&bytes[off..]) {
                Decoded::Record { seq, len, .. } => {
                    last_seq = seq;
                    off += len;
                }
                Decoded::Short if off == bytes.len() => break,
                Decoded::Short if last => {
                    self.stats.torn_skipped += 1;
                    tracing::warn!(
                        "spool {}: torn record at byte {off} (crash mid-write); cut off",
                        path.display()
                    );
                    break;
                }
                Decoded::Short | Decoded::Bad => {
                    if last && off + HEADER >= bytes.len() {
                        self.stats.torn_skipped += 1;
                    } else {
                        self.stats.corrupt_bytes_skipped += (bytes.len() - off) as u64;
                    }
                    tracing::warn!(
                        "spool {}: damaged record at byte {off}; the {} bytes after it are skipped",
                        path.display(),
                        bytes.len() - off
                    );
                    break;
                }
            }
        }
        if off < bytes.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(self.io(&path))?;
            f.set_len(off as u64).map_err(self.io(&path))?;
            f.sync_all().map_err(self.io(&path))?;
        }
        Ok(Segment {
            first_seq,
            last_seq,
            path,
            len: off as u64,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Records written and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.next_seq - 1 - self.acked
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends a record; `None` when it was shed because the spool is full.
    pub fn append(&mut self, class: Class, payload: &[u8]) -> Result<Option<u64>, SpoolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let size = self.bytes() + (HEADER + payload.len()) as u64;
        let limit = match class {
            Class::Telemetry => (self.cfg.max_bytes as f64 * self.cfg.telemetry_share) as u64,
            _ => self.cfg.max_bytes,
        };
        if size > limit {
            match class {
                Class::Telemetry => self.stats.shed_telemetry += 1,
                _ => self.stats.shed_alerts_actions += 1,
            }
            return Ok(None);
        }
        if self.dirty_tail {
            self.cut_partial()?;
        }
        let seq = self.next_seq;
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.len >= self.cfg.segment_bytes);
        if rotate || self.writer.is_none() {
            if rotate {
                let path = self.dir.join(format!("{seq:020}.seg"));
                self.segments.push_back(Segment {
                    first_seq: seq,
                    last_seq: seq - 1,
                    path,
                    len: 0,
                });
            }
            let path = self
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(self.io(&path))?;
            self.writer = Some(f);
        }
        let buf = encode(class, seq, payload);
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        if let Some(w) = self.writer.as_mut() {
            #[cfg(test)]
            let written = match self.fail_after.take() {
                Some(n) => w
                    .write_all(&buf[..n.min(buf.len())])
                    .and(Err(std::io::Error::from_raw_os_error(libc::ENOSPC))),
                None => w.write_all(&buf),
            };
            #[cfg(not(test))]
            let written = w.write_all(&buf);
            let synced = written.and_then(|()| {
                if class == Class::Telemetry {
                    Ok(())
                } else {
                    w.sync_data()
                }
            });
            if let Err(source) = synced {
                // Some of the record may be in the file: cut before the next append.
                self.dirty_tail = true;
                return Err(SpoolError::Io { path, source });
            }
        }
        if let Some(s) = self.segments.back_mut() {
            s.len += buf.len() as u64;
            s.last_seq = seq;
        }
        self.next_seq += 1;
        Ok(Some(seq))
    }

    /// Cuts the active segment back to its last whole record after a
    /// failed append, and reopens the writer at that end.
    fn cut_partial(&mut self) -> Result<(), SpoolError> {
        self.writer = None;
        if let Some(seg) = self.segments.back() {
            let (path, len) = (seg.path.clone(), seg.len);
            match OpenOptions::new().write(true).open(&path) {
                Ok(f) => {
                    f.set_len(len).map_err(self.io(&path))?;
                    f.sync_data().map_err(self.io(&path))?;
                }
                // Never created: nothing to cut.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
            self.cursor = None;
        }
        self.dirty_tail = false;
        self.stats.partial_writes_cut += 1;
        Ok(())
    }

    /// Reads up to `max` records starting at sequence `from`.
    pub fn read(
        &mut self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Class, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| s.last_seq >= from && s.len > 0)
        else {
            return Ok(out);
        };
        for seg in self.segments.iter().skip(idx) {
            if out.len() >= max {
                break;
            }
            let start = match self.cursor {
                Some((seq, first, off)) if seq == from && first == seg.first_seq => off,
                _ => 0,
            };
            let mut f = File::open(&seg.path).map_err(|source| SpoolError::Io {
                path: seg.path.clone(),
                source,
            })?;
            f.seek(SeekFrom::Start(start))
                .map_err(|source| SpoolError::Io {
                    path: seg.path.clone(),
                    source,
                })?;
            let mut bytes = Vec::new();
            f.take(seg.len.saturating_sub(start))
                .read_to_end(&mut bytes)
                .map_err(|source| SpoolError::Io {
                    path: seg.path.clone(),
                    source,
                })?;
            let mut off = 0usize;
            while out.len() < max {
                match decode(&bytes[off..]) {
                    Decoded::Record {
                        class,
                        seq,
                        payload,
                        len,
                    } => {
                        off += len;
                        if seq >= from {
                            out.push((seq, class, payload));
                        }
                    }
                    _ => break,
                }
            }
            if let Some((seq, _, _)) = out.last() {
                self.cursor = Some((seq + 1, seg.first_seq, start + off as u64));
            }
        }
        Ok(out)
    }

    /// Everything up to `seq` was delivered: persist the watermark (cheaply;
    /// losing an update means duplicates, not loss) and drop whole segments.
    pub fn set_acked(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq.min(self.next_seq - 1);
        self.drop_acked()?;
        // A synced save per ack would cost more than the records: every
        // 256 acks, or a second after the last save.
        if self.acked - self.acked_saved >= 256
            || self.acked_saved_at.elapsed() >= Duration::from_secs(1)
        {
            self.save_acked()?;
        }
        Ok(())
    }

    fn save_acked(&mut self) -> Result<(), SpoolError> {
        if self.acked == self.acked_saved {
            return Ok(());
        }
        let path = self.dir.join(ACKED_FILE);
        statefile::write(
            &path,
            self.acked.to_string().as_bytes(),
            statefile::Sync::Full,
        )
        .map_err(|e| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.acked_saved = self.acked;
        self.acked_saved_at = Instant::now();
        Ok(())
    }

    fn drop_acked(&mut self) -> Result<(), SpoolError> {
        while let Some(front) = self.segments.front() {
            let fully_acked = front.last_seq <= self.acked;
            let is_writer = self.segments.len() == 1;
            if !fully_acked {
                break;
            }
            if is_writer {
                // The active segment goes too once drained; the next append reopens.
                if front.len == 0 {
                    break;
                }
                self.writer = None;
            }
            let path = front.path.clone();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
            self.segments.pop_front();
            self.cursor = None;
        }
        Ok(())
    }

    /// Persists the watermark at shutdown.
    pub fn close(&mut self) -> Result<(), SpoolError> {
        self.save_acked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const CFG: SpoolConfig = SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        telemetry_share: 0.5,
    };

    #[test]
    fn records_replay_in_order_across_segments_and_reopen() {
        let d = dir("order");
        let mut s = Spool::open(&d, CFG).unwrap();
        for i in 0..500u32 {
            let c = if i % 7 == 0 {
                Class::Alert
            } else {
                Class::Telemetry
            };
            s.append(c, format!("{{\"n\":{i}}}").as_bytes()).unwrap();
        }
        assert!(s.segments.len() > 1);
        let got = s.read(1, 1000).unwrap();
        assert_eq!(got.len(), 500);
        assert!(got.windows(2).all(|w| w[0].0 + 1 == w[1].0));
        assert_eq!(got[7].1, Class::Alert);
        // Cursor reads continue where the last stopped.
        let a = s.read(1, 100).unwrap();
        let b = s.read(101, 100).unwrap();
        assert_eq!(a.last().unwrap().0 + 1, b[0].0);
        s.set_acked(250).unwrap();
        s.close().unwrap();
        drop(s);
        let mut s = Spool::open(&d, CFG).unwrap();
        assert_eq!(s.pending(), 250);
        let rest = s.read(251, 1000).unwrap();
        assert_eq!(rest.first().unwrap().2, b"{\"n\":250}");
        assert_eq!(rest.len(), 250);
        s.set_acked(500).unwrap();
        assert_eq!(s.bytes(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_watermark_saved_before_deleted_segments_does_not_hold_the_spool_after_a_crash() {
        let d = dir("gap");
        let mut s = Spool::open(&d, CFG).unwrap();
        for i in 0..3 {
            s.append(Class::Alert, format!("{{\"id\":\"a{i}\"}}").as_bytes())
                .unwrap();
        }
        // Acknowledged within the first second: the segment is deleted, the
        // watermark not yet saved.
        s.set_acked(3).unwrap();
        assert_eq!(s.bytes(), 0);
        s.append(Class::Alert, b"{\"id\":\"a3\"}").unwrap();
        s.append(Class::Alert, b"{\"id\":\"a4\"}").unwrap();
        // SIGKILL: no close, no saved watermark.
        std::mem::forget(s);
        let s = Spool::open(&d, CFG).unwrap();
        assert_eq!(
            s.acked(),
            3,
            "the watermark starts below the first record kept"
        );
        assert_eq!(s.pending(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_never_replayed() {
        let d = dir("torn");
        let mut s = Spool::open(&d, CFG).unwrap();
        s.append(Class::Alert, b"{\"id\":\"a1\"}").unwrap();
        s.append(Class::Alert, b"{\"id\":\"a2\"}").unwrap();
        let path = s.segments.back().unwrap().path.clone();
        drop(s);
        // A crash mid-append: the third record's header and half its payload.
        let third = encode(Class::Alert, 3, b"{\"id\":\"a3-long-payload\"}");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&third[..third.len() - 6]).unwrap();
        drop(f);
        let mut s = Spool::open(&d, CFG).unwrap();
        assert_eq!(s.stats.torn_skipped, 1);
        let got = s.read(1, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, b"{\"id\":\"a2\"}");
        // The next append reuses sequence 3 cleanly.
        assert_eq!(s.append(Class::Action, b"{\"id\":\"x\"}").unwrap(), Some(3));
        assert_eq!(s.read(3, 10).unwrap()[0].2, b"{\"id\":\"x\"}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_partial_append_is_cut_at_the_next_append_not_only_at_open() {
        let d = dir("partial");
        let mut s = Spool::open(&d, CFG).unwrap();
        s.append(Class::Alert, b"{\"id\":\"a1\"}").unwrap();
        // The disk fills up 10 bytes into the second record.
        s.fail_after = Some(10);
        assert!(s.append(Class::Alert, b"{\"id\":\"a2\"}").is_err());
        let path = s.segments.back().unwrap().path.clone();
        let good = s.segments.back().unwrap().len;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good + 10);
        // Space is back: the fragment goes, the record takes its sequence.
        assert_eq!(s.append(Class::Alert, b"{\"id\":\"a2\"}").unwrap(), Some(2));
        s.append(Class::Action, b"{\"id\":\"a3\"}").unwrap();
        let got: Vec<Vec<u8>> = s.read(1, 10).unwrap().into_iter().map(|r| r.2).collect();
        assert_eq!(
            got,
            [
                &b"{\"id\":\"a1\"}"[..],
                b"{\"id\":\"a2\"}",
                b"{\"id\":\"a3\"}"
            ]
        );
        assert_eq!(s.stats.partial_writes_cut, 1);
        drop(s);
        // Nothing damaged is found at the next start either.
        let mut s = Spool::open(&d, CFG).unwrap();
        assert_eq!(s.stats, SpoolStats::default());
        assert_eq!(s.read(1, 10).unwrap().len(), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_watermark_is_moved_aside_and_everything_replays() {
        let d = dir("acked");
        let mut s = Spool::open(&d, CFG).unwrap();
        for i in 0..3u8 {
            s.append(Class::Alert, &[b'x', i]).unwrap();
        }
        s.set_acked(1).unwrap();
        s.close().unwrap();
        drop(s);
        assert_eq!(std::fs::read_to_string(d.join(ACKED_FILE)).unwrap(), "1");
        std::fs::write(d.join(ACKED_FILE), "\u{0}garbage").unwrap();
        let s = Spool::open(&d, CFG).unwrap();
        assert_eq!(s.acked(), 0);
        assert_eq!(s.pending(), 3);
        assert!(std::fs::read_dir(&d).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("acked.corrupt-")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let d = dir("flip");
        let mut s = Spool::open(&d, CFG).unwrap();
        s.append(Class::Alert, b"{\"id\":\"a1\"}").unwrap();
        s.append(Class::Alert, b"{\"id\":\"a2\"}").unwrap();
        let path = s.segments.back().unwrap().path.clone();
        drop(s);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let mut s = Spool::open(&d, CFG).unwrap();
        let got = s.read(1, 10).unwrap();
        assert_eq!(got.len(), 1, "a corrupted record was replayed");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn when_full_telemetry_is_shed_before_alerts() {
        let d = dir("full");
        let cfg = SpoolConfig {
            max_bytes: 2000,
            segment_bytes: 512,
            telemetry_share: 0.5,
        };
        let mut s = Spool::open(&d, cfg).unwrap();
        let payload = [b'x'; 80];
        let mut telemetry = 0;
        while s.append(Class::Telemetry, &payload).unwrap().is_some() {
            telemetry += 1;
        }
        assert_eq!(s.stats.shed_telemetry, 1);
        let mut alerts = 0;
        while s.append(Class::Alert, &payload).unwrap().is_some() {
            alerts += 1;
        }
        assert!(
            alerts >= telemetry - 1,
            "{alerts} alerts after {telemetry} telemetry"
        );
        assert_eq!(s.stats.shed_alerts_actions, 1);
        assert!(s.bytes() <= 2000);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
