//! Embedded durable storage (in progress).
