//! Sandbox states and the idle pool.
