//! A portable, literal "starts with" for SQL. `LIKE` treats `%` and `_` as
//! wildcards and is case-insensitive on SQLite, so prefixes are compared with
//! `substr(column, 1, n) = prefix` instead (both backends count characters).

use sea_orm::sea_query::{Expr, ExprTrait, Func, IntoColumnRef};

/// `substr(col, 1, chars(prefix)) = prefix`. Lengths are bound as 32-bit
/// integers: PostgreSQL has no `substr(text, bigint, bigint)`.
pub(crate) fn starts_with(col: impl IntoColumnRef, prefix: &str) -> Expr {
    let chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
    Expr::expr(
        Func::cust("substr")
            .arg(Expr::col(col))
            .arg(1_i32)
            .arg(chars),
    )
    .eq(prefix)
}
