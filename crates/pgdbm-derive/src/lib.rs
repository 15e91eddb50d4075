//! `#[derive(FromRow)]` for pgdbm: builds a struct from a result row.
//!
//! Most users get the derive through the facade crate: `use pgdbm::FromRow;` brings both the
//! trait and this derive into scope (they live in different namespaces, like serde's
//! `Serialize`). The generated impl implements `pgdbm_core::FromRow`, so the value can be
//! returned by `fetch_one_as::<T>()` / `fetch_all_as::<T>()`.
//!
//! ```
//! use pgdbm_core::{FromRow as _, Result, Row};
//! use pgdbm_derive::FromRow;
//!
//! #[derive(Debug, FromRow)]
//! #[pgdbm(crate = "pgdbm_core")] // not needed through the `pgdbm` facade
//! struct Address {
//!     city: String,
//!     zip: Option<String>,
//! }
//!
//! #[derive(Debug, FromRow)]
//! #[pgdbm(crate = "pgdbm_core")]
//! struct User {
//!     id: i64,
//!     #[pgdbm(rename = "email_address")]
//!     email: String,
//!     nickname: Option<String>, // NULL -> None
//!     #[pgdbm(default)]
//!     login_count: i32, // 0 when the query did not select `login_count`
//!     #[pgdbm(flatten)]
//!     address: Address, // `city` and `zip` read from the same row
//!     #[pgdbm(skip)]
//!     cached_score: Option<f64>, // never read: Default::default()
//! }
//!
//! /// Tuple structs read by position: column 0, column 1, ...
//! #[derive(Debug, FromRow)]
//! #[pgdbm(crate = "pgdbm_core")]
//! struct IdAndName(i64, String);
//!
//! fn load<R: Row>(row: &R) -> Result<(User, IdAndName)> {
//!     Ok((User::from_row(row)?, IdAndName::from_row(row)?))
//! }
//! ```
//!
//! # The path to `pgdbm_core`
//!
//! The generated code names the core crate by a path. By default that path is
//! `::pgdbm::__private::core`, which the `pgdbm` facade provides (a hidden re-export of
//! `pgdbm_core`), so `use pgdbm::FromRow; #[derive(FromRow)]` works with `pgdbm` as the only
//! dependency. A crate that depends on `pgdbm-core` directly (a driver adapter, a test) writes
//! `#[pgdbm(crate = "pgdbm_core")]` on the struct; any path that names the core crate works
//! (e.g. `#[pgdbm(crate = "::my_reexport::pgdbm_core")]`).
//!
//! # Attributes
//!
//! On the struct:
//!
//! | attribute | effect |
//! |---|---|
//! | `#[pgdbm(crate = "path")]` | path to the `pgdbm_core` crate (default `::pgdbm::__private::core`) |
//! | `#[pgdbm(bound = "T: Trait, U: Other")]` | extra `where` predicates for the generated impl |
//! | `#[pgdbm(rename_all = "camelCase")]` | column names from field names by sqlx's (serde's) case conventions: `"lowercase"`, `"UPPERCASE"`, `"snake_case"`, `"kebab-case"`, `"camelCase"`, `"PascalCase"`, `"SCREAMING_SNAKE_CASE"`; a field's `rename` wins |
//!
//! On a field:
//!
//! | attribute | effect |
//! |---|---|
//! | *(none)* | named field: the column named like the field (`r#type` reads `type`); tuple field: the next column by position |
//! | `#[pgdbm(rename = "col")]` | read column `col` instead (named fields only) |
//! | `#[pgdbm(default)]` | `Default::default()` when the column is **absent** from the row (a NULL still goes through `FromSql`: use `Option<T>` for NULLs); for tuple structs, when the row has fewer columns |
//! | `#[pgdbm(flatten)]` | the field's type implements `FromRow` and is read from the same row (named fields only) |
//! | `#[pgdbm(skip)]` | never read: `Default::default()`. In a tuple struct a skipped field consumes no column |
//! | `#[pgdbm(try_from = "T")]` | read the column as `T`, then convert with `TryFrom<T>` (its error must convert into a boxed error; a failure is a `Conversion` error naming the field) |
//! | `#[pgdbm(json)]` | a JSON/JSONB column deserialized with serde into the field type (`Option<T>` for NULL); needs the `json` feature (pgdbm facade: `json`) |
//!
//! `Option<T>` fields accept NULL (that is `FromSql`'s own behaviour). Columns the struct does
//! not mention are ignored.
//!
//! # Errors at run time
//!
//! A missing column, a NULL into a non-`Option` field or a type mismatch makes `from_row`
//! return an [`Error::Query`] of kind `Conversion` whose message names the struct, the field
//! and the column, followed by the original error's message, e.g.
//! ``User.email: column `email_address`: ...``; the original error is kept as its `source`.
//! Errors of a `flatten`ed field are returned unchanged (they already name the inner struct,
//! its field and the column).
//!
//! [`Error::Query`]: https://docs.rs/pgdbm-core/latest/pgdbm_core/enum.Error.html#variant.Query
//!
//! # Generics
//!
//! Type and const parameters are supported; the derive adds **no** inferred bounds. Put them on
//! the struct (`struct Page<T: for<'a> postgres_types::FromSql<'a>>`) or in
//! `#[pgdbm(bound = "...")]`. Lifetime parameters are rejected: `from_row` borrows the row only
//! for the duration of the call, so every field must own its data (`String`, not `&str`).
//!
//! # Compile errors
//!
//! The derive reports these with a span on the offending item:
//! - `FromRow` on an enum or a union ("FromRow can only be derived for structs");
//! - a lifetime parameter on the struct;
//! - an unknown key in `#[pgdbm(...)]` (the message lists the valid keys), a key used twice, or
//!   a struct-level key on a field and vice versa;
//! - `rename` / `crate` / `bound` without a string value (`#[pgdbm(rename = "col")]`), an empty
//!   `rename`, a `crate` string that is not a path, a `bound` string that is not `where`
//!   predicates;
//! - incompatible field attributes: `skip` with anything else, `flatten` with `rename`,
//!   `default`, `try_from` or `json`, `json` with `try_from`, `rename` or `flatten` on a
//!   tuple-struct field; an unknown `rename_all` rule (the message lists them); `json`
//!   without the `json` feature.
//!
//! A field type that does not implement `FromSql` (or `FromRow` for `flatten`, `Default` for
//! `default` / `skip`) is a type error pointing at that field.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Field, Fields, GenericParam, Ident, LitStr, Path, Token, Type,
    WherePredicate,
};

