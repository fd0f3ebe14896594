//! Tracepoint field offsets from tracefs `format` files, so the kernel
//! programs read the layout of the running kernel instead of a guess.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at `/sys/kernel/tracing` if needed.
pub fn ensure_mounted() -> Result<&'static str, TracefsError> {
    for root in CANDIDATES {
        if Path::new(root).join("events").is_dir() {
            return Ok(root);
        }
    }
    let root = CANDIDATES[0];
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path: root.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(root)
}

/// Field name to (offset, size) from the text of a `format` file.
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        let mut offset = None;
        let mut size = None;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = name.split('[').next().unwrap_or("");
        if let (false, Some(o), Some(s)) = (name.is_empty(), offset, size) {
            fields.insert(name.to_string(), (o, s));
        }
    }
    fields
}

pub fn read_format(
    root: &str,
    category: &str,
    name: &str,
) -> Result<HashMap<String, (u32, u32)>, TracefsError> {
    let path = format!("{root}/events/{category}/{name}/format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(parse_format(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork\nID: 311\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:40;\tsize:8;\tsigned:0;\n\
\nprint fmt: \"comm=%s\"\n";

    #[test]
    fn parses_fields_arrays_and_pointers() {
        let f = parse_format(FORK);
        assert_eq!(f.get("common_type"), Some(&(0, 2)));
        assert_eq!(f.get("parent_comm"), Some(&(8, 4)));
        assert_eq!(f.get("parent_pid"), Some(&(12, 4)));
        assert_eq!(f.get("comm"), Some(&(24, 16)));
        assert_eq!(f.get("skaddr"), Some(&(40, 8)));
        assert_eq!(f.len(), 5);
    }
}
