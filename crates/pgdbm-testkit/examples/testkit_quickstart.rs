//! Quickstart: start a throwaway PostgreSQL from the local binaries, connect to it with
//! tokio-postgres, and print the server version. The server is stopped and its directory
//! deleted when `server` is dropped at the end.
//!
//! Run: `cargo run -p pgdbm-testkit --example testkit_quickstart`

use pgdbm_testkit::TestServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::start()?;
    println!(
        "started a throwaway PostgreSQL on {}:{} (pid {}, data in {})",
        server.host(),
        server.port(),
        server.pid().unwrap_or_default(),
        server
            .data_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );

    let (client, connection) =
        tokio_postgres::connect(&server.connection_url("postgres"), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
    println!("{version}");

    drop(client);
    driver.await??;
    Ok(())
}