/// Derives `pgdbm_core::FromRow` for a struct: see the [crate documentation](crate) for the
/// attributes (`crate`, `bound`, `rename_all`, `rename`, `default`, `flatten`, `skip`,
/// `try_from`, `json`) and the errors.
#[proc_macro_derive(FromRow, attributes(pgdbm))]
pub fn derive_from_row(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

const STRUCT_KEYS: &str = "`crate`, `bound`, `rename_all`";
const FIELD_KEYS: &str = "`rename`, `default`, `flatten`, `skip`, `try_from`, `json`";

/// The case conventions of `rename_all`, spelled as sqlx (and serde) spell them.
const RENAME_ALL_RULES: &str = "\"lowercase\", \"UPPERCASE\", \"snake_case\", \"kebab-case\", \"camelCase\", \"PascalCase\", \"SCREAMING_SNAKE_CASE\"";

/// A `rename_all` case convention.
#[derive(Clone, Copy)]
enum RenameAll {
    Lower,
    Upper,
    Snake,
    Kebab,
    Camel,
    Pascal,
    ScreamingSnake,
}

impl RenameAll {
    fn parse(rule: &str) -> Option<Self> {
        Some(match rule {
            "lowercase" => RenameAll::Lower,
            "UPPERCASE" => RenameAll::Upper,
            "snake_case" => RenameAll::Snake,
            "kebab-case" => RenameAll::Kebab,
            "camelCase" => RenameAll::Camel,
            "PascalCase" => RenameAll::Pascal,
            "SCREAMING_SNAKE_CASE" => RenameAll::ScreamingSnake,
            _ => return None,
        })
    }

    fn apply(self, field: &str) -> String {
        use heck::{
            ToKebabCase, ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase,
        };
        match self {
            RenameAll::Lower => field.to_lowercase(),
            RenameAll::Upper => field.to_uppercase(),
            RenameAll::Snake => field.to_snake_case(),
            RenameAll::Kebab => field.to_kebab_case(),
            RenameAll::Camel => field.to_lower_camel_case(),
            RenameAll::Pascal => field.to_upper_camel_case(),
            RenameAll::ScreamingSnake => field.to_shouty_snake_case(),
        }
    }
}

/// Accumulates several errors so one build reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Struct-level options.
struct StructAttrs {
    krate: Option<Path>,
    bounds: Vec<WherePredicate>,
    rename_all: Option<RenameAll>,
}

/// Field-level options; each flag keeps the span of its key for error messages.
#[derive(Default)]
struct FieldAttrs {
    rename: Option<LitStr>,
    default: Option<Span>,
    flatten: Option<Span>,
    skip: Option<Span>,
    /// `try_from = "T"`: read the column as `T`, then `TryFrom<T>` into the field type.
    try_from: Option<Type>,
    /// `json`: read the column as `Json<FieldType>` (serde), then unwrap it.
    json: Option<Span>,
}

/// Parses `key = "string"`, with an error that shows the expected form.
fn string_value(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<LitStr> {
    let expected = || format!("`{key}` needs a string value: #[pgdbm({key} = \"{example}\")]");
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(expected()));
    }
    let value = meta.value()?;
    let expr: syn::Expr = value.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(other, expected())),
    }
}

