//! `t4 member list` and `t4 member remove`: the cluster's voting members,
//! through any member's etcd API (`MemberList`, `MemberRemove`), so they
//! work against a running cluster from anywhere that reaches a member.
//!
//! A member is named by its `--node-id` or by the hexadecimal id etcd
//! clients show (`etcdctl member list`), which is derived from the name.
//! Removing a member that will not come back lets the others reach a
//! majority without it; a removed member that is still running shuts down,
//! and started again it joins again. `t4 member force-remove` works on the
//! bucket instead, for the one case without a leader to ask: a two-member
//! cluster that lost one member's disk.

use std::time::Duration;

use clap::{Args, Subcommand};
use etcd_client::{Client, ConnectOptions, Member};

/// `t4 member …`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// The voting members: id, name, peer URLs, client URLs (known for the
    /// member asked only).
    List(ListArgs),
    /// Remove a member (by name or hex id) from the voting members.
    Remove(RemoveArgs),
    /// Remove a member through the bucket, with no leader: for a
    /// two-member cluster that lost one member's disk (the survivor cannot
    /// be elected without it). Only takes two members to one.
    ForceRemove(ForceRemoveArgs),
}

#[derive(Debug, Args)]
pub struct ForceRemoveArgs {
    #[command(flatten)]
    bucket: crate::bucket_args::BucketArgs,
    /// The lost member's `--node-id`.
    member: String,
}

#[derive(Debug, Args)]
pub struct Endpoint {
    /// A member's etcd v3 endpoint.
    #[arg(long, env = "T4_ENDPOINT", default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// How long to wait for the member's answer.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// One JSON document instead of a table.
    #[arg(long, env = "T4_OUTPUT_JSON")]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The member: its name (`--node-id`) or its hex id.
    member: String,
}

/// Runs a `t4 member` command.
///
/// # Errors
/// The member cannot be reached, or refuses (text for the user).
pub fn run(command: MemberCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        match command {
            MemberCommand::List(args) => {
                let mut client = connect(&args.endpoint).await?;
                let members = list(&mut client, &args.endpoint).await?;
                if args.json {
                    println!("{}", json(&members));
                } else {
                    print!("{}", table(&members));
                }
                Ok(())
            }
            MemberCommand::Remove(args) => {
                let mut client = connect(&args.endpoint).await?;
                let members = list(&mut client, &args.endpoint).await?;
                let id = resolve(&members, &args.member)?;
                let left = tokio::time::timeout(args.endpoint.timeout, client.member_remove(id))
                    .await
                    .map_err(|_| {
                        "no answer in time; the removal may still take effect".to_string()
                    })?
                    .map_err(|e| format!("removing {}: {}", args.member, grpc_text(&e)))?;
                println!("removed {} ({id:016x})", args.member);
                print!("{}", table(left.members()));
                Ok(())
            }
            MemberCommand::ForceRemove(args) => force_remove(&args).await,
        }
    })
}

/// `t4 member force-remove`: one conditional write of the bucket's lock
/// (`LeaderLock::forced_removal` says what it writes and why only from two
/// members to one).
async fn force_remove(args: &ForceRemoveArgs) -> Result<(), String> {
    use t4_core::bucket::layout::LEADER_LOCK;
    use t4_core::bucket::lock::LeaderLock;
    use t4_core::object::{ObjectError, ObjectOp, ObjectReply, PutCondition};

    let bucket = crate::bucket_cli::read::Bucket::open(&args.bucket).await?;
    let store = bucket.store();
    let (body, etag) = match store
        .execute(ObjectOp::Get {
            key: LEADER_LOCK.to_owned(),
        })
        .await
    {
        Ok(ObjectReply::Got { body, etag }) => (body, etag),
        Err(ObjectError::NotFound) => {
            return Err(format!(
                "{} holds no {LEADER_LOCK}: no cluster",
                bucket.describe()
            ))
        }
        Ok(other) => return Err(format!("reading {LEADER_LOCK}: unexpected {other:?}")),
        Err(e) => return Err(format!("reading {LEADER_LOCK}: {e}")),
    };
    let lock = LeaderLock::decode(&body).map_err(|e| format!("{LEADER_LOCK}: {e}"))?;
    let forced = lock.forced_removal(&args.member)?;
    match store
        .execute(ObjectOp::Put {
            key: LEADER_LOCK.to_owned(),
            body: forced.encode(),
            condition: PutCondition::IfMatch(etag),
        })
        .await
    {
        Ok(_) => {
            println!(
                "removed {} from {}: {} is the only member and takes over; start {} again, \
                 with an empty data directory, to add it back",
                args.member,
                bucket.describe(),
                forced.leader_id,
                args.member
            );
            Ok(())
        }
        Err(ObjectError::PreconditionFailed | ObjectError::NotFound) => Err(format!(
            "{LEADER_LOCK} changed while it was read (a member is active): nothing written; \
             look again with `t4 status`"
        )),
        Err(e) => Err(format!(
            "writing {LEADER_LOCK}: {e} (it may or may not have taken effect; \
            look with `t4 status`)"
        )),
    }
}

async fn connect(endpoint: &Endpoint) -> Result<Client, String> {
    let options = ConnectOptions::new().with_connect_timeout(endpoint.timeout);
    tokio::time::timeout(
        endpoint.timeout,
        Client::connect([endpoint.endpoint.as_str()], Some(options)),
    )
    .await
    .map_err(|_| format!("cannot reach {}: no answer in time", endpoint.endpoint))?
    .map_err(|e| format!("cannot reach {}: {e}", endpoint.endpoint))
}

async fn list(client: &mut Client, endpoint: &Endpoint) -> Result<Vec<Member>, String> {
    let resp = tokio::time::timeout(endpoint.timeout, client.member_list())
        .await
        .map_err(|_| format!("{}: no answer in time", endpoint.endpoint))?
        .map_err(|e| format!("{}: {}", endpoint.endpoint, grpc_text(&e)))?;
    Ok(resp.members().to_vec())
}

/// The id of the member named `who` (its name, or its id in hex).
fn resolve(members: &[Member], who: &str) -> Result<u64, String> {
    if let Some(m) = members.iter().find(|m| m.name() == who) {
        return Ok(m.id());
    }
    let hex = u64::from_str_radix(who.trim_start_matches("0x"), 16).ok();
    match hex.and_then(|id| members.iter().find(|m| m.id() == id)) {
        Some(m) => Ok(m.id()),
        None => Err(format!(
            "no member is named {who:?} or has that id; the members: {}",
            members
                .iter()
                .map(|m| format!("{} ({:016x})", m.name(), m.id()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A gRPC error's message, without the transport's wrapping.
fn grpc_text(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }
}

fn table(members: &[Member]) -> String {
    let mut out = String::from("ID                NAME  PEER URLS  CLIENT URLS\n");
    for m in members {
        out.push_str(&format!(
            "{:016x}  {}  {}  {}\n",
            m.id(),
            m.name(),
            m.peer_urls().join(","),
            m.client_urls().join(",")
        ));
    }
    out
}

fn json(members: &[Member]) -> String {
    let list: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": format!("{:016x}", m.id()),
                "name": m.name(),
                "peer_urls": m.peer_urls(),
                "client_urls": m.client_urls(),
            })
        })
        .collect();
    serde_json::json!({ "members": list }).to_string()
}
