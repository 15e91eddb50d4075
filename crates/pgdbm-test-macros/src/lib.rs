//! `#[pgdbm::test]`: the attribute behind the `pgdbm` facade's `test` (feature `testkit`).
//!
//! Use it as `#[pgdbm::test]`; it expands to a `#[test]` function that builds a
//! `pgdbm::testkit::TestArgs` and calls `pgdbm::testkit::TestFn::run_test`, where all the work
//! happens (the runtime, the template, the database, keep-on-failure). This crate only parses
//! the arguments and has no stable API of its own. See `docs/testing.md` in the repository.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::punctuated::Punctuated;
use syn::{ItemFn, LitStr, Token};

/// Runs an `async fn` test on a fresh PostgreSQL database of its own.
///
/// ```ignore
/// #[pgdbm::test(migrations = "migrations", schema = "app", fixtures("users.sql"))]
/// async fn finds_users(db: pgdbm::Db) {
///     let n: Option<i64> = db.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await.unwrap();
///     assert_eq!(n, Some(2));
/// }
/// ```
///
/// Arguments (all optional): `migrations = "dir"` (relative to the crate's `Cargo.toml`
/// directory, read at run time) or `migrator = path::TO_EMBEDDED` (a
/// `&'static [EmbeddedMigration]` from `embed_migrations!`); `schema = "name"`;
/// `fixtures("a.sql", "b.json")` (files under the crate's `fixtures/` directory, compiled in,
/// loaded in this order); `backend = "deadpool" | "bb8"` (default: deadpool when its feature
/// is on, else bb8). The function takes one argument: the `Database` of the chosen backend
/// (`pgdbm::Db`, `pgdbm::Bb8Db`...), a `DbConnection` or a `Transaction`; it may return `()` or
/// a `Result`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut parsed = Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse(meta));
    if let Err(e) = syn::parse::Parser::parse(parser, args) {
        return e.to_compile_error().into();
    }
    let item = syn::parse_macro_input!(input as ItemFn);
    match expand(&parsed, item) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Args {
    migrations: Option<Migrations>,
    schema: Option<LitStr>,
    fixtures: Vec<LitStr>,
    backend: Option<LitStr>,
}

enum Migrations {
    Dir(LitStr),
    Embedded(syn::Path),
}

