//! The ACPI power button: QEMU's `system_powerdown` (and so a node's graceful stop)
//! arrives as a key press on the input device named "Power Button".
//!
//! One thread per such device blocks reading `struct input_event` records; a press of
//! `KEY_POWER` calls the handler, which turns it into a signal for the init loop.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;

use crate::layout::Layout;

/// The name the ACPI button driver gives its input devices.
pub const POWER_BUTTON_NAME: &str = "Power Button";

/// `sizeof(struct input_event)` on 64-bit Linux: `timeval` (16), type, code, value.
pub const EVENT_SIZE: usize = 24;

// The parser reads the 64-bit layout; fail the build anywhere else.
const _: () = assert!(std::mem::size_of::<libc::input_event>() == EVENT_SIZE);

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// One input event, without its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// Event type (`EV_KEY`, ...).
    pub kind: u16,
    /// Key or axis code.
    pub code: u16,
    /// For keys: 1 press, 0 release, 2 autorepeat.
    pub value: i32,
}

impl InputEvent {
    /// Decodes one record as the kernel writes it (native byte order).
    pub fn parse(record: &[u8; EVENT_SIZE]) -> Self {
        InputEvent {
            kind: u16::from_ne_bytes([record[16], record[17]]),
            code: u16::from_ne_bytes([record[18], record[19]]),
            value: i32::from_ne_bytes([record[20], record[21], record[22], record[23]]),
        }
    }

    /// Whether this is the power key going down.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// The `eventN` devices whose input device is named [`POWER_BUTTON_NAME`], as paths under
/// `layout.dev/input`.
pub fn find(layout: &Layout) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(layout.sys.join("class/input")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            fs::read_to_string(e.path().join("device/name"))
                .is_ok_and(|name| name.trim() == POWER_BUTTON_NAME)
        })
        .map(|e| layout.dev.join("input").join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Reads events from `source` until it ends, calling `on_press` for each power key press.
pub fn watch_events(mut source: impl Read, on_press: &dyn Fn()) -> io::Result<()> {
    let mut record = [0u8; EVENT_SIZE];
    loop {
        match source.read_exact(&mut record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if InputEvent::parse(&record).is_power_press() {
            on_press();
        }
    }
}

/// Starts a watcher thread on every power button; returns how many were found.
pub fn watch_all(layout: &Layout, on_press: fn()) -> usize {
    let devices = find(layout);
    for device in &devices {
        let device = device.clone();
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || watch_device(device, on_press));
        if let Err(e) = spawned {
            warn!("power button: cannot start a watcher thread: {e}");
        }
    }
    devices.len()
}

fn watch_device(device: PathBuf, on_press: fn()) {
    let result = File::open(&device).and_then(|file| {
        info!("power button: watching {}", device.display());
        watch_events(file, &on_press)
    });
    if let Err(e) = result {
        warn!("power button: {} unusable: {e}", device.display());
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn record(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0xEE; 16]; // the timestamp is ignored
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(code.to_ne_bytes());
        bytes.extend(value.to_ne_bytes());
        bytes
    }

    #[test]
    fn records_decode_field_by_field() {
        let bytes: [u8; EVENT_SIZE] = record(EV_KEY, KEY_POWER, 1).try_into().unwrap();
        let event = InputEvent::parse(&bytes);
        assert_eq!(
            event,
            InputEvent {
                kind: 1,
                code: 116,
                value: 1
            }
        );
        assert!(event.is_power_press());
    }

    #[test]
    fn only_presses_of_the_power_key_count() {
        let mut stream = Vec::new();
        stream.extend(record(EV_KEY, KEY_POWER, 1)); // press
        stream.extend(record(0, 0, 0)); // EV_SYN
        stream.extend(record(EV_KEY, KEY_POWER, 0)); // release
        stream.extend(record(EV_KEY, KEY_POWER, 2)); // autorepeat
        stream.extend(record(EV_KEY, 115, 1)); // volume up
        stream.extend(record(EV_KEY, KEY_POWER, 1)); // second press
        stream.extend([1, 2, 3]); // torn record at the end is dropped
        let presses = Cell::new(0);
        watch_events(stream.as_slice(), &|| presses.set(presses.get() + 1)).unwrap();
        assert_eq!(presses.get(), 2);
    }

    #[test]
    fn power_buttons_are_found_by_device_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let device = |event: &str, name: &str| {
            let path = layout.sys.join("class/input").join(event).join("device");
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join("name"), format!("{name}\n")).unwrap();
        };
        device("event0", "AT Translated Set 2 keyboard");
        device("event2", "Power Button");
        device("event1", "Power Button");
        fs::create_dir_all(layout.sys.join("class/input/input3")).unwrap();
        assert_eq!(
            find(&layout),
            [
                layout.dev.join("input/event1"),
                layout.dev.join("input/event2")
            ]
        );
    }
}
