//! SASL.
pub mod digest_md5;
