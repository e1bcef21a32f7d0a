//! What the caller's statements inside a pooled tenant or admin transaction may have left
//! on the session, observed without a round trip: the pools install a [`Watch`] (a diesel
//! [`Instrumentation`]) on each connection they hand out, which reads the text of every
//! statement sent while the transaction is open and keeps the worst [`Footprint`].
//!
//! The end of the transaction ([`crate::transaction`]) follows it:
//!
//! - [`Footprint::None`]: every statement was a `SELECT` that calls only functions known to
//!   keep no session state, with no error: `COMMIT` alone. Nothing was created that could
//!   outlive the transaction, so the guard and the reset have nothing to find;
//! - [`Footprint::Sequences`]: the same, with `INSERT`, `UPDATE` or `DELETE` statements,
//!   whose column defaults may call `nextval`: `COMMIT; DISCARD SEQUENCES` (so `currval`
//!   and `lastval` tell the next transaction nothing);
//! - [`Footprint::Unknown`]: anything else (a statement of any other kind, an unknown or
//!   schema-qualified function, a literal this reader does not parse, a statement that
//!   failed or did not finish, the watch replaced by `set_instrumentation`): the guard,
//!   `COMMIT` and the full reset, as always.
//!
//! The reader decides from the statement text alone, so it vouches for what the
//! application sends, not for what the schema runs on its behalf: a function, view,
//! trigger, rule or default created by the owner that changes session state (a
//! session-level `set_config`, a temporary table) is not seen, nor an owner's function
//! named like one of [`FUNCTIONS`] that an unqualified call reaches (an overload with
//! other argument types; a qualified call is always [`Footprint::Unknown`]). Such objects
//! are the owner's, like the policies themselves; `tenants audit` lists definer functions,
//! triggers and rules.
//!
//! Inside a `SELECT`, `INSERT`, `UPDATE`, `DELETE` or `WITH`, only a function can change the
//! session (a temporary table, a cursor, `LISTEN`, `PREPARE`, a session-level setting are
//! statements of their own; `SELECT .. INTO` is the one exception, refused): so the reader
//! checks each call, `name(`, against [`FUNCTIONS`] and the grammar's own parentheses, and
//! lets names of tables, columns and types pass. Diesel's query builder sends every value as
//! a bind parameter, so its statements are read as [`Footprint::None`] or
//! [`Footprint::Sequences`]; `sql_query` and `batch_execute` text is read the same way, and
//! anything this reader is not sure of is [`Footprint::Unknown`].

// The reader serves the pools; the end of a transaction names `Footprint` in every build.
#![cfg_attr(not(any(feature = "async", feature = "sync")), allow(dead_code))]

use std::fmt::{self, Write as _};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// What the statements of a transaction may have left on its session, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Footprint {
    /// Nothing: reads only.
    None,
    /// Sequence values: statements that write, whose defaults may call `nextval`.
    Sequences,
    /// Anything, as far as the client can tell.
    Unknown,
}

/// Functions that keep no session state, by their unqualified name: what diesel's query
/// builder renders (aggregates, string, date, array, range and JSON functions) and the
/// common built-ins beside them. Unqualified names resolve in `pg_catalog` first, unless
/// the login's `search_path` names it later on purpose; any other function (`set_config`,
/// `nextval`, `pg_advisory_lock`, `random`, the application's own) makes the footprint
/// [`Footprint::Unknown`].
const FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_append",
    "array_cat",
    "array_length",
    "array_position",
    "array_prepend",
    "array_remove",
    "array_to_string",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "cume_dist",
    "date",
    "date_part",
    "date_trunc",
    "dense_rank",
    "every",
    "extract",
    "first_value",
    "floor",
    "greatest",
    "isempty",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "json_object_agg",
    "json_typeof",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_insert",
    "jsonb_object_agg",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "lower",
    "lower_inc",
    "lower_inf",
    "ltrim",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "octet_length",
    "position",
    "range_merge",
    "rank",
    "replace",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rtrim",
    "sign",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_json",
    "to_jsonb",
    "to_timestamp",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
];

