//! `coffer-migration`: the sea-orm migration CLI over Coffer's schema
//! (`up`, `down`, `status`, `fresh`, …; the database comes from `DATABASE_URL`
//! or `-u`). The server normally migrates itself; this is for operators.

#[tokio::main]
async fn main() {
    sea_orm_migration::cli::run_cli(coffer_migration::Migrator).await;
}
