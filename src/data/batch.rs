//! Requests → tensors.
//!
//! Item ids are shifted by one so that 0 pads the history. Genres become a multi-hot vector and the
//! release year a 5-year bucket (0 = unknown).

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::{Dataset, Request};

/// Year buckets: 0 unknown, 1..=YEAR_BUCKETS-1 for 5-year spans from 1900 (clamped).
pub const YEAR_BUCKETS: usize = 27;

fn year_bucket(year: Option<u16>) -> i64 {
    year.map_or(0, |y| {
        1 + ((i64::from(y) - 1900) / 5).clamp(0, YEAR_BUCKETS as i64 - 2)
    })
}

/// Features of a `[B, S]` block of items (candidates or history).
#[derive(Clone, Debug)]
pub struct ItemBatch {
    /// `[B, S]` item index + 1; 0 is padding.
    pub ids: Tensor<2, Int>,
    /// `[B, S, G]` multi-hot genres.
    pub genres: Tensor<3>,
    /// `[B, S]` year bucket.
    pub years: Tensor<2, Int>,
}

/// A batch of requests on one device.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B]` user index.
    pub users: Tensor<1, Int>,
    /// `[B, H]` history items, left-padded.
    pub history: ItemBatch,
    /// `[B, H]` history feedback (0/1; 0 for padding).
    pub history_labels: Tensor<2, Int>,
    /// `[B, H]` true where the history is padding.
    pub history_pad: Tensor<2, Bool>,
    /// `[B, N]` candidates.
    pub candidates: ItemBatch,
    /// `[B, L]` position of each logged item among the candidates.
    pub logged: Tensor<2, Int>,
    /// `[B, L]` logged labels as floats.
    pub labels: Tensor<2>,
}

impl ItemBatch {
    /// Features of `rows` (each padded on the left with `None` to `width`).
    fn new(dataset: &Dataset, rows: &[Vec<Option<u32>>], width: usize, device: &Device) -> Self {
        let b = rows.len();
        let g = dataset.genres.len().max(1);
        let mut ids = vec![0i64; b * width];
        let mut genres = vec![0f32; b * width * g];
        let mut years = vec![0i64; b * width];
        for (r, row) in rows.iter().enumerate() {
            for (s, item) in row.iter().enumerate() {
                let Some(item) = *item else { continue };
                let slot = r * width + s;
                let meta = &dataset.items[item as usize];
                ids[slot] = i64::from(item) + 1;
                years[slot] = year_bucket(meta.year);
                for &genre in &meta.genres {
                    genres[slot * g + genre as usize] = 1.0;
                }
            }
        }
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [b, width]), device),
            genres: Tensor::from_data(TensorData::new(genres, [b, width, g]), device),
            years: Tensor::from_data(TensorData::new(years, [b, width]), device),
        }
    }
}

impl Batch {
    /// Builds a batch; all requests must have as many candidates as the first and L logged items.
    pub fn new(dataset: &Dataset, requests: &[&Request], device: &Device) -> Self {
        let b = requests.len();
        let h = dataset.config.history_len.max(1);
        let l = dataset.config.list_len;

        let pad_left = |items: &[u32]| -> Vec<Option<u32>> {
            let mut row = vec![None; h - items.len().min(h)];
            row.extend(
                items[items.len().saturating_sub(h)..]
                    .iter()
                    .map(|&i| Some(i)),
            );
            row
        };
        let history_rows: Vec<Vec<Option<u32>>> =
            requests.iter().map(|r| pad_left(&r.history)).collect();
        let candidate_rows: Vec<Vec<Option<u32>>> = requests
            .iter()
            .map(|r| r.candidates.iter().map(|&i| Some(i)).collect())
            .collect();

        let mut history_labels = vec![0i64; b * h];
        let mut history_pad = vec![true; b * h];
        let mut logged = vec![0i64; b * l];
        let mut labels = vec![0f32; b * l];
        for (r, request) in requests.iter().enumerate() {
            let kept = request.history.len().min(h);
            let first = request.history.len() - kept;
            for s in 0..kept {
                let slot = r * h + (h - kept) + s;
                history_labels[slot] = i64::from(request.history_labels[first + s]);
                history_pad[slot] = false;
            }
            for (t, position) in request.logged_positions().into_iter().enumerate() {
                logged[r * l + t] = position as i64;
                labels[r * l + t] = f32::from(request.labels[t]);
            }
        }
        let n = requests.first().map_or(0, |r| r.candidates.len());
        let users: Vec<i64> = requests.iter().map(|r| i64::from(r.user)).collect();
        Self {
            users: Tensor::from_data(TensorData::new(users, [b]), device),
            history: ItemBatch::new(dataset, &history_rows, h, device),
            history_labels: Tensor::from_data(TensorData::new(history_labels, [b, h]), device),
            history_pad: Tensor::from_data(TensorData::new(history_pad, [b, h]), device),
            candidates: ItemBatch::new(dataset, &candidate_rows, n, device),
            logged: Tensor::from_data(TensorData::new(logged, [b, l]), device),
            labels: Tensor::from_data(TensorData::new(labels, [b, l]), device),
        }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.users.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