/// The key words that may stand before `(` without calling a function: the grammar's
/// (`IN (..)`, `EXISTS (..)`, `ON CONFLICT (..)`, `FILTER (WHERE ..)`), where a function of
/// the same name cannot be meant.
const KEYWORDS_BEFORE_PARENTHESIS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "cast",
    "conflict",
    "else",
    "except",
    "exists",
    "filter",
    "from",
    "having",
    "ilike",
    "in",
    "intersect",
    "is",
    "join",
    "lateral",
    "like",
    "limit",
    "not",
    "offset",
    "on",
    "or",
    "over",
    "returning",
    "row",
    "select",
    "some",
    "then",
    "union",
    "using",
    "values",
    "when",
    "where",
    "within",
];

/// One token of a statement, as far as the reader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An unquoted word, as written.
    Word(&'a str),
    /// A double-quoted identifier.
    Quoted,
    /// A number, a bind parameter (`$1`), a string literal or an operator.
    Value,
    /// `(`.
    Open,
    /// `.`.
    Dot,
    /// `::`.
    Cast,
    /// `)`, `,`, `[`, `]`, `:`.
    Punctuation,
}

/// The footprint of one statement's text.
pub(crate) fn statement_footprint(sql: &str) -> Footprint {
    tokens(sql).map_or(Footprint::Unknown, |tokens| footprint_of(&tokens))
}

fn footprint_of(tokens: &[Token<'_>]) -> Footprint {
    // Key words compared in place: no lowercase copy per statement.
    let is = |index: usize, keyword: &str| matches!(tokens.get(index), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword));
    let name = |index: usize| matches!(tokens.get(index), Some(Token::Word(_) | Token::Quoted));
    // Savepoints, as diesel's nested transactions send them.
    if (is(0, "savepoint") && tokens.len() == 2 && name(1))
        || (is(0, "release") && is(1, "savepoint") && tokens.len() == 3 && name(2))
        || (is(0, "rollback") && is(1, "to") && is(2, "savepoint") && tokens.len() == 4 && name(3))
    {
        return Footprint::None;
    }
    // `(SELECT ..) UNION (SELECT ..)` begins with parentheses.
    let first = tokens
        .iter()
        .position(|token| *token != Token::Open)
        .unwrap_or(0);
    let insert = is(0, "insert") && is(1, "into");
    let base = if is(first, "select") {
        Footprint::None
    } else if insert || is(0, "update") || is(0, "delete") || is(0, "with") {
        // `WITH` may hold an `INSERT`, `UPDATE` or `DELETE`.
        Footprint::Sequences
    } else {
        return Footprint::Unknown;
    };
    // The table of `INSERT INTO [schema.]table (columns)`, whose column list is no call.
    let insert_target = insert.then(|| {
        if tokens.get(3) == Some(&Token::Dot) {
            4
        } else {
            2
        }
    });
    for (index, token) in tokens.iter().enumerate() {
        let before = index.checked_sub(1).and_then(|i| tokens.get(i));
        let after = tokens.get(index + 1);
        let known = match token {
            // A type name (`::int4`, `::character varying(10)`).
            Token::Word(_) if before == Some(&Token::Cast) => true,
            Token::Word(_) | Token::Quoted
                if after == Some(&Token::Open) && Some(index) == insert_target =>
            {
                true
            }
            // A call: of a function known to keep no session state, unqualified (a
            // schema-qualified name reaches functions of any schema), or a key word of
            // the grammar; a quoted name is never a key word.
            Token::Word(word) if after == Some(&Token::Open) => {
                before != Some(&Token::Dot)
                    && FUNCTIONS
                        .iter()
                        .chain(KEYWORDS_BEFORE_PARENTHESIS)
                        .any(|known| known.eq_ignore_ascii_case(word))
            }
            Token::Quoted => after != Some(&Token::Open),
            // `SELECT .. INTO` creates a table; only `INSERT INTO` is known.
            Token::Word(word) if word.eq_ignore_ascii_case("into") => index == 1 && insert,
            // Any other word names a table, a column or a type, or is a key word: none of
            // them changes the session (a function reached as `row.f`, `f(row)`, is the
            // owner's: see the module documentation).
            _ => true,
        };
        if !known {
            return Footprint::Unknown;
        }
    }
    base
}

