//! The contract's event side: the outbox, notifications, housekeeping and fan-out.

use super::*;
use crate::support::fixture;

pub(super) async fn notifications_walk_newest_first_with_values_intact(backend: Backend) {
    let mut ds = fixture(100);
    let base = ds.notifications[0].clone();
    for (i, minutes) in [(2, 5), (3, 5), (4, 1), (5, 9), (6, 0)] {
        ds.notifications.push(quiver_model::Notification {
            id: quiver_model::NotificationId(i),
            post_id: Some(PostId(1)),
            created_at: base.created_at + chrono::Duration::minutes(minutes),
            read_at: (i % 2 == 0).then_some(base.created_at),
            ..base.clone()
        });
    }
    let store = backend.load(&ds).await;
    let mut want: Vec<_> = ds
        .notifications
        .iter()
        .filter(|n| n.user_id == UserId(2))
        .map(|n| (n.created_at, n.id.0))
        .collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(want.len(), 6);
    for limit in [1, 2, 5] {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move {
                store
                    .notifications(UserId(2), c, limit)
                    .await
                    .map(|p| quiver_model::Page {
                        items: p.items.iter().map(|n| (n.created_at, n.id.0)).collect(),
                        next: p.next,
                    })
            }
        })
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
    let page = store.notifications(UserId(2), None, 10).await.unwrap();
    let newest = ds.notifications.iter().find(|n| n.id.0 == 5).unwrap();
    assert_eq!(&page.items[0], newest, "values survive the round trip");
    assert!(
        store
            .notifications(UserId(3), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub(super) async fn the_outbox_is_claimed_oldest_first_and_published_once(backend: Backend) {
    backend.load(&fixture(3)).await;
    let g = backend.writes();
    let outbox = backend.outbox_relay();
    assert_eq!(outbox.backlog().await.unwrap().unpublished, 0);
    assert!(outbox.claim(10).await.unwrap().events().is_empty());
    g.follow(UserId(6), UserId(2)).await.unwrap();
    g.follow(UserId(6), UserId(3)).await.unwrap();
    g.unfollow(UserId(6), UserId(2)).await.unwrap();
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!(backlog.unpublished, 3);
    assert!(backlog.oldest.is_some());

    let claim = outbox.claim(2).await.unwrap();
    let kinds: Vec<_> = claim.events().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["user.followed", "user.followed"]);
    assert_eq!(claim.events()[1].payload["followee"], 3);
    let first = claim.events()[0].id;
    // Only the first is published; the second comes back with the third.
    claim.published(&[first]).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap().unpublished, 2);
    let claim = outbox.claim(10).await.unwrap();
    let ids: Vec<_> = claim.events().iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| *id > first));
    // A claim released unfinished publishes nothing.
    claim.release().await.unwrap();
    let claim = outbox.claim(10).await.unwrap();
    assert_eq!(claim.events().len(), 2);
    let ids: Vec<_> = claim.events().iter().map(|e| e.id).collect();
    claim.published(&ids).await.unwrap();
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!((backlog.unpublished, backlog.oldest), (0, None));
    assert!(outbox.claim(10).await.unwrap().events().is_empty());
}

pub(super) async fn notifications_from_events_are_inserted_once_per_key(backend: Backend) {
    let store = backend.load(&fixture(3)).await;
    let effects = backend.effects();
    let note = |key: &str, user: i64, post: Option<i64>| NewNotification {
        key: key.to_owned(),
        user_id: UserId(user),
        kind: quiver_model::NotificationKind::WishBought,
        actor_id: Some(UserId(1)),
        post_id: post.map(PostId),
        order_id: Some(OrderId(1)),
    };
    let notes = [note("9:a", 2, Some(3)), note("9:b", 3, Some(7))];
    assert_eq!(effects.notify(&notes).await.unwrap(), 2);
    assert_eq!(
        effects.notify(&notes).await.unwrap(),
        0,
        "the same keys again"
    );
    // A vanished reference becomes null; a vanished recipient gets nothing.
    let odd = [note("9:c", 2, Some(424_242)), note("9:d", 999, None)];
    assert_eq!(effects.notify(&odd).await.unwrap(), 1);
    let page = store.notifications(UserId(2), None, 10).await.unwrap();
    let mine: Vec<_> = page
        .items
        .iter()
        .filter(|n| n.kind == quiver_model::NotificationKind::WishBought)
        .map(|n| (n.post_id, n.actor_id, n.order_id))
        .collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&(Some(PostId(3)), Some(UserId(1)), Some(OrderId(1)))));
    assert!(mine.contains(&(None, Some(UserId(1)), Some(OrderId(1)))));
    assert_eq!(effects.notify(&[]).await.unwrap(), 0);
}

