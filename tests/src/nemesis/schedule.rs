//! The seeded fault schedule: which fault each step injects, for how long, and how a fault becomes concrete
//! actions once the runner knows which node leads. Pure, so a seed replays the same schedule.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The leader cut from every other node.
    IsolateLeader,
    /// One follower cut from every other node.
    IsolateFollower,
    /// A random minority (at most half, rounded down) cut from the majority.
    MajorityMinority,
    /// Two halves that reach each other only through one bridge node (Jepsen's "bridge").
    Bridge,
    /// The leader SIGSTOPped, then SIGCONTed.
    PauseLeader,
    /// One follower SIGSTOPped, then SIGCONTed.
    PauseFollower,
    /// The leader SIGKILLed, then restarted.
    KillLeader,
    /// One follower SIGKILLed, then restarted.
    KillFollower,
    /// The leader isolated while one follower is paused: no quorum anywhere.
    IsolateLeaderPauseFollower,
    /// The leader paused while one follower is killed.
    PauseLeaderKillFollower,
}

/// Every fault, each once in every round of a schedule.
pub const FAULTS: [Fault; 10] = [
    Fault::IsolateLeader,
    Fault::IsolateFollower,
    Fault::MajorityMinority,
    Fault::Bridge,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::IsolateLeaderPauseFollower,
    Fault::PauseLeaderKillFollower,
];

/// One step: a fault held for `duration`; `pick` chooses its nodes (which follower, which minority).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: Fault,
    /// How long it lasts before healing.
    pub duration: Duration,
    /// Seeds the choice of nodes.
    pub pick: u64,
}

/// `steps` steps from `seed`: rounds of every fault in a seeded order, so that a schedule of [`FAULTS`]`.len()`
/// steps has each fault once; each lasts a seeded time in `durations`.
pub fn schedule(seed: u64, steps: usize, durations: (Duration, Duration)) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(steps);
    while out.len() < steps {
        let mut round = FAULTS;
        round.shuffle(&mut rng);
        for fault in round.into_iter().take(steps - out.len()) {
            let duration = rng.gen_range(durations.0..=durations.1);
            out.push(Step { fault, duration, pick: rng.gen() });
        }
    }
    out
}

/// A fault made concrete: links to cut, processes to pause and to kill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Node pairs cut in both directions.
    pub cuts: Vec<(usize, usize)>,
    /// Nodes SIGSTOPped.
    pub pause: Vec<usize>,
    /// Nodes SIGKILLed (restarted when healing).
    pub kill: Vec<usize>,
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = |v: &[usize]| v.iter().map(|n| (n + 1).to_string()).collect::<Vec<_>>().join(",");
        let cuts: Vec<String> = self.cuts.iter().map(|(a, b)| format!("{}-{}", a + 1, b + 1)).collect();
        write!(f, "cut [{}] pause [{}] kill [{}]", cuts.join(" "), one(&self.pause), one(&self.kill))
    }
}

/// The actions of `step` on `n` nodes whose leader is `leader` (node indexes from 0).
pub fn resolve(step: &Step, n: usize, leader: usize) -> Actions {
    let mut rng = StdRng::seed_from_u64(step.pick);
    let followers: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    let follower = *followers.choose(&mut rng).expect("a cluster of 2 or more nodes");
    let isolate = |node: usize| (0..n).filter(|&i| i != node).map(|i| (node, i)).collect::<Vec<_>>();
    match step.fault {
        Fault::IsolateLeader => Actions { cuts: isolate(leader), ..Actions::default() },
        Fault::IsolateFollower => Actions { cuts: isolate(follower), ..Actions::default() },
        Fault::MajorityMinority => {
            let mut nodes: Vec<usize> = (0..n).collect();
            nodes.shuffle(&mut rng);
            let minority = rng.gen_range(1..=n / 2);
            Actions { cuts: split(&nodes[..minority], &nodes[minority..]), ..Actions::default() }
        }
        Fault::Bridge => {
            let mut nodes: Vec<usize> = (0..n).collect();
            nodes.shuffle(&mut rng);
            // nodes[0] is the bridge: linked to both halves of the rest, which are cut from each other.
            let rest = &nodes[1..];
            let half = rest.len() / 2;
            Actions { cuts: split(&rest[..half], &rest[half..]), ..Actions::default() }
        }
        Fault::PauseLeader => Actions { pause: vec![leader], ..Actions::default() },
        Fault::PauseFollower => Actions { pause: vec![follower], ..Actions::default() },
        Fault::KillLeader => Actions { kill: vec![leader], ..Actions::default() },
        Fault::KillFollower => Actions { kill: vec![follower], ..Actions::default() },
        Fault::IsolateLeaderPauseFollower => Actions { cuts: isolate(leader), pause: vec![follower], kill: vec![] },
        Fault::PauseLeaderKillFollower => Actions { cuts: vec![], pause: vec![leader], kill: vec![follower] },
    }
}

