//! `boxcutter`: thin binary over the `boxcutter_cli` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter: not implemented yet")
}
