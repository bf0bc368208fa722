//! Why a tunnel was closed. The relay sends one of these codes in the
//! WebSocket Close frame (the reason text is the [`CloseReason::as_str`]
//! name) and records the name in the session registry.

/// A reason for closing a tunnel session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A newer connection of the same device took over.
    Replaced,
    /// An operator or the device's owner closed the session.
    ClosedByOperator,
    /// The device was deleted or revoked.
    DeviceRevoked,
    /// The relay is shutting down; reconnect (to another instance).
    Shutdown,
    /// Nothing arrived from the device within the liveness bound.
    Timeout,
    /// The device closed the connection or it broke.
    Disconnected,
    /// The peer violated the protocol (bad frames, bad yamux).
    ProtocolError,
    /// The relay restarted while the session was recorded as open.
    RelayRestarted,
}

impl CloseReason {
    /// All reasons, for docs and tests.
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Replaced,
        CloseReason::ClosedByOperator,
        CloseReason::DeviceRevoked,
        CloseReason::Shutdown,
        CloseReason::Timeout,
        CloseReason::Disconnected,
        CloseReason::ProtocolError,
        CloseReason::RelayRestarted,
    ];

    /// The stable name used in Close frames, logs and the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Replaced => "replaced",
            CloseReason::ClosedByOperator => "closed_by_operator",
            CloseReason::DeviceRevoked => "device_revoked",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Timeout => "timeout",
            CloseReason::Disconnected => "disconnected",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::RelayRestarted => "relay_restarted",
        }
    }

    /// The WebSocket close code (4000–4999 is the private-use range).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Replaced => 4000,
            CloseReason::ClosedByOperator => 4001,
            CloseReason::DeviceRevoked => 4002,
            CloseReason::Shutdown => 4003,
            CloseReason::Timeout => 4004,
            CloseReason::Disconnected => 1000,
            CloseReason::ProtocolError => 1002,
            CloseReason::RelayRestarted => 4005,
        }
    }

    /// The reason for a Close code, if it is one of ours.
    pub fn from_code(code: u16) -> Option<CloseReason> {
        CloseReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether a device should dial again after this reason. A revoked
    /// device must not; everything else is transient.
    pub fn should_reconnect(self) -> bool {
        !matches!(self, CloseReason::DeviceRevoked)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for r in CloseReason::ALL {
            assert_eq!(CloseReason::from_code(r.code()), Some(r));
        }
        assert_eq!(CloseReason::from_code(4999), None);
    }
}