/// The tokens of `sql`, or `None` for text this reader does not parse with certainty
/// (`;`, dollar quotes, escape and Unicode strings, a backslash in a string, whose meaning
/// depends on `standard_conforming_strings`, non-ASCII words, unterminated quotes).
fn tokens(sql: &str) -> Option<Vec<Token<'_>>> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => at += 1,
            b'-' if next == Some(b'-') => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(bytes.len(), |end| at + end);
            }
            b'/' if next == Some(b'*') => at = block_comment_end(bytes, at)?,
            b'\'' => {
                // A prefix (`E'`, `U&'`, `B'`, `X'`) changes the literal's meaning.
                let previous = at.checked_sub(1).and_then(|i| bytes.get(i));
                if previous.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'&') {
                    return None;
                }
                at = quoted_end(bytes, at, b'\'', true)?;
                tokens.push(Token::Value);
            }
            b'"' => {
                at = quoted_end(bytes, at, b'"', false)?;
                tokens.push(Token::Quoted);
            }
            b'$' => {
                let digits = bytes[at + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None;
                }
                at += 1 + digits;
                tokens.push(Token::Value);
            }
            b'0'..=b'9' => {
                at += bytes[at..]
                    .iter()
                    .take_while(|&&b| b.is_ascii_digit() || b == b'.' || b == b'_')
                    .count();
                // An exponent; anything else glued to a number (`0x1F`, `1abc`, which
                // PostgreSQL 15 reads as a number and a word) is not read further.
                if matches!(bytes.get(at), Some(b'e' | b'E')) {
                    let sign = usize::from(matches!(bytes.get(at + 1), Some(b'+' | b'-')));
                    let digits = bytes[(at + 1 + sign).min(bytes.len())..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    if digits == 0 {
                        return None;
                    }
                    at += 1 + sign + digits;
                }
                if bytes
                    .get(at)
                    .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
                {
                    return None;
                }
                tokens.push(Token::Value);
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let length = bytes[at..]
                    .iter()
                    .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
                    .count();
                if bytes.get(at + length).is_some_and(|b| !b.is_ascii()) {
                    return None;
                }
                tokens.push(Token::Word(&sql[at..at + length]));
                at += length;
            }
            b'(' => {
                at += 1;
                tokens.push(Token::Open);
            }
            b'.' => {
                at += 1;
                tokens.push(Token::Dot);
            }
            b':' if next == Some(b':') => {
                at += 2;
                tokens.push(Token::Cast);
            }
            b')' | b',' | b'[' | b']' | b':' => {
                at += 1;
                tokens.push(Token::Punctuation);
            }
            b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#' | b'%'
            | b'^' | b'&' | b'|' | b'`' | b'?' => {
                // An operator; a comment may begin inside the run, as PostgreSQL reads it.
                at += 1;
                while let Some(&b) = bytes.get(at) {
                    let comment = matches!(
                        (b, bytes.get(at + 1)),
                        (b'-', Some(b'-')) | (b'/', Some(b'*'))
                    );
                    if comment || !b"+-*/<>=~!@#%^&|`?".contains(&b) {
                        break;
                    }
                    at += 1;
                }
                tokens.push(Token::Value);
            }
            // `;` (a second statement), `\`, `{`, `}`, non-ASCII outside quotes.
            _ => return None,
        }
    }
    Some(tokens)
}

/// The index after the (nested) block comment that starts at `start`.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    while at + 1 < bytes.len() {
        match (bytes[at], bytes[at + 1]) {
            (b'/', b'*') => {
                depth += 1;
                at += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => at += 1,
        }
    }
    None
}

