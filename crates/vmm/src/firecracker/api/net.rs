//! `PUT /network-interfaces/{iface_id}`: virtio-net devices on host TAP devices.

use std::fmt;
use std::str::FromStr;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::{RateLimiter, Request};

/// `NetworkInterface` (pre-boot only). Firecracker opens the TAP device `host_dev_name`
/// when it receives the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// The interface's id: letters, digits and `_`; also the path segment.
    pub iface_id: String,
    /// The host TAP device (at most 15 bytes).
    pub host_dev_name: String,
    /// The guest's MAC address; Firecracker leaves it to the guest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
    /// Limits on what the guest receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limits on what the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    /// Interface `iface_id` on TAP `host_dev_name` with MAC `guest_mac`, no rate limits.
    pub fn new(
        iface_id: impl Into<String>,
        host_dev_name: impl Into<String>,
        mac: MacAddr,
    ) -> Self {
        Self {
            iface_id: iface_id.into(),
            host_dev_name: host_dev_name.into(),
            guest_mac: Some(mac),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

impl Request for NetworkInterface {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        format!("/network-interfaces/{}", self.iface_id)
    }
}

/// A network interface as Firecracker reports it in `GET /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterfaceInfo {
    /// The interface's id.
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    /// The guest's MAC address.
    #[serde(default)]
    pub guest_mac: Option<MacAddr>,
}

/// An Ethernet MAC address, written `06:00:ac:10:00:02` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex pairs separated by ':'")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMac(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        match parts.next() {
            None => Ok(MacAddr(bytes)),
            Some(_) => Err(invalid()),
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
