//! Data: MovieLens loaders, the stage-1 retriever, re-ranking requests and their cache.

mod batch;
mod build;
mod cache;
pub mod movielens;
mod request;
mod retriever;
pub mod simulator;
mod source;
mod stats;

pub use batch::{Batch, ItemBatch, YEAR_BUCKETS};
pub use build::{RequestConfig, build_from_dir, dataset_name};
pub use cache::{Origin, cache_key, load_or_build};
pub use movielens::{Layout, RatingLog, detect_layout};
pub use request::{Dataset, Item, Request, RetrievalQuality, Split};
pub use retriever::{Retriever, RetrieverConfig};
pub use simulator::{SimConfig, World};
pub use source::Source;
pub use stats::{DataStats, SplitStats};