fn key_name(path: &Path) -> String {
    path.get_ident()
        .map(|ident| ident.unraw().to_string())
        .unwrap_or_else(|| quote!(#path).to_string().replace(' ', ""))
}

fn is_pgdbm(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("pgdbm")
}

fn parse_struct_attrs(attrs: &[syn::Attribute], errors: &mut Errors) -> StructAttrs {
    let mut out = StructAttrs {
        krate: None,
        bounds: Vec::new(),
        rename_all: None,
    };
    let mut bound_seen = false;
    for attr in attrs.iter().filter(|a| is_pgdbm(a)) {
        let result = attr.parse_nested_meta(|meta| {
            let key = key_name(&meta.path);
            match key.as_str() {
                "crate" => {
                    let lit = string_value(&meta, "crate", "pgdbm_core")?;
                    if out.krate.is_some() {
                        return Err(meta.error("duplicate `crate` attribute"));
                    }
                    let path: Path = lit.parse().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            format!(
                                "`crate` must be a path to the pgdbm_core crate, such as \
                                 \"pgdbm_core\" or \"::pgdbm::__private::core\"; got {:?}",
                                lit.value()
                            ),
                        )
                    })?;
                    out.krate = Some(path);
                    Ok(())
                }
                "bound" => {
                    let lit = string_value(&meta, "bound", "T: Trait")?;
                    if bound_seen {
                        return Err(meta.error("duplicate `bound` attribute"));
                    }
                    bound_seen = true;
                    let predicates = lit
                        .parse_with(Punctuated::<WherePredicate, Token![,]>::parse_terminated)
                        .map_err(|e| {
                            syn::Error::new(
                                lit.span(),
                                format!(
                                    "`bound` must hold `where` predicates such as \
                                     \"T: Default, U: Clone\": {e}"
                                ),
                            )
                        })?;
                    out.bounds.extend(predicates);
                    Ok(())
                }
                "rename_all" => {
                    let lit = string_value(&meta, "rename_all", "snake_case")?;
                    if out.rename_all.is_some() {
                        return Err(meta.error("duplicate `rename_all` attribute"));
                    }
                    out.rename_all = Some(RenameAll::parse(&lit.value()).ok_or_else(|| {
                        syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown `rename_all` rule {:?}; the rules are {RENAME_ALL_RULES}",
                                lit.value()
                            ),
                        )
                    })?);
                    Ok(())
                }
                "rename" | "default" | "flatten" | "skip" | "try_from" | "json" => {
                    Err(meta.error(format!(
                        "`{key}` is a field attribute: put it on a field, not on the struct \
                     (struct attributes: {STRUCT_KEYS})"
                    )))
                }
                _ => Err(meta.error(format!(
                    "unknown pgdbm attribute `{key}`; struct attributes are {STRUCT_KEYS}, \
                     field attributes are {FIELD_KEYS}"
                ))),
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

fn parse_field_attrs(field: &Field, errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in field.attrs.iter().filter(|a| is_pgdbm(a)) {
        let result = attr.parse_nested_meta(|meta| {
            let key = key_name(&meta.path);
            let flag = |slot: &mut Option<Span>| -> syn::Result<()> {
                if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
                    return Err(
                        meta.error(format!("`{key}` takes no value: write #[pgdbm({key})]"))
                    );
                }
                if slot.is_some() {
                    return Err(meta.error(format!("duplicate `{key}` attribute")));
                }
                *slot = Some(meta.path.span());
                Ok(())
            };
            match key.as_str() {
                "rename" => {
                    let lit = string_value(&meta, "rename", "column_name")?;
                    if out.rename.is_some() {
                        return Err(meta.error("duplicate `rename` attribute"));
                    }
                    if lit.value().is_empty() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`rename` needs a non-empty column name",
                        ));
                    }
                    out.rename = Some(lit);
                    Ok(())
                }
                "default" => flag(&mut out.default),
                "flatten" => flag(&mut out.flatten),
                "skip" => flag(&mut out.skip),
                "json" => {
                    if cfg!(feature = "json") {
                        flag(&mut out.json)
                    } else {
                        Err(meta.error(
                            "`json` needs the `json` feature of pgdbm-derive (through the pgdbm \
                             facade: its `json` feature), which also enables postgres-types' \
                             serde_json support",
                        ))
                    }
                }
                "try_from" => {
                    let lit = string_value(&meta, "try_from", "i64")?;
                    if out.try_from.is_some() {
                        return Err(meta.error("duplicate `try_from` attribute"));
                    }
                    out.try_from = Some(lit.parse().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            format!(
                                "`try_from` must name a type read from the column, such as \"i64\"; got {:?}",
                                lit.value()
                            ),
                        )
                    })?);
                    Ok(())
                }
                "crate" | "bound" | "rename_all" => Err(meta.error(format!(
                    "`{key}` is a struct attribute: put it on the struct, not on a field \
                     (field attributes: {FIELD_KEYS})"
                ))),
                _ => Err(meta.error(format!(
                    "unknown pgdbm field attribute `{key}`; field attributes are {FIELD_KEYS}"
                ))),
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

