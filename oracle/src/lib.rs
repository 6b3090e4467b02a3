//! Differential oracle over a live server: every refresh compared with a FULL recompute of the
//! defining query. The harness lands with the oracle issue; this crate holds its shared pieces.
