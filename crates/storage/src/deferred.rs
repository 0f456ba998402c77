//! Writes that wait for their transaction's commit ([`crate::WriteTx::execute_at_commit`]) and,
//! on PostgreSQL, travel with the `COMMIT`: the saga's status changes, timeline entries, outbox
//! events, new shipments, their schedules and items.
//!
//! A batch of saga steps defers a few such writes per order, most of them of the same few
//! kinds; sent one statement each, they cost PostgreSQL an executor start, a plan and a
//! protocol exchange apiece (the pipeline's profile: executor start and run 31%, socket I/O
//! 11%). So writes of one kind are merged: their statement's one `VALUES (…)` row is repeated,
//! each copy with its own parameters, and one statement carries them all. The order of the
//! writes is kept within a kind (a `VALUES` list is inserted in its order, so an outbox
//! event's sequence still follows its commit order); kinds go out in the order of their first
//! write. A write may point to a row another kind wrote earlier in the same commit (a
//! shipment's items to the shipment, both written by the split stage): its kind's first write
//! comes after that row's, so its statement follows, and that order is all that matters.
//!
//! An `UPDATE … FROM (VALUES …)` meets each target row once per statement: two changes of
//! one order in one statement would apply only one. A kind names its key
//! ([`AtCommit::distinct_param`]), and a statement takes no key twice: the second change of an
//! order goes in the next statement, after the first.

use crate::sql::OwnedParam;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One kind of write that may wait for the commit: its statements, one row each.
#[derive(Debug)]
pub(crate) struct AtCommit {
    /// `db.query.summary` of a statement of this kind.
    pub(crate) summary: &'static str,
    /// PostgreSQL's statement, with exactly one `VALUES (…)` row holding every parameter.
    pub(crate) postgres: &'static str,
    /// SQLite's statement (run at once, one row: SQLite has no round trips to save).
    pub(crate) sqlite: &'static str,
    /// The parameter (0-based) no two rows of one statement may share, if any (an `UPDATE`'s
    /// key).
    pub(crate) distinct_param: Option<usize>,
}

impl AtCommit {
    /// An `INSERT … VALUES (…)` (optionally `ON CONFLICT … DO NOTHING`), the same statement on
    /// both databases; any number of rows merge.
    pub(crate) const fn insert(summary: &'static str, sql: &'static str) -> AtCommit {
        AtCommit {
            summary,
            postgres: sql,
            sqlite: sql,
            distinct_param: None,
        }
    }
}

impl AtCommit {
    /// A write only PostgreSQL defers (a data-modifying CTE SQLite cannot run): on SQLite its
    /// caller runs the equivalent steps itself, and [`crate::WriteTx::execute_at_commit`]
    /// refuses it.
    pub(crate) const fn postgres_only(
        summary: &'static str,
        postgres: &'static str,
        distinct_param: Option<usize>,
    ) -> AtCommit {
        AtCommit {
            summary,
            postgres,
            sqlite: "",
            distinct_param,
        }
    }
}

/// A write held back until its transaction commits.
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    pub(crate) kind: &'static AtCommit,
    pub(crate) params: Vec<OwnedParam>,
}

/// The most rows one merged statement carries. Statements are cut in powers of two up to it,
/// so each kind has at most eight statement texts to prepare per connection.
const MAX_ROWS: usize = 128;

/// One statement of a commit: its text and its parameters, row after row.
pub(crate) struct Statement<'a> {
    pub(crate) sql: Arc<str>,
    pub(crate) params: Vec<&'a OwnedParam>,
}

/// The statements that carry `deferred` to PostgreSQL: one per kind and chunk, kinds in the
/// order of their first write, writes of one kind in their order.
pub(crate) fn statements<'a>(deferred: &'a [Deferred]) -> Vec<Statement<'a>> {
    let mut kinds: Vec<(&'static AtCommit, Vec<&'a Deferred>)> = Vec::new();
    for write in deferred {
        match kinds
            .iter_mut()
            .find(|(kind, _)| std::ptr::eq(*kind, write.kind))
        {
            Some((_, writes)) => writes.push(write),
            None => kinds.push((write.kind, vec![write])),
        }
    }
    let mut statements = Vec::new();
    for (kind, writes) in kinds {
        for run in runs_with_distinct_keys(kind, &writes) {
            let mut rest = run;
            while !rest.is_empty() {
                let rows = chunk_size(rest.len());
                let (chunk, after) = rest.split_at(rows);
                statements.push(Statement {
                    sql: merged_sql(kind, rows),
                    params: chunk
                        .iter()
                        .flat_map(|write: &&'a Deferred| -> &'a [OwnedParam] { &write.params })
                        .collect(),
                });
                rest = after;
            }
        }
    }
    statements
}

