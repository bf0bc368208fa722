//! Scopes: what a token (or a service client) may do. `*:manage` implies
//! every other scope of its family (`device:manage` ⊇ `device:read`,
//! `device:write`, `device:delete`). Browser sessions hold them all.

use std::collections::BTreeSet;
use std::fmt;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// List and read devices (and GET their web service).
    DeviceRead,
    /// Change devices (and send unsafe methods to their web service).
    DeviceWrite,
    /// Delete devices.
    DeviceDelete,
    /// Everything about devices.
    DeviceManage,
    /// See tunnel sessions and browser sessions.
    SessionRead,
    /// Close them.
    SessionManage,
    /// Make pairing codes.
    PairingCreate,
    /// Create, list and revoke API tokens.
    TokenManage,
    /// Send messages to devices.
    MessageSend,
    /// See devices' message queues.
    MessageRead,
    /// Run commands (through intermediaries) and read their results.
    CommandExecute,
    /// Register, rotate and revoke intermediaries.
    ProxyManage,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 12] = [
        Scope::DeviceRead,
        Scope::DeviceWrite,
        Scope::DeviceDelete,
        Scope::DeviceManage,
        Scope::SessionRead,
        Scope::SessionManage,
        Scope::PairingCreate,
        Scope::TokenManage,
        Scope::MessageSend,
        Scope::MessageRead,
        Scope::CommandExecute,
        Scope::ProxyManage,
    ];

    /// The wire name (`device:read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DeviceRead => "device:read",
            Scope::DeviceWrite => "device:write",
            Scope::DeviceDelete => "device:delete",
            Scope::DeviceManage => "device:manage",
            Scope::SessionRead => "session:read",
            Scope::SessionManage => "session:manage",
            Scope::PairingCreate => "pairing:create",
            Scope::TokenManage => "token:manage",
            Scope::MessageSend => "message:send",
            Scope::MessageRead => "message:read",
            Scope::CommandExecute => "command:execute",
            Scope::ProxyManage => "proxy:manage",
        }
    }

    /// A scope by its wire name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The scope that implies this one besides itself (its family's
    /// `manage`), if any.
    fn manager(self) -> Option<Scope> {
        match self {
            Scope::DeviceRead | Scope::DeviceWrite | Scope::DeviceDelete => Some(Scope::DeviceManage),
            Scope::SessionRead => Some(Scope::SessionManage),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<Scope>);

/// A scope name this server does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?} (known: device:read, device:write, device:delete, device:manage, session:read, session:manage, pairing:create, token:manage, message:send, message:read, command:execute, proxy:manage)"
)]
pub struct UnknownScope(pub String);

impl Scopes {
    /// Every scope (a browser session).
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.into_iter().collect())
    }

    /// From names; an unknown one is an error.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, UnknownScope> {
        names
            .iter()
            .map(|n| Scope::parse(n.as_ref().trim()).ok_or_else(|| UnknownScope(n.as_ref().to_owned())))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Scopes)
    }

    /// From the space-separated form (stored rows, `scope` claims); unknown
    /// names are skipped (a scope a newer server added).
    pub fn from_text(text: &str) -> Scopes {
        Scopes(text.split_whitespace().filter_map(Scope::parse).collect())
    }

    /// The space-separated form.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `scope` is held, directly or through its family's
    /// `manage`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&scope) || scope.manager().is_some_and(|m| self.0.contains(&m))
    }

    /// True when every scope of `other` is allowed by these (a token can
    /// only make tokens within its own scopes).
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.allows(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manage_implies_its_family_only() {
        let s = Scopes::parse(&["device:manage"]).unwrap();
        assert!(s.allows(Scope::DeviceRead) && s.allows(Scope::DeviceDelete) && s.allows(Scope::DeviceManage));
        assert!(!s.allows(Scope::SessionRead) && !s.allows(Scope::TokenManage));
        let read = Scopes::parse(&["device:read", "session:read"]).unwrap();
        assert!(!read.allows(Scope::DeviceWrite));
        assert!(s.covers(&Scopes::parse(&["device:read", "device:write"]).unwrap()));
        assert!(!read.covers(&s));
        assert!(Scopes::all().covers(&s));
        assert_eq!(read.to_text(), "device:read session:read");
        assert_eq!(Scopes::from_text("device:read future:thing session:read"), read);
        assert!(Scopes::parse(&["device:reed"]).unwrap_err().to_string().contains("device:reed"));
    }
}
