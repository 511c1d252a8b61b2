//! Redis Streams through fred, behind our own small type (fred has had no release since
//! Feb 2025, so no fred type crosses this boundary). One [`RedisStreams`] is one
//! connection: a blocking `XREADGROUP` stalls every other command on its connection, so
//! each consumer gets its own and the relay another.

use crate::EventsError;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::RespVersion;
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

/// What one `XAUTOCLAIM` took over.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Entries now this consumer's, each with its delivery count.
    pub deliveries: Vec<(Delivery, u64)>,
    /// Ids of pending entries whose data was deleted from the stream: they are out of
    /// the group now and will never be delivered.
    pub deleted: Vec<String>,
}

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

    /// Appends `events` to `stream` in one round trip (a pipeline of `XADD`). No length
    /// cap: an entry leaves the stream only when every group has acknowledged it (see
    /// [`RedisStreams::trim_acknowledged`]).
    pub async fn append(&self, stream: &str, events: &[OutboxEvent]) -> Result<(), EventsError> {
        if events.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.pipeline();
        for e in events {
            let mut fields: Vec<(&str, String)> = vec![
                ("id", e.id.0.to_string()),
                ("kind", e.kind.as_str().to_owned()),
                ("payload", e.payload.to_string()),
                ("at", e.created_at.timestamp_micros().to_string()),
            ];
            // The trace goes on through a publishing span of its own, or as it came when
            // this process does not trace.
            let span = tracing::debug_span!(
                "publish",
                otel.kind = "producer",
                event.id = e.id.0,
                event.kind = e.kind.as_str(),
            );
            crate::trace::continue_trace(&span, e.trace_context.as_deref());
            if let Some(tp) = crate::trace::traceparent(&span).or_else(|| e.trace_context.clone()) {
                fields.push(("traceparent", tp));
            }
            let () = pipeline
                .xadd(stream, false, None::<()>, "*", fields)
                .await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Appends raw `fields` to `stream` (the dead-letter stream, uncapped: a dead letter
    /// is kept until an operator has looked at it).
    pub async fn append_raw(
        &self,
        stream: &str,
        fields: Vec<(String, String)>,
    ) -> Result<(), EventsError> {
        let _: String = self
            .client
            .xadd(stream, false, None::<()>, "*", fields)
            .await?;
        Ok(())
    }

    /// Removes from `stream` the entries every consumer group is done with: those before
    /// the oldest entry any group still has pending, or (with nothing pending) after
    /// the last one it was delivered (`XTRIM MINID`, exact: it runs every few seconds,
    /// and `~` would leave a small stream untrimmed). With no group yet nothing is
    /// trimmed: the entries wait for their first consumer. Returns how many went.
    pub async fn trim_acknowledged(&self, stream: &str) -> Result<u64, EventsError> {
        let groups: Vec<HashMap<String, Value>> = match self.client.xinfo_groups(stream).await {
            Ok(g) => g,
            // No stream yet: nothing to trim.
            Err(e) if e.details().contains("no such key") => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut keep_from: Option<(u64, u64)> = None;
        for g in &groups {
            let Some(name) = g.get("name").and_then(Value::as_string) else {
                continue;
            };
            let pending = g.get("pending").and_then(Value::as_u64).unwrap_or(0);
            let from = if pending > 0 {
                // XPENDING's summary: [count, smallest id, greatest id, consumers].
                let summary: Vec<Value> = self.client.xpending(stream, name.as_str(), ()).await?;
                summary
                    .get(1)
                    .and_then(Value::as_string)
                    .and_then(|id| parse_id(&id))
            } else {
                g.get("last-delivered-id")
                    .and_then(Value::as_string)
                    .and_then(|id| parse_id(&id))
                    .map(|(ms, seq)| (ms, seq + 1))
            };
            // A group whose position cannot be read keeps everything.
            let Some(from) = from else { return Ok(0) };
            keep_from = Some(keep_from.map_or(from, |k| k.min(from)));
        }
        let Some((ms, seq)) = keep_from else {
            return Ok(0);
        };
        let trimmed: u64 = self
            .client
            .xtrim(
                stream,
                (
                    fred::types::streams::XCapKind::MinID,
                    fred::types::streams::XCapTrim::Exact,
                    format!("{ms}-{seq}"),
                ),
            )
            .await?;
        Ok(trimmed)
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
        // Read as a raw value: an idle read's reply is nil, which fred's map conversion
        // refuses ("Cannot convert to map").
        let reply: Value = self
            .client
            .xreadgroup(
                group,
                consumer,
                Some(count),
                Some(block.as_millis() as u64),
                false,
                stream,
                ">",
            )
            .await?;
        if reply.is_null() {
            return Ok(Vec::new());
        }
        let response: fred::types::streams::XReadResponse<String, String, String, String> =
            reply.into_xread_response()?;
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
    /// (`XAUTOCLAIM`), with how many times each has now been delivered, and the ids of
    /// pending entries whose data is gone from the stream (Redis 7 drops them from the
    /// group and reports them once; fred's own conversion would discard them).
    pub async fn reclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: u64,
    ) -> Result<Reclaimed, EventsError> {
        let reply: Value = self
            .client
            .xautoclaim(
                stream,
                group,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                Some(count),
                false,
            )
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(EventsError::Redis(
                "XAUTOCLAIM answered no array".to_owned(),
            ));
        };
        let deleted: Vec<String> = if parts.len() == 3 {
            parts
                .pop()
                .map(Value::convert)
                .transpose()?
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let entries: Vec<Entry> = match parts.pop() {
            // Before Redis 7 a deleted entry is a nil in the list.
            Some(v) => {
                let live: Vec<Value> = v
                    .into_array()
                    .into_iter()
                    .filter(|e| !e.is_null())
                    .collect();
                Value::Array(live).flatten_array_values(1).convert()?
            }
            None => Vec::new(),
        };
        if entries.is_empty() {
            return Ok(Reclaimed {
                deliveries: Vec::new(),
                deleted,
            });
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
        Ok(Reclaimed {
            deliveries: entries
                .into_iter()
                .map(|(entry, fields)| {
                    let n = counts.get(&entry).copied().unwrap_or(1);
                    (delivery(entry, fields), n)
                })
                .collect(),
            deleted,
        })
    }

    /// Removes from `group` the consumers with nothing pending that have not read for
    /// `idle` (each process names its consumers anew, so restarts leave old names
    /// behind); a live one removed by mistake is made again by its next read. Returns
    /// how many went.
    pub async fn remove_idle_consumers(
        &self,
        stream: &str,
        group: &str,
        idle: Duration,
    ) -> Result<u64, EventsError> {
        let consumers: Vec<HashMap<String, Value>> =
            match self.client.xinfo_consumers(stream, group).await {
                Ok(c) => c,
                Err(e)
                    if e.details().contains("no such key") || e.details().contains("NOGROUP") =>
                {
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            };
        let mut removed = 0;
        for c in consumers {
            let number = |k: &str| c.get(k).and_then(Value::as_u64);
            let Some(name) = c.get("name").and_then(Value::as_string) else {
                continue;
            };
            if number("pending") == Some(0)
                && number("idle").is_some_and(|ms| ms >= idle.as_millis() as u64)
            {
                let _: i64 = self.client.xgroup_delconsumer(stream, group, name).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes entries from `stream` (`XDEL`), as an operator (or a test) may.
    pub async fn delete_entries(&self, stream: &str, ids: &[String]) -> Result<u64, EventsError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self.client.xdel(stream, ids.to_vec()).await?)
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

/// A stream entry id (`1700000000000-3`) as its two numbers, which order like the ids.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
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
        trace_context: fields.get("traceparent").cloned(),
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
    fn entry_ids_parse_into_their_order() {
        assert_eq!(parse_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_id("0-0"), Some((0, 0)));
        assert!(parse_id("1-2") < parse_id("1-10"));
        assert!(parse_id("9-0") < parse_id("10-0"));
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id("1-"), None);
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