pub(super) async fn housekeeping_prunes_what_outlived_its_retention_and_trims_timelines(
    backend: Backend,
) {
    use quiver_model::EventId;
    use quiver_store::events::Retention;
    backend.load(&fixture(100)).await;
    let w = backend.writes();
    w.follow(UserId(6), UserId(2)).await.unwrap();
    w.unfollow(UserId(6), UserId(2)).await.unwrap();
    w.follow(UserId(6), UserId(2)).await.unwrap();
    let outbox = backend.outbox_relay();
    let claim = outbox.claim(10).await.unwrap();
    let ids: Vec<EventId> = claim.events().iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    claim
        .finish(&ids[..2], &[(ids[2], "it failed".to_owned())])
        .await
        .unwrap();
    w.unfollow(UserId(6), UserId(2)).await.unwrap();
    let busiest = "SELECT count(*) FROM home_timeline
                   GROUP BY user_id ORDER BY count(*) DESC LIMIT 1";
    assert!(
        backend.count(busiest).await > 3,
        "the fixture has deep timelines"
    );
    let newest = |user: i64| {
        format!(
            "SELECT count(*) FROM home_timeline h WHERE user_id = {user} AND
             (SELECT count(*) FROM home_timeline n WHERE n.user_id = h.user_id
              AND (n.created_at > h.created_at
                   OR (n.created_at = h.created_at AND n.post_id > h.post_id))) < 3"
        )
    };
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for u in 1..=5 {
            v.push(backend.count(&newest(u)).await);
        }
        v
    };
    let retention = Retention {
        outbox: std::time::Duration::ZERO,
        idempotency_keys: std::time::Duration::ZERO,
        notifications: std::time::Duration::ZERO,
        timeline_depth: 3,
        users_per_step: 1000,
        rows_per_step: 10_000,
    };
    let pruned = outbox.prune(&retention, UserId(0)).await.unwrap();
    assert_eq!(pruned.outbox, 2, "the published rows, not the dead letter");
    assert!(pruned.timeline_entries > 0);
    assert!(pruned.next_user.is_some());
    assert_eq!(
        backend
            .count("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
            .await,
        1,
        "dead letters are kept"
    );
    assert_eq!(
        backend
            .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1,
        "unpublished rows are kept"
    );
    assert_eq!(backend.count("SELECT count(*) FROM notifications").await, 0);
    assert_eq!(backend.count(busiest).await, 3);
    for (u, kept) in (1..=5).zip(before) {
        // What is left of each timeline is its newest entries.
        assert_eq!(backend.count(&newest(u)).await, kept, "user {u}");
    }
    // Past the last user the next step starts over.
    let again = outbox
        .prune(&retention, pruned.next_user.unwrap())
        .await
        .unwrap();
    assert_eq!((again.timeline_entries, again.next_user), (0, None));
}

/// A post older than a follower's oldest timeline entry, fanned out late (a redelivery,
/// a reclaimed entry), is not written into that timeline: merge-at-read would otherwise
/// resume from it and skip what lies between.
pub(super) async fn a_late_fan_out_keeps_timelines_contiguous(backend: Backend) {
    backend.load(&fixture(3)).await;
    let new = quiver_model::NewPost {
        kind: PostKind::Post,
        body: "late".into(),
        media: vec![],
        tags: vec![],
        wish: None,
    };
    let posts = backend.post_writes();
    let old = posts.create_post(UserId(1), &new).await.unwrap();
    backend
        .exec(
            &format!(
                "UPDATE posts SET created_at = '2000-01-01T00:00:00Z' WHERE id = {}",
                old.id
            ),
            &format!(
                "UPDATE posts SET created_at = 946684800000000 WHERE id = {}",
                old.id
            ),
        )
        .await;
    let in_timeline = |post: PostId| {
        format!("SELECT count(*) FROM home_timeline WHERE user_id = 2 AND post_id = {post}")
    };
    assert!(
        backend
            .count("SELECT count(*) FROM home_timeline WHERE user_id = 2")
            .await
            > 0
    );
    let holders = backend
        .effects()
        .fan_out(old.id, FanOut::batches_of(10))
        .await
        .unwrap();
    assert!(holders.contains(&UserId(2)), "user 2 follows user 1");
    assert_eq!(
        backend.count(&in_timeline(old.id)).await,
        0,
        "older than the timeline"
    );
    let fresh = posts.create_post(UserId(1), &new).await.unwrap();
    backend
        .effects()
        .fan_out(fresh.id, FanOut::batches_of(10))
        .await
        .unwrap();
    assert_eq!(
        backend.count(&in_timeline(fresh.id)).await,
        1,
        "a new post is written"
    );
}