/// The index after the literal or identifier quoted by `quote` that starts at `start`
/// (a doubled quote is one character). With `refuse_backslash`, a backslash inside is
/// `None`: whether it escapes depends on the session's `standard_conforming_strings`.
fn quoted_end(bytes: &[u8], start: usize, quote: u8, refuse_backslash: bool) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match *bytes.get(at)? {
            b if b == quote => {
                if bytes.get(at + 1) == Some(&quote) {
                    at += 2;
                } else {
                    return Some(at + 1);
                }
            }
            b'\\' if refuse_backslash => return None,
            _ => at += 1,
        }
    }
}

/// When a [`Watch`] reads a statement's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadAt {
    /// At `StartQuery`: diesel's sync connection, whose successful loads may report their
    /// end late or not at all.
    #[cfg_attr(not(feature = "sync"), allow(dead_code))]
    Start,
    /// At `FinishQuery`, counting starts and ends: diesel-async, whose end event carries
    /// the SQL text as sent (its start event would render the query a second time).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    Finish,
}

/// The diesel instrumentation the pools install on each connection they open (see the
/// module documentation). It forwards every event to diesel's default instrumentation
/// ([`diesel::connection::set_default_instrumentation`]), so a logger installed there
/// still sees pooled connections. A connection whose instrumentation is something else (a
/// pool of your own making without [`crate::TenantPool::manager_config`]'s set-up, or
/// `set_instrumentation` called on it) has no watch: its transactions end with the guard
/// and the full reset.
pub(crate) struct Watch {
    read_at: ReadAt,
    /// The worst footprint since the transaction began.
    footprint: Footprint,
    /// Statements started and not yet finished ([`ReadAt::Finish`]): a future dropped
    /// mid-statement.
    in_flight: usize,
    /// The statement text of the event being read, kept to save an allocation per event.
    text: String,
    inner: Option<Box<dyn Instrumentation>>,
}

impl Watch {
    /// A watch for a new connection of a pool.
    pub(crate) fn new(read_at: ReadAt) -> Self {
        Self {
            read_at,
            // Nothing is vouched for until a transaction begins.
            footprint: Footprint::Unknown,
            in_flight: 0,
            text: String::new(),
            inner: diesel::connection::get_default_instrumentation(),
        }
    }

    fn read(&mut self, query: &dyn fmt::Display) {
        self.text.clear();
        let mut sink = UntilBinds(&mut self.text);
        // An error here is `UntilBinds` stopping before the bind values: the text is in.
        let _ = write!(sink, "{query}");
        let footprint = statement_footprint(&self.text);
        self.record(footprint);
    }

    fn record(&mut self, footprint: Footprint) {
        self.footprint = self.footprint.max(footprint);
    }
}

/// Called once a transaction's begin batch succeeded on a connection with
/// `instrumentation`: the watch, if it has one, starts from nothing.
pub(crate) fn began(instrumentation: &mut dyn Instrumentation) {
    if let Some(watch) = instrumentation.downcast_mut::<Watch>() {
        watch.footprint = Footprint::None;
        watch.in_flight = 0;
    }
}

/// What the statements since [`began`] may have left on the session of the connection
/// with `instrumentation`: [`Footprint::Unknown`] without a watch, or when a statement
/// did not finish.
pub(crate) fn footprint(instrumentation: &mut dyn Instrumentation) -> Footprint {
    match instrumentation.downcast_mut::<Watch>() {
        Some(watch) if watch.in_flight == 0 => watch.footprint,
        _ => Footprint::Unknown,
    }
}

impl Instrumentation for Watch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match (&event, self.read_at) {
            (InstrumentationEvent::StartQuery { query, .. }, ReadAt::Start) => self.read(*query),
            (InstrumentationEvent::StartQuery { .. }, ReadAt::Finish) => self.in_flight += 1,
            (InstrumentationEvent::FinishQuery { query, error, .. }, read_at) => {
                if read_at == ReadAt::Finish {
                    // Saturating: a statement begun before the transaction.
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.read(*query);
                }
                if error.is_some() {
                    self.record(Footprint::Unknown);
                }
            }
            _ => {}
        }
        if let Some(inner) = self.inner.as_mut() {
            inner.on_connection_event(event);
        }
    }
}

