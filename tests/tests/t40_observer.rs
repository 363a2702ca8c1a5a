//! An observer (`server.4=...:observer`): it serves clients, forwards their writes, applies every commit, and
//! never counts towards a quorum, so the voters go on without it.

use std::time::Duration;

use ensemble_tests::client::{catch_up, PERSISTENT};
use ensemble_tests::{blocking, connect, Cluster, Mode, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_serves_and_the_voters_go_on_without_it() {
    let options = Options { nodes: 4, observers: 1, ..Options::default() };
    let cluster = blocking(move || Cluster::start_with(options));
    let observer = 3;
    assert_eq!(cluster.mode(observer), Some(Mode::Other), "{}", cluster.four_letter(observer, "srvr"));
    assert!(cluster.four_letter(observer, "srvr").contains("Mode: observer"));
    assert_ne!(blocking(|| cluster.leader()), observer);

    // A write through the observer reaches the voters, and a voter's write reaches the observer.
    let via_observer = connect(&cluster.client_addr(observer).to_string()).await;
    let via_voter = connect(&cluster.client_addr(0).to_string()).await;
    via_observer.create("/t40", b"from the observer", PERSISTENT).await.unwrap();
    catch_up(&via_voter, &via_observer).await;
    assert_eq!(via_voter.get_data("/t40").await.unwrap().0, b"from the observer");
    via_voter.set_data("/t40", b"from a voter", None).await.unwrap();
    catch_up(&via_observer, &via_voter).await;
    assert_eq!(via_observer.get_data("/t40").await.unwrap().0, b"from a voter");
    drop(via_observer);

    // The observer gone, the three voters commit as before.
    blocking(|| cluster.kill(observer));
    let (stat, _) = via_voter.create("/t40/after", b"", PERSISTENT).await.unwrap();
    assert!(stat.czxid > 0);
    tokio::time::timeout(Duration::from_secs(10), via_voter.get_data("/t40/after")).await.unwrap().unwrap();
}
