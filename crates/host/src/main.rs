//! `boxcutter-host`: thin binary over the `boxcutter_host` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter-host: not implemented yet")
}