/// How one field gets its value.
// A few values per derived struct, at compile time: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// A column, by name or position; `default` when the column may be absent.
    Column {
        column: ColumnRef,
        default: bool,
        decode: Decode,
    },
    /// `FromRow` of the field type, on the same row.
    Flatten,
    /// `Default::default()`.
    Skip,
}

enum ColumnRef {
    Name(String),
    Position(usize),
}

/// How a column's value becomes the field's.
#[allow(clippy::large_enum_variant)] // as for `Source`
enum Decode {
    /// `FromSql` of the field type.
    Plain,
    /// `FromSql` of this type, then `TryFrom` into the field type.
    TryFrom(Type),
    /// `FromSql` of `Json<FieldType>` (serde), unwrapped.
    Json,
}

fn field_source(
    field: &Field,
    attrs: &FieldAttrs,
    rename_all: Option<RenameAll>,
    position: &mut usize,
    errors: &mut Errors,
) -> Source {
    let named = field.ident.is_some();
    let converts = attrs.try_from.is_some() || attrs.json.is_some();
    if let Some(span) = attrs.skip {
        if attrs.rename.is_some() || attrs.default.is_some() || attrs.flatten.is_some() || converts
        {
            errors.push(syn::Error::new(
                span,
                "`skip` cannot be combined with `rename`, `default`, `flatten`, `try_from` or \
                 `json`: a skipped field is never read (it is always Default::default())",
            ));
        }
        return Source::Skip;
    }
    if let (Some(_), Some(span)) = (&attrs.try_from, attrs.json) {
        errors.push(syn::Error::new(
            span,
            "`json` cannot be combined with `try_from`: pick one way to decode the column",
        ));
    }
    if let Some(span) = attrs.flatten {
        if !named {
            errors.push(syn::Error::new(
                span,
                "`flatten` is only supported on named fields: a tuple struct reads columns \
                 by position",
            ));
        }
        if attrs.rename.is_some() || attrs.default.is_some() || converts {
            errors.push(syn::Error::new(
                span,
                "`flatten` cannot be combined with `rename`, `default`, `try_from` or `json`: \
                 the flattened struct chooses its own columns",
            ));
        }
        return Source::Flatten;
    }
    let column = match &field.ident {
        Some(ident) => ColumnRef::Name(match (&attrs.rename, rename_all) {
            (Some(lit), _) => lit.value(),
            (None, Some(rule)) => rule.apply(&ident.unraw().to_string()),
            (None, None) => ident.unraw().to_string(),
        }),
        None => {
            if let Some(lit) = &attrs.rename {
                errors.push(syn::Error::new(
                    lit.span(),
                    "`rename` is only supported on named fields: a tuple struct reads \
                     columns by position",
                ));
            }
            let here = *position;
            *position += 1;
            ColumnRef::Position(here)
        }
    };
    let decode = match (&attrs.try_from, attrs.json) {
        (Some(ty), _) => Decode::TryFrom(ty.clone()),
        (None, Some(_)) => Decode::Json,
        (None, None) => Decode::Plain,
    };
    Source::Column {
        column,
        default: attrs.default.is_some(),
        decode,
    }
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => {
            return Err(syn::Error::new(
                data.enum_token.span,
                "FromRow can only be derived for structs, not enums: a row maps to one \
                 struct with a field per column",
            ))
        }
        Data::Union(data) => {
            return Err(syn::Error::new(
                data.union_token.span,
                "FromRow can only be derived for structs, not unions: a row maps to one \
                 struct with a field per column",
            ))
        }
    };

    let mut errors = Errors::default();
    for param in &input.generics.params {
        if let GenericParam::Lifetime(lt) = param {
            errors.push(syn::Error::new_spanned(
                lt,
                "FromRow: structs with lifetime parameters are not supported: the row is only \
                 borrowed during from_row, so fields must own their data (String, Vec<u8>, ...)",
            ));
        }
    }
    let struct_attrs = parse_struct_attrs(&input.attrs, &mut errors);

    let name = &input.ident;
    let struct_name = name.unraw().to_string();
    let krate = struct_attrs
        .krate
        .unwrap_or_else(|| syn::parse_quote!(::pgdbm::__private::core));
    let row_ty = format_ident!("__PgdbmRow");
    let row = format_ident!("__pgdbm_row");

    let mut position = 0usize;
    let mut needs_helper = false;
    let mut bindings = Vec::new();
    let mut reads = Vec::new();
    let mut members = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let attrs = parse_field_attrs(field, &mut errors);
        let source = field_source(
            field,
            &attrs,
            struct_attrs.rename_all,
            &mut position,
            &mut errors,
        );
        needs_helper |= matches!(source, Source::Column { .. });
        let binding = format_ident!("__pgdbm_field_{}", index);
        let field_label = match &field.ident {
            Some(ident) => ident.unraw().to_string(),
            None => index.to_string(),
        };
        let read = read_field(
            &krate,
            &row_ty,
            &row,
            &field.ty,
            &source,
            &format!("{struct_name}.{field_label}"),
        );
        reads.push(quote! { let #binding = #read; });
        members.push(match &field.ident {
            Some(ident) => quote!(#ident),
            None => {
                let idx = syn::Index::from(index);
                quote!(#idx)
            }
        });
        bindings.push(binding);
    }
    errors.finish()?;

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::WhereClause {
        where_token: Default::default(),
        predicates: Punctuated::new(),
    });
    where_clause.predicates.extend(struct_attrs.bounds);

    let construct = match fields {
        Fields::Unit => quote!(Self),
        _ => quote!(Self { #(#members: #bindings,)* }),
    };
    // The error helper is only emitted when a field reads a column, so that it is never an
    // unused item in the user's crate.
    let helper = if needs_helper {
        wrap_fn(&krate)
    } else {
        TokenStream2::new()
    };

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::FromRow for #name #ty_generics #where_clause {
            fn from_row<#row_ty: #krate::Row>(#row: &#row_ty) -> #krate::Result<Self> {
                #helper
                #(#reads)*
                ::core::result::Result::Ok(#construct)
            }
        }
    })
}

