//! `RateLimiter` and `TokenBucket`: I/O limits shared by drives and network interfaces.

use serde::{Deserialize, Serialize};

/// Independent bandwidth (bytes) and operations limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bucket of bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Bucket of operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// A token bucket: `size` tokens refilled every `refill_time` ms, plus a one-time burst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Tokens the bucket holds.
    pub size: u64,
    /// Milliseconds to refill the whole bucket.
    pub refill_time: u64,
    /// Extra tokens available once, at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}
