//! Reading every server's state once the faults are healed, through a session pinned to it.

use std::time::{Duration, Instant};

use zookeeper_client::Client;

use super::history::{ServerState, SessionFate};
use super::workload::{ephemeral_path, register_path, set_path};
use crate::client::connect;
use crate::cluster::Cluster;

/// How long the servers get to agree (and to remove the ephemerals of expired sessions) after healing.
const CONVERGE: Duration = Duration::from_secs(30);

/// Each server's state, read again until all servers agree and the ephemerals of `sessions` seen expired are
/// gone, or [`CONVERGE`] has passed (then the last reads go to the checker, which names what differs).
pub async fn collect(cluster: &Cluster, registers: usize, sessions: &[SessionFate]) -> Vec<ServerState> {
    let mut clients = Vec::new();
    for i in 0..cluster.len() {
        clients.push(connect(&cluster.client_addr(i).to_string()).await);
    }
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut states = Vec::new();
        for client in &clients {
            states.push(read(client, registers).await);
        }
        let expired_gone =
            sessions.iter().filter(|s| s.expired).all(|s| states.iter().all(|st| !st.ephemerals.contains_key(&s.path)));
        if (expired_gone && states.windows(2).all(|w| w[0] == w[1])) || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One server's state through `client` (after a sync, so it has applied every write committed before). A read
/// whose connection was lost (a restarted server rejoining, an election) is tried again within the bound; any
/// other error (NoNode for a node the workload never deletes, say) fails at once.
async fn read(client: &Client, registers: usize) -> ServerState {
    let bound = Duration::from_secs(10);
    let deadline = Instant::now() + bound;
    loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), read_once(client, registers))
            .await
        {
            Ok(Ok(state)) => return state,
            Ok(Err(e @ (zookeeper_client::Error::ConnectionLoss | zookeeper_client::Error::Timeout)))
                if Instant::now() < deadline =>
            {
                eprintln!("nemesis: reading a server's state after healing: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => panic!("reading a server's state after healing: {e}"),
            Err(_) => panic!("reading a server's state after healing took over {bound:?}"),
        }
    }
}

async fn read_once(client: &Client, registers: usize) -> Result<ServerState, zookeeper_client::Error> {
    let state = async {
        client.sync("/").await?;
        let mut state = ServerState::default();
        for r in 0..registers {
            let (data, stat) = client.get_data(&register_path(r)).await?;
            state.registers.push((String::from_utf8_lossy(&data).into_owned(), stat.version));
        }
        state.set = client.list_children(&set_path()).await?;
        state.set.sort();
        for name in client.list_children(&ephemeral_path()).await? {
            let path = format!("{}/{name}", ephemeral_path());
            if let Some(stat) = client.check_stat(&path).await? {
                state.ephemerals.insert(path, stat.ephemeral_owner);
            }
        }
        Ok::<_, zookeeper_client::Error>(state)
    };
    state.await
}
