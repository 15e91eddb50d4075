//! Schemas and shared pools, as Python pgdbm 0.5 does them: the shared pool's `search_path`
//! pin (verified at creation), the schema created on connect, `ensure_schema` and
//! `qualify_table_name`.

use super::Database;
use crate::config::split_search_path;
use crate::error::{Error, Result};
use crate::ident::quote_identifier;
use crate::pool::Pool;
use crate::table_name::TableName;
use crate::Config;

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

impl<P: Pool> Database<P> {
    /// Creates this view's schema when it does not exist (Python:
    /// `SchemaManager.ensure_schema_exists`); nothing without a schema. An existing schema needs
    /// no privilege; creating one needs `CREATE` on the database, and lacking it is an
    /// [`Error::Schema`] saying so.
    pub async fn ensure_schema(&self) -> Result<()> {
        match self.schema() {
            Some(schema) => create_schema_if_missing(self, schema).await,
            None => Ok(()),
        }
    }

    /// `table` qualified with this view's schema (Python: `qualify_table_name`), validated and
    /// quoted: `"app"."users"`, or `"users"` without a schema. A `schema.table` argument keeps its
    /// own schema. Unlike Python, which returns `app.users` unquoted, the result is always safe
    /// to put in SQL.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] when a part is not a plain identifier.
    pub fn qualify_table_name(&self, table: &str) -> Result<String> {
        Ok(TableName::parse(table)?
            .or_schema(self.schema())
            .to_string())
    }

    /// The body of [`Database::create_shared_pool`]: the pin as a startup parameter (unless the
    /// config already sets a `search_path`), then the effective value read back.
    pub(super) async fn open_shared_pool(config: &Config) -> Result<P> {
        let mut config = config.clone();
        if let Some(pin) = &config.shared_pool_search_path {
            // A startup parameter, not a SET: it survives the pool's session reset.
            if !config.server_settings().contains_key("search_path") {
                config
                    .server_settings
                    .insert("search_path".to_string(), pin.clone());
            }
        }
        let pool = P::connect(&config).await?;
        if let Err(e) = verify_search_path_pin(&pool, &config).await {
            pool.close().await;
            return Err(e);
        }
        Ok(pool)
    }

    /// Creates `config.schema` when missing, right after [`Database::connect`] opened its pool
    /// (Python creates it in every connection's init).
    pub(super) async fn create_configured_schema(&self) -> Result<()> {
        match self.config().schema.as_deref() {
            Some(schema) => create_schema_if_missing(self, schema).await,
            None => Ok(()),
        }
    }
}

/// `CREATE SCHEMA` of `schema` unless it exists (checked first, so a role without `CREATE` works
/// with an existing schema).
async fn create_schema_if_missing<P: Pool>(db: &Database<P>, schema: &str) -> Result<()> {
    let quoted = quote_identifier(schema)?;
    let exists: Option<bool> = db
        .fetch_value(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?;
    if exists == Some(true) {
        return Ok(());
    }
    match db
        .execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"), &[])
        .await
    {
        Ok(_) => {
            tracing::info!(target: "pgdbm", schema, "created schema");
            Ok(())
        }
        Err(e) if e.sqlstate() == Some(INSUFFICIENT_PRIVILEGE) => Err(Error::schema(
            schema,
            format!(
                "schema {quoted} does not exist and role `{}` may not create it (SQLSTATE \
                 42501, no CREATE privilege on database `{}`): create it as its owner \
                 (`CREATE SCHEMA {quoted} AUTHORIZATION {}`), or `GRANT CREATE ON DATABASE \
                 ... TO` the role",
                db.config().user,
                db.config().database,
                db.config().user,
            ),
        )),
        Err(e) => Err(e),
    }
}

/// Python 0.5's `_verify_search_path_pin`: the requested pin must be the effective
/// `search_path` (entry by entry), however it was established.
async fn verify_search_path_pin<P: Pool>(pool: &P, config: &Config) -> Result<()> {
    let Some(requested) = config.shared_pool_search_path.as_deref() else {
        return Ok(());
    };
    let probe = Database::from_pool(pool.clone(), config.clone())?.without_schema();
    let effective: Option<String> = probe.fetch_value("SHOW search_path", &[]).await?;
    if let Some(effective) = &effective {
        if split_search_path(effective) == split_search_path(requested) {
            return Ok(());
        }
    }
    let effective = effective.map_or_else(|| "None".to_string(), |e| format!("'{e}'"));
    Err(Error::config(
        "shared_pool_search_path",
        format!(
            "Shared pool search_path pin was not applied: requested '{requested}', connection \
             reports {effective}. Unqualified table names would resolve through that path \
             instead of failing, so the fail-closed guarantee this pool was configured for does \
             not hold.\n\n\
             pgdbm requests the pin with a startup parameter. A connection pooler or a \
             managed-platform proxy may drop it - some filter by parameter name, so the endpoint \
             being direct rather than pooled does not necessarily help.\n\n\
             Two ways forward. To keep the pin, set it as a role default, which survives proxies, \
             pool resets and transaction pooling because the server applies it to every \
             connection:\n    ALTER ROLE <role> SET search_path TO {requested};\n\
             and confirm with:\n    SELECT setting, source FROM pg_settings WHERE name = \
             'search_path';\nreporting source='user' rather than 'default'.\n\n\
             To do without it, set shared_pool_search_path = None. That accepts that unqualified \
             names resolve normally and leaves {{{{tables.x}}}} template qualification as the \
             isolation mechanism - which is what pgdbm has always required on a shared pool."
        ),
    ))
}
