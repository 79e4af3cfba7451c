//! Integration tests: one binary, one module per area.

mod app;
mod cli;
mod common;
mod fuzz;
mod gain;
mod layout;
mod loaders;
mod models;
mod reliability;
mod requests;
mod simulator;
mod train;
mod wgpu;
