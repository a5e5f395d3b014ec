//! The VM lifecycle: which operation each state allows and the one transition function.
//!
//! ```text
//!            created             stop / guest exit
//! creating ──────────► running ────────────────────► stopped
//!     │                 ▲   │ ◄──────────────────────  │  ▲
//!     │ create failed   │   │          start           │  │
//!     ▼ (rolled back)   │   │ crash / adopt failed     │  │ start failed
//!   (gone)              │   ▼                          │  │
//!                       └─ failed ◄────────────────────┘──┘
//!                              │
//!        running, stopped, failed ──destroy──► destroying ──► (gone)
//! ```

use boxcutter_types::VmState;

/// Something that moves a VM between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Creation finished: the guest is ready.
    Created,
    /// A start or restart finished: the guest is ready again.
    Started,
    /// The guest was powered off, by us or by itself.
    Stopped,
    /// Start, or the guest itself, failed.
    Failed,
    /// Destruction began.
    DestroyBegun,
}

/// An operation a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Boot a stopped VM.
    Start,
    /// Power off a running VM.
    Stop,
    /// Power off and boot again.
    Restart,
    /// Remove the VM and everything it holds.
    Destroy,
    /// Copy the VM's disk into a new VM.
    Copy,
    /// Change the description.
    Describe,
}

impl Operation {
    /// The lowercase name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Destroy => "destroy",
            Operation::Copy => "copy",
            Operation::Describe => "describe",
        }
    }
}

/// An operation refused because of the VM's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a VM that is {}", op.as_str(), state.as_str())]
pub struct Refused {
    /// The operation.
    pub op: Operation,
    /// The VM's state.
    pub state: VmState,
}

/// Whether `op` is allowed in `state`.
pub fn allowed(state: VmState, op: Operation) -> Result<(), Refused> {
    use Operation as O;
    use VmState as S;
    let ok = match (state, op) {
        (S::Running, O::Stop | O::Restart | O::Destroy | O::Copy | O::Describe) => true,
        (S::Stopped, O::Start | O::Destroy | O::Copy | O::Describe) => true,
        (S::Failed, O::Start | O::Destroy | O::Describe) => true,
        (S::Creating, O::Describe) => true,
        (S::Running, O::Start) | (S::Stopped, O::Stop | O::Restart) => false,
        (S::Failed, O::Stop | O::Restart | O::Copy) => false,
        (S::Creating, O::Start | O::Stop | O::Restart | O::Destroy | O::Copy) => false,
        (S::Destroying, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Refused { op, state })
    }
}

/// The state after `event`, or `None` when the event cannot happen in `state`.
pub fn transition(state: VmState, event: Event) -> Option<VmState> {
    use Event as E;
    use VmState as S;
    match (state, event) {
        (S::Creating, E::Created) => Some(S::Running),
        (S::Stopped | S::Failed | S::Running, E::Started) => Some(S::Running),
        (S::Running, E::Stopped) => Some(S::Stopped),
        (S::Creating | S::Running | S::Stopped, E::Failed) => Some(S::Failed),
        (S::Running | S::Stopped | S::Failed, E::DestroyBegun) => Some(S::Destroying),
        (S::Creating, E::Started | E::Stopped | E::DestroyBegun) => None,
        (S::Stopped | S::Failed, E::Created | E::Stopped) => None,
        (S::Running, E::Created) | (S::Failed, E::Failed) => None,
        (S::Destroying, E::Created | E::Started | E::Stopped | E::Failed | E::DestroyBegun) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path() {
        let s = transition(VmState::Creating, Event::Created).unwrap();
        let s = transition(s, Event::Stopped).unwrap();
        assert_eq!(s, VmState::Stopped);
        let s = transition(s, Event::Started).unwrap();
        let s = transition(s, Event::DestroyBegun).unwrap();
        assert_eq!(s, VmState::Destroying);
        assert_eq!(transition(s, Event::Started), None);
    }

    #[test]
    fn refusals_say_why() {
        let err = allowed(VmState::Stopped, Operation::Stop).unwrap_err();
        assert_eq!(err.to_string(), "cannot stop a VM that is stopped");
        assert!(allowed(VmState::Creating, Operation::Destroy).is_err());
        assert!(allowed(VmState::Destroying, Operation::Describe).is_err());
        assert!(allowed(VmState::Failed, Operation::Start).is_ok());
        assert!(allowed(VmState::Running, Operation::Copy).is_ok());
    }

    #[test]
    fn every_allowed_operation_has_a_transition_or_keeps_the_state() {
        use Operation as O;
        let states = [
            VmState::Creating,
            VmState::Running,
            VmState::Stopped,
            VmState::Failed,
        ];
        for state in states {
            if allowed(state, O::Start).is_ok() {
                assert_eq!(transition(state, Event::Started), Some(VmState::Running));
            }
            if allowed(state, O::Stop).is_ok() {
                assert_eq!(transition(state, Event::Stopped), Some(VmState::Stopped));
            }
            if allowed(state, O::Destroy).is_ok() {
                assert_eq!(
                    transition(state, Event::DestroyBegun),
                    Some(VmState::Destroying)
                );
            }
        }
    }
}
