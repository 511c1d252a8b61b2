//! The contract's celebrities: authors past the threshold are not fanned out, and home
//! feeds merge their posts at read time without gap or duplicate.

use super::*;
use crate::support::fixture;

pub(super) async fn celebrities_are_merged_at_read_time_not_fanned_out(backend: Backend) {
    let ds = fixture(3);
    let store = backend.load(&ds).await;
    let w = backend.post_writes();
    let effects = backend.effects();
    // Past one follower an author is a celebrity; 2 has two (1 and 3).
    let plan = FanOut {
        batch: 1,
        celebrity_followers: 1,
    };
    let new = quiver_model::NewPost {
        kind: PostKind::Post,
        body: "from a celebrity".into(),
        media: Vec::new(),
        tags: Vec::new(),
        wish: None,
    };
    let in_timeline = |post: PostId| {
        let backend = &backend;
        async move {
            backend
                .count(&format!(
                    "SELECT count(*) FROM home_timeline WHERE post_id = {post} AND user_id <> 2"
                ))
                .await
        }
    };
    // The post that finds 2 past the threshold is still fanned out, and names its
    // holders (whose cached heads must learn of the change), again on a redelivery.
    let first = w.create_post(UserId(2), &new).await.unwrap();
    assert_eq!(
        effects.fan_out(first.id, plan).await.unwrap(),
        [UserId(1), UserId(3)]
    );
    assert_eq!(in_timeline(first.id).await, 2);
    // Under the threshold still: 1 has one follower (2).
    let plain = w.create_post(UserId(1), &new).await.unwrap();
    assert_eq!(effects.fan_out(plain.id, plan).await.unwrap(), [UserId(2)]);
    // The celebrity's later posts are written nowhere.
    let second = w.create_post(UserId(2), &new).await.unwrap();
    assert_eq!(effects.fan_out(second.id, plan).await.unwrap(), []);
    assert_eq!(in_timeline(second.id).await, 0, "not fanned out");
    assert_eq!(
        effects.fan_out(first.id, plan).await.unwrap(),
        [UserId(1), UserId(3)],
        "the promoting post's redelivery names its holders again"
    );

    // Heads leave the celebrity's posts to the merge and name the celebrity.
    for viewer in [1, 3] {
        let head = store
            .head(PostList::Home(UserId(viewer)), 50)
            .await
            .unwrap();
        assert_eq!(head.merge, [UserId(2)], "{viewer} follows a celebrity");
        assert!(head.refs.iter().all(|r| r.id != second.id));
        let page = store
            .post_page(PostList::Home(UserId(viewer)), None, 1)
            .await
            .unwrap();
        assert_eq!(
            page.items[0].id, second.id,
            "merged first into {viewer}'s feed"
        );
    }
    let head = store.head(PostList::Home(UserId(4)), 50).await.unwrap();
    assert!(head.merge.is_empty(), "4 follows no celebrity");
    assert_eq!(
        store.head(PostList::Author(UserId(2)), 1).await.unwrap(),
        quiver_model::FeedHead::from(
            store
                .post_page(PostList::Author(UserId(2)), None, 1)
                .await
                .unwrap()
        ),
        "other lists' heads are their first pages"
    );

    // Every page, at every size, is the feed of followees and self: nothing missing,
    // nothing twice (the first post is in the timeline and the celebrity's posts).
    let mut all = ds.clone();
    all.posts
        .extend([first.clone(), second.clone(), plain.clone()]);
    for limit in 1..=4 {
        let walk_home = walk(limit, |c| {
            let store = store.clone();
            async move {
                store
                    .post_page(PostList::Home(UserId(1)), c, limit)
                    .await
                    .map(post_page)
            }
        })
        .await;
        assert_eq!(walk_home, expected(&all, &[1, 2, 3]), "limit {limit}");
    }
    // An unfollow drops the celebrity from the merge too.
    backend
        .writes()
        .unfollow(UserId(3), UserId(2))
        .await
        .unwrap();
    let head = store.head(PostList::Home(UserId(3)), 50).await.unwrap();
    assert!(head.merge.is_empty());
    let walk_home = walk(2, |c| {
        let store = store.clone();
        async move {
            store
                .post_page(PostList::Home(UserId(3)), c, 2)
                .await
                .map(post_page)
        }
    })
    .await;
    let followees: Vec<i64> = ds
        .follows
        .iter()
        .filter(|f| f.follower == UserId(3) && f.followee != UserId(2))
        .map(|f| f.followee.0)
        .chain([3])
        .collect();
    assert_eq!(walk_home, expected(&all, &followees));
}
