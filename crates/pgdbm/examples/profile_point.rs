//! A fixed number of pooled point selects (acquire, `SELECT ... WHERE id = $1` mapped to a
//! struct, release) at concurrency 1, for profilers that count instructions: run it twice with
//! different counts under `valgrind --tool=callgrind` and divide the difference by the extra
//! ops to get the cost of one op (docs/benchmarks.md, "Where a point select's time goes").
//!
//! Run: `cargo run --release -p pgdbm --features bb8 --example profile_point -- <raw|deadpool|bb8> <ops>`
//! With `DATABASE_URL` set it uses that server; otherwise a throwaway one (pgdbm-testkit).

use pgdbm::{Bb8Db, Config, DeadpoolDb, FromRow};
use pgdbm_testkit::{unique_database_name, TestServer};

const SQL: &str = "SELECT id, name FROM profile_users WHERE id = $1";

#[derive(FromRow)]
#[allow(dead_code)] // read only by the mapping
struct User {
    id: i32,
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "deadpool".into());
    let ops: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);

    let _server;
    let (mut config, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (Config::from_url(&url)?, url),
        Err(_) => {
            let server = TestServer::shared()?;
            let name = unique_database_name("profile_point")?;
            server.create_database(&name)?;
            let pair = (server.config(&name), server.connection_url(&name));
            _server = server;
            pair
        }
    };
    config.min_connections = 20;
    config.max_connections = 20;

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS profile_users (id INT PRIMARY KEY, name TEXT);
             INSERT INTO profile_users SELECT g, 'user ' || g FROM generate_series(1, 1000) g
             ON CONFLICT DO NOTHING;
             ANALYZE profile_users;",
        )
        .await?;

    match mode.as_str() {
        "raw" => {
            let stmt = client.prepare(SQL).await?;
            for i in 0..ops {
                let id = (i % 1000) as i32 + 1;
                let row = client.query_one(&stmt, &[&id]).await?;
                std::hint::black_box(User {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                });
            }
        }
        "deadpool" => {
            let db = DeadpoolDb::connect(config).await?;
            for i in 0..ops {
                let id = (i % 1000) as i32 + 1;
                std::hint::black_box(db.fetch_one_as::<User, _>(SQL, &[&id]).await?);
            }
            db.close().await;
        }
        "bb8" => {
            let db = Bb8Db::connect(config).await?;
            for i in 0..ops {
                let id = (i % 1000) as i32 + 1;
                std::hint::black_box(db.fetch_one_as::<User, _>(SQL, &[&id]).await?);
            }
            db.close().await;
        }
        other => return Err(format!("unknown mode {other:?}: raw, deadpool or bb8").into()),
    }
    Ok(())
}
