//! `boxcutter-orchestrator`: thin binary over the `boxcutter_orchestrator` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter-orchestrator: not implemented yet")
}
