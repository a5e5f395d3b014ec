//! Samples and their summary line.

use std::time::Duration;

/// Named measurements.
pub struct Samples {
    name: String,
    values: Vec<f64>,
    unit: &'static str,
}

impl Samples {
    /// Durations, printed in milliseconds.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            values: Vec::new(),
            unit: "ms",
        }
    }

    /// Other quantities in `unit`.
    pub fn with_unit(name: &str, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            values: Vec::new(),
            unit,
        }
    }

    /// Adds a duration.
    pub fn push(&mut self, d: Duration) {
        self.values.push(d.as_secs_f64() * 1000.0);
    }

    /// Adds a raw value.
    pub fn push_value(&mut self, v: f64) {
        self.values.push(v);
    }

    /// The median; `None` without samples.
    pub fn median(&self) -> Option<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return None;
        }
        Some(if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        })
    }

    /// Prints `name: median (min–max, n runs)`.
    pub fn print(&self) {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        let Some(median) = self.median() else {
            println!("{:<44} no samples", self.name);
            return;
        };
        let (min, max, n, unit) = (v[0], v[v.len() - 1], v.len(), self.unit);
        println!(
            "{:<44} median {median:>9.1} {unit}  (min {min:.1}, max {max:.1}, n={n})",
            self.name
        );
    }
}
