//! Executable specifications (stateright) of the protocols pg_trickle implements.
