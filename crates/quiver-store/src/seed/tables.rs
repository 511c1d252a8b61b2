//! The tables of a data set as typed cells, parents before children, which each backend
//! writes in its own format.

use super::Dataset;
use chrono::{DateTime, Utc};

/// One value of a generated row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cell<'a> {
    Int(i64),
    Text(&'a str),
    Bool(bool),
    Time(DateTime<Utc>),
    Null,
}

fn opt_int(v: Option<i64>) -> Cell<'static> {
    v.map_or(Cell::Null, Cell::Int)
}

/// Writes row `i` of a table as cells, in the table's column order.
pub(crate) type RowWriter<'a> = Box<dyn Fn(usize, &mut Vec<Cell<'a>>) + 'a>;

/// One table of a data set: its name, its column list and its rows.
pub(crate) struct Table<'a> {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static str,
    pub(crate) rows: usize,
    pub(crate) row: RowWriter<'a>,
}

/// Every table of `ds`, parents before children.
pub(crate) fn tables(ds: &Dataset) -> Vec<Table<'_>> {
    use Cell::{Bool, Int, Null, Text, Time};
    vec![
        Table {
            name: "users",
            columns: "(id, handle, display_name, bio, avatar_url, verified, creator, private, created_at)",
            rows: ds.users.len(),
            row: Box::new(|i, r| {
                let (u, f) = &ds.users[i];
                r.extend([
                    Int(u.id.0),
                    Text(&u.handle),
                    Text(&u.display_name),
                    Text(&u.bio),
                    u.avatar_url.as_deref().map_or(Null, Text),
                    Bool(f.verified),
                    Bool(f.creator),
                    Bool(f.private),
                    Time(u.created_at),
                ]);
            }),
        },
        Table {
            name: "follows",
            columns: "(follower_id, followee_id, created_at)",
            rows: ds.follows.len(),
            row: Box::new(|i, r| {
                let f = &ds.follows[i];
                r.extend([Int(f.follower.0), Int(f.followee.0), Time(f.created_at)]);
            }),
        },
        Table {
            name: "blocks",
            columns: "(blocker_id, blocked_id, created_at)",
            rows: ds.blocks.len(),
            row: Box::new(|i, r| {
                let b = &ds.blocks[i];
                r.extend([Int(b.blocker.0), Int(b.blocked.0), Time(b.created_at)]);
            }),
        },
        Table {
            name: "posts",
            columns: "(id, author_id, kind, body, price_cents, currency, product_url, created_at)",
            rows: ds.posts.len(),
            row: Box::new(|i, r| {
                let p = &ds.posts[i];
                r.extend([
                    Int(p.id.0),
                    Int(p.author_id.0),
                    Text(p.kind.as_str()),
                    Text(&p.body),
                ]);
                match &p.wish {
                    Some(w) => r.extend([
                        Int(w.price.amount_cents),
                        Text(w.price.currency.as_str()),
                        Text(&w.product_url),
                    ]),
                    None => r.extend([Null, Null, Null]),
                }
                r.push(Time(p.created_at));
            }),
        },
        Table {
            name: "media",
            columns: "(id, post_id, kind, url, width, height, size_bytes, position)",
            rows: ds.media.len(),
            row: Box::new(|i, r| {
                let m = &ds.media[i];
                r.extend([
                    Int(m.id.0),
                    Int(m.post_id.0),
                    Text(m.kind.as_str()),
                    Text(&m.url),
                    Int(m.width.into()),
                    Int(m.height.into()),
                    Int(m.size_bytes),
                    Int(m.position.into()),
                ]);
            }),
        },
        Table {
            name: "post_tags",
            columns: "(post_id, tag)",
            rows: ds.tags.len(),
            row: Box::new(|i, r| {
                let (post, tag) = ds.tags[i];
                r.extend([Int(post), Text(tag)]);
            }),
        },
        Table {
            name: "orders",
            columns: "(id, customer_id, status, total_cents, currency, created_at, updated_at)",
            rows: ds.orders.len(),
            row: Box::new(|i, r| {
                let o = &ds.orders[i];
                r.extend([
                    Int(o.id.0),
                    Int(o.customer_id.0),
                    Text(o.status.as_str()),
                    Int(o.total.amount_cents),
                    Text(o.total.currency.as_str()),
                    Time(o.created_at),
                    Time(o.updated_at),
                ]);
            }),
        },
        Table {
            name: "order_items",
            columns: "(order_id, post_id, quantity, unit_price_cents, currency)",
            rows: ds.order_items.len(),
            row: Box::new(|i, r| {
                let it = &ds.order_items[i];
                r.extend([
                    Int(it.order_id.0),
                    Int(it.post_id.0),
                    Int(it.quantity.into()),
                    Int(it.unit_price.amount_cents),
                    Text(it.unit_price.currency.as_str()),
                ]);
            }),
        },
        Table {
            name: "notifications",
            columns: "(id, user_id, kind, actor_id, post_id, order_id, created_at)",
            rows: ds.notifications.len(),
            row: Box::new(|i, r| {
                let n = &ds.notifications[i];
                r.extend([
                    Int(n.id.0),
                    Int(n.user_id.0),
                    Text(n.kind.as_str()),
                    opt_int(n.actor_id.map(|v| v.0)),
                    opt_int(n.post_id.map(|v| v.0)),
                    opt_int(n.order_id.map(|v| v.0)),
                    Time(n.created_at),
                ]);
            }),
        },
        Table {
            name: "home_timeline",
            columns: "(user_id, created_at, post_id, author_id)",
            rows: ds.home_timeline.len(),
            row: Box::new(|i, r| {
                let (user, at, post, author) = ds.home_timeline[i];
                r.extend([Int(user), Time(at), Int(post), Int(author)]);
            }),
        },
    ]
}
