//! Experiment tables: one row per method, one value per seed and column, written as Markdown and
//! CSV with the mean ± sample standard deviation over seeds.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::files;

/// One method's values: `seeds[s][c]` is column `c` of seed `s`; `None` where the column does
/// not apply to the method.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    pub method: String,
    /// A reference (an oracle), not a method: never bold.
    pub reference: bool,
    pub seeds: Vec<Vec<Option<f64>>>,
}

/// Which way a column is better: its best mean is bold in Markdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Goal {
    Higher,
    Lower,
    /// Not a quality (times, counts): nothing bold.
    Neither,
}

/// A column: name, decimals shown in Markdown, and which way is better.
pub type Column<'a> = (&'a str, usize, Goal);

/// A table of methods against columns over seeds, plus free-text notes under it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub title: String,
    pub columns: Vec<String>,
    /// Decimals shown per column in Markdown.
    pub decimals: Vec<usize>,
    pub goals: Vec<Goal>,
    pub rows: Vec<ReportRow>,
    pub notes: Vec<String>,
}

/// Mean and sample standard deviation (0 for one value) of the present values.
pub fn mean_std(values: &[Option<f64>]) -> Option<(f64, f64)> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return None;
    }
    let n = present.len() as f64;
    let mean = present.iter().sum::<f64>() / n;
    let var = if present.len() > 1 {
        present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

impl Report {
    pub fn new(title: impl Into<String>, columns: &[Column]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|(c, _, _)| c.to_string()).collect(),
            decimals: columns.iter().map(|&(_, d, _)| d).collect(),
            goals: columns.iter().map(|&(_, _, g)| g).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Writes the list length into column names that say `@L` (`H@L` → `H@6`).
    pub fn with_list_len(mut self, list_len: usize) -> Self {
        for column in &mut self.columns {
            *column = column.replace("@L", &format!("@{list_len}"));
        }
        self
    }

    /// Adds one seed's values for `method`, creating its row on first use.
    pub fn push(&mut self, method: &str, values: Vec<Option<f64>>) {
        self.add(method, values, false);
    }

    /// Like [`Self::push`], for a reference row (an oracle) that is never bold.
    pub fn push_reference(&mut self, method: &str, values: Vec<Option<f64>>) {
        self.add(method, values, true);
    }

    fn add(&mut self, method: &str, values: Vec<Option<f64>>, reference: bool) {
        match self.rows.iter_mut().find(|r| r.method == method) {
            Some(row) => row.seeds.push(values),
            None => self.rows.push(ReportRow {
                method: method.to_string(),
                reference,
                seeds: vec![values],
            }),
        }
    }

    /// Mean ± std of column `c` for `row`.
    pub fn summary(&self, row: &ReportRow, c: usize) -> Option<(f64, f64)> {
        let values: Vec<Option<f64>> = row
            .seeds
            .iter()
            .map(|s| s.get(c).copied().flatten())
            .collect();
        mean_std(&values)
    }

    /// The table as Markdown: `mean ± std` per cell, the best mean of each quality column in
    /// bold.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        let _ = writeln!(out, "| method | {} |", self.columns.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(self.columns.len()));
        let best: Vec<Option<f64>> = (0..self.columns.len())
            .map(|c| {
                let means = self
                    .rows
                    .iter()
                    .filter(|r| !r.reference)
                    .filter_map(|r| self.summary(r, c).map(|(m, _)| m));
                match self.goals.get(c) {
                    Some(Goal::Higher) => means.reduce(f64::max),
                    Some(Goal::Lower) => means.reduce(f64::min),
                    _ => None,
                }
            })
            .collect();
        for row in &self.rows {
            let cells: Vec<String> = (0..self.columns.len())
                .map(|c| match self.summary(row, c) {
                    None => "–".to_string(),
                    Some((mean, std)) => {
                        let d = self.decimals.get(c).copied().unwrap_or(4);
                        let cell = if row.seeds.len() > 1 {
                            format!("{mean:.d$} ± {std:.d$}")
                        } else {
                            format!("{mean:.d$}")
                        };
                        if !row.reference && best[c] == Some(mean) {
                            format!("**{cell}**")
                        } else {
                            cell
                        }
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", row.method, cells.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// The table as CSV: `method,seeds,<col>_mean,<col>_std,...`; empty cells where a column
    /// does not apply.
    pub fn csv(&self) -> String {
        let mut out = String::from("method,seeds");
        for c in &self.columns {
            let key = csv_key(c);
            let _ = write!(out, ",{key}_mean,{key}_std");
        }
        out.push('\n');
        for row in &self.rows {
            let _ = write!(
                out,
                "\"{}\",{}",
                row.method.replace('"', "\"\""),
                row.seeds.len()
            );
            for c in 0..self.columns.len() {
                match self.summary(row, c) {
                    Some((mean, std)) => {
                        let _ = write!(out, ",{mean},{std}");
                    }
                    None => out.push_str(",,"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes `<dir>/<name>.md`, `.csv` and `.json` (every seed's values), each atomically.
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        files::write_bytes(&dir.join(format!("{name}.md")), self.markdown().as_bytes())?;
        files::write_bytes(&dir.join(format!("{name}.csv")), self.csv().as_bytes())?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| crate::Error::Write {
            path: dir.join(format!("{name}.json")),
            source: std::io::Error::other(e),
        })?;
        files::write_bytes(&dir.join(format!("{name}.json")), &json)
    }
}

/// A column name as a CSV key: lower case, `@` → `at`, other non-alphanumerics → `_`.
fn csv_key(column: &str) -> String {
    column
        .to_lowercase()
        .replace('@', "_at_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[Some(1.0), Some(2.0), Some(3.0)]).unwrap();
        assert!((m - 2.0).abs() < 1e-12);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[None, None]), None);
        assert_eq!(mean_std(&[Some(4.0), None]), Some((4.0, 0.0)));
    }

    #[test]
    fn markdown_and_csv_cells() {
        let mut r = Report::new(
            "t",
            &[
                ("H@6", 2, Goal::Higher),
                ("train s", 0, Goal::Neither),
                ("regret", 1, Goal::Lower),
            ],
        );
        r.push("a", vec![Some(0.5), Some(10.0), Some(0.3)]);
        r.push("a", vec![Some(0.7), Some(20.0), Some(0.3)]);
        r.push("b", vec![Some(0.1), None, Some(0.2)]);
        let md = r.markdown();
        assert!(
            md.contains("| a | **0.60 ± 0.14** | 15 ± 7 | 0.3 ± 0.0 |"),
            "{md}"
        );
        assert!(md.contains("| b | 0.10 | – | **0.2** |"), "{md}");
        let csv = r.csv();
        assert!(csv.starts_with(
            "method,seeds,h_at_6_mean,h_at_6_std,train_s_mean,train_s_std,regret_mean,regret_std\n"
        ));
        assert!(csv.contains("\"b\",1,0.1,0,,,0.2,0\n"), "{csv}");
    }
}
