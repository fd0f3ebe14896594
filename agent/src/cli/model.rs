//! `vigil model train|score`: the agent's Isolation Forest, with the
//! agent's settings, on feature vectors read from a CSV file (one vector
//! per line, numbers only; an all-text first line is a header). The model
//! file is the agent's own baseline format (`iforest.json`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ndarray::ArrayView2;
use vigil::detect::anomaly::{train_matrix, AnomalyConfig, Model};

/// Longest line read, in bytes (a 16-feature vector needs under 500).
const MAX_LINE: usize = 64 * 1024;
/// Most columns per vector.
const MAX_COLUMNS: usize = 1024;
/// Most values held for training (128 MiB of f64): the forest samples
/// ψ rows per tree, but the robust baseline (medians) needs every row.
const MAX_TRAIN_VALUES: usize = 16 << 20;
/// Largest model file read.
const MAX_MODEL_BYTES: u64 = 256 << 20;
/// Vectors scored per batch (each batch walks the forest once).
const SCORE_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line} is longer than {MAX_LINE} bytes")]
    LongLine { path: PathBuf, line: usize },
    #[error("{path}: line {line} is not UTF-8")]
    NotText { path: PathBuf, line: usize },
    #[error("{path}: line {line}, column {column}: {value:?} is not a number")]
    NotANumber {
        path: PathBuf,
        line: usize,
        column: usize,
        value: String,
    },
    #[error("{path}: line {line}, column {column}: {value} is not finite")]
    NotFinite {
        path: PathBuf,
        line: usize,
        column: usize,
        value: String,
    },
    #[error("{path}: line {line} has {found} columns, expected {expected}")]
    Columns {
        path: PathBuf,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{path}: line {line} has {found} columns, more than {MAX_COLUMNS}")]
    TooWide {
        path: PathBuf,
        line: usize,
        found: usize,
    },
    #[error("{path}: more than {max} vectors of {columns} columns to train on (at most {MAX_TRAIN_VALUES} values)")]
    TooMany {
        path: PathBuf,
        max: usize,
        columns: usize,
    },
    #[error(
        "{path}: {found} vectors, the agent trains on at least {min} (detect.anomaly.min_train)"
    )]
    TooFew {
        path: PathBuf,
        found: usize,
        min: usize,
    },
    #[error("{path}: larger than {MAX_MODEL_BYTES} bytes")]
    ModelTooLarge { path: PathBuf },
    #[error("{path}: not a model: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("{path}: writing the model: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Vectors from a CSV file, one per line, with the number of each line.
struct Vectors<R> {
    path: PathBuf,
    reader: R,
    line: usize,
    /// Columns every vector must have, once known.
    columns: Option<usize>,
    buf: Vec<u8>,
}

impl Vectors<BufReader<File>> {
    fn open(path: &Path, columns: Option<usize>) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Vectors::new(path, BufReader::new(file), columns))
    }
}

impl<R: BufRead> Vectors<R> {
    fn new(path: &Path, reader: R, columns: Option<usize>) -> Self {
        Vectors {
            path: path.to_path_buf(),
            reader,
            line: 0,
            columns,
            buf: Vec::new(),
        }
    }

    /// The next vector appended to `out`, false at the end of the file.
    /// Blank lines are skipped; so is a first line of text only (a header).
    fn next_into(&mut self, out: &mut Vec<f64>) -> Result<bool, ModelError> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ModelError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if self.buf.len() > MAX_LINE {
                return Err(ModelError::LongLine {
                    path: self.path.clone(),
                    line: self.line,
                });
            }
            let text = std::str::from_utf8(&self.buf).map_err(|_| ModelError::NotText {
                path: self.path.clone(),
                line: self.line,
            })?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields.len() > MAX_COLUMNS {
                return Err(ModelError::TooWide {
                    path: self.path.clone(),
                    line: self.line,
                    found: fields.len(),
                });
            }
            if self.line == 1 && fields.iter().all(|f| f.parse::<f64>().is_err()) {
                continue;
            }
            let expected = *self.columns.get_or_insert(fields.len());
            if fields.len() != expected {
                return Err(ModelError::Columns {
                    path: self.path.clone(),
                    line: self.line,
                    found: fields.len(),
                    expected,
                });
            }
            for (i, f) in fields.iter().enumerate() {
                let v: f64 = f.parse().map_err(|_| ModelError::NotANumber {
                    path: self.path.clone(),
                    line: self.line,
                    column: i + 1,
                    value: f.chars().take(40).collect(),
                })?;
                if !v.is_finite() {
                    return Err(ModelError::NotFinite {
                        path: self.path.clone(),
                        line: self.line,
                        column: i + 1,
                        value: f.to_string(),
                    });
                }
                out.push(v);
            }
            return Ok(true);
        }
    }
}

