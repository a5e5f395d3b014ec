//! `boxcutter-proxy`: thin binary over the `boxcutter_proxy` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter-proxy: not implemented yet")
}
