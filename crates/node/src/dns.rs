//! A DNS forwarder for guests: listens on UDP port 53 of the node (the firewall lets
//! guests reach it only on their own gateway address) and relays each query to the
//! node's upstream resolver, so guests need no route to it.
//!
//! Each query gets its own upstream socket and a timeout: no state is shared between
//! queries, and a lost answer costs only that query.
// Limitation: UDP only; answers larger than 4096 bytes (and clients retrying over TCP)
// are not relayed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long an upstream answer may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The first IPv4 `nameserver` of a resolv.conf text, on port 53.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|addr| addr.trim().parse::<Ipv4Addr>().ok())
        .find(|addr| !addr.is_loopback())
        .map(|addr| SocketAddr::from((addr, 53)))
}

/// Relays queries arriving on `listen` to `upstream` until the process ends.
pub async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let socket = Arc::new(UdpSocket::bind(listen).await?);
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "dns receive failed");
                continue;
            }
        };
        let query = buf[..len].to_vec();
        let socket = socket.clone();
        tokio::spawn(async move {
            match relay(&query, upstream).await {
                Ok(answer) => {
                    let _ = socket.send_to(&answer, client).await;
                }
                Err(error) => tracing::debug!(%error, %client, "dns query not answered"),
            }
        });
    }
}

async fn relay(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut answer = vec![0u8; 4096];
    let len = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    answer.truncate(len);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_non_loopback_ipv4_nameserver() {
        let text = "# comment\nnameserver 127.0.0.53\nnameserver fe80::1\nnameserver 10.0.0.2\n";
        assert_eq!(
            upstream_from_resolv_conf(text),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(upstream_from_resolv_conf("search x\n"), None);
    }

    #[tokio::test]
    async fn queries_and_answers_are_relayed() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (len, from) = upstream.recv_from(&mut buf).await.unwrap();
            let mut answer = b"answer:".to_vec();
            answer.extend_from_slice(&buf[..len]);
            upstream.send_to(&answer, from).await.unwrap();
        });
        let listen = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        tokio::spawn(serve(listen, upstream_addr));
        tokio::time::sleep(Duration::from_millis(50)).await;

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"query", listen).await.unwrap();
        let mut buf = [0u8; 64];
        let len = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..len], b"answer:query");
    }
}
