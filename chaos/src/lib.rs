//! Multi-node fault rig (coordinator + workers as separate local clusters). Lands with the
//! Citus chaos issue.