/// The helper that turns a `try_get` error into one naming the struct, field and column.
fn wrap_fn(krate: &Path) -> TokenStream2 {
    quote! {
        #[cold]
        fn __pgdbm_field_error(error: #krate::Error, context: &str) -> #krate::Error {
            let message = match &error {
                #krate::Error::Query(query) => ::std::format!("{}: {}", context, query.message),
                other => ::std::format!("{}: {}", context, other),
            };
            #krate::Error::from(
                #krate::QueryError::new(#krate::QueryErrorKind::Conversion, message, "")
                    .with_source(error),
            )
        }
    }
}

fn read_field(
    krate: &Path,
    row_ty: &Ident,
    row: &Ident,
    ty: &Type,
    source: &Source,
    label: &str,
) -> TokenStream2 {
    let span = ty.span();
    match source {
        Source::Skip => quote_spanned!(span=> <#ty as ::core::default::Default>::default()),
        Source::Flatten => quote_spanned! {span=>
            <#ty as #krate::FromRow>::from_row(#row)?
        },
        Source::Column {
            column,
            default,
            decode,
        } => {
            let context = match column {
                ColumnRef::Name(name) => format!("{label}: column `{name}`"),
                ColumnRef::Position(pos) => format!("{label}: column {pos}"),
            };
            let on_error = quote! {
                ::core::result::Result::Err(error) => {
                    return ::core::result::Result::Err(__pgdbm_field_error(error, #context));
                }
            };
            // The type read from the column, and how it becomes the field's value.
            let read_ty = match decode {
                Decode::Plain => quote!(#ty),
                Decode::TryFrom(from) => quote!(#from),
                Decode::Json => quote!(#krate::__postgres_types::Json<#ty>),
            };
            let convert = |value: TokenStream2| match decode {
                Decode::Plain => value,
                Decode::Json => quote!((#value).0),
                Decode::TryFrom(from) => quote_spanned! {span=>
                    match <#ty as ::core::convert::TryFrom<#from>>::try_from(#value) {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(error) => {
                            let error: #krate::BoxError = ::core::convert::Into::into(error);
                            let message = ::std::format!(
                                "{} could not be converted with TryFrom<{}>: {}",
                                #context,
                                ::core::stringify!(#from),
                                error
                            );
                            return ::core::result::Result::Err(#krate::Error::from(
                                #krate::QueryError::new(#krate::QueryErrorKind::Conversion, message, "")
                                    .with_source(error),
                            ));
                        }
                    }
                },
            };
            let get_at = |index: TokenStream2| {
                let read = quote_spanned! {span=>
                    match <#row_ty as #krate::Row>::get_at::<#read_ty>(#row, #index) {
                        ::core::result::Result::Ok(value) => value,
                        #on_error
                    }
                };
                convert(read)
            };
            let find_index = match column {
                ColumnRef::Name(name) => quote! {
                    (0..<#row_ty as #krate::Row>::len(#row)).find(|&index| {
                        <#row_ty as #krate::Row>::column_name(#row, index)
                            == ::core::option::Option::Some(#name)
                    })
                },
                ColumnRef::Position(pos) => quote! {
                    if #pos < <#row_ty as #krate::Row>::len(#row) {
                        ::core::option::Option::Some(#pos)
                    } else {
                        ::core::option::Option::None
                    }
                },
            };
            if *default {
                let read = get_at(quote!(index));
                quote_spanned! {span=>
                    match #find_index {
                        ::core::option::Option::Some(index) => #read,
                        ::core::option::Option::None => <#ty as ::core::default::Default>::default(),
                    }
                }
            } else {
                let index = match column {
                    ColumnRef::Name(name) => quote!(#name),
                    ColumnRef::Position(pos) => quote!(#pos),
                };
                let index_ty = match column {
                    ColumnRef::Name(_) => quote!(&'static str),
                    ColumnRef::Position(_) => quote!(usize),
                };
                convert(quote_spanned! {span=>
                    match <#row_ty as #krate::Row>::try_get::<#index_ty, #read_ty>(#row, #index) {
                        ::core::result::Result::Ok(value) => value,
                        #on_error
                    }
                })
            }
        }
    }
}
