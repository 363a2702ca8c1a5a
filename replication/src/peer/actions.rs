//! The conversions from each sub-machine's commands to the peer's [`Action`]s.

use super::Action;
use crate::message::Message;
use crate::{broadcast, discovery, election, leader_sync};

pub(super) fn election_actions(commands: Vec<election::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            election::Command::Send(to, n) => Some(Action::Send(to, Message::Notification(n))),
            election::Command::Decided(_) => None,
        })
        .collect()
}

pub(super) fn discovery_actions(commands: Vec<discovery::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            discovery::Command::Send(to, m) => Some(Action::Send(to, m)),
            discovery::Command::PersistAcceptedEpoch(e) => Some(Action::PersistAcceptedEpoch(e)),
            discovery::Command::Established { .. } => None,
        })
        .collect()
}

pub(super) fn leader_sync_actions(commands: Vec<leader_sync::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            leader_sync::Command::Send(to, m) => Some(Action::Send(to, m)),
            leader_sync::Command::StreamTxns { to, after, until, commit_up_to } => {
                Some(Action::StreamTxns { to, after, until, commit_up_to })
            }
            leader_sync::Command::StreamSnapshot { to, until, commit_up_to } => {
                Some(Action::StreamSnapshot { to, until, commit_up_to })
            }
            leader_sync::Command::PersistCurrentEpoch(e) => Some(Action::PersistCurrentEpoch(e)),
            leader_sync::Command::StartBroadcast(_) => None,
        })
        .collect()
}

pub(super) fn broadcast_actions(commands: Vec<broadcast::Command>) -> Vec<Action> {
    commands.into_iter().map(Action::from).collect()
}

impl From<broadcast::Command> for Action {
    fn from(command: broadcast::Command) -> Action {
        match command {
            broadcast::Command::Send(to, m) => Action::Send(to, m),
            broadcast::Command::Append(z, t) => Action::Append(z, t),
            broadcast::Command::Apply(z) => Action::Apply(z),
        }
    }
}