/// `writes` cut where a row would repeat a key already in its statement.
fn runs_with_distinct_keys<'w, 'a>(
    kind: &AtCommit,
    writes: &'w [&'a Deferred],
) -> Vec<&'w [&'a Deferred]> {
    let Some(key) = kind.distinct_param else {
        return vec![writes];
    };
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, write) in writes.iter().enumerate() {
        let repeats = writes[start..i]
            .iter()
            .any(|earlier| earlier.params.get(key) == write.params.get(key));
        if repeats {
            runs.push(&writes[start..i]);
            start = i;
        }
    }
    runs.push(&writes[start..]);
    runs
}

/// The largest power of two up to `remaining` and [`MAX_ROWS`].
fn chunk_size(remaining: usize) -> usize {
    let power = 1usize << (usize::BITS - 1 - remaining.leading_zeros());
    power.min(MAX_ROWS)
}

/// Merged statement texts by kind (its address) and rows.
type BuiltStatements = HashMap<(usize, usize), Arc<str>>;

/// The statement of `kind` carrying `rows` rows, built once per process.
fn merged_sql(kind: &'static AtCommit, rows: usize) -> Arc<str> {
    static BUILT: OnceLock<Mutex<BuiltStatements>> = OnceLock::new();
    let key = (std::ptr::from_ref(kind) as usize, rows);
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(
        built
            .entry(key)
            .or_insert_with(|| repeat_values_row(kind.postgres, rows).into()),
    )
}

/// `sql` with its one `VALUES (…)` row written `rows` times, the parameters of copy `r`
/// numbered after those of copy `r - 1`.
///
/// Panics if `sql` has no `VALUES (…)` row or uses a parameter outside it: a kind's statement
/// is a constant, and the unit tests build every one.
fn repeat_values_row(sql: &str, rows: usize) -> String {
    const VALUES: &str = "VALUES (";
    let open = sql.find(VALUES).expect("a deferred write has a VALUES row") + VALUES.len() - 1;
    let close = matching_paren(sql, open);
    let (head, row, tail) = (&sql[..open], &sql[open..=close], &sql[close + 1..]);
    let per_row = highest_param(row);
    assert!(
        highest_param(head) == 0 && highest_param(tail) == 0,
        "every parameter of a deferred write is in its VALUES row: {sql}"
    );
    let mut merged = String::with_capacity(sql.len() + (rows - 1) * (row.len() + 8));
    merged.push_str(head);
    for copy in 0..rows {
        if copy > 0 {
            merged.push_str(", ");
        }
        renumber(row, copy * per_row, &mut merged);
    }
    merged.push_str(tail);
    merged
}

