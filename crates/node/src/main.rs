//! `boxcutter-node`: thin binary over the `boxcutter_node` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter-node: not implemented yet")
}