/// Every pair with one node in `a` and one in `b`.
fn split(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter().flat_map(|&x| b.iter().map(move |&y| (x, y))).collect()
}

/// The nodes that cannot be part of any quorum under `actions`: down (paused or killed), or running in a group
/// of connected nodes no larger than half of the `n`. None of them may acknowledge a write.
pub fn minority(n: usize, actions: &Actions) -> Vec<usize> {
    let down: BTreeSet<usize> = actions.pause.iter().chain(&actions.kill).copied().collect();
    let cut: BTreeSet<(usize, usize)> = actions.cuts.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
    let linked = |a: usize, b: usize| !down.contains(&a) && !down.contains(&b) && !cut.contains(&(a, b));
    let mut out = Vec::new();
    for start in 0..n {
        // The group reachable from `start` over live, uncut links.
        let mut group = BTreeSet::from([start]);
        let mut frontier = vec![start];
        while let Some(a) = frontier.pop() {
            for b in (0..n).filter(|&b| b != a && linked(a, b)) {
                if group.insert(b) {
                    frontier.push(b);
                }
            }
        }
        if down.contains(&start) || group.len() <= n / 2 {
            out.push(start);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATIONS: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(6));

    #[test]
    fn a_seed_replays_and_a_round_covers_every_fault() {
        assert_eq!(schedule(7, 25, DURATIONS), schedule(7, 25, DURATIONS));
        assert_ne!(schedule(7, 25, DURATIONS), schedule(8, 25, DURATIONS));
        let round: BTreeSet<Fault> = schedule(7, FAULTS.len(), DURATIONS).iter().map(|s| s.fault).collect();
        assert_eq!(round.len(), FAULTS.len());
        assert!(schedule(7, 25, DURATIONS).iter().all(|s| (DURATIONS.0..=DURATIONS.1).contains(&s.duration)));
    }

    #[test]
    fn isolating_the_leader_leaves_it_alone_in_a_minority() {
        let step = Step { fault: Fault::IsolateLeader, duration: DURATIONS.0, pick: 1 };
        let actions = resolve(&step, 5, 2);
        assert_eq!(actions.cuts, vec![(2, 0), (2, 1), (2, 3), (2, 4)]);
        assert_eq!(minority(5, &actions), vec![2]);
    }

    #[test]
    fn a_bridge_leaves_no_minority_and_every_split_has_one() {
        for pick in 0..50 {
            for n in [3, 5] {
                let bridge = resolve(&Step { fault: Fault::Bridge, duration: DURATIONS.0, pick }, n, 0);
                assert!(!bridge.cuts.is_empty());
                assert_eq!(minority(n, &bridge), Vec::<usize>::new());
                let split = resolve(&Step { fault: Fault::MajorityMinority, duration: DURATIONS.0, pick }, n, 0);
                let small = minority(n, &split);
                assert!(!small.is_empty() && small.len() <= n / 2, "{small:?}");
            }
        }
    }

    #[test]
    fn an_isolated_leader_with_a_paused_follower_leaves_no_quorum_of_three() {
        let step = Step { fault: Fault::IsolateLeaderPauseFollower, duration: DURATIONS.0, pick: 3 };
        assert_eq!(minority(3, &resolve(&step, 3, 0)), vec![0, 1, 2]);
        assert_eq!(minority(5, &resolve(&step, 5, 0)).len(), 2, "leader and the paused follower");
    }
}
