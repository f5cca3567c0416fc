//! AWS Signature Version 4 (in progress).