/// The index of the `)` closing the `(` at `open`.
fn matching_paren(sql: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, byte) in sql.bytes().enumerate().skip(open) {
        match byte {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced VALUES row: {sql}");
}

/// The `$n` parameters of `sql`, in order of appearance.
fn params_of(sql: &str) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let bytes = sql.as_bytes();
    (0..bytes.len()).filter_map(move |i| {
        if bytes[i] != b'$' {
            return None;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = sql[i + 1..i + 1 + digits].parse().ok()?;
        Some((i, i + 1 + digits, number))
    })
}

fn highest_param(sql: &str) -> usize {
    params_of(sql).map(|(_, _, n)| n).max().unwrap_or(0)
}

/// Appends `row` to `out` with every `$n` written `$(n + offset)`.
fn renumber(row: &str, offset: usize, out: &mut String) {
    let mut copied = 0;
    for (start, end, number) in params_of(row) {
        out.push_str(&row[copied..start]);
        out.push('$');
        out.push_str(&(number + offset).to_string());
        copied = end;
    }
    out.push_str(&row[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    static NOTE: AtCommit = AtCommit::insert(
        "INSERT notes",
        "INSERT INTO notes (id, at_ms, body) VALUES ($1, $2::bigint, lower($3)) ON CONFLICT (id) DO NOTHING",
    );
    static MOVE: AtCommit = AtCommit {
        summary: "UPDATE things",
        postgres: "UPDATE things AS t SET state = v.state FROM (VALUES ($1, $2)) AS v(state, id) WHERE t.id = v.id",
        sqlite: "UPDATE things SET state = $1 WHERE id = $2",
        distinct_param: Some(1),
    };

    fn write(kind: &'static AtCommit, params: &[&str]) -> Deferred {
        Deferred {
            kind,
            params: params
                .iter()
                .map(|p| OwnedParam::Text((*p).to_owned()))
                .collect(),
        }
    }

    fn texts(statement: &Statement<'_>) -> Vec<String> {
        statement
            .params
            .iter()
            .map(|p| match p {
                OwnedParam::Text(t) => t.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_row_is_repeated_with_its_parameters_numbered_on() {
        assert_eq!(
            repeat_values_row(NOTE.postgres, 3),
            "INSERT INTO notes (id, at_ms, body) VALUES ($1, $2::bigint, lower($3)), \
             ($4, $5::bigint, lower($6)), ($7, $8::bigint, lower($9)) ON CONFLICT (id) DO NOTHING"
        );
        assert_eq!(repeat_values_row(NOTE.postgres, 1), NOTE.postgres);
    }

    #[test]
    fn writes_of_a_kind_go_together_in_their_order_kinds_in_order_of_first_write() {
        let deferred = [
            write(&MOVE, &["paid", "o1"]),
            write(&NOTE, &["n1", "1", "a"]),
            write(&MOVE, &["paid", "o2"]),
            write(&NOTE, &["n2", "2", "b"]),
            write(&MOVE, &["split", "o3"]),
        ];
        let statements = statements(&deferred);
        let shapes: Vec<(usize, Vec<String>)> = statements
            .iter()
            .map(|s| (s.params.len(), texts(s)))
            .collect();
        assert_eq!(
            shapes,
            [
                (4, vec!["paid", "o1", "paid", "o2"]),
                (2, vec!["split", "o3"]),
                (6, vec!["n1", "1", "a", "n2", "2", "b"]),
            ]
            .map(|(n, p)| (n, p.into_iter().map(str::to_owned).collect()))
        );
        assert_eq!(statements[0].sql.matches("), (").count(), 1);
        assert_eq!(*statements[1].sql, *MOVE.postgres);
    }

    #[test]
    fn a_statement_never_changes_one_row_twice() {
        // o1 moves twice: the second move must see the first, so it waits for the next
        // statement; o2 rides with the first.
        let deferred = [
            write(&MOVE, &["risk_approved", "o1"]),
            write(&MOVE, &["risk_approved", "o2"]),
            write(&MOVE, &["rejected", "o1"]),
        ];
        let keys: Vec<Vec<String>> = statements(&deferred).iter().map(texts).collect();
        assert_eq!(
            keys,
            [
                vec!["risk_approved", "o1", "risk_approved", "o2"],
                vec!["rejected", "o1"],
            ]
            .map(|p| p.into_iter().map(str::to_owned).collect::<Vec<_>>())
        );
    }

    #[test]
    fn every_kind_of_ordo_repeats_its_row() {
        for kind in [
            &crate::orders::SET_STATUS_OF_LOCKED,
            &crate::outbox::APPEND_OUTBOX,
            &crate::timeline::APPEND_TIMELINE,
            &crate::shipments::INSERT_SHIPMENT_ITEM,
            &crate::shipments::INSERT_SHIPMENT,
            &crate::shipments::SCHEDULE_SHIPMENT,
            &crate::shipments::FINISH_PUSH,
            &crate::payments::SET_PAYMENT_STATUS_OF_LOCKED,
            &crate::payments::INSERT_PAYMENT,
        ] {
            let one = highest_param(kind.postgres);
            let merged = repeat_values_row(kind.postgres, MAX_ROWS);
            assert_eq!(highest_param(&merged), MAX_ROWS * one, "{}", kind.summary);
            assert_eq!(
                params_of(&merged).count(),
                MAX_ROWS * one,
                "{}",
                kind.summary
            );
        }
    }

    #[test]
    fn long_runs_are_cut_in_powers_of_two() {
        let deferred: Vec<Deferred> = (0..(MAX_ROWS + 7))
            .map(|i| write(&NOTE, &[&format!("n{i}"), "1", "x"]))
            .collect();
        let rows: Vec<usize> = statements(&deferred)
            .iter()
            .map(|s| s.params.len() / 3)
            .collect();
        assert_eq!(rows, [MAX_ROWS, 4, 2, 1]);
        let all: Vec<String> = statements(&deferred).iter().flat_map(texts).collect();
        assert_eq!(all.len(), (MAX_ROWS + 7) * 3);
        assert_eq!(all[3 * MAX_ROWS], format!("n{MAX_ROWS}"), "order kept");
    }
}