/// The anomaly settings of `config`, or the agent's defaults.
fn settings(config: Option<&Path>) -> anyhow::Result<AnomalyConfig> {
    Ok(match config {
        Some(_) => super::load_config(config)?.detect.anomaly,
        None => AnomalyConfig::default(),
    })
}

/// `vigil model train`: fits the forest and the robust baseline on every
/// vector of `csv` and writes the model to `out` (atomically).
pub fn train(csv: &Path, out: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let cfg = settings(config)?;
    let mut vectors = Vectors::open(csv, None)?;
    let mut values = Vec::new();
    while vectors.next_into(&mut values)? {
        if values.len() > MAX_TRAIN_VALUES {
            let columns = vectors.columns.unwrap_or(1);
            return Err(ModelError::TooMany {
                path: csv.to_path_buf(),
                max: MAX_TRAIN_VALUES / columns,
                columns,
            }
            .into());
        }
    }
    let columns = vectors.columns.unwrap_or(1);
    let rows = values.len() / columns;
    if rows < cfg.min_train.max(2) {
        return Err(ModelError::TooFew {
            path: csv.to_path_buf(),
            found: rows,
            min: cfg.min_train.max(2),
        }
        .into());
    }
    let data = ArrayView2::from_shape((rows, columns), &values)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let model = train_matrix(data, &cfg, now);
    write_atomically(out, &serde_json::to_vec(&model)?)?;
    eprintln!(
        "trained on {rows} vectors of {columns} features ({} trees, ψ = {}, seed {}): {}",
        cfg.n_trees,
        cfg.max_samples.min(rows),
        cfg.seed,
        out.display()
    );
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let err = |source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// A model file, checked as the agent checks its baseline at start.
fn load_model(path: &Path) -> Result<Model, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io)?
        .take(MAX_MODEL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(ModelError::ModelTooLarge {
            path: path.to_path_buf(),
        });
    }
    let bad = |reason: String| ModelError::BadModel {
        path: path.to_path_buf(),
        reason,
    };
    let model: Model = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    model.validate_for(model.forest.features()).map_err(bad)?;
    Ok(model)
}

/// `vigil model score`: one score per vector of `csv` on stdout, in order.
pub fn score(model: &Path, csv: &Path) -> anyhow::Result<()> {
    let model = load_model(model)?;
    let features = model.forest.features();
    let mut vectors = Vectors::open(csv, Some(features))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut batch = Vec::with_capacity(SCORE_BATCH * features);
    loop {
        batch.clear();
        let mut more = true;
        while batch.len() < SCORE_BATCH * features {
            more = vectors.next_into(&mut batch)?;
            if !more {
                break;
            }
        }
        for s in model.forest.score_rows(&batch) {
            writeln!(out, "{s}")?;
        }
        if !more {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, columns: Option<usize>) -> Result<Vec<Vec<f64>>, ModelError> {
        let mut v = Vectors::new(Path::new("t.csv"), text.as_bytes(), columns);
        let mut rows = Vec::new();
        loop {
            let mut row = Vec::new();
            if !v.next_into(&mut row)? {
                return Ok(rows);
            }
            rows.push(row);
        }
    }

    #[test]
    fn reads_numbers_skips_a_header_and_blank_lines() {
        let rows = parse("a, b\n1, 2.5\r\n\n-3e2,4\n", None).expect("parse");
        assert_eq!(rows, vec![vec![1.0, 2.5], vec![-300.0, 4.0]]);
    }

    #[test]
    fn bad_input_is_named_by_line_and_column() {
        for (text, columns, want) in [
            (
                "1,2\n3,x\n",
                None,
                "line 2, column 2: \"x\" is not a number",
            ),
            ("1,2\n3\n", None, "line 2 has 1 columns, expected 2"),
            ("1,2,3\n", Some(2), "line 1 has 3 columns, expected 2"),
            ("1,NaN\n", None, "line 1, column 2: NaN is not finite"),
            ("1,inf\n", None, "line 1, column 2: inf is not finite"),
            ("a,1\n", None, "line 1, column 1: \"a\" is not a number"),
            (
                "1,2\nb,c\n",
                None,
                "line 2, column 1: \"b\" is not a number",
            ),
        ] {
            let e = parse(text, columns).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let long = format!("1,{}\n", "2".repeat(MAX_LINE));
        let e = parse(&long, None).expect_err("long").to_string();
        assert!(e.contains("line 1 is longer than"), "{e}");
        let wide = format!("{}\n", vec!["1"; MAX_COLUMNS + 1].join(","));
        let e = parse(&wide, None).expect_err("wide").to_string();
        assert!(e.contains("more than 1024"), "{e}");
        let mut v = Vectors::new(Path::new("t.csv"), &b"1,\xff\n"[..], None);
        let e = v
            .next_into(&mut Vec::new())
            .expect_err("binary")
            .to_string();
        assert!(e.contains("line 1 is not UTF-8"), "{e}");
    }
}
