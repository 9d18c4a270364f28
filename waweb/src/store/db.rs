//! The two databases behind one SQL text: runtime queries with `$n` placeholders, which both
//! PostgreSQL and sqlx's SQLite driver bind by number.

use sqlx::{PgPool, Row as _, SqlitePool};

/// The gateway's database the session store lives in.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl From<SqlitePool> for Db {
    fn from(pool: SqlitePool) -> Self {
        Db::Sqlite(pool)
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Db::Postgres(pool)
    }
}

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(Option<i64>),
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Text(s.to_owned())
    }
}

impl From<String> for Param {
    fn from(s: String) -> Self {
        Param::Text(s)
    }
}

impl From<i64> for Param {
    fn from(n: i64) -> Self {
        Param::Int(Some(n))
    }
}

impl From<Option<i64>> for Param {
    fn from(n: Option<i64>) -> Self {
        Param::Int(n)
    }
}

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Param>,
}

/// A row as every `SELECT` of the store returns it: `scope, key, value, num2`.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub scope: String,
    pub key: String,
    pub value: String,
    pub num2: Option<i64>,
}

fn bound<'q, DB: sqlx::Database>(
    sql: &'q str,
    params: Vec<Param>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql);
    for param in params {
        query = match param {
            Param::Text(s) => query.bind(s),
            Param::Int(n) => query.bind(n),
        };
    }
    query
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Rows of a `SELECT scope, key, value, num2 ...`.
    pub(crate) async fn fetch(&self, sql: &str, params: Vec<Param>) -> sqlx::Result<Vec<Row>> {
        with_pool!(self, pool => {
            let rows = bound(sql, params).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(Row {
                        scope: r.try_get(0)?,
                        key: r.try_get(1)?,
                        value: r.try_get(2)?,
                        num2: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    /// The one number a `SELECT` returns (`NULL` or no row: `None`).
    pub(crate) async fn fetch_num(
        &self,
        sql: &str,
        params: Vec<Param>,
    ) -> sqlx::Result<Option<i64>> {
        with_pool!(self, pool => {
            let row = bound(sql, params).fetch_optional(pool).await?;
            match row {
                Some(r) => r.try_get::<Option<i64>, _>(0),
                None => Ok(None),
            }
        })
    }

    /// Rows affected.
    pub(crate) async fn execute(&self, sql: &str, params: Vec<Param>) -> sqlx::Result<u64> {
        with_pool!(self, pool => {
            Ok(bound(sql, params).execute(pool).await?.rows_affected())
        })
    }

    /// Runs the statements in one transaction; rows affected, summed.
    pub(crate) async fn transaction(&self, mut stmts: Vec<Stmt>) -> sqlx::Result<u64> {
        if stmts.len() <= 1 {
            return match stmts.pop() {
                Some(stmt) => self.execute(&stmt.sql, stmt.params).await,
                None => Ok(0),
            };
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut affected = 0;
            for stmt in stmts {
                affected += bound(&stmt.sql, stmt.params)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(affected)
        })
    }
}
