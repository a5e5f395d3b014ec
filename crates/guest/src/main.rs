//! `boxcutter-guest`: thin binary over the `boxcutter_guest` library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("boxcutter-guest: not implemented yet")
}