impl Args {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("migrations") || meta.path.is_ident("migrator") {
            if self.migrations.is_some() {
                return Err(meta.error("give `migrations` or `migrator` once"));
            }
            let value = meta.value()?;
            self.migrations = Some(if meta.path.is_ident("migrations") {
                Migrations::Dir(value.parse()?)
            } else if value.peek(LitStr) {
                let lit: LitStr = value.parse()?;
                Migrations::Embedded(lit.parse()?)
            } else {
                Migrations::Embedded(value.parse()?)
            });
            Ok(())
        } else if meta.path.is_ident("schema") {
            let lit: LitStr = meta.value()?.parse()?;
            if !is_identifier(&lit.value()) {
                return Err(syn::Error::new(
                    lit.span(),
                    "`schema` must be a plain identifier: letters, digits and underscores, not \
                     starting with a digit",
                ));
            }
            self.schema = Some(lit);
            Ok(())
        } else if meta.path.is_ident("fixtures") {
            let content;
            syn::parenthesized!(content in meta.input);
            let names = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            for name in names {
                let v = name.value();
                if !(v.ends_with(".sql") || v.ends_with(".json")) {
                    return Err(syn::Error::new(
                        name.span(),
                        "a fixture is a `.sql` or `.json` file under the crate's `fixtures/` \
                         directory",
                    ));
                }
                self.fixtures.push(name);
            }
            Ok(())
        } else if meta.path.is_ident("backend") {
            let lit: LitStr = meta.value()?.parse()?;
            if !matches!(lit.value().as_str(), "deadpool" | "bb8") {
                return Err(syn::Error::new(
                    lit.span(),
                    "`backend` is \"deadpool\" or \"bb8\"",
                ));
            }
            self.backend = Some(lit);
            Ok(())
        } else {
            Err(meta.error(
                "expected `migrations = \"dir\"`, `migrator = path`, `schema = \"name\"`, \
                 `fixtures(\"file.sql\", ...)` or `backend = \"deadpool\" | \"bb8\"`",
            ))
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn expand(args: &Args, item: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "#[pgdbm::test] needs an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[pgdbm::test] functions cannot be generic; pick the backend with `backend = ...`",
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "#[pgdbm::test] functions take one argument: the database (`db: pgdbm::Db`), a \
             `pgdbm::DbConnection<..>` or a `pgdbm::Transaction<..>`",
        ));
    }
    let name = &sig.ident;
    let ret = &sig.output;
    let inputs = &sig.inputs;
    let body = &item.block;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let pool = match args.backend.as_ref().map(LitStr::value).as_deref() {
        Some("deadpool") => quote! { ::pgdbm::DeadpoolPool },
        Some(_) => quote! { ::pgdbm::Bb8Pool },
        None => quote! { ::pgdbm::__test::DefaultPool },
    };
    let migrations = match &args.migrations {
        None => quote! {},
        Some(Migrations::Dir(dir)) => quote! {
            .migrations(::pgdbm::__test::migrations_dir::<#pool>(
                ::core::env!("CARGO_MANIFEST_DIR"), #dir))
        },
        Some(Migrations::Embedded(path)) => quote! {
            .migrations(::pgdbm::__test::migrations_embedded::<#pool>(#path))
        },
    };
    let schema = args.schema.as_ref().map(|s| quote! { .schema(#s) });
    let fixtures = args.fixtures.iter().map(|f| {
        let path = LitStr::new(&format!("/fixtures/{}", f.value()), Span::call_site());
        quote! {
            ::pgdbm::testkit::Fixture {
                name: #f,
                contents: ::core::include_str!(::core::concat!(
                    ::core::env!("CARGO_MANIFEST_DIR"), #path)),
            }
        }
    });
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() #ret {
            async fn __pgdbm_test_body(#inputs) #ret #body
            const __PGDBM_FIXTURES: &[::pgdbm::testkit::Fixture] = &[#(#fixtures),*];
            let args = ::pgdbm::testkit::TestArgs::<#pool>::new(::core::concat!(
                ::core::module_path!(), "::", ::core::stringify!(#name)))
                #migrations
                #schema
                .fixtures(__PGDBM_FIXTURES);
            let f: fn(_) -> _ = __pgdbm_test_body;
            ::pgdbm::testkit::TestFn::<#pool>::run_test(f, args)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{expand, quote, Args, ItemFn, Migrations, TokenStream2};

    fn args(tokens: TokenStream2) -> syn::Result<Args> {
        let mut parsed = Args::default();
        let parser = syn::meta::parser(|meta| parsed.parse(meta));
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(parsed)
    }

    fn item(tokens: TokenStream2) -> ItemFn {
        syn::parse2(tokens).unwrap()
    }

    #[test]
    fn parses_every_argument() {
        let a = args(quote! {
            migrations = "migrations", schema = "app", fixtures("a.sql", "b.json"), backend = "bb8"
        })
        .unwrap();
        assert!(matches!(a.migrations, Some(Migrations::Dir(ref d)) if d.value() == "migrations"));
        assert_eq!(a.schema.unwrap().value(), "app");
        assert_eq!(a.fixtures.len(), 2);
        assert_eq!(a.backend.unwrap().value(), "bb8");
        let a = args(quote! { migrator = crate::MIGRATIONS }).unwrap();
        assert!(matches!(a.migrations, Some(Migrations::Embedded(_))));
        let a = args(quote! { migrator = "crate::MIGRATIONS" }).unwrap();
        assert!(matches!(a.migrations, Some(Migrations::Embedded(_))));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            quote! { migrations = "a", migrator = crate::M },
            quote! { schema = "no-dashes" },
            quote! { fixtures("users.csv") },
            quote! { backend = "r2d2" },
            quote! { colour = "blue" },
        ] {
            assert!(args(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_functions() {
        let a = Args::default();
        for bad in [
            quote! { fn t(db: Db) {} },
            quote! { async fn t() {} },
            quote! { async fn t(a: Db, b: Db) {} },
            quote! { async fn t<P>(db: P) {} },
        ] {
            assert!(expand(&a, item(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_to_one_runner_call() {
        let a = args(quote! { migrations = "m", fixtures("u.sql") }).unwrap();
        let out = expand(
            &a,
            item(quote! { #[ignore] async fn t(db: Db) -> Result<(), E> { body } }),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("run_test"), "{out}");
        assert!(out.contains("migrations_dir"), "{out}");
        assert!(out.contains("\"/fixtures/u.sql\""), "{out}");
        assert!(out.contains("ignore"), "{out}");
        assert!(out.contains("DefaultPool"), "{out}");
    }
}