/// Collects a query's text and stops where diesel's sync `Display` of a query appends its
/// bind values (`<sql> -- binds: [..]`): formatting them would cost more than reading the
/// SQL. Were the format to change, the values would follow a `--` comment and be read as
/// part of it, or make the footprint [`Footprint::Unknown`]: never less.
struct UntilBinds<'a>(&'a mut String);

impl fmt::Write for UntilBinds<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if text == " -- binds: " {
            return Err(fmt::Error);
        }
        self.0.push_str(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprints(cases: &[&str]) -> Vec<(String, Footprint)> {
        cases
            .iter()
            .map(|sql| ((*sql).to_string(), statement_footprint(sql)))
            .collect()
    }

    fn all(cases: &[&str], expected: Footprint) {
        for (sql, found) in footprints(cases) {
            assert_eq!(found, expected, "{sql}");
        }
    }

    #[test]
    fn what_diesel_renders_reads_as_reads_and_writes() {
        all(
            &[
                r#"SELECT "todo_item"."id", "todo_item"."name" FROM "todo_item" WHERE ("todo_item"."id" = $1) LIMIT $2"#,
                r#"SELECT COUNT(*) FROM "todo_item" WHERE ("todo_item"."tenant" = $1)"#,
                r#"SELECT "a"."id" FROM ("a" INNER JOIN "b" ON ("b"."a_id" = "a"."id")) WHERE "a"."name" = ANY($1) ORDER BY "a"."id" DESC LIMIT $2 OFFSET $3"#,
                r#"SELECT lower("t"."name"), "t"."n"::int8 FROM "public"."t" FOR UPDATE"#,
                r#"(SELECT "a"."id" FROM "a") UNION (SELECT "b"."id" FROM "b")"#,
                r#"SELECT EXISTS (SELECT "a"."id" FROM "a" WHERE "a"."x" IS NOT NULL)"#,
                "SAVEPOINT diesel_savepoint_1",
                "RELEASE SAVEPOINT diesel_savepoint_1",
                "ROLLBACK TO SAVEPOINT diesel_savepoint_1",
                "select 1 -- a comment; with a semicolon\n",
                "SELECT 1.5e-3, 2E10, 1_000, .5",
                "SELECT t.name, u.id FROM todo_item t JOIN users u ON u.id = t.owner WHERE t.id = $1",
                "select count(*) filter (where done) over (partition by tenant) from todo_item",
                "SELECT interval '1 day', x::varchar(10), CAST(y AS int8) FROM t",
                r#"SELECT /* a /* nested */ comment */ 'it''s' AS "x""#,
            ],
            Footprint::None,
        );
        all(
            &[
                r#"INSERT INTO "todo_item" ("name", "tenant") VALUES ($1, $2) RETURNING "todo_item"."id", "todo_item"."name""#,
                r#"INSERT INTO "public"."t" ("a") VALUES ($1) ON CONFLICT ("a") DO UPDATE SET "a" = excluded."a""#,
                r#"INSERT INTO "t" DEFAULT VALUES"#,
                r#"UPDATE "todo_item" SET "done" = $1 WHERE ("todo_item"."id" = $2)"#,
                // Written by hand for `sql_query`.
                "insert into todo_item (name, tenant) values ($1, $2) returning id",
                "INSERT INTO public.todo_item(name) SELECT lower(name) FROM todo_item t",
                "UPDATE todo_item SET done = true, at = now() WHERE id = $1",
                "WITH gone AS (DELETE FROM todo_item WHERE done RETURNING id) SELECT count(*) FROM gone",
                r#"DELETE FROM "todo_item" WHERE ("todo_item"."id" = $1)"#,
            ],
            Footprint::Sequences,
        );
    }

    #[test]
    fn anything_that_may_leave_session_state_is_unknown() {
        all(
            &[
                // The statements of the session-state attacks.
                "CREATE TEMP TABLE scratch AS SELECT 1",
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "PREPARE p AS SELECT 1",
                "LISTEN channel",
                "SET search_path = evil",
                "SET LOCAL ROLE tenants_admin",
                "RESET ROLE",
                "SET SESSION AUTHORIZATION other",
                "COMMIT",
                "ROLLBACK",
                "BEGIN",
                "DO $$ BEGIN PERFORM 1; END $$",
                "CALL p()",
                "COPY t FROM STDIN",
                "VALUES (1)",
                // Functions that change the session.
                "SELECT set_config('search_path', 'evil', false)",
                "SELECT pg_advisory_lock(1)",
                "SELECT nextval('s')",
                "SELECT random()",
                r#"SELECT "set_config"('a.b', 'c', false)"#,
                r#"SELECT pg_catalog.lower('x')"#,
                r#"SELECT "public".lower('x')"#,
                "SELECT set_config ('a.b', 'c', false)",
                "SELECT set_config/**/('a.b', 'c', false)",
                "SELECT my_function($1)",
                // Statements that create objects, or more than one statement.
                r#"SELECT 1 INTO TEMP "scratch""#,
                r#"SELECT * INTO "scratch" FROM "t""#,
                r#"SELECT INTO "scratch" FROM "t""#,
                "SELECT 1; SET search_path = evil",
                r#"INSERT INTO "t" ("a") VALUES ($1); SELECT set_config('a.b', 'c', false)"#,
                r#"INSERT INTO "t" ("a") SELECT pg_advisory_lock(1)"#,
                r#"UPDATE "t" SET "a" = set_config('a.b', 'c', false)"#,
                // Text this reader does not parse with certainty.
                r"SELECT E'\'' , set_config('a.b', 'c', false) --'",
                r"SELECT '\' , set_config('a.b', 'c', false) , '",
                "SELECT U&'\\0061'",
                "SELECT $tag$ x $tag$",
                "SELECT 'unterminated",
                r#"SELECT "unterminated"#,
                "SELECT /* unterminated",
                "SELECT 1set_config('a.b', 'c', false)",
                "SELECT 0x1F",
                "SELECT 1e",
                "SELECT ünïcode",
                "WITH x AS (SELECT 1) SELECT * INTO scratch FROM x",
                "WITH x (a) AS (SELECT 1) SELECT * FROM x",
                "INSERT INTO t AS x (a) VALUES (1)",
                "SELECT 1 FROM t WHERE a = ANY(SELECT b FROM u WHERE OPERATOR(pg_catalog.=) (1, 1))",
                "SELECT 1 FROM t TABLESAMPLE system(1)",
                "",
            ],
            Footprint::Unknown,
        );
    }

    #[test]
    fn the_sync_display_of_a_query_is_read_up_to_its_bind_values() {
        // As diesel writes it: the SQL, a literal piece, the values.
        let sql = String::from("SELECT 1");
        let binds = ["\n; SET search_path = evil"];
        let mut text = String::new();
        let result = write!(UntilBinds(&mut text), "{sql} -- binds: {binds:?}");
        assert!(result.is_err());
        assert_eq!(text, "SELECT 1");
    }

    #[test]
    fn the_worst_footprint_since_the_begin_wins() {
        let mut watch = Watch::new(ReadAt::Start);
        assert_eq!(
            footprint(&mut watch),
            Footprint::Unknown,
            "before any begin"
        );
        began(&mut watch);
        assert_eq!(footprint(&mut watch), Footprint::None);
        watch.read(&r#"INSERT INTO "t" DEFAULT VALUES"#);
        watch.read(&"SELECT 1");
        assert_eq!(footprint(&mut watch), Footprint::Sequences);
        watch.read(&"SET search_path = evil");
        watch.read(&"SELECT 1");
        assert_eq!(footprint(&mut watch), Footprint::Unknown);
        began(&mut watch);
        assert_eq!(footprint(&mut watch), Footprint::None);
        // Not a watch: nothing is vouched for.
        let mut other = |_: InstrumentationEvent<'_>| {};
        began(&mut other);
        assert_eq!(footprint(&mut other), Footprint::Unknown);
    }
}
