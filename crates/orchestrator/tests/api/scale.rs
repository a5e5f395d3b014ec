//! The API with many VMs: listing 200 stays fast.

use boxcutter_types::orch::VmInfo;
use serde_json::json;

use crate::support::{secret, Cluster, StandInNode};
use crate::QEMU;

#[tokio::test]
async fn listing_200_vms_stays_fast() {
    let node = StandInNode::start("node-1", &secret(), 1 << 30, QEMU).await;
    let cluster = Cluster::start_with_range(&secret(), &[&node], "10.240.0.0/22").await;
    let started = std::time::Instant::now();
    for _ in 0..200 {
        cluster
            .create("admin", json!({"ram_mib": 128, "disk": "1G"}))
            .await;
    }
    let per_create = started.elapsed() / 200;
    let mut times = Vec::new();
    for _ in 0..20 {
        let at = std::time::Instant::now();
        let vms: Vec<VmInfo> = cluster.get(Some("admin"), "/v1/vms").await.unwrap();
        times.push(at.elapsed());
        assert_eq!(vms.len(), 200);
    }
    times.sort();
    eprintln!(
        "create via stand-in: {per_create:?} each; list of 200: median {:?}",
        times[10]
    );
    assert!(times[10] < std::time::Duration::from_secs(1), "{times:?}");
}
