//! `goalrank rank`: requests as JSON lines in, chosen lists out.
//!
//! Input, one object per line (ids as in the data files):
//! `{"user": 1, "history": [1, 3], "history_labels": [1, 0], "candidates": [10, 20, ...]}`.
//! `history_labels` may be left out (all positive). Output, one object per input line:
//! `{"line": 1, "user": 1, "list": [20, ...], "scores": [..one per candidate..]}`, where `list`
//! holds L distinct candidates, best first, and `scores` are the first step's log-probabilities.

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Request};
use crate::eval::generator_rankings;
use crate::model::Generator;
use crate::{Error, Result};

/// One request as `goalrank rank` reads it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    pub user: u64,
    #[serde(default)]
    pub history: Vec<u64>,
    #[serde(default)]
    pub history_labels: Option<Vec<u8>>,
    pub candidates: Vec<u64>,
}

/// One answer of `goalrank rank`.
#[derive(Clone, Debug, Serialize)]
pub struct RankAnswer {
    pub line: usize,
    pub user: u64,
    pub list: Vec<u64>,
    pub scores: Vec<f32>,
}

/// The field of a line that does not parse as a [`RankRequest`]: a required one it lacks, the
/// first one whose value does not have its type, or `json` when the line itself is at fault
/// (syntax, not an object, a field the request does not have: the message names it).
fn blame_field(row: &str) -> &'static str {
    use serde_json::Value;
    fn fits<T: serde::de::DeserializeOwned>(value: &Value) -> bool {
        serde_json::from_value::<T>(value.clone()).is_ok()
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(row) else {
        return "json";
    };
    if let Some(missing) = ["user", "candidates"]
        .into_iter()
        .find(|name| !object.contains_key(*name))
    {
        return missing;
    }
    type Fits = fn(&Value) -> bool;
    let checks: [(&'static str, Fits); 4] = [
        ("user", fits::<u64>),
        ("history", fits::<Vec<u64>>),
        ("history_labels", fits::<Option<Vec<u8>>>),
        ("candidates", fits::<Vec<u64>>),
    ];
    checks
        .into_iter()
        .find(|(name, fits)| object.get(*name).is_some_and(|v| !fits(v)))
        .map_or("json", |(name, _)| name)
}

/// Parses the JSON-lines file `path` into dataset requests (dense ids), checking every field.
pub fn read_rank_requests(path: &Path, dataset: &Dataset) -> Result<Vec<(usize, Request)>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // A leading UTF-8 byte-order mark is skipped, as the CSV loader skips it.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::parse(path, line, "json", "not valid UTF-8")
    })?;
    let l = dataset.config.list_len;
    let item = |raw: u64, line: usize, field: &'static str| -> Result<u32> {
        dataset
            .items
            .binary_search_by_key(&raw, |i| i.raw_id)
            .map(|i| i as u32)
            .map_err(|_| {
                Error::parse(
                    path,
                    line,
                    field,
                    format!("item {raw} is not in the catalogue"),
                )
            })
    };
    let mut out = Vec::new();
    for (i, row) in text.lines().enumerate() {
        let line = i + 1;
        if row.trim().is_empty() {
            continue;
        }
        let raw: RankRequest = serde_json::from_str(row)
            .map_err(|e| Error::parse(path, line, blame_field(row), e.to_string()))?;
        let user = dataset.users.binary_search(&raw.user).map_err(|_| {
            Error::parse(
                path,
                line,
                "user",
                format!("user {} is not in the data", raw.user),
            )
        })? as u32;
        let candidates = raw
            .candidates
            .iter()
            .map(|&c| item(c, line, "candidates"))
            .collect::<Result<Vec<u32>>>()?;
        if candidates.iter().collect::<HashSet<_>>().len() != candidates.len() {
            return Err(Error::parse(
                path,
                line,
                "candidates",
                "candidates repeat an item",
            ));
        }
        if candidates.len() < l {
            return Err(Error::parse(
                path,
                line,
                "candidates",
                format!("{} candidates, at least L = {l} needed", candidates.len()),
            ));
        }
        let history = raw
            .history
            .iter()
            .map(|&h| item(h, line, "history"))
            .collect::<Result<Vec<u32>>>()?;
        let history_labels = raw.history_labels.unwrap_or_else(|| vec![1; history.len()]);
        if history_labels.len() != history.len() || history_labels.iter().any(|&y| y > 1) {
            return Err(Error::parse(
                path,
                line,
                "history_labels",
                "needs one 0 or 1 per history item",
            ));
        }
        out.push((
            line,
            Request {
                user,
                history,
                history_labels,
                logged: candidates[..l].to_vec(),
                labels: vec![0; l],
                candidates,
                time: 0,
            },
        ));
    }
    Ok(out)
}

/// Ranks every request of `path` with `model`'s greedy decoding.
pub fn rank_file(
    model: &Generator,
    dataset: &Dataset,
    path: &Path,
    device: &Device,
) -> Result<Vec<RankAnswer>> {
    let requests = read_rank_requests(path, dataset)?;
    let mut answers = Vec::with_capacity(requests.len());
    // Requests of one length are batched together.
    let mut start = 0;
    while start < requests.len() {
        let n = requests[start].1.candidates.len();
        let end = requests[start..]
            .iter()
            .position(|(_, r)| r.candidates.len() != n)
            .map_or(requests.len(), |p| start + p);
        let group: Vec<Request> = requests[start..end]
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        let rankings = generator_rankings(model, dataset, &group, 256, device)?;
        for ((line, request), ranking) in requests[start..end].iter().zip(rankings) {
            answers.push(RankAnswer {
                line: *line,
                user: dataset.users[request.user as usize],
                list: ranking
                    .list
                    .iter()
                    .map(|&i| dataset.items[i as usize].raw_id)
                    .collect(),
                scores: ranking.scores,
            });
        }
        start = end;
    }
    Ok(answers)
}
