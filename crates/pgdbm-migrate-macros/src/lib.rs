//! Procedural macro behind `pgdbm_migrate::embed_migrations!`.
//!
//! Use it through `pgdbm_migrate::embed_migrations!("migrations")`, which passes the path of
//! the `pgdbm_migrate` crate along so the expansion works from any crate (also through the
//! `pgdbm` facade). This crate is an implementation detail and has no stable API of its own.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

/// `<path to pgdbm_migrate>, "dir"`
struct Input {
    krate: proc_macro2::TokenStream,
    dir: LitStr,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // Everything up to the first top-level comma is the crate path (usually `$crate`).
        let mut krate = proc_macro2::TokenStream::new();
        while !input.peek(Token![,]) {
            if input.is_empty() {
                return Err(input.error("expected `<crate path>, \"directory\"`"));
            }
            let tt: proc_macro2::TokenTree = input.parse()?;
            krate.extend(std::iter::once(tt));
        }
        input.parse::<Token![,]>()?;
        let dir: LitStr = input.parse()?;
        // Allow one trailing comma.
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error("embed_migrations! takes a single string literal"));
        }
        Ok(Input { krate, dir })
    }
}

/// Expands to `&'static [EmbeddedMigration]` with every migration file of the directory, in
/// code-point order of file name. Called as `__embed_migrations!($crate, "dir")` by
/// `pgdbm_migrate::embed_migrations!`.
#[proc_macro]
pub fn __embed_migrations(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as Input);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &Input) -> syn::Result<proc_macro2::TokenStream> {
    let span = input.dir.span();
    let rel = input.dir.value();
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
        syn::Error::new(
            span,
            "embed_migrations!: CARGO_MANIFEST_DIR is not set; build with cargo",
        )
    })?;
    let dir: PathBuf = Path::new(&manifest_dir).join(&rel);
    let names = migration_names(&dir).map_err(|msg| syn::Error::new(span, msg))?;
    let krate = &input.krate;
    let entries = names.iter().map(|name| {
        let full = dir.join(name);
        let full = full.to_string_lossy().into_owned();
        let full = LitStr::new(&full, Span::call_site());
        let name = LitStr::new(name, Span::call_site());
        quote! {
            #krate::EmbeddedMigration { filename: #name, content: ::core::include_str!(#full) }
        }
    });
    Ok(quote! {
        {
            const __PGDBM_EMBEDDED_MIGRATIONS: &[#krate::EmbeddedMigration] = &[ #(#entries),* ];
            __PGDBM_EMBEDDED_MIGRATIONS
        }
    })
}

/// File names of the migration files in `dir` (the same rule as reading the directory at run
/// time: `pgdbm_core::migration::is_migration_file_name`, regular files only), sorted in
/// code-point order.
fn migration_names(dir: &Path) -> Result<Vec<String>, String> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "embed_migrations!: cannot read migrations directory `{}` (the path is relative to the \
             calling crate's Cargo.toml directory): {e}",
            dir.display()
        )
    })?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry
            .map_err(|e| format!("embed_migrations!: error listing `{}`: {e}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            // Not UTF-8: the run-time reader skips such names too.
            continue;
        };
        if !pgdbm_core::migration::is_migration_file_name(&name) {
            continue;
        }
        // Follow symlinks, like the run-time reader.
        let is_file = std::fs::metadata(entry.path())
            .map(|m| m.is_file())
            .unwrap_or(false);
        if is_file {
            names.push(name);
        }
    }
    pgdbm_core::migration::sort_migration_names(&mut names);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_migration_files_like_the_runtime_reader() {
        let dir = std::env::temp_dir().join(format!("pgdbm-embed-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("nested.sql")).unwrap();
        for name in [
            "9_b.sql",
            "10_a.sql",
            ".hidden.sql",
            "notes.txt",
            "UPPER.SQL",
            "é_x.sql",
        ] {
            std::fs::write(dir.join(name), "SELECT 1;").unwrap();
        }
        let names = migration_names(&dir).unwrap();
        assert_eq!(names, ["10_a.sql", "9_b.sql", "é_x.sql"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_is_an_error_that_says_where_paths_are_relative_to() {
        let err = migration_names(Path::new("/nonexistent/pgdbm/migrations")).unwrap_err();
        assert!(err.contains("/nonexistent/pgdbm/migrations"), "{err}");
        assert!(err.contains("Cargo.toml"), "{err}");
    }
}
