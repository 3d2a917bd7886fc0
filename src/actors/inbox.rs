//! A managed device's inbox: what it shows, built from its [`DeviceEvent`]s, in a bounded
//! ring with collapse ids applied the way the device applies them (`client::device`,
//! `on_notification`): when the device says a notification `replaced` one with the same
//! collapse id, the inbox replaces that entry in place; an uninstalled app's notifications
//! leave with it, as they leave a phone's notification centre.

use std::collections::VecDeque;

use crate::client::device::DeviceEvent;
use crate::server::control::devices::Shown;

/// How many notifications an inbox keeps per device; the oldest leave first. A test reads
/// the last few; a bound keeps a device pushed to in a loop from growing without limit.
pub const INBOX_LEN: usize = 100;

/// The shown notifications of one device, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Inbox {
    /// At most [`INBOX_LEN`] entries.
    shown: VecDeque<Shown>,
    /// How many notifications the device has shown (the next one's `index` is this plus 1).
    count: u64,
}

impl Inbox {
    /// Applies one event of the device: a notification is shown (replacing the one with its
    /// collapse id when the device says so); a whole app's uninstall removes its entries.
    /// `now_ms` is when the event was read.
    pub fn apply(&mut self, event: &DeviceEvent, now_ms: u64) {
        match event {
            DeviceEvent::Notification {
                app,
                kind,
                token,
                apns_id,
                priority,
                push_type,
                collapse_id,
                replaced,
                payload,
                ..
            } => {
                self.count += 1;
                let shown = Shown {
                    index: self.count,
                    apns_id: apns_id.to_string(),
                    app: app.clone(),
                    kind: kind.to_string(),
                    token: token.to_hex(),
                    received_at_ms: now_ms,
                    priority: *priority,
                    push_type: push_type.clone(),
                    collapse_id: collapse_id.clone(),
                    payload: payload.clone(),
                };
                let older = collapse_id.as_ref().filter(|_| *replaced).and_then(|id| {
                    self.shown
                        .iter()
                        .position(|s| s.app == *app && s.collapse_id.as_ref() == Some(id))
                });
                match older {
                    Some(i) => self.shown[i] = shown,
                    None => {
                        if self.shown.len() == INBOX_LEN {
                            self.shown.pop_front();
                        }
                        self.shown.push_back(shown);
                    }
                }
            }
            DeviceEvent::Uninstalled {
                app, kind: None, ..
            } => self.shown.retain(|s| s.app != *app),
            _ => {}
        }
    }

    /// The entries, oldest first.
    pub fn list(&self) -> Vec<Shown> {
        self.shown.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::{DeviceToken, TokenKind};
    use uuid::Uuid;

    fn shown(app: &str, collapse: Option<&str>, replaced: bool, n: u32) -> DeviceEvent {
        DeviceEvent::Notification {
            serial: "D".into(),
            app: app.into(),
            kind: TokenKind::Remote,
            token: DeviceToken::from_bytes([1; 32]),
            id: n,
            apns_id: Uuid::new_v4(),
            priority: 10,
            expiry: 0,
            push_type: None,
            collapse_id: collapse.map(str::to_owned),
            replaced,
            payload: serde_json::json!({ "n": n }),
        }
    }

    #[test]
    fn a_collapse_id_replaces_in_place_when_the_device_says_so() {
        let mut inbox = Inbox::default();
        inbox.apply(&shown("a", Some("c"), false, 1), 1);
        inbox.apply(&shown("a", None, false, 2), 2);
        inbox.apply(&shown("a", Some("c"), true, 3), 3);
        let list = inbox.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].payload["n"], 3);
        assert_eq!(list[0].index, 3);
        assert_eq!(list[1].payload["n"], 2);
        // Another app's collapse id is another notification.
        inbox.apply(&shown("b", Some("c"), false, 4), 4);
        assert_eq!(inbox.list().len(), 3);
    }

    #[test]
    fn the_ring_is_bounded_and_an_uninstall_clears_the_app() {
        let mut inbox = Inbox::default();
        for n in 0..(INBOX_LEN as u32 + 5) {
            inbox.apply(&shown("a", None, false, n), 0);
        }
        let list = inbox.list();
        assert_eq!(list.len(), INBOX_LEN);
        assert_eq!(list[0].payload["n"], 5);
        inbox.apply(
            &DeviceEvent::Uninstalled {
                serial: "D".into(),
                app: "a".into(),
                kind: None,
            },
            0,
        );
        assert!(inbox.list().is_empty());
    }
}
