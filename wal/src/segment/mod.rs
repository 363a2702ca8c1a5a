//! Segments: the files the log is made of.

pub mod file;
pub mod format;
pub mod spare;

pub use file::SegmentFile;
pub use format::{Seal, SegmentHeader};
