//! `vigil rules check DIR…`: compiles Sigma rules as the daemon would and
//! lists every rule it would skip, with file:line and why.
//!
//! Exit status: non-zero only for *errors* — a path that cannot be read,
//! a file that is not valid YAML or not valid Sigma (missing title or
//! detection, unknown modifier, bad condition), a duplicate rule id — the
//! troubles that make the daemon refuse a set. Rules that are valid Sigma
//! but that vigil cannot evaluate (another log source, a field our records
//! do not carry, a correlation) are listed as unsupported and exit zero.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vigil::detect::sigma::fields::Category;

/// The reason without its specifics, for the summary by reason.
fn reason_class(reason: &str) -> String {
    let head = reason.split(" (").next().unwrap_or(reason);
    head.split(": vigil").next().unwrap_or(head).to_string()
}

pub fn check(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let set = vigil::rules::load(dirs);
    for t in &set.unsupported {
        println!(
            "{}:{}: unsupported: {}: {}",
            t.file,
            t.line,
            t.rule.as_deref().unwrap_or("-"),
            t.reason
        );
    }
    for t in &set.errors {
        eprintln!("{}:{}: error: {}", t.file, t.line, t.reason);
    }
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for t in &set.unsupported {
        *by_reason.entry(reason_class(&t.reason)).or_default() += 1;
    }
    let mut counts: Vec<(usize, String)> = by_reason.into_iter().map(|(r, n)| (n, r)).collect();
    counts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (n, r) in counts {
        println!("skipped {n:>5}  {r}");
    }
    let per: Vec<String> = Category::ALL
        .iter()
        .map(|c| format!("{} {}", c.name(), set.loaded_in(*c)))
        .collect();
    println!(
        "{} rules loaded ({}), {} unsupported, {} errors",
        set.loaded(),
        per.join(", "),
        set.unsupported.len(),
        set.errors.len()
    );
    if !set.is_good() {
        anyhow::bail!("{} errors in the Sigma rules", set.errors.len());
    }
    Ok(())
}
