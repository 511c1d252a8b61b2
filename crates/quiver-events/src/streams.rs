//! Redis Streams through fred, behind our own small type (fred has had no release since
//! Feb 2025, so no fred type crosses this boundary). One [`RedisStreams`] is one
//! connection: a blocking `XREADGROUP` stalls every other command on its connection, so
//! each consumer gets its own and the relay another.

use crate::EventsError;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::RespVersion;
use fred::types::streams::{XCapKind, XCapTrim};
use quiver_model::{EventId, EventKind, OutboxEvent};
use std::collections::HashMap;
use std::time::Duration;

/// One stream entry handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The stream entry id (`1700000000000-0`).
    pub entry: String,
    /// The event, or why the entry does not decode.
    pub event: Result<OutboxEvent, String>,
    /// The raw fields, kept for the dead-letter stream.
    pub fields: HashMap<String, String>,
}

/// A raw stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

/// The state of a consumer group, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
}

/// A Redis connection for stream commands.
#[derive(Clone)]
pub struct RedisStreams {
    client: Client,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams").finish_non_exhaustive()
    }
}

impl RedisStreams {
    /// Starts connecting to `url` (inside a tokio runtime) and returns at once; commands fail at their timeout
    /// until Redis is reachable, and the connection reconnects with back-off.
    /// `block` is the longest `XREADGROUP` block this connection will run.
    pub fn connect(
        url: &str,
        command_timeout: Duration,
        block: Duration,
    ) -> Result<Self, EventsError> {
        let mut config = Config::from_url(url)?;
        config.fail_fast = false;
        config.version = RespVersion::RESP2;
        let client = Builder::from_config(config)
            .with_performance_config(|p| {
                // A blocking read must not time out before Redis answers it.
                p.default_command_timeout = command_timeout + block;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.unresponsive.max_timeout = Some(block + Duration::from_secs(2));
                c.unresponsive.interval = Duration::from_millis(500);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build()?;
        drop(client.connect());
        Ok(Self { client })
    }

    /// Waits until connected, at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.client.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Appends `events` to `stream` in one round trip (a pipeline of `XADD … MAXLEN ~`).
    pub async fn append(
        &self,
        stream: &str,
        max_len: u64,
        events: &[OutboxEvent],
    ) -> Result<(), EventsError> {
        if events.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.pipeline();
        for e in events {
            let fields: Vec<(&str, String)> = vec![
                ("id", e.id.0.to_string()),
                ("kind", e.kind.as_str().to_owned()),
                ("payload", e.payload.to_string()),
                ("at", e.created_at.timestamp_micros().to_string()),
            ];
            let () = pipeline
                .xadd(
                    stream,
                    false,
                    (XCapKind::MaxLen, XCapTrim::AlmostExact, max_len as i64),
                    "*",
                    fields,
                )
                .await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Appends raw `fields` to `stream` (the dead-letter stream), capped like the main one.
    pub async fn append_raw(
        &self,
        stream: &str,
        max_len: u64,
        fields: Vec<(String, String)>,
    ) -> Result<(), EventsError> {
        let _: String = self
            .client
            .xadd(
                stream,
                false,
                (XCapKind::MaxLen, XCapTrim::AlmostExact, max_len as i64),
                "*",
                fields,
            )
            .await?;
        Ok(())
    }

    /// Creates `group` on `stream` (and the stream) unless it exists.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), EventsError> {
        let created: Result<Value, _> = self.client.xgroup_create(stream, group, "0", true).await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// New entries for `consumer`, waiting up to `block` for some.
    pub async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: u64,
        block: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        let response: fred::types::streams::XReadResponse<String, String, String, String> = self
            .client
            .xreadgroup_map(
                group,
                consumer,
                Some(count),
                Some(block.as_millis() as u64),
                false,
                stream,
                ">",
            )
            .await?;
        Ok(response
            .into_values()
            .flatten()
            .map(|(entry, fields)| delivery(entry, fields))
            .collect())
    }

    /// Acknowledges handled entries.
    pub async fn ack(
        &self,
        stream: &str,
        group: &str,
        entries: &[String],
    ) -> Result<(), EventsError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _: i64 = self.client.xack(stream, group, entries.to_vec()).await?;
        Ok(())
    }

    /// Takes over up to `count` entries pending for at least `min_idle` in the group
    /// (`XAUTOCLAIM`), with how many times each has now been delivered.
    pub async fn reclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: u64,
    ) -> Result<Vec<(Delivery, u64)>, EventsError> {
        let (_next, entries): (String, Vec<Entry>) = self
            .client
            .xautoclaim_values(
                stream,
                group,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                Some(count),
                false,
            )
            .await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Delivery counts of what this consumer now holds, in one XPENDING over the range.
        let first = entries.first().map(|e| e.0.clone()).unwrap_or_default();
        let last = entries.last().map(|e| e.0.clone()).unwrap_or_default();
        let pending: Vec<(String, String, u64, u64)> = self
            .client
            .xpending(
                stream,
                group,
                (
                    first.as_str(),
                    last.as_str(),
                    count.max(entries.len() as u64),
                    consumer,
                ),
            )
            .await?;
        let counts: HashMap<String, u64> = pending
            .into_iter()
            .map(|(id, _, _, deliveries)| (id, deliveries))
            .collect();
        Ok(entries
            .into_iter()
            .map(|(entry, fields)| {
                let n = counts.get(&entry).copied().unwrap_or(1);
                (delivery(entry, fields), n)
            })
            .collect())
    }

    /// Pending count and lag of `group`.
    pub async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState, EventsError> {
        let groups: Vec<HashMap<String, Value>> = self.client.xinfo_groups(stream).await?;
        let Some(g) = groups
            .into_iter()
            .find(|g| g.get("name").and_then(Value::as_str).as_deref() == Some(group))
        else {
            return Ok(GroupState::default());
        };
        let number = |k: &str| g.get(k).and_then(Value::as_u64);
        Ok(GroupState {
            pending: number("pending").unwrap_or(0),
            lag: number("lag"),
        })
    }

    /// Entries in `stream`.
    pub async fn len(&self, stream: &str) -> Result<u64, EventsError> {
        Ok(self.client.xlen(stream).await?)
    }

    /// Every entry of `stream`, oldest first, as raw fields (for tests and tooling).
    pub async fn entries(&self, stream: &str) -> Result<Vec<HashMap<String, String>>, EventsError> {
        let all: Vec<Entry> = self.client.xrange_values(stream, "-", "+", None).await?;
        Ok(all.into_iter().map(|(_, f)| f).collect())
    }
}

/// Decodes an entry's fields into the event they carry.
fn delivery(entry: String, fields: HashMap<String, String>) -> Delivery {
    Delivery {
        event: decode(&fields),
        entry,
        fields,
    }
}

fn decode(fields: &HashMap<String, String>) -> Result<OutboxEvent, String> {
    let get = |k: &str| {
        fields
            .get(k)
            .ok_or_else(|| format!("entry has no `{k}` field"))
    };
    let id: i64 = get("id")?
        .parse()
        .map_err(|_| "`id` is not an integer".to_owned())?;
    let kind: EventKind = get("kind")?.parse().map_err(|e| format!("{e}"))?;
    let payload: serde_json::Value =
        serde_json::from_str(get("payload")?).map_err(|_| "`payload` is not json".to_owned())?;
    let at: i64 = get("at")?
        .parse()
        .map_err(|_| "`at` is not an integer".to_owned())?;
    let created_at = DateTime::<Utc>::from_timestamp_micros(at)
        .ok_or_else(|| "`at` is out of range".to_owned())?;
    Ok(OutboxEvent {
        id: EventId(id),
        kind,
        payload,
        created_at,
        published_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn entries_decode_or_say_what_is_wrong() {
        let ok = decode(&fields(&[
            ("id", "7"),
            ("kind", "user.followed"),
            ("payload", r#"{"follower":1,"followee":2}"#),
            ("at", "1700000000000000"),
        ]))
        .unwrap();
        assert_eq!(ok.id, EventId(7));
        assert_eq!(ok.kind, EventKind::UserFollowed);
        assert_eq!(ok.payload["followee"], 2);
        let missing = decode(&fields(&[("id", "7")])).unwrap_err();
        assert_eq!(missing, "entry has no `kind` field");
        let bad = decode(&fields(&[
            ("id", "x"),
            ("kind", "user.followed"),
            ("payload", "{}"),
            ("at", "1"),
        ]))
        .unwrap_err();
        assert_eq!(bad, "`id` is not an integer");
        let kind = decode(&fields(&[
            ("id", "1"),
            ("kind", "user.poked"),
            ("payload", "{}"),
            ("at", "1"),
        ]))
        .unwrap_err();
        assert!(kind.contains("user.poked"), "{kind}");
    }
}
